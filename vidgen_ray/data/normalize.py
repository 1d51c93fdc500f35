"""Worker-side conversion of uint8 clips to model input: float, normalised, channels first.

uint8 travels through Ray's object store (4x smaller than float32); this runs on the training
worker, on its device, right before the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidgen_ray.configs import ConfigError


@dataclass(frozen=True)
class Normalizer:
    mode: str = "minus_one_one"  # "minus_one_one" | "zero_one" | "mean_std"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # in [0, 1] units, used by "mean_std"
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.mode not in ("minus_one_one", "zero_one", "mean_std"):
            raise ValueError(f"data.normalize must be minus_one_one, zero_one or mean_std, not {self.mode!r}")
        if min(self.std) <= 0:
            raise ValueError(f"per-channel std must be positive, got {self.std}")

    def __call__(self, video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [B, T, H, W, C] -> float [B, C, T, H, W]."""
        x = video.permute(0, 4, 1, 2, 3).to(dtype)
        if self.mode == "minus_one_one":
            return x.div_(127.5).sub_(1.0)
        x = x.div_(255.0)
        if self.mode == "zero_one":
            return x
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(1, 3, 1, 1, 1)
        return x.sub_(mean).div_(std)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """float [B, C, T, H, W] in model units -> uint8 [B, T, H, W, C]."""
        x = x.detach().float()
        if self.mode == "minus_one_one":
            x = (x + 1.0) * 127.5
        elif self.mode == "zero_one":
            x = x * 255.0
        else:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1, 1)
            x = (x * std + mean) * 255.0
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


def channel_stats(clips: list[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) over uint8 clips [T, H, W, 3] (float64 sums)."""
    if not clips:
        raise ConfigError("no training clips to compute mean/std from; use data.normalize=minus_one_one")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for clip in clips:
        x = clip.reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
