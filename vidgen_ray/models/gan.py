"""Video GAN: a residual generator from noise (and a class) to video, a spectral-normalised video
discriminator and an optional per-frame image discriminator (MoCoGAN), hinge or non-saturating
losses, and a lazy R1 penalty (StyleGAN2).

    python -c "from vidgen_ray.models.registry import build_model, get_preset; \
print(build_model(get_preset('gan-debug')).sample(2, seed=0).shape)"

Parts, stepped in this order each iteration: ``discriminator`` then ``generator``. The
generator step switches the discriminator's ``requires_grad`` off and the discriminator step
switches it back on, so the generator's backward never computes discriminator gradients.

FLOPs per sample (``flops_per_sample``) are the forward FLOPs of the passes one training iteration
backpropagates through: the generator once and the discriminator three times (real and fake in
the discriminator step, fake in the generator step), i.e. G + 3 D. The discriminator step's
no-grad generator pass and the lazy R1 pass are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    Batch,
    Conditioning,
    LossOutput,
    ModelConfig,
    VideoModel,
    eval_mode,
    param_device,
    param_dtype,
    seeded_generator,
    to_channels_last,
)
from .conv_layers import ConvKind, ResBlock3d, Size3, VideoConv, norm_groups
from .flops import conv_flops, linear_flops
from .spectral_norm import spectral_norm


@dataclass
class GANConfig(ModelConfig):
    name: str = "gan-debug"
    family: Literal["gan"] = "gan"
    z_dim: int = 64
    base_frames: int = 2  # the generator starts from base_frames x (H, W) / 2^stages
    gen_channels: tuple[int, ...] = (64, 32, 16, 16)  # at the base and after each 2x upsampling
    disc_channels: tuple[int, ...] = (16, 32, 64)  # after each 2x downsampling
    conv: ConvKind = "factorised"
    image_discriminator: bool = True  # MoCoGAN's per-frame discriminator
    image_disc_frames: int = 2  # frames per clip it sees
    image_disc_weight: float = 1.0
    loss: Literal["hinge", "non_saturating"] = "hinge"
    r1_gamma: float = 0.0  # 0 disables the R1 penalty
    r1_interval: int = 16  # lazy regularisation: every r1_interval steps, scaled by r1_interval
    # Image-to-video: the generator sees the first frame (encoded to its base grid and to a vector joining z)
    # and the clip it makes starts with that frame itself; dropped with image_dropout so the same generator
    # also makes clips from noise alone. The discriminators see the first frame in the clips they judge.
    image_condition: bool = False
    image_dropout: float = 0.1

    @property
    def up_stages(self) -> int:
        return len(self.gen_channels) - 1

    def validate(self) -> None:
        super().validate()
        stages = self.up_stages
        if stages < 1:
            self.fail(f"gen_channels {self.gen_channels} needs at least 2 entries (base + one upsampling)")
        for field in ("height", "width"):
            size = getattr(self, field)
            if size % 2**stages:
                self.fail(
                    f"{field} {size} is not divisible by 2^{stages} (one 2x upsampling per gen_channels "
                    f"entry after the first); set model.{field} to a multiple of {2**stages}"
                )
        if self.base_frames < 1:
            self.fail(f"base_frames {self.base_frames} must be >= 1; set model.base_frames")
        ratio = self.frames / self.base_frames
        if ratio < 1 or ratio != 2 ** round(math.log2(ratio)) or round(math.log2(ratio)) > stages:
            self.fail(
                f"frames {self.frames} must be base_frames {self.base_frames} times a power of two "
                f"<= 2^{stages}; set model.frames or model.base_frames"
            )
        if not self.disc_channels:
            self.fail("disc_channels is empty; set e.g. model.disc_channels=[32,64,128]")
        if self.image_discriminator and not 1 <= self.image_disc_frames <= self.frames:
            self.fail(f"image_disc_frames {self.image_disc_frames} must be in [1, frames={self.frames}]")
        if not 0.0 <= self.image_dropout < 1.0:
            self.fail(f"image_dropout {self.image_dropout} must be in [0, 1)")
        if self.r1_gamma < 0 or self.r1_interval < 1:
            self.fail("r1_gamma must be >= 0 and r1_interval >= 1; set model.r1_gamma=0 to disable R1")


# --- generator --------------------------------------------------------------------------------


class Generator(nn.Module):
    """z (+ class embedding) -> [B, C, T, H, W] in [-1, 1] through residual 2x-upsampling stages."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        ch = cfg.gen_channels
        stages = cfg.up_stages
        self.base: Size3 = (cfg.base_frames, cfg.height >> stages, cfg.width >> stages)
        temporal_ups = round(math.log2(cfg.frames // cfg.base_frames))
        self.time_up = [i < temporal_ups for i in range(stages)]  # upsample time in the first stages
        self.class_embed = nn.Embedding(cfg.num_classes, cfg.z_dim) if cfg.num_classes else None
        self.image = ImageEncoder(cfg.channels, ch[0], stages, cfg.z_dim) if cfg.image_condition else None
        cond_dim = cfg.z_dim * (1 + (cfg.num_classes > 0) + (self.image is not None))
        self.fc = nn.Linear(cond_dim, ch[0] * math.prod(self.base))
        self.blocks = nn.ModuleList(
            ResBlock3d(ch[i], ch[i + 1], cfg.conv, cond_dim, cfg.dropout) for i in range(stages)
        )
        self.out_norm = nn.GroupNorm(norm_groups(ch[-1]), ch[-1], eps=1e-6)
        self.out_conv = VideoConv(ch[-1], cfg.channels, cfg.conv)
        self.cond_dim, self.out_size = cond_dim, (cfg.frames, cfg.height, cfg.width)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, image: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` [B, C, H, W] the first frame and ``keep`` float [B] (1: given, 0: dropped), both required
        by an image-conditioned generator."""
        parts = [z] if self.class_embed is None else [z, self.class_embed(labels)]
        grid = None
        if self.image is not None:
            if image is None or keep is None:
                raise ValueError("this generator is image-conditioned: pass image= and keep= (zeros: no image)")
            keep = keep.to(z.dtype).view(-1, 1, 1, 1)
            grid, vector = self.image(image.to(z.dtype) * keep, keep)
            parts.append(vector)
        cond = torch.cat(parts, dim=1) if len(parts) > 1 else z
        x = self.fc(cond).view(z.shape[0], -1, *self.base)
        if grid is not None:  # the picture's features at every base frame
            x = x + grid[:, :, None]
        for block, time_up in zip(self.blocks, self.time_up):
            x = F.interpolate(x, scale_factor=(2 if time_up else 1, 2, 2), mode="nearest")
            x = block(x, cond)
        video = torch.tanh(self.out_conv(F.silu(self.out_norm(x))))
        if grid is None:
            return video
        first = torch.where(keep > 0, image.to(video.dtype), video[:, :, 0])  # the given frame is the clip's first
        return torch.cat([first[:, :, None], video[:, :, 1:]], dim=2)

    def flops(self) -> int:
        total = linear_flops(self.fc.in_features, self.fc.out_features)
        if self.image is not None:
            total += self.image.flops(self.out_size[1:])
        size = self.base
        for block, time_up in zip(self.blocks, self.time_up):
            size = (size[0] * (2 if time_up else 1), size[1] * 2, size[2] * 2)
            total += block.flops(size)
        return total + self.out_conv.flops(size)


class ImageEncoder(nn.Module):
    """The first frame (and a channel saying whether it is given) -> (features [B, out_ch, h, w] on the
    generator's base grid, a vector [B, z_dim] that joins z): one stride-2 conv per upsampling stage."""

    def __init__(self, channels: int, out_ch: int, stages: int, z_dim: int) -> None:
        super().__init__()
        widths = [max(16, out_ch >> (stages - 1 - i)) for i in range(stages)]
        convs, in_ch = [], channels + 1
        for width in widths:
            convs.append(nn.Conv2d(in_ch, width, 4, stride=2, padding=1))
            in_ch = width
        self.convs = nn.ModuleList(convs)
        self.to_grid = nn.Conv2d(in_ch, out_ch, 1)
        self.to_vector = nn.Linear(in_ch, z_dim)

    def forward(self, image: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([image, keep.expand(-1, 1, *image.shape[2:])], dim=1)
        for conv in self.convs:
            x = F.silu(conv(x))
        return self.to_grid(x), self.to_vector(x.mean(dim=(2, 3)))

    def flops(self, size: tuple[int, int]) -> int:
        total, (h, w) = 0, size
        for conv in self.convs:
            h, w = h // 2, w // 2
            total += conv_flops(conv, (h, w))
        return total + conv_flops(self.to_grid, (h, w)) + linear_flops(self.to_vector.in_features, self.to_vector.out_features)


# --- discriminators ---------------------------------------------------------------------------


def average_pool(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Non-overlapping average pooling over the trailing dims by ``factors`` via reshape + mean:
    any dtype on any device (CPU has no bf16 avg_pool3d kernel)."""
    shape = list(x.shape[:2])
    for size, factor in zip(x.shape[2:], factors):
        shape += [size // factor, factor]
    return x.reshape(shape).mean(dim=tuple(range(3, len(shape), 2)))


class DiscBlock(nn.Module):
    """Spectral-normalised residual block that halves the resolution (BigGAN's D block).

    ``dims`` 3 for clips [B, C, T, H, W], 2 for frames [B, C, H, W]. The first block skips the
    pre-activation (it sees raw pixels)."""

    def __init__(self, in_ch: int, out_ch: int, dims: int, kind: ConvKind, down: tuple[int, ...], first: bool) -> None:
        super().__init__()
        self.first, self.down = first, down
        if dims == 3:
            self.conv1 = VideoConv(in_ch, out_ch, kind, spectral=True)
            self.conv2 = VideoConv(out_ch, out_ch, kind, spectral=True)
        else:
            self.conv1 = spectral_norm(nn.Conv2d(in_ch, out_ch, 3, padding=1))
            self.conv2 = spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        conv1x1 = nn.Conv3d if dims == 3 else nn.Conv2d
        self.skip = spectral_norm(conv1x1(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.leaky_relu(x, 0.2)
        h = self.conv2(F.leaky_relu(self.conv1(h), 0.2))
        return average_pool(h, self.down) + average_pool(self.skip(x), self.down)

    def flops(self, size: tuple[int, ...]) -> int:
        """FLOPs for an input of ``size`` (the convolutions run before pooling)."""

        def one(conv: nn.Module) -> int:
            return conv.flops(size) if isinstance(conv, VideoConv) else conv_flops(conv, size)

        return one(self.conv1) + one(self.conv2) + conv_flops(self.skip, size)

    def out_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // d for s, d in zip(size, self.down))


class ProjectionDiscriminator(nn.Module):
    """Residual D blocks, sum pooling, a linear logit, plus the class projection term of
    Miyato & Koyama (2018) when class-conditional. ``dims`` 3: video D; ``dims`` 2: image D."""

    def __init__(self, cfg: GANConfig, dims: int) -> None:
        super().__init__()
        size: tuple[int, ...] = (cfg.height, cfg.width) if dims == 2 else (cfg.frames, cfg.height, cfg.width)
        self.in_size = size
        blocks, in_ch = [], cfg.channels
        for i, out_ch in enumerate(cfg.disc_channels):
            # Halve time while it is even and > 1, space always (validated sizes keep it integral).
            down = (2,) * 2 if dims == 2 else ((2 if size[0] % 2 == 0 and size[0] > 1 else 1), 2, 2)
            block = DiscBlock(in_ch, out_ch, dims, cfg.conv, down, first=i == 0)
            blocks.append(block)
            size, in_ch = block.out_size(size), out_ch
        self.blocks = nn.ModuleList(blocks)
        # No bias: under the hinge loss its gradient cancels exactly whenever real and fake logits
        # are all inside the margin, and an output offset tells the generator nothing.
        self.logit = spectral_norm(nn.Linear(in_ch, 1, bias=False))
        self.class_embed = spectral_norm(nn.Embedding(cfg.num_classes, in_ch)) if cfg.num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        h = F.leaky_relu(x, 0.2).flatten(2).sum(dim=2)  # global sum pooling -> [B, C]
        out = self.logit(h).sum(dim=1)  # [B, 1] -> [B] as a new tensor, not a view (see Autoencoder)
        if self.class_embed is not None:
            out = out + (self.class_embed(labels) * h).sum(dim=1)
        return out

    def flops(self) -> int:
        total, size = 0, self.in_size
        for block in self.blocks:
            total += block.flops(size)
            size = block.out_size(size)
        return total + linear_flops(self.logit.in_features, 1)


class Discriminator(nn.Module):
    """The discriminator part: a video D on whole clips plus, optionally, an image D on
    ``image_disc_frames`` random frames of each clip. Returns (video logits [B], frame logits
    [B * k] or None)."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.video = ProjectionDiscriminator(cfg, dims=3)
        self.image = ProjectionDiscriminator(cfg, dims=2) if cfg.image_discriminator else None
        self.frames_per_clip = cfg.image_disc_frames

    def forward(self, video: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        video_logits = self.video(video, labels)
        if self.image is None:
            return video_logits, None
        b, c, t, h, w = video.shape
        k = self.frames_per_clip
        index = torch.rand(b, t, device=video.device).argsort(dim=1)[:, :k]  # k distinct frames per clip
        frames = video.transpose(1, 2)[torch.arange(b, device=video.device)[:, None], index]
        frame_labels = None if labels is None else labels.repeat_interleave(k)
        return video_logits, self.image(frames.reshape(b * k, c, h, w), frame_labels)

    def flops(self) -> int:
        image = 0 if self.image is None else self.frames_per_clip * self.image.flops()
        return self.video.flops() + image


# --- losses -----------------------------------------------------------------------------------


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


# --- the family -------------------------------------------------------------------------------


class VideoGAN(VideoModel):
    family = "gan"
    sampling_part = "generator"

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        # Computed once here: after parallelize wraps the parts their methods are out of reach.
        self._generator_flops = self.generator.flops()
        self._discriminator_flops = self.discriminator.flops()

    def parts(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator, "generator": self.generator}

    def lr_multiplier(self, part: str, optim) -> float:
        """The discriminator at ``train.optim.discriminator_lr_mult`` x the generator's rate (TTUR)."""
        return optim.discriminator_lr_mult if part == "discriminator" else 1.0

    def shard_units(self, part: str) -> list[nn.Module]:
        if part == "generator":
            return list(self.generator.blocks)
        if part == "discriminator":
            image = [] if self.discriminator.image is None else list(self.discriminator.image.blocks)
            return list(self.discriminator.video.blocks) + image
        raise KeyError(f"gan has parts 'discriminator' and 'generator', not {part!r}")

    def _labels(self, batch: Batch) -> torch.Tensor | None:
        if not self.config.num_classes:
            return None
        if batch.label is None:
            raise ValueError(
                f"{self.config.name} is class-conditional (num_classes={self.config.num_classes}) but the "
                "batch has no labels; add labels to the manifest or set model.num_classes=0"
            )
        return batch.label

    def _image(self, real: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The clips' first frames and which of them are given (the rest dropped), for an image-conditioned G."""
        if not self.config.image_condition:
            return None, None
        keep = (torch.rand(real.shape[0]) >= self.config.image_dropout).to(real.device, real.dtype)
        return real[:, :, 0], keep

    def losses(self, part: str, batch: Batch, step: int) -> LossOutput:
        cfg = self.config
        real, labels = batch.video, self._labels(batch)
        z = torch.randn(real.shape[0], cfg.z_dim, device=real.device, dtype=real.dtype)
        image, keep = self._image(real)
        if part == "discriminator":
            self.discriminator.requires_grad_(True)  # frozen since the last generator step
            with torch.no_grad():
                fake = self.generator(z, labels, image, keep)
            # Lazy R1 (a gradient of D wrt its input) only while training: validation runs under no_grad.
            r1_step = self.training and cfg.r1_gamma > 0 and step % cfg.r1_interval == 0
            real = real.detach().requires_grad_(r1_step)
            # Real and fake go through D in one call: one forward per backward keeps DDP/FSDP happy
            # and D has no batch statistics, so concatenation changes nothing.
            both_labels = None if labels is None else torch.cat([labels, labels])
            video_logits, frame_logits = self.discriminator(torch.cat([real, fake.to(real.dtype)]), both_labels)
            v_real, v_fake = video_logits.float().chunk(2)
            loss = discriminator_loss(cfg.loss, v_real, v_fake)
            metrics = {"d_real": v_real.detach().mean(), "d_fake": v_fake.detach().mean()}
            real_score = v_real.sum()
            if frame_logits is not None:
                f_real, f_fake = frame_logits.float().chunk(2)
                loss = loss + cfg.image_disc_weight * discriminator_loss(cfg.loss, f_real, f_fake)
                real_score = real_score + cfg.image_disc_weight * f_real.sum()
            if r1_step:
                (grad,) = torch.autograd.grad(real_score, real, create_graph=True)
                r1 = grad.float().square().flatten(1).sum(1).mean()
                loss = loss + (cfg.r1_gamma / 2) * r1 * cfg.r1_interval
                metrics["r1"] = r1.detach()
            metrics["d_loss"] = loss.detach()
            return LossOutput(loss, metrics)
        if part == "generator":
            # D stays frozen until the next discriminator step, not just for this forward: the
            # trainer's backward may recompute checkpointed D blocks or re-gather FSDP-sharded D
            # parameters, and both must see the same requires_grad as this forward did.
            self.discriminator.requires_grad_(False)
            fake = self.generator(z, labels, image, keep)
            video_logits, frame_logits = self.discriminator(fake, labels)
            loss = generator_loss(cfg.loss, video_logits.float())
            if frame_logits is not None:
                loss = loss + cfg.image_disc_weight * generator_loss(cfg.loss, frame_logits.float())
            return LossOutput(loss, {"g_loss": loss.detach()})
        raise KeyError(f"gan has parts 'discriminator' and 'generator', not {part!r}")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
        **options,
    ) -> torch.Tensor:
        cfg = self.config
        device = param_device(self.generator)
        rng = seeded_generator(seed, device)
        z = torch.randn(n, cfg.z_dim, device=device, generator=rng)
        if cfg.num_classes and labels is None:
            labels = torch.randint(cfg.num_classes, (n,), device=device, generator=rng)
        image, keep = options.get("image"), None
        if image is not None and not cfg.image_condition:
            raise ValueError(f"{cfg.name} is not image-conditioned; drop image= or train with model.image_condition=true")
        if cfg.image_condition:
            shape = (n, cfg.channels, cfg.height, cfg.width)
            keep = torch.full((n,), float(image is not None), device=device)
            image = torch.zeros(shape, device=device) if image is None else torch.as_tensor(image, dtype=torch.float32, device=device)
            if image.dim() == 3:
                image = image[None].expand(n, -1, -1, -1)
            if tuple(image.shape) != shape:
                raise ValueError(f"image must be {list(shape)} (or {list(shape[1:])}) in [-1, 1], got {list(image.shape)}")
        dtype = param_dtype(self.generator)
        with eval_mode(self):
            video = self.generator(z.to(dtype), None if labels is None else labels.to(device),
                                   None if image is None else image.to(dtype), keep)
        return to_channels_last(video.float())

    def conditioning(self) -> Conditioning:
        return Conditioning(classes=int(self.config.num_classes), image=self.config.image_condition)

    def sample_conditioning(self, batch: Batch, n: int) -> dict:
        out = super().sample_conditioning(batch, n)
        if self.config.image_condition:
            out["image"] = batch.video[:n, :, 0]
        return out

    def generator_flops(self) -> int:
        return self._generator_flops

    def discriminator_flops(self) -> int:
        """One discriminator call on one clip (video D + the image D on its sampled frames)."""
        return self._discriminator_flops

    def flops_per_sample(self) -> int:
        return self._generator_flops + 3 * self._discriminator_flops
