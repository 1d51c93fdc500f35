"""Convolutional building blocks shared by the GAN and the VAE.

Every block knows its own forward FLOPs for a given output size (``flops``), so a family adds up
the FLOPs of its blocks analytically (no forward pass; works on the ``meta`` device).

Video tensors are [B, C, T, H, W] throughout. A "factorised" convolution is a spatial (1, k, k)
convolution followed by a temporal (k, 1, 1) one, as in R(2+1)D: far fewer parameters and FLOPs
than a full k^3 kernel for the same receptive field.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .flops import conv_flops, linear_flops
from .spectral_norm import spectral_norm

ConvKind = Literal["3d", "factorised"]
Size3 = tuple[int, int, int]


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= 32 dividing ``channels`` (GroupNorm needs a divisor)."""
    return math.gcd(channels, max_groups)


class VideoConv(nn.Module):
    """A 'same'-padded 3D convolution, full or factorised, optionally strided and spectral-normalised."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kind: ConvKind = "3d",
        kernel: int = 3,
        stride: Size3 = (1, 1, 1),
        spectral: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride
        wrap = spectral_norm if spectral else (lambda m: m)
        pad = kernel // 2
        st, sh, sw = stride
        if kind == "3d":
            self.convs = nn.ModuleList([wrap(nn.Conv3d(in_ch, out_ch, kernel, stride, pad))])
        else:
            self.convs = nn.ModuleList(
                [
                    wrap(nn.Conv3d(in_ch, out_ch, (1, kernel, kernel), (1, sh, sw), (0, pad, pad))),
                    wrap(nn.Conv3d(out_ch, out_ch, (kernel, 1, 1), (st, 1, 1), (pad, 0, 0))),
                ]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x

    def flops(self, out_size: Size3) -> int:
        if len(self.convs) == 1:
            return conv_flops(self.convs[0], out_size)
        t, h, w = out_size
        spatial_out = (t * self.stride[0], h, w)  # the temporal conv strides after the spatial one
        return conv_flops(self.convs[0], spatial_out) + conv_flops(self.convs[1], out_size)


class AdaGroupNorm(nn.Module):
    """GroupNorm with a learned affine, or with scale/shift predicted from a conditioning vector
    (BigGAN's conditional normalisation) when ``cond_dim > 0``."""

    def __init__(self, channels: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(channels), channels, eps=1e-6, affine=cond_dim == 0)
        self.to_scale_shift = nn.Linear(cond_dim, 2 * channels) if cond_dim > 0 else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.to_scale_shift is None:
            return x
        scale, shift = self.to_scale_shift(cond).view(x.shape[0], -1, 1, 1, 1).chunk(2, dim=1)
        return x * (1 + scale) + shift

    def flops(self) -> int:
        if self.to_scale_shift is None:
            return 0
        return linear_flops(self.to_scale_shift.in_features, self.to_scale_shift.out_features)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: norm -> SiLU -> conv -> norm -> SiLU -> dropout -> conv."""

    def __init__(self, in_ch: int, out_ch: int, kind: ConvKind, cond_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = AdaGroupNorm(in_ch, cond_dim)
        self.conv1 = VideoConv(in_ch, out_ch, kind)
        self.norm2 = AdaGroupNorm(out_ch, cond_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = VideoConv(out_ch, out_ch, kind)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, cond))))
        return self.skip(x) + h

    def flops(self, size: Size3) -> int:
        total = self.conv1.flops(size) + self.conv2.flops(size) + self.norm1.flops() + self.norm2.flops()
        if isinstance(self.skip, nn.Conv3d):
            total += conv_flops(self.skip, size)
        return total


class Downsample(nn.Module):
    """Strided convolution halving space (and time when ``temporal``)."""

    def __init__(self, channels: int, kind: ConvKind, temporal: bool) -> None:
        super().__init__()
        self.factor = (2 if temporal else 1, 2, 2)
        self.conv = VideoConv(channels, channels, kind, stride=self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def out_size(self, size: Size3) -> Size3:
        return tuple(s // f for s, f in zip(size, self.factor))  # type: ignore[return-value]

    def flops(self, in_size: Size3) -> int:
        return self.conv.flops(self.out_size(in_size))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2 in space (and time when ``temporal``), then a convolution
    (``with_conv``) to smooth the blocky result."""

    def __init__(self, channels: int, kind: ConvKind, temporal: bool, with_conv: bool = True) -> None:
        super().__init__()
        self.factor = (2 if temporal else 1, 2, 2)
        self.conv = VideoConv(channels, channels, kind) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return x if self.conv is None else self.conv(x)

    def out_size(self, size: Size3) -> Size3:
        return tuple(s * f for s, f in zip(size, self.factor))  # type: ignore[return-value]

    def flops(self, in_size: Size3) -> int:
        return 0 if self.conv is None else self.conv.flops(self.out_size(in_size))
