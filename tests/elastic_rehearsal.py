"""An elastic run on a local multi-node cluster: 3 training nodes, one killed mid-run (the run goes on
with 2 from its last checkpoint without waiting for a replacement), a node added back (it grows to 3),
and the run completes. Run by tests/test_multinode.py in its own process.

    python tests/elastic_rehearsal.py --data DIR --storage DIR --out result.json

Nodes as in tests/multinode_rehearsal.py: a 0-CPU head, a 2-CPU decode node, and 1-CPU + {"train": 1}
training nodes (three at first). The job: ``--workers 2-3`` (parallel.num_workers=2-3), DDP, a global
batch of 3 micro-batches of 2 clips (one per worker on 3; 2 + 1, rotating, on 2), a checkpoint every 4 steps.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multinode_rehearsal import REPO, finish, parse_args, start_cluster, submit_job, train_entrypoint, train_workers, wait_for  # noqa: E402

CHECKPOINT_EVERY = 4


def main() -> None:
    args = parse_args(64)

    from ray.job_submission import JobStatus

    sys.path.insert(0, str(REPO))
    from vidgen_ray.checkpoints import read_meta, registered_checkpoint

    result: dict = {"ok": False, "events": []}
    t0 = time.time()

    def event(what: str, **kw) -> None:
        result["events"].append({"t": round(time.time() - t0, 1), "what": what, **kw})
        print(f"[{time.time() - t0:6.1f}s] {what} {kw}", flush=True)

    cluster, _, trains, add_train, dashboard, client = start_cluster(3)
    try:
        name = "elastic"
        entrypoint = train_entrypoint(args, name, "2-3", "parallel.elastic_resize_interval_s=5", "train.trackers=[]")
        assert f"train.checkpoint_every={CHECKPOINT_EVERY}" in entrypoint
        job = submit_job(client, entrypoint)
        run_dir = str(Path(args.storage) / name)

        workers = lambda n: train_workers(dashboard, n)  # noqa: E731

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

        logs = finish(client, job, result, tail=4000)
        event("finished", status=result["status"])
        result["resize_lines"] = [line for line in logs.splitlines() if "worker group is now" in line]
    finally:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        cluster.shutdown()


if __name__ == "__main__":
    main()
