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

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = (REPO.parent / "shared" / "videos").resolve()


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The 26 real clips of ../shared/videos (read in place, never copied into the project)."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"{SHARED_VIDEOS} is missing: the real-clip tests need ../shared/videos")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """A local Ray instance shared by the whole test session (started once, loopback only).

    Its workers get the S3 server's AWS_* variables, so pipelines reading s3:// URIs in Ray tasks
    reach SeaweedFS the way they would reach a real bucket through the environment.
    """
    import ray

    from vidgen_ray.runtime import init_ray

    # 2 physical cores here; logical CPUs let 2 train workers and decode actors coexist.
    init_ray(num_cpus=int(os.environ.get("VIDGEN_TEST_RAY_CPUS", "4")), for_tests=True, env=s3_server.env())
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset (16 good videos + the 5 broken kinds), made once per session."""
    from vidgen_ray.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(str(out), videos=16, seed=0)
    return out
