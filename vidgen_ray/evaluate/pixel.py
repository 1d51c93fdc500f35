"""PSNR and SSIM between a generated (or reconstructed) video and its reference, per frame and per video.

    python -c "import numpy as np; from vidgen_ray.evaluate.pixel import psnr, ssim; \
a = np.random.randint(0, 256, (4, 64, 64, 3), np.uint8); print(psnr(a, a), ssim(a, a))"    # inf 1.0

Inputs are [T, H, W, C] videos or [H, W, C] frames, uint8 or float, compared in float64.

SSIM is the standard Wang et al. definition as scikit-image computes it with
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=R, channel_axis=-1)``: an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1 = 0.01, K2 = 0.03, population (not sample) variances, the SSIM map averaged over the pixels at
least 5 from the border (where the window fits; scikit-image filters the padded image and then crops
exactly those, so the border handling never enters), then over channels. torchmetrics' SSIM differs
(it averages the padded border too). A video's SSIM is the mean over its frames.

PSNR of a video is computed from the MSE over all of its frames (per video), and a set of videos
reports the mean of the per-video values; ``psnr_per_frame`` gives the per-frame curve.

``high_frequency_energy`` needs no reference: the mean absolute difference of horizontally adjacent
pixels, over data_range. Generated clips are judged by its ratio to real clips' (1 = the data's): speckle
left by a sampler raises it, blur lowers it, and FVD at small N sees neither reliably.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, hence the 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_frames(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [T, H, W, C] or [H, W, C] arrays -> float64 tensors [T, C, H, W]."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"compared arrays must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"expected a video [T, H, W, C] or a frame [H, W, C], got shape {a.shape}")
    to_tensor = lambda x: torch.from_numpy(np.array(x, dtype=np.float64)).permute(0, 3, 1, 2)  # a writable copy
    return to_tensor(a), to_tensor(b)


def _mse_to_psnr(mse: np.ndarray, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)  # mse == 0 -> +inf, as identical inputs should


def psnr_per_frame(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR of each frame, [T] (one value for a single frame)."""
    x, y = _as_frames(a, b)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3)).numpy()
    return _mse_to_psnr(mse, data_range)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR of a video (MSE over all its frames) or of a frame, in dB; +inf when identical."""
    x, y = _as_frames(a, b)
    return float(_mse_to_psnr(np.array(((x - y) ** 2).mean().item()), data_range))


def _gaussian_window(device: torch.device) -> torch.Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5 -> an 11-tap window
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of [N, 1, H, W], keeping only positions where the window fits."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim_per_frame(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each frame, [T] (mean SSIM map over valid pixels, then mean over channels)."""
    x, y = _as_frames(a, b)
    t, c, h, w = x.shape
    g = _gaussian_window(x.device)
    if h < g.numel() or w < g.numel():
        raise ValueError(f"SSIM needs frames of at least {g.numel()}x{g.numel()} pixels, got {h}x{w}")
    x, y = x.reshape(t * c, 1, h, w), y.reshape(t * c, 1, h, w)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov_xy = _filter_valid(x * y, g) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).reshape(t, c).mean(dim=1).numpy()


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of a frame, or of a video as the mean over its frames."""
    return float(ssim_per_frame(a, b, data_range).mean())


def high_frequency_energy(videos: np.ndarray, data_range: float = 255.0) -> float:
    """Mean |x[..., w + 1, :] - x[..., w, :]| / data_range over a video [T, H, W, C], a frame [H, W, C] or a
    set of videos [N, T, H, W, C] (every pixel pair weighs the same). 0 for flat frames; Gaussian noise of
    standard deviation s adds about 1.13 s / data_range (2 s / sqrt(pi) for the difference of two draws)."""
    x = np.asarray(videos)
    if x.ndim not in (3, 4, 5) or x.shape[-2] < 2:
        raise ValueError(f"expected [..., H, W, C] with W >= 2 (a frame, a video or a set of videos), got {x.shape}")
    x = torch.from_numpy(np.array(x, dtype=np.float64))
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() / data_range)
