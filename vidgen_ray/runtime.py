"""Process-level setup: logging that reads well in ``ray job logs``, and connecting to Ray.

``init_ray()`` connects to the cluster a job was submitted to (``RAY_ADDRESS`` is set by
``ray job submit``) or else starts the embedded local default: loopback only, token auth off,
no usage stats. It never stops a Ray instance it did not start.
"""

from __future__ import annotations

import logging
import math
import os
import sys

from vidgen_ray.data.config import DataConfig

_LOCAL_ENV = {
    # Local instance only: a real cluster keeps its token authentication on.
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray Data's progress bars redraw many times a second: unreadable in `ray job logs`.
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}

_configured = False

# Before anything imports ray.data: its progress bars redraw many times a second, unreadable in
# `ray job logs`, and its fallback "logging progress" is as noisy. Users can still turn them on.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a record is emitted, not the stream it was created
    with (a test's capture, a notebook's redirect): a closed old stream would print a logging error
    with a traceback for every record."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(level: str | int | None = None) -> None:
    """One line per record: ``12:01:02 INFO vidgen.train | step 40 ...`` (idempotent)."""
    global _configured
    level = level or os.environ.get("VIDGEN_LOG_LEVEL", "INFO")
    root = logging.getLogger("vidgen")
    root.setLevel(level)
    if not _configured:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s | %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
        _configured = True


def get_logger(name: str) -> logging.Logger:
    setup_logging()
    return logging.getLogger(f"vidgen.{name}")


def set_local_ray_env() -> None:
    for key, value in _LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    include_dashboard: bool | None = None,
    for_tests: bool = False,
    env: dict[str, str] | None = None,
    workers_per_cpu: float = DataConfig.decode_tasks_per_cpu,
):
    """Connect to Ray: ``address`` / ``RAY_ADDRESS`` if given, else start a local instance.

    ``env`` adds environment variables for every Ray worker of a local instance (tests use it to
    point workers at their S3 server). ``workers_per_cpu`` is how many idle worker processes per CPU a
    local instance keeps warm (pass the run's ``data.decode_tasks_per_cpu``), see ``local_system_config``.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS")
    log = get_logger("runtime")
    if address:
        log.info("connecting to Ray at %s", address)
        context = ray.init(address=address, log_to_driver=True, runtime_env=_connected_runtime_env(address))
        quiet_ray_data()
        return context
    set_local_ray_env()
    # This instance's own GCS port, chosen now so that every worker can be told where its cluster is
    # (below): with another Ray on the host (a user's `ray start`, a notebook, a parallel CI job), Ray
    # Train's placement-group cleaner and the state API would otherwise auto-detect "the" cluster, find
    # two, and ASHA's stopped trials would keep their CPUs.
    gcs_port = _free_port()
    own = f"{_node_ip()}:{gcs_port}"
    if num_cpus is not None:
        # Logical CPUs: on a small machine, training workers and decode tasks must all be schedulable
        # (they time-share the real cores); never fewer than the machine has.
        num_cpus = max(num_cpus, os.cpu_count() or 1)
    if include_dashboard is None:
        # Tune's ASHA relies on the dashboard to clean up stopped trials; tests opt in when they need it.
        include_dashboard = not for_tests or os.environ.get("VIDGEN_TEST_DASHBOARD") == "1"
    os.environ["RAY_GCS_SERVER_PORT"] = str(gcs_port)  # read when the head starts, in this process
    try:
        context = _init_local(ray, num_cpus, workers_per_cpu, include_dashboard, for_tests, {
            **{k: os.environ[k] for k in _LOCAL_ENV}, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "RAY_ADDRESS": own, **(env or {})})
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    if context.address_info.get("gcs_address") != own:
        log.warning("the local Ray instance is at %s, not %s as its workers were told", context.address_info.get("gcs_address"), own)
    log.info("started a local Ray instance (dashboard: %s)", context.dashboard_url or "off")
    quiet_ray_data()
    return context


def _init_local(ray, num_cpus, workers_per_cpu, include_dashboard, for_tests, worker_env):
    return ray.init(
        address="local",  # a new instance: never attach to whatever `ray start` ran last on this host
        num_cpus=num_cpus,
        _system_config=local_system_config(num_cpus or os.cpu_count() or 1, workers_per_cpu),
        include_dashboard=include_dashboard,
        dashboard_host="127.0.0.1",
        configure_logging=True,
        logging_level=logging.WARNING if for_tests else logging.INFO,
        log_to_driver=True,
        runtime_env={"env_vars": worker_env},
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _node_ip() -> str:
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def _connected_runtime_env(address: str) -> dict:
    """Env vars for the workers of a driver connected to a cluster: no Ray Data progress bars in any
    process (the SplitCoordinator's redraw 3 lines a second into the job log), and the cluster's own
    GCS address for Ray's auto-detection (several instances on one host). Keys the submitted job's
    runtime env already sets are left to it: Ray refuses to merge the same key twice."""
    import json

    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    taken = set(((job.get("runtime_env") or {}).get("env_vars") or {}))
    env = {"RAY_DATA_DISABLE_PROGRESS_BARS": os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS", "1")}
    if ":" in address and "://" not in address and address not in ("auto", "local"):
        env["RAY_ADDRESS"] = address  # ip:port of the GCS, as `ray job submit` hands it to the entrypoint
    env = {k: v for k, v in env.items() if k not in taken}
    return {"env_vars": env} if env else {}


def local_system_config(num_cpus: int, workers_per_cpu: float) -> dict:
    """Ray system config of a local instance. Ray keeps at most one *idle* worker process per CPU and
    kills the others after a second (its ``num_workers_soft_limit``); a decode pool of
    ``data.decode_tasks_per_cpu`` > 1 tasks per CPU would lose its extra processes at the end of every
    stream and start them again for the next (a validation pass, a sweep trial, a benchmark round),
    each paying a Ray worker start and the torch and PyAV imports again (BENCHMARKS.md: a 3-pass 2-CPU
    stream's decode processes used 23.4 CPU-s so, 18.8 with the pool kept, 18.2 on 1 CPU). On a
    cluster, set ``RAY_num_workers_soft_limit`` where ``ray start`` runs (docs/cluster.md)."""
    if workers_per_cpu <= 1:
        return {}  # Ray's default already keeps one per CPU
    return {"num_workers_soft_limit": math.ceil(num_cpus * workers_per_cpu)}


def quiet_ray_data() -> None:
    """No progress bars and no per-dataset banner in this process's DataContext (the Trainer
    propagates it to its workers)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
