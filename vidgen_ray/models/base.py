"""The one surface every model family offers the trainer, the evaluator and the server.

A family is an ``nn.Module`` holding one or more *parts* (the GAN has a generator and a
discriminator; every other family has one). The trainer gives each part its own optimizer and
hands each part to ``train/parallelize.py`` (a strategy of ``train/strategies``), which may replace the attribute with a DDP /
DeepSpeed wrapper or shard it in place with FSDP2. So a family must reach its heavy compute only
through ``part(...)`` calls (``forward``), never through other methods of a part, and must know
nothing of ranks, devices or wrappers.

Tensors:
    batch.video      float [B, C, T, H, W], already normalised on the worker (usually [-1, 1])
    batch.label      int64 [B] or None (class-conditional families)
    batch.caption    list[str] or None (caption-conditional families)
    sample(...)      float [N, T, H, W, C] in [-1, 1]; ``to_uint8`` turns it into video frames
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn

import torch
from torch import nn


@dataclass(frozen=True)
class VideoShape:
    """The shape of the clips a preset is built for (pixel space)."""

    frames: int
    height: int
    width: int
    channels: int = 3

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VideoShape.{name} must be positive, got {getattr(self, name)}")


@dataclass
class ModelConfig:
    """Fields every family config shares. Families subclass it and add their own simple fields.

    Only simple field types (int, float, bool, str, tuple[int, ...], Literal, str | None) so the
    generic loader can apply YAML / ``--set model.depth=12`` overrides by field name.
    """

    name: str = "custom"
    family: str = ""
    frames: int = 8
    height: int = 32
    width: int = 32
    channels: int = 3
    dropout: float = 0.0
    num_classes: int = 0  # 0 = unconditional

    @property
    def shape(self) -> VideoShape:
        return VideoShape(self.frames, self.height, self.width, self.channels)

    def fail(self, message: str) -> NoReturn:
        """Raise the error every validation uses: the preset name, what is wrong, how to fix it."""
        raise ValueError(f"{self.name}: {message}")

    def validate(self) -> None:
        for name in ("frames", "height", "width", "channels"):
            if getattr(self, name) <= 0:
                self.fail(f"{name} must be positive, got {getattr(self, name)}; set model.{name} > 0")
        if not 0.0 <= self.dropout < 1.0:
            self.fail(f"dropout {self.dropout} is outside [0, 1); set model.dropout to e.g. 0.0 or 0.1")
        if self.num_classes < 0:
            self.fail(f"num_classes {self.num_classes} is negative; set model.num_classes=0 for unconditional")


@dataclass
class Batch:
    video: torch.Tensor  # float [B, C, T, H, W]
    label: torch.Tensor | None = None  # int64 [B]
    caption: list[str] | None = None
    # Precomputed by `vidgen-ray data prepare --encode` (data/latents.py), where the run reads a cache:
    latent: torch.Tensor | None = None  # float [B, C', T', H', W']: the VAE's encoding of ``video``
    caption_embedding: torch.Tensor | None = None  # float [B, L, W]: a pretrained text encoder's output
    caption_mask: torch.Tensor | None = None  # bool [B, L]

    @property
    def size(self) -> int:
        return int(self.video.shape[0])


@dataclass(frozen=True)
class Conditioning:
    """What a family's ``sample`` can be conditioned on and how it samples by default, declared by the
    family (Serve's metadata and request checks read it; nothing probes config attributes)."""

    classes: int = 0  # number of class labels (0: none)
    captions: bool = False
    max_caption_bytes: int = 0  # longest caption read whole (0 without captions)
    context_frames: int = 0  # frames a predictor needs to continue (0: generates from noise)
    default_steps: int | None = None  # sampling steps when a request gives none (iterative samplers)
    default_guidance: float | None = None  # classifier-free guidance scale when a request gives none
    image: bool = False  # sample(image=) takes a first frame (image-to-video)
    sketch: bool = False  # sample(sketch=) takes a sketch picture or video (control branch)
    default_image_guidance: float | None = None  # guidance scale on the image when a request gives none


@dataclass
class LossOutput:
    """What a family returns for one part's step: the scalar to backpropagate and metrics, as detached
    tensors (or plain numbers): the trainer reads them on the host only at ``train.log_every``, since
    reading a GPU tensor waits for the device."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


class VideoModel(nn.Module):
    """Base class of every family. Subclasses set ``family`` and implement the methods below."""

    family: ClassVar[str] = ""
    # The part that generates (its weights are averaged by the EMA and exported for inference).
    sampling_part: ClassVar[str] = "model"

    # --- what the trainer needs -------------------------------------------------------------
    def parts(self) -> dict[str, nn.Module]:
        """Independently optimised sub-modules, in the order they are stepped each iteration."""
        raise NotImplementedError

    def lr_multiplier(self, part: str, optim) -> float:
        """``part``'s learning rate relative to ``train.optim.lr`` (``optim``: the OptimConfig)."""
        return 1.0

    def shard_units(self, part: str) -> list[nn.Module]:
        """Repeated blocks of a part: the units for FSDP2 ``fully_shard`` and activation checkpointing."""
        raise NotImplementedError

    def shard_sequence(self, attend, tokens) -> None:
        """Sequence parallelism (``train/sequence_parallel``): ``tokens`` splits each clip's token sequence
        across the ranks of a group and gathers the per-token output, ``attend`` replaces
        ``scaled_dot_product_attention`` where the attention spans the split axis. Families that have
        no token sequence to split refuse."""
        raise ValueError(f"the {self.family} family has no token sequence to split: parallel.sequence_parallel "
                         "is for the dit family; set it to 1")

    def adapt_weights(self, part: str, weights: dict, own: dict) -> dict:
        """Fine-tuning from another config of this family (``train.init_from``): turn a checkpoint's
        ``weights`` for ``part`` into ones that fit this model's (``own``: its state dict). Default: as is."""
        return weights

    def after_init_from(self, missing: list[str]) -> None:
        """Called once ``train.init_from`` has loaded, with the keys (``part.key``) it did not have."""

    def losses(self, part: str, batch: Batch, step: int) -> LossOutput:
        """Loss for stepping ``part`` on ``batch`` (``step`` drives schedules such as scheduled sampling)."""
        raise NotImplementedError

    # --- what the evaluator and the server need ---------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
        **options,
    ) -> torch.Tensor:
        """``n`` videos, float [n, T, H, W, C] in [-1, 1]; the same seed gives the same videos."""
        raise NotImplementedError

    def conditioning(self) -> Conditioning:
        """What ``sample`` takes besides noise (class labels by default, where the config has classes)."""
        return Conditioning(classes=int(self.config.num_classes))

    def sample_conditioning(self, batch: Batch, n: int) -> dict:
        """What ``sample`` should be conditioned on to mirror the first ``n`` clips of a real batch
        (labels and captions by default; a predictor takes its context frames)."""
        out: dict = {}
        if batch.label is not None:
            out["labels"] = batch.label[:n]
        if batch.caption is not None:
            out["captions"] = list(batch.caption[:n])
        return out

    def reconstruct(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(target, prediction), both float [B, C, T, H, W], for families whose output can be compared
        with the input frame by frame (PSNR / SSIM); None for generators from noise."""
        return None

    # --- what the registry and telemetry need -----------------------------------------------
    def tokens_per_sample(self) -> int:
        """Positions the network computes on per training clip (telemetry's tokens/s): the transformer's
        tokens for the DiT; for the convolutional families the clip's pixel positions (frames x H x W)."""
        cfg = self.config
        return int(cfg.frames * cfg.height * cfg.width)

    def flops_per_sample(self) -> int:
        """Analytic forward FLOPs (2 x multiply-accumulates) per training sample of the preset's shape."""
        raise NotImplementedError


def to_channels_last(video: torch.Tensor) -> torch.Tensor:
    """[N, C, T, H, W] (what the networks compute on) -> [N, T, H, W, C] (what ``sample`` returns)."""
    return video.permute(0, 2, 3, 4, 1).contiguous()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_device(module: nn.Module) -> torch.device:
    """Device of a module's parameters (works through wrappers and on sharded DTensor params)."""
    return next(module.parameters()).device


def param_dtype(module: nn.Module) -> torch.dtype:
    """Dtype ``sample`` feeds a part: its parameters' (a bf16 model takes bf16 inputs; FSDP2's
    mixed precision keeps fp32 parameters and casts the inputs itself)."""
    return next(module.parameters()).dtype


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    """A private RNG so ``sample`` is reproducible without touching the global RNG state."""
    return torch.Generator(device=device).manual_seed(int(seed))


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) inside the block, restoring each submodule's own flag after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float video -> uint8 with the same layout (rounded, clamped)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
