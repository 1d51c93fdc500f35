"""Recurrent video predictor: stacked ConvLSTM (Shi et al., 2015) or ConvGRU cells that predict the
next frame from the current one, unrolled over context frames and then over their own predictions.

    python -c "import torch; from vidgen_ray.models.registry import build_model, get_preset; \
m = build_model(get_preset('rnn-debug')); \
print(m.sample(1, seed=0, context=torch.zeros(1, 3, 4, 32, 32)).shape)"

One part, ``model`` (the ``Predictor``). Training: the first ``context_frames`` frames of each clip
are given, the remaining ones are predicted and scored (MSE or L1). While predicting, each step is
fed the true previous frame with the teacher-forcing probability, else the model's own previous
prediction (scheduled sampling, Bengio et al. 2015); the probability falls linearly from 1 to
``teacher_forcing_floor`` over ``teacher_forcing_decay_steps`` optimiser steps.

``sample`` needs context frames: ``sample(n, seed, context=video[n, C, Tc, H, W])``. The predictor
is deterministic: the seed is accepted for the common interface and changes nothing.
FLOPs per sample: the unrolled forward over a training clip (frames - 1 steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, Conditioning, LossOutput, ModelConfig, VideoModel, eval_mode, param_device, param_dtype, to_channels_last
from .flops import conv_flops


@dataclass
class RNNConfig(ModelConfig):
    name: str = "rnn-debug"
    family: Literal["rnn"] = "rnn"
    cell: Literal["lstm", "gru"] = "lstm"
    hidden: tuple[int, ...] = (32, 32)  # channels of each stacked cell
    kernel_size: int = 3
    stem_stride: int = 1  # >1 patchifies frames (and un-patchifies predictions) by this factor
    context_frames: int = 4
    loss: Literal["mse", "l1"] = "mse"
    teacher_forcing_floor: float = 0.0
    teacher_forcing_decay_steps: int = 5000

    def validate(self) -> None:
        super().validate()
        if self.num_classes:
            self.fail("the recurrent predictor is unconditional; set model.num_classes=0")
        if not 1 <= self.context_frames < self.frames:
            self.fail(
                f"context_frames {self.context_frames} must be in [1, frames={self.frames}) so some frames "
                "are left to predict; set model.context_frames"
            )
        if not self.hidden:
            self.fail("hidden is empty; set e.g. model.hidden=[64,64]")
        if self.kernel_size % 2 == 0:
            self.fail(f"kernel_size {self.kernel_size} must be odd ('same' padding); set model.kernel_size=3")
        for field in ("height", "width"):
            if getattr(self, field) % self.stem_stride:
                self.fail(
                    f"{field} {getattr(self, field)} is not divisible by stem_stride {self.stem_stride}; "
                    f"set model.{field} to a multiple of {self.stem_stride}"
                )
        if not 0.0 <= self.teacher_forcing_floor <= 1.0 or self.teacher_forcing_decay_steps < 1:
            self.fail("teacher_forcing_floor must be in [0, 1] and teacher_forcing_decay_steps >= 1")

    def teacher_forcing(self, step: int) -> float:
        """Probability of feeding the true previous frame at optimiser ``step``."""
        progress = min(max(step, 0) / self.teacher_forcing_decay_steps, 1.0)
        return 1.0 - (1.0 - self.teacher_forcing_floor) * progress


class ConvLSTMCell(nn.Module):
    """One convolution over [input, hidden] yields the input, forget, output and candidate gates."""

    def __init__(self, in_ch: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_ch + hidden, 4 * hidden, kernel, padding=kernel // 2)
        with torch.no_grad():  # forget-gate bias 1: remember by default early in training
            self.gates.bias[hidden : 2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def flops(self, size: tuple[int, int]) -> int:
        return conv_flops(self.gates, size)


class ConvGRUCell(nn.Module):
    """Update/reset gates from [input, hidden]; the candidate sees [input, reset * hidden]."""

    def __init__(self, in_ch: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_ch + hidden, 2 * hidden, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(in_ch + hidden, hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        (h,) = state[:1]
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        h = (1 - update) * h + update * candidate
        return h, (h, h)  # (h, h): the same state tuple shape as the LSTM keeps the loop uniform

    def flops(self, size: tuple[int, int]) -> int:
        return conv_flops(self.gates, size) + conv_flops(self.candidate, size)


class Predictor(nn.Module):
    """frames [B, C, T_in, H, W] -> next-frame predictions [B, C, total - 1, H, W] in [-1, 1].

    Step t predicts frame t + 1 from frame t. Frames t < ``context`` are always the true ones;
    for context <= t < T_in the true frame is used with probability ``teacher_forcing`` (per clip),
    else the previous prediction; from T_in on, only predictions exist. The loop bounds are Python
    ints from shapes, so the unrolled graph is static (torch.compile friendly)."""

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        s, c0 = cfg.stem_stride, cfg.hidden[0]
        self.stem = nn.Conv2d(cfg.channels, c0, 3, padding=1) if s == 1 else nn.Conv2d(cfg.channels, c0, s, stride=s)
        cell = ConvLSTMCell if cfg.cell == "lstm" else ConvGRUCell
        ins = (c0, *cfg.hidden[:-1])
        self.cells = nn.ModuleList(cell(i, h, cfg.kernel_size) for i, h in zip(ins, cfg.hidden))
        self.head = nn.Conv2d(cfg.hidden[-1], cfg.channels * s * s, 1)
        self.stride = s
        self.grid = (cfg.height // s, cfg.width // s)

    def forward(self, frames: torch.Tensor, total: int, context: int, teacher_forcing: float = 1.0) -> torch.Tensor:
        b, _, t_in, height, width = frames.shape
        gh, gw = height // self.stride, width // self.stride
        states = [
            (frames.new_zeros(b, cell.hidden, gh, gw), frames.new_zeros(b, cell.hidden, gh, gw)) for cell in self.cells
        ]
        predictions: list[torch.Tensor] = []
        for t in range(total - 1):
            if t < context:
                x = frames[:, :, t]
            elif t < t_in:
                keep = (torch.rand(b, 1, 1, 1, device=frames.device) < teacher_forcing).to(frames.dtype)
                x = keep * frames[:, :, t] + (1 - keep) * predictions[-1]
            else:
                x = predictions[-1]
            h = self.stem(x)
            for index, cell in enumerate(self.cells):
                h, states[index] = cell(h, states[index])
            out = self.head(h)
            if self.stride > 1:
                out = F.pixel_shuffle(out, self.stride)
            predictions.append(torch.tanh(out))
        return torch.stack(predictions, dim=2)

    def flops(self, total: int) -> int:
        stem = conv_flops(self.stem, self.grid)
        cells = sum(cell.flops(self.grid) for cell in self.cells)
        return (total - 1) * (stem + cells + conv_flops(self.head, self.grid))


class VideoPredictor(VideoModel):
    family = "rnn"

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.net = Predictor(config)
        self._flops = self.net.flops(config.frames)

    def conditioning(self) -> Conditioning:
        return Conditioning(context_frames=self.config.context_frames)

    def parts(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def shard_units(self, part: str) -> list[nn.Module]:
        if part != "model":
            raise KeyError(f"rnn has one part, 'model', not {part!r}")
        return list(self.net.cells)

    def losses(self, part: str, batch: Batch, step: int) -> LossOutput:
        if part != "model":
            raise KeyError(f"rnn has one part, 'model', not {part!r}")
        cfg = self.config
        video = batch.video
        total, context = video.shape[2], cfg.context_frames
        p = cfg.teacher_forcing(step)
        predicted = self.net(video, total, context, p)[:, :, context - 1 :].float()
        target = video[:, :, context:].float()
        diff = predicted - target
        loss = diff.abs().mean() if cfg.loss == "l1" else diff.square().mean()
        return LossOutput(loss, {"loss": loss.detach(), "teacher_forcing": p})

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
        **options,
    ) -> torch.Tensor:
        """``context`` (float [n, C, Tc, H, W], required) -> the clip [n, T, H, W, C]: the context
        frames followed by T - Tc predicted ones (``frames=`` overrides T)."""
        context = options.get("context")
        if context is None:
            raise ValueError(
                "the recurrent predictor samples from context frames: call "
                "sample(n, seed, context=video) with video float [n, C, Tc, H, W] in [-1, 1]"
            )
        total = int(options.get("frames", self.config.frames))
        if context.dim() != 5 or context.shape[0] != n or not 1 <= context.shape[2] < total:
            raise ValueError(
                f"context must be [n={n}, C, Tc, H, W] with 1 <= Tc < frames={total}, got {tuple(context.shape)}"
            )
        context = context.to(param_device(self.net), param_dtype(self.net))
        with eval_mode(self):
            predicted = self.net(context, total, context.shape[2], 0.0)
        tc = context.shape[2]
        video = torch.cat([context.float(), predicted[:, :, tc - 1 :].float()], dim=2)
        return to_channels_last(video.clamp(-1, 1))

    def sample_conditioning(self, batch: Batch, n: int) -> dict:
        return {"context": batch.video[:n, :, : self.config.context_frames]}

    def reconstruct(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the predicted frames are compared (the context is copied, not predicted)."""
        tc = self.config.context_frames
        video = self.sample(batch.size, seed=0, context=batch.video[:, :, :tc]).permute(0, 4, 1, 2, 3)
        return batch.video[:, :, tc:], video[:, :, tc:]

    def flops_per_sample(self) -> int:
        return self._flops
