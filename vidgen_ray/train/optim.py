"""Optimisers and learning-rate schedules, the same for every strategy (each strategy hands them its
own parameters: whole, sharded, or wrapped by DeepSpeed)."""

from __future__ import annotations

import math

import torch

from vidgen_ray.train.config import OptimConfig, ScheduleConfig


def build_optimizer(params, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            # Norm scales, biases and embeddings-as-vectors are not weight-decayed (standard practice).
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, eps=cfg.eps)


def lr_lambda(cfg: ScheduleConfig, total_steps: int):
    """Linear warmup, then constant or cosine decay to ``min_lr_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.kind == "constant" or total_steps <= cfg.warmup_steps:
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
