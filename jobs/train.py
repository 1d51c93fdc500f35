"""Train a video generator on Ray Train.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py --preset dit-b --data s3://bucket/videos --storage s3://bucket/runs \
        --workers 8 --strategy fsdp2 --set parallel.use_gpu=true --set parallel.precision=bf16
    python jobs/train.py --preset gan-debug --data ./outputs/synth --set train.max_steps=50   # local, CPU

Rerunning with the same --name and --storage resumes from the newest checkpoint.
"""

import sys

from vidgen_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
