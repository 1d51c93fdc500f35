"""Search hyperparameters with Ray Tune + Optuna (TPE) + ASHA; every trial is a real training run.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune.py tuning/dit_sweep.yaml --data s3://bucket/videos --storage s3://bucket/sweeps \
        --set parallel.use_gpu=true --set parallel.worker_resource=train
    python jobs/tune.py tuning/demo_sweep.yaml --data ./outputs/synth     # local, CPU, a few minutes

Rerunning the same command resumes an interrupted sweep. The sweep folder ends with results.parquet,
best.yaml (train it: python jobs/train.py --config .../best.yaml) and metric.png.
"""

import sys

from vidgen_ray.tune.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
