"""An exponential moving average of a module's weights (used for sampling and export).

Works on plain tensors (DDP, DeepSpeed ZeRO-1/2) and on FSDP2's sharded DTensors alike: each rank
averages the shard it holds. Not with ZeRO-3, whose persistent and partitioned parameters would need
a gather per update (the experiment config refuses that combination). The averages are keyed by the
parameters' plain names (``named_shadow``), so a checkpoint reshards them like the weights.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def clean_key(key: str) -> str:
    """A parameter's plain name: activation checkpointing and torch.compile wrap modules."""
    return key.replace("._checkpoint_wrapped_module", "").replace("_checkpoint_wrapped_module.", "").replace("._orig_mod", "")


class EMA:
    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = module
        self.decay = decay
        named = [(clean_key(n), p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        current = [p.detach().float() if p.dtype != torch.float32 else p.detach() for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the module (for sampling)."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def named_shadow(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(plain parameter name, averaged tensor): what a checkpoint stores and ``load_named`` fills."""
        return zip(self.names, self.shadow)

    @torch.no_grad()
    def load_named(self, named: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in named]
        if missing or len(named) != len(self.names):
            raise ValueError(f"the checkpoint's EMA does not match the model (missing {missing[:3]}, "
                             f"{len(named)} tensors for {len(self.names)}); wrong checkpoint?")
        for name, s in zip(self.names, self.shadow):
            if named[name] is not s:
                s.copy_(named[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": dict(self.named_shadow())}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if isinstance(shadow, list):  # written before the averages were named: in parameter order
            shadow = dict(zip(self.names, shadow)) if len(shadow) == len(self.names) else {}
        self.load_named(shadow)
