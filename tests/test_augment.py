"""Augmentation: one draw per clip, identical on every frame, deterministic under a seed."""

from __future__ import annotations

import numpy as np
import pytest

from vidgen_ray.data.augment import ClipAugment, apply, draw, frame_indices
from vidgen_ray.data.config import AugmentConfig

ALL_ON = AugmentConfig(hflip=0.5, vflip=0.5, rotate_p=1.0, zoom_p=1.0, jitter_p=1.0, temporal_shift=3, speed_p=1.0,
                       noise_p=0.0)


def still_clip(frames: int = 8, seed: int = 0) -> np.ndarray:
    """The same textured picture on every frame."""
    img = np.random.default_rng(seed).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    return np.repeat(img[None], frames, axis=0)


@pytest.mark.parametrize("seed", range(6))
def test_every_frame_gets_the_same_transform(seed: int):
    clip = still_clip(12)
    aug = draw(ALL_ON, np.random.default_rng(seed), frames=8, decoded=12)
    out = apply(clip, aug, frames=8)
    assert out.shape == (8, 32, 48, 3) and out.dtype == np.uint8
    for f in out[1:]:
        np.testing.assert_array_equal(f, out[0])
    assert not np.array_equal(out[0], clip[0])  # something did happen


def test_same_seed_same_result_different_seed_different_result():
    clip = np.random.default_rng(1).integers(0, 256, size=(12, 32, 48, 3), dtype=np.uint8)
    cfg = AugmentConfig(rotate_p=1.0, zoom_p=1.0, jitter_p=1.0, noise_p=1.0, temporal_shift=2)
    a = apply(clip, draw(cfg, np.random.default_rng(7), 8, 12), 8)
    b = apply(clip, draw(cfg, np.random.default_rng(7), 8, 12), 8)
    c = apply(clip, draw(cfg, np.random.default_rng(8), 8, 12), 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flips_are_exact():
    clip = still_clip(4)
    np.testing.assert_array_equal(apply(clip, ClipAugment(hflip=True)), clip[:, :, ::-1])
    np.testing.assert_array_equal(apply(clip, ClipAugment(vflip=True)), clip[:, ::-1])
    np.testing.assert_array_equal(apply(clip, ClipAugment()), clip)


def test_temporal_shift_and_speed_pick_frame_indices():
    assert frame_indices(ClipAugment(start=2), 4, 10).tolist() == [2, 3, 4, 5]
    assert frame_indices(ClipAugment(speed=2.0), 4, 10).tolist() == [0, 2, 4, 6]
    assert frame_indices(ClipAugment(speed=0.5), 4, 10).tolist() == [0, 0, 1, 2]  # numpy rounds half to even
    cfg = AugmentConfig(temporal_shift=3, speed_p=1.0, speed_max=1.5)
    decoded = 8 + cfg.extra_frames(8)
    for seed in range(50):
        a = draw(cfg, np.random.default_rng(seed), 8, decoded)
        idx = a.start + np.round(np.arange(8) * a.speed)
        assert idx.max() <= decoded - 1  # never runs past the decoded frames (no clamping needed)


def test_brightness_and_noise_move_pixels_as_asked():
    clip = np.full((2, 16, 16, 3), 100, np.uint8)
    brighter = apply(clip, ClipAugment(brightness=1.2))
    assert abs(brighter.mean() - 120) < 0.6
    noisy = apply(clip, ClipAugment(noise_std=8.0, noise_seed=3))
    assert 6.0 < noisy.astype(float).std() < 10.0
