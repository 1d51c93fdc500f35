"""The cluster path exactly as a user takes it (issue 17): `ray start --head` on 127.0.0.1 with ports
and a temp dir of its own, `ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml`, a
job that runs to a checkpoint with a readable log, and an over-sized job that the preflight refuses
within seconds. The test session's own Ray instance stays up all the while (a second instance on the
host), and only the processes this test started are stopped (never `ray stop`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from vidgen_ray.checkpoints import latest_checkpoint, read_meta

from ray_head import Head, train_job_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# The 4-step training job's log measured 65 lines on 2026-12-06: 26 of the `ray job submit` CLI (upload,
# job id, tail, result), 14 vidgen INFO lines (preflight, plan, steps, checkpoint), the probe's drop
# report, and Ray Train's worker-group lines. Ray Data's logged progress adds ~8 lines a dataset each
# time it reports (every few seconds of a stream), so a bar left on in any process breaks this bound.
LOG_LINES = 100
# Fragments of Ray Data's progress bars and its "logging progress" fallback.
PROGRESS = re.compile(r"it/s\]|row/s\]|\d+%\|| Running Dataset|Running: \d|SplitCoordinator.*\d+/\d+")


@pytest.fixture(scope="module")
def head(ray_session):
    # ray_session: the test session's instance is up too, so the job meets a second Ray on the host.
    h = Head(cpus=3)
    try:
        yield h
    finally:
        h.stop()


def test_a_submitted_job_trains_with_a_clean_log_and_an_oversized_one_is_refused_fast(head: Head, synth_dir: Path,
                                                                                      tmp_path: Path):
    runs = tmp_path / "runs"
    common = train_job_args(synth_dir, runs)
    ok = head.submit(*common, "--name", "fits", "--workers", "2")
    log = ok.stdout + ok.stderr
    assert ok.returncode == 0 and "succeeded" in log, log[-4000:]
    state = read_meta(latest_checkpoint(str(runs / "fits")))["state"]
    assert state["step"] == 4
    # A readable log: vidgen lines, no progress bars (the SplitCoordinator's included), no tracebacks.
    assert not PROGRESS.search(log), [line for line in log.splitlines() if PROGRESS.search(line)][:5]
    assert "Traceback" not in log and "never retrieved" not in log, log[-4000:]
    lines = [line for line in log.splitlines() if line.strip()]
    vidgen = sum(" INFO vidgen." in line for line in lines)
    print(f"job log: {len(lines)} lines, {vidgen} of them vidgen INFO lines")
    assert len(lines) < LOG_LINES, "\n".join(lines)
    assert vidgen >= 5

    # The same checks see a noisy log: a Ray Data job with its progress reporting left on trips the grep.
    noisy = head.submit("-c", "import os; os.environ['RAY_DATA_DISABLE_PROGRESS_BARS'] = '0'; import ray; "
                              "ray.data.range(64, override_num_blocks=4).map_batches(lambda b: b).materialize()")
    assert noisy.returncode == 0, (noisy.stdout + noisy.stderr)[-3000:]
    assert PROGRESS.search(noisy.stdout + noisy.stderr), (noisy.stdout + noisy.stderr)[-3000:]

    t0 = time.monotonic()
    big = head.submit(*common, "--name", "too-big", "--workers", "8", timeout=120)
    seconds = time.monotonic() - t0
    log = big.stdout + big.stderr
    assert big.returncode != 0, log[-3000:]
    assert seconds < 60, f"the oversized job took {seconds:.0f} s to fail"
    assert "this cluster cannot run this job" in log and "training workers: 8 x {CPU 1}" in log, log[-3000:]
    assert "--workers 7" in log and "Traceback" not in log, log[-3000:]


def test_an_asha_sweep_runs_while_another_ray_instance_is_up(head: Head, prepared_dir: Path, tmp_path: Path):
    # The session's instance told its workers where their cluster is (runtime.init_ray): Ray Train's
    # placement-group cleaner and the state API no longer auto-detect, find two instances, and fail.
    from vidgen_ray.tune.run import run_sweep, state_api_problem
    from vidgen_ray.tune.sweep import sweep_from_dict

    assert state_api_problem() is None
    # 2 workers a trial on the session's 4 CPUs: a stopped trial whose workers' placement group were
    # never freed would leave the third trial's decode stage no CPU, and the sweep would not finish.
    good, bad, again = 3.0e-3, 1.0e-6, 2.0e-3
    sweep = sweep_from_dict({
        "name": "beside", "base": "dit-debug", "storage_path": str(tmp_path),
        "fixed": {"data.source": str(prepared_dir), "data.clip.fps": 8, "data.augment.temporal_shift": 0,
                  "train.max_steps": 6, "train.val_every": 2, "train.checkpoint_every": 6, "train.batch_size": 2,
                  "train.val_batches": 2, "train.num_samples": 0, "parallel.max_failures": 0},
        "space": {"train.optim.lr": {"loguniform": [1.0e-6, 1.0e-2]}},
        "metric": "val_loss", "mode": "min", "points_to_evaluate": [{"train.optim.lr": lr} for lr in (good, bad, again)],
        "num_trials": 3, "max_concurrent": 1, "resources": {"workers": 2, "cpus_per_worker": 1},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    })
    result = run_sweep(sweep)
    rows = {r["train.optim.lr"]: r for r in result.rows}
    assert result.complete and rows[good]["status"] == "completed", result.rows
    assert rows[bad]["status"] == "stopped" and rows[bad]["iterations"] < 3, result.rows
    assert rows[again]["status"] in ("completed", "stopped") and rows[again]["iterations"] >= 1, result.rows
