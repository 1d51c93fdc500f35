"""The demo's sweep: ``tuning/demo_sweep.yaml`` (4 short trials of dit-debug) on any data.

    python -c "from vidgen_ray.tune.demo import demo_sweep; demo_sweep('./outputs/synth', './outputs/sweeps')"
"""

from __future__ import annotations

from pathlib import Path

from vidgen_ray.tune.report import SweepResult
from vidgen_ray.tune.space import SweepError

DEMO_SWEEP = Path(__file__).resolve().parents[2] / "tuning" / "demo_sweep.yaml"


def demo_sweep(data_uri: str, storage_uri: str, address: str | None = None, sets: list[str] | tuple[str, ...] = ()) -> SweepResult:
    """Run (or resume) the demo sweep on ``data_uri`` (raw videos: decoded once into the sweep's
    clip cache; or a prepared dataset) with its folder under ``storage_uri``; ``sets`` are
    ``key=value`` overrides for every trial (the demo passes its clip shape)."""
    from vidgen_ray.tune.run import run_sweep
    from vidgen_ray.tune.sweep import load_sweep, with_cli

    if not DEMO_SWEEP.is_file():
        raise SweepError(f"{DEMO_SWEEP} is missing: the demo runs from a checkout of the repository (tuning/ is not installed)")
    sweep = with_cli(load_sweep(str(DEMO_SWEEP)), data=data_uri, storage=storage_uri)
    return run_sweep(sweep, overrides=list(sets), address=address)
