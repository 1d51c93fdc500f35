"""A `ray start --head` instance of a test's own on 127.0.0.1: its own ports and temp dir, a user's
shell environment, `ray job submit` through its dashboard, and a stop that ends exactly the processes
it started (never `ray stop`, which ends every Ray on the host). Optionally with a real autoscaler:
Ray's monitor runs the fake multi-node provider, which starts real raylets on this host when the
autoscaler launches a node type.

    python tests/ray_head.py         # start one with an autoscaler, print its address, stop it on Enter
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"


def train_job_args(data, runs, *sets: str) -> tuple[str, ...]:
    """`jobs/train.py` arguments of a 4-step gan-debug run on the synthetic set that checkpoints at its end."""
    fixed = ("train.max_steps=4", "train.checkpoint_every=4", "train.log_every=2", "train.batch_size=2",
             "data.clip.fps=8", "data.augment.temporal_shift=0", *sets)
    return ("jobs/train.py", "--preset", "gan-debug", "--data", str(data), "--storage", str(runs),
            *(a for s in fixed for a in ("--set", s)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Head:
    """A `ray start --head` instance of its own: ports, temp dir, and the processes it started."""

    def __init__(self, cpus: int, node_types: dict[str, dict] | None = None, max_workers: int = 4) -> None:
        """``node_types``: worker node types for a real autoscaler ({name: {"resources": {...},
        "max_workers": n}}), launched as raylets on this host; None: no autoscaler (Ray's read-only monitor)."""
        # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
        self.temp = Path(tempfile.mkdtemp(prefix="vrh", dir="/tmp"))
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        # A user's shell: none of this process's Ray, Ray Data or vidgen settings (vidgen_ray.runtime sets
        # RAY_DATA_DISABLE_PROGRESS_BARS when imported), so the job gets only what jobs/runtime_env.yaml gives.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIDGEN_"))}
        self.env.update({"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
                         "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
        self.autoscaling_config = self._autoscaling_config(cpus, node_types, max_workers) if node_types else None
        if node_types:
            # The fake provider refuses to run without it; the monitor reconciles every second.
            self.env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
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
             "--disable-usage-stats",
             *([f"--autoscaling-config={self.autoscaling_config}"] if self.autoscaling_config else [])],
            env=self.env, check=True, capture_output=True, text=True, timeout=120)

    def _autoscaling_config(self, cpus: int, node_types: dict[str, dict], max_workers: int) -> Path:
        """The cluster config `ray up` would hand the monitor (~/ray_bootstrap_config.yaml on a real head)."""
        types = {"ray.head.default": {"resources": {"CPU": cpus}, "node_config": {}, "max_workers": 0}}
        for name, spec in node_types.items():
            types[name] = {"node_config": {}, "min_workers": 0, **spec}
        config = {
            "cluster_name": "vidgen-test", "max_workers": max_workers, "upscaling_speed": 1.0, "idle_timeout_minutes": 1,
            # "external" with the fake provider's class: the "fake_multinode" shorthand needs a defaults
            # file the Ray wheel does not ship.
            "provider": {"type": "external", "module": FAKE_PROVIDER, "gcs_address": f"127.0.0.1:{self.gcs_port}",
                         "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": types, "head_node_type": "ray.head.default",
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }
        path = self.temp / "autoscaling.json"
        path.write_text(json.dumps(config))
        return path

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




if __name__ == "__main__":
    head = Head(cpus=1, node_types={"cpu2": {"resources": {"CPU": 2}, "max_workers": 2}})
    try:
        print(f"ray job submit --address {head.address} --working-dir . --runtime-env jobs/runtime_env.yaml -- ...")
        input("Enter stops it: ")
    finally:
        head.stop()
