"""One class per parallel strategy (see ``base.py``); ``build_strategy`` picks it from the config."""

from __future__ import annotations

import torch

from vidgen_ray.train.config import ParallelConfig
from vidgen_ray.train.strategies.base import DCP_DIR, Part, Strategy, autocast
from vidgen_ray.train.strategies.ddp import DDPStrategy
from vidgen_ray.train.strategies.fsdp2 import FSDP2Strategy
from vidgen_ray.train.strategies.local import LocalStrategy
from vidgen_ray.train.sequence_parallel import Mesh

__all__ = ["DCP_DIR", "Part", "Strategy", "autocast", "build_strategy", "strategy_class"]


def strategy_class(name: str) -> type[Strategy]:
    if name == "deepspeed":
        from vidgen_ray.train.strategies.deepspeed import DeepSpeedStrategy  # imports DeepSpeed: only when asked

        return DeepSpeedStrategy
    return {"none": LocalStrategy, "ddp": DDPStrategy, "fsdp2": FSDP2Strategy}[name]


def build_strategy(par: ParallelConfig, device: torch.device) -> Strategy:
    """``par.strategy`` for this process group, over its data-parallel ranks (``Mesh``: all of them unless
    ``par.sequence_parallel`` groups them); ddp and fsdp2 with one data-parallel rank run as ``none``
    (nothing to synchronise), DeepSpeed stays itself (ZeRO runs on one worker too)."""
    mesh = Mesh.build(par.sequence_parallel, device.type)
    name = par.strategy if mesh.dp > 1 or par.strategy == "deepspeed" else "none"
    return strategy_class(name)(par, device, mesh)
