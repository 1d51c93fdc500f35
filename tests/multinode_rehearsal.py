"""A multi-node cluster on 127.0.0.1, a training job submitted through the head's job API, and a
dead node in the middle of it. Run by tests/test_multinode.py in its own process (a driver can be
connected to one Ray cluster only, and the test session already has one).

    python tests/multinode_rehearsal.py --data DIR --storage DIR --out result.json

Nodes (all on this machine, each its own raylet):
    head     0 CPUs: drivers, the Train controller, the job supervisor
    decode   2 CPUs + {"decode": 2}: the only node where decode tasks may run
    train-N  1 CPU + {"train": 1} (three of them): training workers, one per node

The job trains with 2 workers; when it has checkpointed, the node of one training worker is
killed (no graceful shutdown). Ray Train restarts the worker group on the remaining train nodes
and resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def parse_args(default_steps: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=default_steps)
    return parser.parse_args()


def ray_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}


def start_cluster(train_nodes: int):
    """head (0 CPUs, dashboard, job API), a decode node and ``train_nodes`` training nodes, all raylets on
    127.0.0.1. Returns (cluster, decode node, train nodes, add_train_node, dashboard URL, job client)."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobSubmissionClient

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": 0,
        "node_ip_address": "127.0.0.1",
        # The head's agent serves the job API. Its default port (52365) belongs to whichever Ray on
        # this host took it first (the test session's): without a port of its own, jobs find
        # "No available agent". Worker nodes already get random ones from cluster_utils.
        "dashboard_agent_listen_port": free_port(),
    })
    decode = cluster.add_node(num_cpus=2, resources={"decode": 2}, node_ip_address="127.0.0.1")
    add_train = lambda: cluster.add_node(num_cpus=1, resources={"train": 1}, node_ip_address="127.0.0.1")  # noqa: E731
    trains = [add_train() for _ in range(train_nodes)]
    cluster.wait_for_nodes()
    import ray

    context = ray.init(address=cluster.address)
    dashboard = "http://" + context.dashboard_url
    ray.shutdown()  # the job is the rehearsal's only driver of interest
    return cluster, decode, trains, add_train, dashboard, JobSubmissionClient(dashboard)


def submit_job(client, entrypoint: str) -> str:
    """Submit once the head's job agent answers (a few seconds after the node is up)."""

    def submit():
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {**ray_env(), "OMP_NUM_THREADS": "1"}})
        except RuntimeError as exc:
            if "No available agent" in str(exc):
                return None
            raise

    return wait_for(submit, 120, "the job agent", interval=2.0)


def train_workers(dashboard: str, n: int):
    """The nodes of the run's training workers once exactly ``n`` are alive, else None."""
    from ray.util.state import list_actors

    workers = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                          raise_on_missing_output=False)
    return {a.node_id for a in workers} if len(workers) == n else None


def train_entrypoint(args: argparse.Namespace, name: str, workers: str, *sets: str) -> str:
    """The rehearsals' training job: vae-debug on 8 x 32 x 32 clips, DDP workers on the train nodes, decoding on
    the decode node, a checkpoint every 4 steps, every step logged."""
    flags = ["parallel.worker_resource=train", "data.decode_resource=decode", "parallel.max_failures=3",
             f"train.max_steps={args.steps}", "train.batch_size=2", "train.checkpoint_every=4", "train.log_every=1",
             "train.num_samples=0", "data.clip.frames=8", "data.clip.fps=8", "train.optim.lr=3e-3", *sets]
    return " ".join([sys.executable, str(REPO / "jobs" / "train.py"), "--preset", "vae-debug", "--data", args.data,
                     "--storage", args.storage, "--name", name, "--workers", workers, "--strategy", "ddp",
                     *(x for flag in flags for x in ("--set", flag))])


def finish(client, job: str, result: dict, tail: int = 3000) -> str:
    """Wait for the job to end; record its status and log tail in ``result``; return its whole log."""
    from ray.job_submission import JobStatus

    ended = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    status = wait_for(lambda: (s := client.get_job_status(job)) in ended and s, 600, "the job to finish", interval=1.0)
    logs = client.get_job_logs(job)
    result.update(status=str(status), log_tail=logs[-tail:], ok=status == JobStatus.SUCCEEDED)
    return logs


def main() -> None:
    args = parse_args(16)

    from ray.job_submission import JobStatus
    from ray.util.state import list_tasks

    sys.path.insert(0, str(REPO))
    from vidgen_ray.checkpoints import registered_checkpoint

    result: dict = {"ok": False}
    cluster, decode, trains, _, dashboard, client = start_cluster(3)
    try:
        name = "rehearsal"
        entrypoint = train_entrypoint(args, name, "2")
        job = submit_job(client, entrypoint)
        result["job"] = job

        # Where the workers are is looked up before the checkpoint, so the kill follows it at once
        # (state API calls take seconds on a loaded machine: long enough for the run to finish).
        worker_nodes = wait_for(lambda: train_workers(dashboard, 2), 400, "two training workers", interval=1.0)
        result["train_worker_nodes_before"] = sorted(worker_nodes)
        victim = next(n for n in trains if n.node_id in worker_nodes)
        # Killed once Ray Train has *registered* a checkpoint (every rank reported it): a node that
        # dies while the ranks report leaves one Ray never registered, and the run restarts from
        # scratch, which is correct but not what this rehearsal is about.
        run_dir = str(Path(args.storage) / name)
        registered = lambda: registered_checkpoint(run_dir) is not None  # noqa: E731
        wait_for(lambda: registered() or client.get_job_status(job) in (JobStatus.FAILED, JobStatus.STOPPED),
                 400, "the first checkpoint", interval=0.1)
        if not registered():
            raise RuntimeError("job ended before its first checkpoint:\n" + client.get_job_logs(job)[-4000:])
        result["killed_node"] = victim.node_id
        cluster.remove_node(victim, allow_graceful=False)
        result["killed_at"] = time.time()

        # Where decoding ran: on the decode node only.
        tasks = list_tasks(address=dashboard, filters=[("name", "=", "ReadStreamItems->MapBatches(read_units)")], limit=1000,
                           raise_on_missing_output=False)
        tasks += list_tasks(address=dashboard, filters=[("name", "=", "MapBatches(read_units)")], limit=1000,
                            raise_on_missing_output=False)
        result["decode_task_nodes"] = sorted({t.node_id for t in tasks if t.node_id})
        result["decode_node"] = decode.node_id

        finish(client, job, result)
        result["train_node_ids"] = [n.node_id for n in trains]
    finally:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        cluster.shutdown()


if __name__ == "__main__":
    main()
