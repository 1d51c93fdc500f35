"""A loader batch (uint8 clips, labels, captions) -> the model's ``Batch`` on the training device, as the
training step and validation both need it; and how many micro-batches each worker takes a step."""

from __future__ import annotations

import torch

from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.models.base import Batch


def to_batch(raw: dict, normalizer: Normalizer, device: torch.device, num_classes: int) -> Batch:
    video = normalizer(raw["video"].to(device, non_blocking=True))
    label = raw["label"].to(device) if num_classes > 0 else None
    if label is not None:
        label = label.clamp(min=0) % num_classes  # unlabeled (-1) clips map to a valid class id
    cached = {k: raw[k].to(device, non_blocking=True) for k in ("latent", "caption_embedding", "caption_mask") if k in raw}
    return Batch(video=video, label=label, caption=raw["caption"], **cached)


def micro_batches(total: int, world: int, rank: int, step: int) -> int:
    """This rank's share of the ``total`` micro-batches of one optimizer step on ``world`` workers.

    The global batch stays ``total`` micro-batches whatever the world size (an elastic group of 2
    workers takes 3 micro-batches of a 3-worker run's step as 2 + 1). Where ``world`` does not divide
    it, the extra ones rotate over the ranks step by step, so every rank reads its equal data shard at
    the same average pace. Each rank scales its loss by ``world / total`` (``Part.backward``'s
    divisor ``total / world``): the all-reduce's mean then is the mean over all ``total`` micro-batches.
    """
    base, extra = divmod(total, world)
    return base + (1 if (rank - step) % world < extra else 0)
