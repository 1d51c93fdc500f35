"""Training throughput per strategy, side by side in one run: samples/s, the share of step time
spent waiting for data, and MFU where a GPU ran.

    python benchmarks/train_throughput.py                                 # CPU: dit-debug, 2 workers
    python benchmarks/train_throughput.py --preset dit-b --workers 8 --gpu --precision bf16 \
        --data s3://bucket/clips --strategies fsdp2,deepspeed --steps 200 --json out.json   # a GPU cluster

Each strategy trains the same preset on the same prepared clips for ``--steps`` steps; figures are
taken over the second half of the run (the first half covers worker start-up and the first decode).
Without ``--data`` a synthetic dataset is generated and prepared first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def prepared_synthetic(root: Path, frames: int, size: int) -> str:
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.prepare import prepare
    from vidgen_ray.data.synth import generate

    generate(str(root / "synth"), videos=24, seed=0, broken=False)
    cfg = DataConfig(source=str(root / "synth"))
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width, cfg.clip.clips_per_video = frames, 8.0, size, size, 4
    prepare(cfg, str(root / "clips"))
    return str(root / "clips")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="dit-debug")
    parser.add_argument("--data", help="a prepared dataset matching the preset's clip shape")
    parser.add_argument("--strategies", default="ddp,fsdp2,deepspeed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="per worker")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from vidgen_ray.config import load_experiment
    from vidgen_ray.runtime import init_ray
    from vidgen_ray.train.run import local_cpus_needed, train

    root = Path(tempfile.mkdtemp(prefix="vidgen-bench-"))
    probe_cfg = load_experiment(args.preset, sets=["data.source=/unused"])
    init_ray(num_cpus=local_cpus_needed(probe_cfg) + 2)
    data = args.data or prepared_synthetic(root, probe_cfg.model.frames, probe_cfg.model.height)
    figures: dict = {"preset": args.preset, "workers": args.workers, "batch_per_worker": args.batch, "steps": args.steps,
                     "precision": args.precision, "strategies": {}}
    for strategy in args.strategies.split(","):
        cfg = load_experiment(args.preset, sets=[
            f"data.source={data}", f"storage_path={root / 'runs'}", f"name=bench-{strategy}", "data.clip.fps=8",
            f"parallel.strategy={strategy}", f"parallel.num_workers={args.workers}", f"parallel.use_gpu={args.gpu}",
            f"parallel.precision={args.precision}", f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
            f"train.log_every={args.steps // 2}", f"train.checkpoint_every={args.steps}", "train.num_samples=0",
            "parallel.max_failures=0", *args.sets,
        ])
        result = train(cfg)
        m = result.metrics
        figures["strategies"][strategy] = {
            "samples_per_s": m["samples_per_s"],
            "data_wait_fraction": m["data_wait_fraction"],
            "step_time_s": m["step_time_s"],
            **({"mfu": m["mfu"]} if args.gpu else {}),
        }
    import torch

    figures["device"] = torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    base = figures["strategies"].get("ddp", next(iter(figures["strategies"].values())))["samples_per_s"]
    print(f"\n{args.preset}, {args.workers} workers x batch {args.batch}, {args.precision}, on {figures['device']}")
    print(f"{'strategy':<12}{'samples/s':>11}{'vs ddp':>8}{'data wait':>11}{'s/step':>8}" + ("{:>8}".format("MFU") if args.gpu else ""))
    for name, f in figures["strategies"].items():
        line = f"{name:<12}{f['samples_per_s']:>11.2f}{f['samples_per_s'] / base:>7.2f}x{f['data_wait_fraction'] * 100:>10.1f}%{f['step_time_s']:>8.2f}"
        print(line + (f"{f['mfu'] * 100:>7.1f}%" if args.gpu else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
