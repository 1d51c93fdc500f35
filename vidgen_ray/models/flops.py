"""Analytic forward FLOPs, counted the way ``torch.utils.flop_counter.FlopCounterMode`` counts them.

    python -c "from vidgen_ray.models.registry import describe; print(describe('dit-b'))"

Convention: 2 FLOPs per multiply-accumulate of matmuls, convolutions and attention (QK^T and AV);
biases, norms, activations, pooling, interpolation and embedding lookups are not counted (they are
memory-bound and FlopCounterMode ignores them too). The trainer's MFU is 3 x these forward FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn


def conv_flops(conv: nn.Module, out_size: Sequence[int]) -> int:
    """A Conv2d/Conv3d (plain or spectral-normalised) producing ``out_size`` positions per channel."""
    kernel = math.prod(conv.kernel_size)
    positions = math.prod(out_size)
    return 2 * (conv.in_channels // conv.groups) * kernel * conv.out_channels * positions


def linear_flops(in_features: int, out_features: int, rows: int = 1) -> int:
    return 2 * in_features * out_features * rows


def attention_flops(sequences: int, q_len: int, kv_len: int, dim: int) -> int:
    """QK^T and AV over ``sequences`` independent sequences (heads folded into ``dim``)."""
    return 4 * sequences * q_len * kv_len * dim


def measure_flops(fn: Callable[[], object]) -> int:
    """FLOPs FlopCounterMode measures for ``fn()``.

    On CPU ``scaled_dot_product_attention`` picks a fused kernel FlopCounterMode has no formula
    for (it would count 0), so the math backend is forced here: it runs the same two matmuls as
    visible ops. On GPU the flash / efficient kernels are counted directly.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return int(counter.get_total_flops())


def human_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("KFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops:.0f} FLOP"


def human_count(count: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count:.0f}"


__all__ = [
    "attention_flops",
    "conv_flops",
    "human_count",
    "human_flops",
    "linear_flops",
    "measure_flops",
]
