"""Fréchet Video Distance with the TF-Hub I3D, StyleGAN-V protocol.

    python -c "import numpy as np; from vidgen_ray.evaluate import fvd; \
r = np.random.default_rng(0); v = lambda: r.integers(0, 256, (4, 16, 64, 64, 3), dtype=np.uint8); print(fvd(v(), v()))"

Protocol (StyleGAN-V / the original TF FVD, which agree on the reference check):

* a clip is 16 consecutive frames; a longer video contributes its first 16 (sample clips upstream
  if another choice is wanted), a shorter one is an error;
* every frame is resized to 224x224 with bilinear interpolation (``align_corners=False``, no
  antialiasing) and scaled from [0, 255] to [-1, 1] (``2x/255 - 1``);
* the feature is I3D's 400-d Kinetics logits averaged over time (``vidgen_ray.evaluate.i3d``);
* the distance is the Fréchet distance of Gaussians fitted with the unbiased covariance
  (``vidgen_ray.evaluate.frechet``).

Pinned by ``tests/test_eval_reference.py``: 128 "fake" and 128 "real" videos of 16x224x224x3 from
``np.random.RandomState(1/2).rand`` fed straight to the network give 10.13808 (TF: 10.138085,
StyleGAN-V: 10.138085).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidgen_ray.evaluate.frechet import frechet_distance_from_features
from vidgen_ray.evaluate.i3d import InceptionI3d, load_i3d

CLIP_FRAMES = 16
I3D_SIZE = 224


def preprocess(videos: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T>=16, H, W, 3] -> float [B, 16, 224, 224, 3] in [-1, 1]."""
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"FVD wants videos [B, T, H, W, 3], got shape {tuple(videos.shape)}")
    if videos.shape[1] < CLIP_FRAMES:
        raise ValueError(
            f"FVD uses clips of {CLIP_FRAMES} consecutive frames, got videos of {videos.shape[1]}: "
            "generate or sample longer clips, or leave 'fvd' out of EvalConfig.metrics"
        )
    b, _, h, w, c = videos.shape
    frames = videos[:, :CLIP_FRAMES].reshape(b * CLIP_FRAMES, h, w, c).permute(0, 3, 1, 2).float()
    if (h, w) != (I3D_SIZE, I3D_SIZE):
        frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    frames = 2.0 * frames / 255.0 - 1.0
    return frames.permute(0, 2, 3, 1).reshape(b, CLIP_FRAMES, I3D_SIZE, I3D_SIZE, c)


@torch.inference_mode()
def i3d_features(model: InceptionI3d, videos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """uint8 videos [N, T>=16, H, W, 3] -> I3D logits [N, 400] (float32). Copies each batch (Ray's arrays are read-only)."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8:
        raise ValueError(f"FVD wants uint8 videos (0..255), got {videos.dtype}; use models.base.to_uint8")
    device = next(model.parameters()).device
    out = [
        model(preprocess(torch.tensor(videos[s : s + batch_size], device=device))).float().cpu().numpy()
        for s in range(0, len(videos), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 400), np.float32)


def fvd(
    real: np.ndarray,
    fake: np.ndarray,
    weights: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> float:
    """FVD between uint8 video sets [N, T>=16, H, W, 3] (in-process; the Ray runner parallelises it)."""
    model = load_i3d(weights, device)
    return frechet_distance_from_features(i3d_features(model, real, batch_size), i3d_features(model, fake, batch_size))
