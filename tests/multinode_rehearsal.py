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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()

    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    sys.path.insert(0, str(REPO))
    from vidgen_ray.checkpoints import registered_checkpoint

    env = {k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": 0,
        "node_ip_address": "127.0.0.1",
        # The head's agent serves the job API. Its default port (52365) belongs to whichever Ray on
        # this host took it first (the test session's): without a port of its own, jobs find
        # "No available agent". Worker nodes already get random ones from cluster_utils.
        "dashboard_agent_listen_port": free_port(),
    })
    result: dict = {"ok": False}
    try:
        decode = cluster.add_node(num_cpus=2, resources={"decode": 2}, node_ip_address="127.0.0.1")
        trains = [cluster.add_node(num_cpus=1, resources={"train": 1}, node_ip_address="127.0.0.1") for _ in range(3)]
        cluster.wait_for_nodes()
        import ray

        context = ray.init(address=cluster.address)
        dashboard = "http://" + context.dashboard_url
        ray.shutdown()  # the job below is this rehearsal's only driver of interest
        client = JobSubmissionClient(dashboard)
        name = "rehearsal"
        entrypoint = " ".join([
            sys.executable, str(REPO / "jobs" / "train.py"), "--preset", "vae-debug", "--data", args.data,
            "--storage", args.storage, "--name", name, "--workers", "2", "--strategy", "ddp",
            "--set", "parallel.worker_resource=train", "--set", "data.decode_resource=decode",
            "--set", "parallel.max_failures=3", "--set", f"train.max_steps={args.steps}", "--set", "train.batch_size=2",
            "--set", "train.checkpoint_every=4", "--set", "train.log_every=1", "--set", "train.num_samples=0",
            "--set", "data.clip.frames=8", "--set", "data.clip.fps=8", "--set", "train.optim.lr=3e-3",
        ])
        def submit():
            try:  # the head's job agent needs a few seconds after the node is up
                return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {**env, "OMP_NUM_THREADS": "1"}})
            except RuntimeError as exc:
                if "No available agent" in str(exc):
                    return None
                raise

        job = wait_for(submit, 120, "the job agent", interval=2.0)
        result["job"] = job

        def train_worker_nodes():
            workers = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                                  raise_on_missing_output=False)
            return {a.node_id for a in workers} if len(workers) == 2 else None

        # Where the workers are is looked up before the checkpoint, so the kill follows it at once
        # (state API calls take seconds on a loaded machine: long enough for the run to finish).
        worker_nodes = wait_for(train_worker_nodes, 400, "two training workers", interval=1.0)
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

        status = wait_for(lambda: (s := client.get_job_status(job)) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and s,
                          600, "the job to finish", interval=1.0)
        result["status"] = str(status)
        logs = client.get_job_logs(job)
        result["log_tail"] = logs[-3000:]
        result["train_node_ids"] = [n.node_id for n in trains]
        result["ok"] = status == JobStatus.SUCCEEDED
    finally:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        cluster.shutdown()


if __name__ == "__main__":
    main()
