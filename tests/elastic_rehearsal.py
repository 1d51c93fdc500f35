"""An elastic run on a local multi-node cluster: 3 training nodes, one killed mid-run (the run goes on
with 2 from its last checkpoint without waiting for a replacement), a node added back (it grows to 3),
and the run completes. Run by tests/test_multinode.py in its own process.

    python tests/elastic_rehearsal.py --data DIR --storage DIR --out result.json

Nodes as in tests/multinode_rehearsal.py: a 0-CPU head, a 2-CPU decode node, and 1-CPU + {"train": 1}
training nodes (three at first). The job: ``--workers 2-3`` (parallel.num_workers=2-3), DDP, a global
batch of 3 micro-batches of 2 clips (one per worker on 3; 2 + 1, rotating, on 2), a checkpoint every 4 steps.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multinode_rehearsal import REPO, free_port, wait_for  # noqa: E402  (also sets the Ray env vars)

CHECKPOINT_EVERY = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()

    import os

    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    sys.path.insert(0, str(REPO))
    from vidgen_ray.checkpoints import read_meta, registered_checkpoint

    env = {k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": 0,
        "node_ip_address": "127.0.0.1", "dashboard_agent_listen_port": free_port(),
    })
    result: dict = {"ok": False, "events": []}
    t0 = time.time()

    def event(what: str, **kw) -> None:
        result["events"].append({"t": round(time.time() - t0, 1), "what": what, **kw})
        print(f"[{time.time() - t0:6.1f}s] {what} {kw}", flush=True)

    try:
        cluster.add_node(num_cpus=2, resources={"decode": 2}, node_ip_address="127.0.0.1")
        add_train = lambda: cluster.add_node(num_cpus=1, resources={"train": 1}, node_ip_address="127.0.0.1")  # noqa: E731
        trains = [add_train() for _ in range(3)]
        cluster.wait_for_nodes()
        import ray

        context = ray.init(address=cluster.address)
        dashboard = "http://" + context.dashboard_url
        ray.shutdown()
        client = JobSubmissionClient(dashboard)
        name = "elastic"
        entrypoint = " ".join([
            sys.executable, str(REPO / "jobs" / "train.py"), "--preset", "vae-debug", "--data", args.data,
            "--storage", args.storage, "--name", name, "--workers", "2-3", "--strategy", "ddp",
            "--set", "parallel.worker_resource=train", "--set", "data.decode_resource=decode",
            "--set", "parallel.elastic_resize_interval_s=5", "--set", "parallel.max_failures=3",
            "--set", f"train.max_steps={args.steps}", "--set", "train.batch_size=2",
            "--set", f"train.checkpoint_every={CHECKPOINT_EVERY}", "--set", "train.log_every=1",
            "--set", "train.num_samples=0", "--set", "train.trackers=[]",
            "--set", "data.clip.frames=8", "--set", "data.clip.fps=8", "--set", "train.optim.lr=3e-3",
        ])

        def submit():
            try:
                return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {**env, "OMP_NUM_THREADS": "1"}})
            except RuntimeError as exc:
                if "No available agent" in str(exc):
                    return None
                raise

        job = wait_for(submit, 120, "the job agent", interval=2.0)
        run_dir = str(Path(args.storage) / name)

        def workers(n: int):
            alive = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                                raise_on_missing_output=False)
            return {a.node_id for a in alive} if len(alive) == n else None

        def finished() -> bool:
            return client.get_job_status(job) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)

        def registered_step() -> int:
            latest = registered_checkpoint(run_dir)
            return int(read_meta(latest)["state"]["step"]) if latest else 0

        def logged_step() -> int:
            steps = re.findall(r"step (\d+)/\d+", client.get_job_logs(job))
            return int(steps[-1]) if steps else 0

        nodes = wait_for(lambda: workers(3) or (finished() and "ended"), 400, "three training workers", interval=1.0)
        if nodes == "ended":
            raise RuntimeError("job ended before it had 3 workers:\n" + client.get_job_logs(job)[-4000:])
        event("3 workers")
        wait_for(lambda: registered_step() >= CHECKPOINT_EVERY or finished(), 400, "the first checkpoint", interval=0.1)
        victim = next(n for n in trains if n.node_id in nodes)
        killed_after_checkpoint = registered_step()
        cluster.remove_node(victim, allow_graceful=False)
        event("killed a train node", checkpoint=killed_after_checkpoint)
        result["step_at_kill"] = logged_step()  # an upper bound: logs lag a little behind the kill
        event("logged step at kill", step=result["step_at_kill"])

        wait_for(lambda: workers(2) or finished(), 300, "the group to restart on 2 workers", interval=1.0)
        event("2 workers")
        shrunk_from = registered_step()
        wait_for(lambda: registered_step() > shrunk_from or finished(), 300, "a checkpoint on 2 workers", interval=0.5)
        event("checkpoint on 2 workers", step=registered_step())
        add_train()
        event("added a train node")
        wait_for(lambda: workers(3) or finished(), 300, "the group to grow back to 3", interval=1.0)
        event("3 workers again")

        status = wait_for(lambda: (s := client.get_job_status(job)) in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                                           JobStatus.STOPPED) and s,
                          600, "the job to finish", interval=1.0)
        event("finished", status=str(status))
        result["status"] = str(status)
        logs = client.get_job_logs(job)
        result["log_tail"] = logs[-4000:]
        result["resize_lines"] = [line for line in logs.splitlines() if "worker group is now" in line]
        result["ok"] = status == JobStatus.SUCCEEDED
    finally:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        cluster.shutdown()


if __name__ == "__main__":
    main()
