"""One process: the module as it is, fp32 / bf16 autocast, fp16 with a grad scaler. Also what ``ddp``
and ``fsdp2`` become on a 1-worker group (an elastic run that shrank to one worker included)."""

from __future__ import annotations

import torch
from torch import nn

from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.config import TrainConfig
from vidgen_ray.train.optim import build_optimizer, build_scheduler
from vidgen_ray.train.strategies.base import Part, Strategy


class LocalStrategy(Strategy):
    name = "none"

    def _scaler(self):
        return torch.amp.GradScaler(self.device.type) if self.par.precision == "fp16" else None

    def wrap_module(self, model: VideoModel, name: str, raw: nn.Module) -> nn.Module:
        return raw

    def wrap(self, model: VideoModel, name: str, raw: nn.Module, train: TrainConfig, lr: float, total_steps: int) -> Part:
        raw.to(self.device)
        module = self.wrap_module(model, name, raw)
        optimizer = build_optimizer(raw.parameters(), train.optim, lr)
        return Part(name, module, raw, optimizer, build_scheduler(optimizer, train.schedule, total_steps), self,
                    train.grad_clip, scaler=self._scaler())
