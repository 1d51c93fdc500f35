"""Evaluate a checkpoint against real clips: FID, FVD, KID, PSNR, SSIM, temporal consistency, latency.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py --checkpoint s3://bucket/runs/dit-b/checkpoint_000100000 \
        --data s3://bucket/videos --videos 2048 --out s3://bucket/evals/dit-b
    python jobs/evaluate.py --checkpoint ./outputs/demo/runs/demo-dit/checkpoint_000000500 --videos 16   # local
"""

import sys

from vidgen_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
