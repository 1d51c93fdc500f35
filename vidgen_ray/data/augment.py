"""Clip augmentation for the train split: one random draw per clip, applied to every frame alike.

    python -c "import numpy as np; from vidgen_ray.data.augment import draw, apply; \
from vidgen_ray.data.config import AugmentConfig; c = AugmentConfig(rotate_p=1, zoom_p=1, jitter_p=1); \
a = draw(c, np.random.default_rng(0), frames=8, decoded=8); print(a); print(apply(np.zeros((8, 32, 32, 3), np.uint8), a).shape)"

Temporal augmentations work on frame indices: the decoder hands over a few extra frames at the
target fps (``AugmentConfig.extra_frames``) and a clip picks ``frames`` of them with a start shift
and a speed factor. Spatial ones (flips, rotation, zoom) become one affine resampling of the clip;
photometric ones (brightness, contrast, saturation, noise) follow. uint8 in, uint8 out: floats never
cross the object store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidgen_ray.data.config import AugmentConfig


@dataclass(frozen=True)
class ClipAugment:
    start: int = 0  # first decoded frame used
    speed: float = 1.0  # decoded frames advanced per output frame
    hflip: bool = False
    vflip: bool = False
    angle: float = 0.0  # degrees
    zoom: tuple[float, float, float, float] | None = None  # crop box (cy, cx, h, w) as fractions of the frame
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0

    @property
    def spatial(self) -> bool:
        return self.angle != 0.0 or self.zoom is not None


IDENTITY = ClipAugment()


def draw(cfg: AugmentConfig, rng: np.random.Generator, frames: int, decoded: int) -> ClipAugment:
    """One clip's augmentation. ``decoded`` frames are available; ``frames`` are kept."""
    if not cfg.enabled:
        return ClipAugment()
    speed = float(rng.uniform(cfg.speed_min, cfg.speed_max)) if rng.random() < cfg.speed_p else 1.0
    span = int(round((frames - 1) * speed))
    start = int(rng.integers(0, max(0, decoded - 1 - span) + 1))
    zoom = None
    if rng.random() < cfg.zoom_p:
        area = rng.uniform(cfg.zoom_min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        h, w = min(1.0, math.sqrt(area / aspect)), min(1.0, math.sqrt(area * aspect))
        zoom = (float(rng.uniform(h / 2, 1 - h / 2)), float(rng.uniform(w / 2, 1 - w / 2)), h, w)
    jitter = rng.random() < cfg.jitter_p
    return ClipAugment(
        start=start,
        speed=speed,
        hflip=bool(rng.random() < cfg.hflip),
        vflip=bool(rng.random() < cfg.vflip),
        angle=float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if rng.random() < cfg.rotate_p else 0.0,
        zoom=zoom,
        brightness=float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)) if jitter else 1.0,
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) if jitter else 1.0,
        saturation=float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)) if jitter else 1.0,
        noise_std=cfg.noise_std if rng.random() < cfg.noise_p else 0.0,
        noise_seed=int(rng.integers(2**31)),
    )


def frame_indices(aug: ClipAugment, frames: int, decoded: int) -> np.ndarray:
    idx = aug.start + np.round(np.arange(frames) * aug.speed).astype(np.int64)
    return np.clip(idx, 0, decoded - 1)


def _affine(x: torch.Tensor, aug: ClipAugment) -> torch.Tensor:
    """Rotation and zoom as one bilinear resampling of [T, C, H, W]; output keeps H x W."""
    _, _, h, w = x.shape
    cy, cx, zh, zw = aug.zoom if aug.zoom is not None else (0.5, 0.5, 1.0, 1.0)
    theta = math.radians(aug.angle)
    # Zoom in just enough that the rotated frame still covers the output (no empty corners).
    cover = abs(math.cos(theta)) + abs(math.sin(theta)) * max(h / w, w / h)
    sx, sy = zw / cover, zh / cover
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid works in normalised coords; the aspect ratio makes rotation rigid in pixels.
    mat = torch.tensor(
        [
            [cos * sx, -sin * sy * h / w, (2 * cx - 1)],
            [sin * sx * w / h, cos * sy, (2 * cy - 1)],
        ],
        dtype=x.dtype,
    )
    grid = F.affine_grid(mat.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply(clip: np.ndarray, aug: ClipAugment, frames: int | None = None) -> np.ndarray:
    """uint8 [T_decoded, H, W, 3] -> uint8 [frames, H, W, 3] with ``aug`` applied to every frame."""
    decoded = clip.shape[0]
    frames = decoded if frames is None else frames
    clip = clip[frame_indices(aug, frames, decoded)]
    if aug.hflip:
        clip = clip[:, :, ::-1]
    if aug.vflip:
        clip = clip[:, ::-1]
    photometric = aug.brightness != 1 or aug.contrast != 1 or aug.saturation != 1 or aug.noise_std > 0
    if not (aug.spatial or photometric):
        return np.ascontiguousarray(clip)
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()  # [T, C, H, W]
    if aug.spatial:
        x = _affine(x, aug)
    if aug.brightness != 1:
        x = x * aug.brightness
    if aug.contrast != 1:
        gray_mean = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2), keepdim=True).unsqueeze(1)
        x = (x - gray_mean) * aug.contrast + gray_mean
    if aug.saturation != 1:
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * aug.saturation + gray
    if aug.noise_std > 0:
        gen = torch.Generator().manual_seed(aug.noise_seed)
        x = x + torch.randn(x.shape, generator=gen) * aug.noise_std
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
