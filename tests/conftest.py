"""Shared fixtures: one local Ray instance per test session, one SeaweedFS S3 server per session.

Environment for Ray is set here, before anything imports ray, so that every test and every Ray
worker it starts sees the same loopback-only, auth-disabled, telemetry-free settings.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Spawned workers import torch; keep them single-threaded on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from s3_server import s3_server, s3_bucket  # noqa: E402,F401  (fixtures)
from mlflow_server import mlflow_server  # noqa: E402,F401  (fixture)
from gcs_server import gcs_server, gcs_bucket  # noqa: E402,F401  (fixtures)
from azure_server import azure_server, azure_container  # noqa: E402,F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = (REPO.parent / "shared" / "videos").resolve()


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The 26 real clips of ../shared/videos (read in place, never copied into the project)."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"{SHARED_VIDEOS} is missing: the real-clip tests need ../shared/videos")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def ray_session(s3_server, gcs_server, azure_server):
    """A local Ray instance shared by the whole test session (started once, loopback only).

    Its workers get the S3 server's AWS_* variables and the GCS and Azure emulators' (where they run),
    so pipelines reading s3://, gs:// and abfs:// URIs in Ray tasks reach them the way they would reach
    real buckets through the environment.
    """
    import ray

    from vidgen_ray.runtime import init_ray

    # 2 physical cores here; logical CPUs let 2 train workers and decode actors coexist. The dashboard
    # is on: Tune's ASHA frees a stopped trial's workers through the state API it serves.
    init_ray(num_cpus=int(os.environ.get("VIDGEN_TEST_RAY_CPUS", "4")), for_tests=True, include_dashboard=True,
             env={**s3_server.env(), **(gcs_server.env() if gcs_server else {}),
                  **(azure_server.env() if azure_server else {})})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset (16 good videos + the 5 broken kinds), made once per session."""
    from vidgen_ray.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(str(out), videos=16, seed=0)
    return out


@pytest.fixture(scope="session")
def prepared_dir(ray_session, synth_dir, tmp_path_factory) -> Path:
    """The synthetic dataset decoded once into parquet clip shards (8 frames of 32x32 at 8 fps),
    so training tests read clips instead of decoding videos."""
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.prepare import prepare

    cfg = DataConfig(source=str(synth_dir))
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    cfg.clip.clips_per_video = 2
    # salt "d": 11 good videos in train and 5 in val for this seed (a plain hash put too few in val)
    cfg.split.train, cfg.split.val, cfg.split.test, cfg.split.salt = 0.7, 0.3, 0.0, "d"
    out = tmp_path_factory.mktemp("prepared")
    prepare(cfg, str(out))
    return out


def tiny_experiment(preset: str, data: Path, storage: str, name: str, *sets: str):
    """A few-step experiment on CPU: 2 workers x batch 2, logged and checkpointed often."""
    from vidgen_ray.config import load_experiment

    base = [f"data.source={data}", f"storage_path={storage}", f"name={name}", "data.clip.fps=8",
            "train.batch_size=2", "train.max_steps=4", "train.log_every=1", "train.checkpoint_every=2",
            "train.num_samples=2", "train.val_batches=2", "parallel.num_workers=2", "parallel.max_failures=0",
            "data.augment.temporal_shift=0"]
    return load_experiment(preset, sets=base + list(sets))


@pytest.fixture(scope="session")
def trained_checkpoints(ray_session, prepared_dir, tmp_path_factory) -> dict[str, str]:
    """Checkpoints made by real (short) training runs, for the serve / eval / tune tests."""
    from vidgen_ray.train.run import train

    runs = tmp_path_factory.mktemp("trained")
    out = {}
    for preset in ("dit-debug", "gan-debug"):
        # The DiT predicts the velocity here: after 4 steps a data-predicting one draws near-grey clips
        # for every seed, and these checkpoints test serving and evaluation mechanics (seeds, batching).
        extra = ("model.prediction=velocity",) if preset == "dit-debug" else ()
        cfg = tiny_experiment(preset, prepared_dir, str(runs), preset, "parallel.strategy=ddp", *extra)
        result = train(cfg)
        out[preset] = result.checkpoint.path
    return out
