"""FID, KID and Inception Score of frames, in-process (the Ray runner parallelises the same steps).

    python -c "import numpy as np; from vidgen_ray.evaluate import fid; \
r = np.random.default_rng(0); print(fid(r.integers(0, 256, (16, 64, 64, 3), np.uint8), r.integers(0, 256, (16, 64, 64, 3), np.uint8)))"

Inputs are uint8 images [N, H, W, 3] or videos [N, T, H, W, 3]; a video contributes all its frames,
as frame-level FID of video generators (StyleGAN-V) is defined. Features and protocol:
``vidgen_ray.evaluate.inception`` (pytorch-fid preprocessing, shipped TorchScript network) and
``vidgen_ray.evaluate.frechet``. FID from few frames is biased upwards; report the sample count.
"""

from __future__ import annotations

import numpy as np
import torch

from vidgen_ray.evaluate.frechet import frechet_distance_from_features, kernel_inception_distance
from vidgen_ray.evaluate.inception import (
    class_probabilities,
    inception_features,
    inception_score_from_probs,
    load_inception,
    load_logits_weight,
)


def fid(
    real: np.ndarray, fake: np.ndarray, weights: str | None = None, batch_size: int = 32, device: str | torch.device = "cpu"
) -> float:
    """Fréchet Inception Distance between two uint8 image/video sets."""
    model = load_inception(weights, device)
    return frechet_distance_from_features(
        inception_features(model, real, batch_size), inception_features(model, fake, batch_size)
    )


def kid(
    real: np.ndarray, fake: np.ndarray, weights: str | None = None, batch_size: int = 32, device: str | torch.device = "cpu"
) -> float:
    """Kernel Inception Distance (same features as FID; StyleGAN3's subset estimator)."""
    model = load_inception(weights, device)
    return kernel_inception_distance(inception_features(model, real, batch_size), inception_features(model, fake, batch_size))


def inception_score(
    fake: np.ndarray,
    weights: str,
    inception_weights: str | None = None,
    num_splits: int = 10,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(mean, std) Inception Score of uint8 images/videos; ``weights`` = the 1008-logits file (see inception.py)."""
    logits_weight = load_logits_weight(weights)
    features = inception_features(load_inception(inception_weights, device), fake, batch_size)
    return inception_score_from_probs(class_probabilities(features, logits_weight), num_splits)
