"""The cluster path exactly as a user takes it (issue 17): `ray start --head` on 127.0.0.1 with ports
and a temp dir of its own, `ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml`, a
job that runs to a checkpoint with a readable log, and an over-sized job that the preflight refuses
within seconds. The test session's own Ray instance stays up all the while (a second instance on the
host), and only the processes this test started are stopped (never `ray stop`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vidgen_ray.train.checkpoint import latest_checkpoint, read_meta

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Fragments of Ray Data's progress bars and its "logging progress" fallback.
PROGRESS = re.compile(r"it/s\]|row/s\]|\d+%\|| Running Dataset|Running: \d|SplitCoordinator.*\d+/\d+")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Head:
    """A `ray start --head` instance of its own: ports, temp dir, and the processes it started."""

    def __init__(self, cpus: int) -> None:
        # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
        self.temp = Path(tempfile.mkdtemp(prefix="vrh", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        # A user's shell: none of this process's Ray, Ray Data or vidgen settings (vidgen_ray.runtime sets
        # RAY_DATA_DISABLE_PROGRESS_BARS when imported), so the job gets only what jobs/runtime_env.yaml gives.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIDGEN_"))}
        self.env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        low = 20000 + free_port() % 20000 // 100 * 100  # a private worker port range, below the ephemeral ones
        try:
            self._start(cpus, low)
        except BaseException:
            self.stop()  # whatever a half-started instance left running
            raise
        self.address = f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, cpus: int, low: int) -> None:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1",
             f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
             "--include-dashboard=true", f"--temp-dir={self.temp}",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
             f"--object-manager-port={free_port()}", f"--min-worker-port={low}", f"--max-worker-port={low + 99}",
             "--disable-usage-stats"],
            env=self.env, check=True, capture_output=True, text=True, timeout=120)

    def _ours(self, proc) -> bool:
        """Started by this instance: its temp dir or its GCS port on the command line (GCS, raylet,
        dashboard, monitor, client server), or a child of one of those (workers renamed ray::...)."""
        try:
            line = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001 - a process that ended meanwhile
            return False
        return str(self.temp) in line or f"127.0.0.1:{self.gcs_port}" in line

    def submit(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", self.address, "--working-dir", ".",
             "--runtime-env", "jobs/runtime_env.yaml", "--", "python", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        import psutil

        # Everything whose command line names this instance's temp dir (workers included), and nothing else.
        roots = [p for p in psutil.process_iter() if self._ours(p)]
        procs = {p.pid: p for p in roots}
        for root in roots:
            try:
                procs.update({c.pid: c for c in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        for p in procs.values():
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


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
    common = ("jobs/train.py", "--preset", "gan-debug", "--data", str(synth_dir), "--storage", str(runs),
              "--set", "train.max_steps=4", "--set", "train.checkpoint_every=4", "--set", "train.log_every=2",
              "--set", "train.batch_size=2", "--set", "data.clip.fps=8", "--set", "data.augment.temporal_shift=0")
    ok = head.submit(*common, "--name", "fits", "--workers", "2")
    log = ok.stdout + ok.stderr
    assert ok.returncode == 0 and "succeeded" in log, log[-4000:]
    state = read_meta(latest_checkpoint(str(runs / "fits")))["state"]
    assert state["step"] == 4
    # A readable log: vidgen lines, no progress bars (the SplitCoordinator's included), no tracebacks.
    assert not PROGRESS.search(log), [line for line in log.splitlines() if PROGRESS.search(line)][:5]
    assert "Traceback" not in log and "never retrieved" not in log, log[-4000:]
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) < 120, "\n".join(lines)
    assert sum(" INFO vidgen." in line for line in lines) >= 5

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
