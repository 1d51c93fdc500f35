"""The one seam between a model and the hardware: activation checkpointing, compile, DDP / FSDP2 /
DeepSpeed ZeRO, mixed precision, optimizers and LR schedules happen behind it and nowhere else.

``parallelize(model, ...)`` turns every part of a family (the GAN's generator and discriminator,
or the single ``model`` part of the others) into a ``Part``: the module to call, its optimizer and
schedule, and its strategy's way to run backward and step (``train/strategies``, one class per
strategy). The family keeps calling ``self.<part>(...)``; the attribute now holds the wrapped (or
in-place sharded) module.
"""

from __future__ import annotations

import torch

from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.config import ParallelConfig, TrainConfig
from vidgen_ray.train.strategies import Part, autocast, build_strategy

__all__ = ["Part", "autocast", "parallelize"]


def parallelize(model: VideoModel, par: ParallelConfig, train: TrainConfig, device: torch.device,
                total_steps: int) -> dict[str, Part]:
    """Wrap every part of ``model`` for ``par.strategy`` and give it an optimizer and LR schedule."""
    return build_strategy(par, device).parallelize(model, train, total_steps)
