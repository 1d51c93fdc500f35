r"""Serve a trained checkpoint over HTTP on Ray Serve (POST /generate, GET /health, GET /metadata).

    python jobs/serve.py --checkpoint outputs/runs/demo/checkpoint_000004 --port 8000     # local, CPU
    curl -s -X POST 127.0.0.1:8000/generate -d '{"class": 3, "seed": 7, "steps": 8}' -o video.mp4
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/serve.py --checkpoint s3://bucket/runs/dit-b/checkpoint_000042 --detach \
        --set num_gpus=1 --set max_batch_size=16 --set max_ongoing_requests=32 --set max_replicas=4

Locally it blocks until Ctrl-C (the embedded Ray instance, and Serve with it, ends with this
process); with --detach on a cluster the app keeps running after the job ends.
"""

import sys

from vidgen_ray.serve.cli import add_serve_args, cmd_serve, main

if __name__ == "__main__":
    sys.exit(main(add_serve_args, cmd_serve, __doc__))
