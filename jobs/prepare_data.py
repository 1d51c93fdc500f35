"""Probe, clean and decode a bucket of videos into clip shards plus an accounting report.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/prepare_data.py s3://bucket/videos --out s3://bucket/clips --frames 16 --fps 8 --size 256x256 \
        --set decode_resource=decode
    python jobs/prepare_data.py ../shared/videos --out ./outputs/clips --frames 8 --fps 8 --size 64x64   # local
    python jobs/prepare_data.py ../shared/videos --probe-only --report ./outputs/probe                   # report only
    python jobs/prepare_data.py s3://bucket/videos --out s3://bucket/clips --size 256x256 \
        --encode s3://bucket/runs/vae-b/checkpoint_000100000     # + VAE latents for latent DiTs (docs/conditioning.md)
"""

import sys

from vidgen_ray.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--probe-only" in args:
        args.remove("--probe-only")
        sys.exit(main(["data", "probe", *args]))
    sys.exit(main(["data", "prepare", *args]))
