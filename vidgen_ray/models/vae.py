"""Video VAE: a 3D-convolutional encoder/decoder compressing space 4x or 8x and optionally time 4x,
trained with a reconstruction loss (MSE or L1), a KL term and an optional perceptual term.

    python -c "from vidgen_ray.models.registry import build_model, get_preset; \
import torch; vae = build_model(get_preset('vae-debug')); \
print(vae.net(torch.zeros(1, 3, 8, 32, 32), mode='encode').shape)"

One part, ``model`` (the ``Autoencoder``). It doubles as the frozen latent encoder of the video
transformer: ``dit.attach_autoencoder(vae)``; the transformer then calls
``autoencoder(video, mode="encode")`` and ``autoencoder(latents, mode="decode")``.

Loss normalisation: reconstruction and KL are per-element means (of pixels and of latent
elements respectively), so ``kl_weight`` is comparable across shapes; a typical value is 1e-4.
FLOPs per sample: encoder + decoder forward on one clip. The frozen perceptual network is not
counted (it trains nothing).
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
    LossOutput,
    ModelConfig,
    VideoModel,
    VideoShape,
    eval_mode,
    param_device,
    param_dtype,
    seeded_generator,
    to_channels_last,
)
from .conv_layers import ConvKind, Downsample, ResBlock3d, Size3, Upsample, VideoConv, norm_groups
from .perceptual import PerceptualLoss, load_vgg16_features


@dataclass
class VAEConfig(ModelConfig):
    name: str = "vae-debug"
    family: Literal["vae"] = "vae"
    hidden: tuple[int, ...] = (16, 32, 32)  # channels per level; len = log2(spatial_compression) + 1
    blocks_per_level: int = 1
    spatial_compression: int = 4  # 4 or 8
    temporal_compression: int = 1  # 1 or 4
    z_channels: int = 4
    conv: ConvKind = "3d"
    recon_loss: Literal["mse", "l1"] = "l1"
    kl_weight: float = 1e-4
    perceptual_weight: float = 0.0  # > 0 needs perceptual_weights
    perceptual_weights: str | None = None  # path to a torchvision-layout VGG-16 state dict
    perceptual_frames: int = 2  # frames per clip the perceptual loss looks at
    latent_scale: float = 1.0  # encode() multiplies latents by this (unit variance for the DiT)

    @property
    def downsamples(self) -> int:
        return int(math.log2(self.spatial_compression))

    @property
    def latent_shape(self) -> VideoShape:
        return VideoShape(
            self.frames // self.temporal_compression,
            self.height // self.spatial_compression,
            self.width // self.spatial_compression,
            self.z_channels,
        )

    def validate(self) -> None:
        super().validate()
        if self.num_classes:
            self.fail("the VAE is unconditional; set model.num_classes=0")
        if self.spatial_compression not in (4, 8):
            self.fail(f"spatial_compression {self.spatial_compression} is not 4 or 8; set model.spatial_compression")
        if self.temporal_compression not in (1, 4):
            self.fail(f"temporal_compression {self.temporal_compression} is not 1 or 4; set model.temporal_compression")
        if len(self.hidden) != self.downsamples + 1:
            self.fail(
                f"hidden {self.hidden} needs {self.downsamples + 1} entries for spatial_compression "
                f"{self.spatial_compression} (one per level); set model.hidden"
            )
        for field, factor in (
            ("height", self.spatial_compression),
            ("width", self.spatial_compression),
            ("frames", self.temporal_compression),
        ):
            if getattr(self, field) % factor:
                self.fail(
                    f"{field} {getattr(self, field)} is not divisible by its compression {factor}; "
                    f"set model.{field} to a multiple of {factor}"
                )
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            self.fail(
                f"perceptual_weight {self.perceptual_weight} > 0 needs VGG-16 weights: set "
                "model.perceptual_weights to a torchvision vgg16 state dict path (or model.perceptual_weight=0)"
            )
        if not 1 <= self.perceptual_frames <= self.frames:
            self.fail(f"perceptual_frames {self.perceptual_frames} must be in [1, frames={self.frames}]")


def _temporal_levels(cfg: VAEConfig) -> list[bool]:
    """Which downsampling levels also halve time: the last log2(temporal_compression) ones."""
    n_time = int(math.log2(cfg.temporal_compression))
    return [i >= cfg.downsamples - n_time for i in range(cfg.downsamples)]


def _levels(
    in_ch: int, hidden: tuple[int, ...], per_level: int, resample: list[nn.Module], dropout: float, kind: ConvKind
) -> list[nn.Module]:
    """Residual blocks level by level, with ``resample[i]`` after level i (none after the last)."""
    stages: list[nn.Module] = []
    for level, out_ch in enumerate(hidden):
        for _ in range(per_level):
            stages.append(ResBlock3d(in_ch, out_ch, kind, dropout=dropout))
            in_ch = out_ch
        if level < len(resample):
            stages.append(resample[level])
    return stages


def _stages_flops(stages: nn.ModuleList, size: Size3) -> tuple[int, Size3]:
    """FLOPs of modules run in sequence from input ``size`` (resamplers change the size)."""
    total = 0
    for stage in stages:
        total += stage.flops(size)
        size = stage.out_size(size) if hasattr(stage, "out_size") else size
    return total, size


class Encoder(nn.Module):
    """[B, C, T, H, W] -> mean and log-variance stacked on channels [B, 2z, t, h, w]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        h, kind = cfg.hidden, cfg.conv
        downs = [Downsample(h[i], kind, temporal) for i, temporal in enumerate(_temporal_levels(cfg))]
        self.conv_in = VideoConv(cfg.channels, h[0], kind)
        self.body = nn.ModuleList(
            [
                *_levels(h[0], h, cfg.blocks_per_level, downs, cfg.dropout, kind),
                ResBlock3d(h[-1], h[-1], kind, dropout=cfg.dropout),
            ]
        )
        self.norm_out = nn.GroupNorm(norm_groups(h[-1]), h[-1], eps=1e-6)
        self.conv_out = VideoConv(h[-1], 2 * cfg.z_channels, kind)
        self.in_size: Size3 = (cfg.frames, cfg.height, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.body:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))

    def flops(self) -> int:
        body, size = _stages_flops(self.body, self.in_size)
        return self.conv_in.flops(self.in_size) + body + self.conv_out.flops(size)


