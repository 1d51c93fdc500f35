"""Spectral normalisation (Miyato et al., 2018) as a parametrization: W / sigma_max(W), with sigma
estimated by one power iteration per training forward.

The same algorithm as ``torch.nn.utils.parametrizations.spectral_norm``; written here because
torch's version runs 15 power iterations while the layer is built, which on the ``meta`` device
(``registry.describe``) goes through slow Python reference kernels: seconds per GAN preset. Here
the warm-up iterations run only for real tensors. It also skips the power iteration when the
forward is recomputed inside backward (activation checkpointing), so a checkpointed layer uses the
same sigma in its recomputation as in its forward and updates its estimate once per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


def _recomputing_in_backward() -> bool:
    """True while autograd runs a backward pass: a forward now is a checkpoint recomputation."""
    return torch._C._current_graph_task_id() != -1


class _SpectralNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, warmup_iterations: int = 15, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        matrix = weight.detach().flatten(1)
        self.register_buffer("_u", matrix.new_empty(matrix.shape[0]))
        self.register_buffer("_v", matrix.new_empty(matrix.shape[1]))
        if not weight.is_meta:
            with torch.no_grad():
                self._u.copy_(F.normalize(torch.randn_like(self._u), dim=0, eps=eps))
                self._v.copy_(F.normalize(torch.randn_like(self._v), dim=0, eps=eps))
                self._power_iteration(matrix, warmup_iterations)

    @torch.no_grad()
    def _power_iteration(self, matrix: torch.Tensor, iterations: int) -> None:
        for _ in range(iterations):
            self._u.copy_(F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(matrix.t(), self._u), dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # sigma is estimated in the buffers' precision (fp32) even when the weight arrives in bf16
        # (FSDP2 mixed precision casts parameters, not buffers).
        matrix = weight.flatten(1).to(self._u.dtype)
        if self.training and not _recomputing_in_backward():
            self._power_iteration(matrix.detach(), 1)
        # Clones: the buffers change in place at the next forward, after autograd saved them.
        u, v = self._u.clone(), self._v.clone()
        sigma = torch.vdot(u, torch.mv(matrix, v))
        return weight / sigma.to(weight.dtype)


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register spectral normalisation on ``module.<name>`` (Conv, Linear or Embedding)."""
    parametrize.register_parametrization(module, name, _SpectralNorm(getattr(module, name)))
    return module
