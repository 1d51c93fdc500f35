r"""Serve latency benchmark: p50/p95/p99, throughput and errors over (batch size x concurrency),
with the bare model timed in-process in the same run (Serve's overhead as a ratio).

    python jobs/serve_bench.py --checkpoint outputs/runs/demo/checkpoint_000004 --quick   # local, CPU
    python jobs/serve_bench.py --checkpoint CKPT --concurrency 1,2,4,8,16 --batch-sizes 1,4,8 \
        --json outputs/bench/serve_latency.json --png outputs/bench/serve_latency.png --markdown
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/serve_bench.py --checkpoint s3://bucket/runs/dit-b/checkpoint_000042 --set num_gpus=1

The load comes from this process to the Serve proxy on 127.0.0.1 (the head node on a cluster).
"""

import sys

from vidgen_ray.serve.cli import add_bench_args, cmd_bench, main

if __name__ == "__main__":
    sys.exit(main(add_bench_args, cmd_bench, __doc__))