class Decoder(nn.Module):
    """Latents [B, z, t, h, w] -> video [B, C, T, H, W] (unbounded; sampling clamps)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        h, kind = tuple(reversed(cfg.hidden)), cfg.conv
        ups = [Upsample(h[i], kind, temporal) for i, temporal in enumerate(reversed(_temporal_levels(cfg)))]
        self.conv_in = VideoConv(cfg.z_channels, h[0], kind)
        self.body = nn.ModuleList(
            [
                ResBlock3d(h[0], h[0], kind, dropout=cfg.dropout),
                *_levels(h[0], h, cfg.blocks_per_level, ups, cfg.dropout, kind),
            ]
        )
        self.norm_out = nn.GroupNorm(norm_groups(h[-1]), h[-1], eps=1e-6)
        self.conv_out = VideoConv(h[-1], cfg.channels, kind)
        latent = cfg.latent_shape
        self.in_size: Size3 = (latent.frames, latent.height, latent.width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for stage in self.body:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))

    def flops(self) -> int:
        body, size = _stages_flops(self.body, self.in_size)
        return self.conv_in.flops(self.in_size) + body + self.conv_out.flops(size)


class Autoencoder(nn.Module):
    """The trained part. ``forward(x, mode)``: every use goes through ``forward`` so a DDP/FSDP
    wrapper sees it. Modes: "reconstruct" (x -> recon, mean, logvar; samples the posterior),
    "encode" (x -> scaled posterior mean), "decode" (scaled latents -> video)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.latent_scale = cfg.latent_scale

    def forward(self, x: torch.Tensor, mode: str = "reconstruct"):
        if mode == "encode":
            mean, _ = self.encoder(x).chunk(2, dim=1)
            return mean * self.latent_scale
        if mode == "decode":
            return self.decoder(x / self.latent_scale)
        if mode != "reconstruct":
            raise ValueError(f"Autoencoder mode must be 'reconstruct', 'encode' or 'decode', not {mode!r}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        # A copy, not a view: FSDP2 hooks a sharded module's outputs, and a view would lose that
        # hook if the caller modified it in place (FSDP2 warns about returned views).
        return self.decoder(z), mean.clone(), logvar

    def flops(self) -> int:
        return self.encoder.flops() + self.decoder.flops()


class VideoVAE(VideoModel):
    family = "vae"

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.net = Autoencoder(config)
        self.perceptual = (
            PerceptualLoss(load_vgg16_features(config.perceptual_weights))
            if config.perceptual_weight > 0 and config.perceptual_weights
            else None
        )
        self._flops = self.net.flops()

    def parts(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def shard_units(self, part: str) -> list[nn.Module]:
        if part != "model":
            raise KeyError(f"vae has one part, 'model', not {part!r}")
        return [*self.net.encoder.body, *self.net.decoder.body]

    def losses(self, part: str, batch: Batch, step: int) -> LossOutput:
        if part != "model":
            raise KeyError(f"vae has one part, 'model', not {part!r}")
        cfg = self.config
        video = batch.video
        recon, mean, logvar = self.net(video)
        recon32, video32 = recon.float(), video.float()
        if cfg.recon_loss == "l1":
            rec = (recon32 - video32).abs().mean()
        else:
            rec = (recon32 - video32).square().mean()
        mean32, logvar32 = mean.float(), logvar.float()
        kl = 0.5 * (mean32.square() + logvar32.exp() - 1.0 - logvar32).mean()
        loss = rec + cfg.kl_weight * kl
        metrics = {"recon": rec.detach(), "kl": kl.detach()}
        if self.perceptual is not None:
            b, c, t, h, w = video.shape
            k = cfg.perceptual_frames
            index = torch.rand(b, t, device=video.device).argsort(dim=1)[:, :k]
            rows = torch.arange(b, device=video.device)[:, None]

            def pick(v: torch.Tensor) -> torch.Tensor:
                return v.transpose(1, 2)[rows, index].reshape(b * k, c, h, w)

            perceptual = self.perceptual(pick(recon), pick(video))
            loss = loss + cfg.perceptual_weight * perceptual
            metrics["perceptual"] = perceptual.detach()
        metrics["loss"] = loss.detach()
        return LossOutput(loss, metrics)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
        **options,
    ) -> torch.Tensor:
        """Decodes prior samples z ~ N(0, I). ``video=`` (float [n, C, T, H, W]) reconstructs
        those clips instead (posterior mean), which is what reconstruction metrics want."""
        device, dtype = param_device(self.net), param_dtype(self.net)
        with eval_mode(self):
            if options.get("video") is not None:
                latents = self.net(options["video"].to(device, dtype), mode="encode")
            else:
                shape = self.config.latent_shape
                rng = seeded_generator(seed, device)
                latents = (
                    torch.randn(
                        n, shape.channels, shape.frames, shape.height, shape.width, device=device, generator=rng
                    )
                    * self.config.latent_scale
                )
            video = self.net(latents.to(dtype), mode="decode")
        return to_channels_last(video.float().clamp(-1, 1))

    def reconstruct(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.sample(batch.size, seed=0, video=batch.video)
        return batch.video, recon.permute(0, 4, 1, 2, 3)

    def flops_per_sample(self) -> int:
        return self._flops
