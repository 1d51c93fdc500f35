"""A loader batch (uint8 clips, labels, captions) -> the model's ``Batch`` on the training device, as the
training step and validation both need it."""

from __future__ import annotations

import torch

from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.models.base import Batch


def to_batch(raw: dict, normalizer: Normalizer, device: torch.device, num_classes: int) -> Batch:
    video = normalizer(raw["video"].to(device, non_blocking=True))
    label = raw["label"].to(device) if num_classes > 0 else None
    if label is not None:
        label = label.clamp(min=0) % num_classes  # unlabeled (-1) clips map to a valid class id
    return Batch(video=video, label=label, caption=raw["caption"])
