"""FSDP2: ``fully_shard`` on each shard unit and then the part, bf16 parameters with fp32 reduction
(``MixedPrecisionPolicy``), optional CPU offload. Weights, gradients and optimizer state are DTensor
shards; checkpoints store the logical tensors, so any world size reads them back."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.strategies.base import Part, clean_state_dict
from vidgen_ray.train.strategies.local import LocalStrategy


class FSDP2Strategy(LocalStrategy):
    name = "fsdp2"

    def _scaler(self):
        return None  # fp16 is refused by ParallelConfig (it needs a sharded grad scaler)

    def wrap_module(self, model: VideoModel, name: str, raw: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {"mesh": self.mesh.dp_mesh}  # None: every rank (no sequence parallelism)
        if self.par.precision == "bf16":
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if self.par.fsdp_cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=self.par.use_gpu)
        for unit in model.shard_units(name):
            fully_shard(unit, **kwargs)
        fully_shard(raw, **kwargs)
        return raw  # sharded in place: the family's attribute already holds it

    @contextlib.contextmanager
    def no_sync(self, part: Part) -> Iterator[None]:
        part.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            part.module.set_requires_gradient_sync(True)

    def full_state_dict(self, part: Part) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return clean_state_dict(get_model_state_dict(part.raw, options=options))
