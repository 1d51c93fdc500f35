"""DistributedDataParallel: a whole replica per worker, gradients all-reduced in buckets during backward."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.strategies.base import Part, set_part
from vidgen_ray.train.strategies.local import LocalStrategy


class DDPStrategy(LocalStrategy):
    name = "ddp"

    def wrap_module(self, model: VideoModel, name: str, raw: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(raw, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                         process_group=self.mesh.dp_group)
        set_part(model, name, module)
        return module

    @contextlib.contextmanager
    def no_sync(self, part: Part) -> Iterator[None]:
        with part.module.no_sync():
            yield
