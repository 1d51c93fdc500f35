"""Video diffusion transformer: 3D patches, alternating spatial and temporal attention blocks
(Latte's factorised variant, as in Open-Sora's STDiT), adaLN-Zero conditioning on timestep and
class, optional captions through a built-in byte-level text encoder (cross-attention), trained
with rectified flow and sampled with an Euler integrator and classifier-free guidance.

    python -c "from vidgen_ray.models.registry import build_model, get_preset; \
m = build_model(get_preset('dit-debug')); print(m.sample(1, seed=0, steps=4).shape)"

One part, ``model`` (``DiTNet``); ``shard_units`` are its blocks (and the text encoder layers).

Pixel space (``latent_channels=0``) or VAE latents: in latent mode the family holds a *frozen*
autoencoder that is not a trained part: ``dit.attach_autoencoder(vae)`` with a trained
``VideoVAE`` (or its ``Autoencoder``) whose latent geometry matches ``latent_channels``,
``latent_spatial_compression`` and ``latent_temporal_compression``. ``losses`` then encodes
``batch.video`` under ``no_grad`` and ``sample`` decodes. The autoencoder is a registered
submodule (moved by ``.to``, saved in the family's state dict), kept in eval mode.

FLOPs per sample: the transformer forward on one clip in its token space, including the text
encoder when captions are on; the frozen VAE encode is not counted.
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
    VideoShape,
    eval_mode,
    param_device,
    param_dtype,
    seeded_generator,
    to_channels_last,
)
from .conditioning import first_frame_condition, sobel_edges
from .flops import attention_flops, linear_flops
from .flow_matching import TimestepSampling, euler_sample, noisy_input, sample_timesteps, velocity_target
from .pretrained_text import PretrainedTextEncoder
from .text_encoder import ByteTextEncoder, encode_captions
from .transformer_layers import MLP, CrossAttention, LayerNorm32, SelfAttention, TimestepEmbedding, sincos_embedding


@dataclass
class DiTConfig(ModelConfig):
    name: str = "dit-debug"
    family: Literal["dit"] = "dit"
    hidden: int = 64
    depth: int = 4  # blocks in total, alternating spatial (even) and temporal (odd) attention
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: tuple[int, ...] = (1, 4, 4)  # (time, height, width) in the model's input space
    qk_norm: bool = True
    pos_embed: Literal["sincos", "learned"] = "sincos"
    # VAE latents: latent_channels > 0 switches to latent mode with this geometry.
    latent_channels: int = 0
    latent_spatial_compression: int = 1
    latent_temporal_compression: int = 1
    # A trained VAE checkpoint (path or URI) that build_model loads and attaches as the frozen codec,
    # and the factor that brings its latents to about unit variance (Stable Diffusion's 0.18215):
    # 1 / the std of the encoded training clips.
    autoencoder: str | None = None
    latent_scale: float = 1.0
    # Conditioning (num_classes: the class count; 0 = no class embedding).
    num_classes: int = 10
    caption: bool = True
    # The caption encoder: "byte" (built in, trained with the model) or a frozen pretrained T5 / CLIP text
    # encoder read from text_encoder_path (a save_pretrained folder, local or on object storage; nothing is
    # downloaded), its tokens cut or padded to max_caption_tokens and projected to the model's width.
    text_encoder: Literal["byte", "t5", "clip"] = "byte"
    text_encoder_path: str | None = None
    max_caption_tokens: int = 64
    max_caption_bytes: int = 32
    text_width: int = 64
    text_depth: int = 1
    text_heads: int = 4
    cond_dropout: float = 0.1  # drop class and caption together (classifier-free guidance)
    # Image-to-video: the clip's first frame (its latents in latent mode) and a mask join the noisy input's
    # channels (models/conditioning.first_frame_condition); dropped with image_dropout so one model samples
    # with and without an image; image_guidance is the default classifier-free guidance scale on the image.
    image_condition: bool = False
    image_dropout: float = 0.1
    image_guidance: float = 1.0
    # Sketch / control video (ControlNet): the clip's Sobel edge map feeds trainable copies of the first
    # control_blocks blocks whose outputs join the main blocks' through zero-initialised projections, so
    # switching control on leaves a trained model's output unchanged until the branch has trained.
    control: bool = False
    control_blocks: int = 2
    # Objective and default sampling options.
    timestep_sampling: TimestepSampling = "logit_normal"
    # SD3's shift of t towards the noise end, in training and sampling alike (1 = none); see
    # flow_matching.shift_timesteps for why clips of many near-identical frames want it.
    timestep_shift: float = 1.0
    # What the network outputs. "velocity" (noise - data, SD3) or "data" (the clean clip; JiT, Li & He
    # 2025): a token holds more pixel values than a small model's width can carry noise for (48 per
    # 4x4 patch here), and predicting the clean clip, which lies on a low-dimensional manifold, is what
    # still works then; both train on the velocity loss, the data prediction through v = (x_t - x) / t.
    prediction: Literal["velocity", "data"] = "velocity"
    min_t: float = 0.05  # floor of t in v = (x_t - x) / t for data prediction
    sample_steps: int = 32
    guidance: float = 1.0

    @property
    def latent(self) -> bool:
        return self.latent_channels > 0

    @property
    def model_shape(self) -> VideoShape:
        """The shape the transformer sees: pixels, or latents after the VAE."""
        if not self.latent:
            return self.shape
        return VideoShape(
            self.frames // self.latent_temporal_compression,
            self.height // self.latent_spatial_compression,
            self.width // self.latent_spatial_compression,
            self.latent_channels,
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        s = self.model_shape
        return (s.frames // self.patch[0], s.height // self.patch[1], s.width // self.patch[2])

    def validate(self) -> None:
        super().validate()
        if self.hidden % self.heads:
            self.fail(f"hidden {self.hidden} is not divisible by heads {self.heads}; set model.heads")
        if self.caption and self.text_encoder == "byte" and self.text_width % self.text_heads:
            self.fail(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}")
        if len(self.patch) != 3 or min(self.patch) < 1:
            self.fail(f"patch {self.patch} must be three positive ints (time, height, width)")
        if self.depth < 1 or self.max_caption_bytes < 1 or self.max_caption_tokens < 1:
            self.fail("depth, max_caption_bytes and max_caption_tokens must be >= 1")
        if self.text_encoder != "byte":
            if not self.caption:
                self.fail(f"text_encoder={self.text_encoder} reads captions but model.caption is false; set model.caption=true")
            if not self.text_encoder_path:
                self.fail(f"text_encoder={self.text_encoder} needs model.text_encoder_path: a folder written by "
                          "save_pretrained (local or s3://, gs://, abfs://); nothing is downloaded")
        elif self.text_encoder_path:
            self.fail("model.text_encoder_path is set but text_encoder is byte; set model.text_encoder=t5 or clip")
        if min(self.latent_spatial_compression, self.latent_temporal_compression) < 1:
            self.fail("latent compressions must be >= 1 (1 = none)")
        if not self.latent and (self.latent_spatial_compression, self.latent_temporal_compression) != (1, 1):
            self.fail("latent compressions are set but latent_channels is 0; set model.latent_channels")
        # Each token covers patch x VAE compression pixels along each axis.
        for field, size, p, factor in (
            ("frames", self.frames, self.patch[0], self.latent_temporal_compression),
            ("height", self.height, self.patch[1], self.latent_spatial_compression),
            ("width", self.width, self.patch[2], self.latent_spatial_compression),
        ):
            multiple = p * factor
            if size % multiple:
                why = f" (patch {p} x VAE compression {factor})" if factor > 1 else ""
                self.fail(
                    f"{field} {size} is not divisible by patch size {multiple}{why}; "
                    f"set model.{field} to a multiple of {multiple}"
                )
        if self.autoencoder and not self.latent:
            self.fail("model.autoencoder is set but latent_channels is 0; set model.latent_channels to the VAE's z_channels")
        if self.latent_scale <= 0:
            self.fail(f"latent_scale {self.latent_scale} must be positive (1 / std of the VAE latents)")
        if self.timestep_shift <= 0:
            self.fail(f"timestep_shift {self.timestep_shift} must be positive (1 = no shift)")
        if not 0.0 < self.min_t < 1.0:
            self.fail(f"min_t {self.min_t} must be in (0, 1)")
        if not 0.0 <= self.cond_dropout < 1.0:
            self.fail(f"cond_dropout {self.cond_dropout} must be in [0, 1)")
        if not 0.0 <= self.image_dropout < 1.0:
            self.fail(f"image_dropout {self.image_dropout} must be in [0, 1)")
        if self.image_guidance < 0:
            self.fail(f"image_guidance {self.image_guidance} must be >= 0 (1 = no guidance on the image)")
        if self.control and not 1 <= self.control_blocks <= self.depth:
            self.fail(f"control_blocks {self.control_blocks} must be in 1..depth={self.depth}; set model.control_blocks")

    @property
    def input_channels(self) -> int:
        """Channels the patch embedding reads: the noisy clip's, plus the first-frame condition and its mask."""
        c = self.model_shape.channels
        return c + (c + 1 if self.image_condition else 0)

    @property
    def compression(self) -> tuple[int, int, int]:
        """Pixels per model-space position along (frames, height, width): the VAE's factors, or 1."""
        if not self.latent:
            return (1, 1, 1)
        return (self.latent_temporal_compression, self.latent_spatial_compression, self.latent_spatial_compression)


SAMPLE_MIN_T = 1e-4  # sampling never evaluates t = 0 (Euler stops there); this only guards division


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """adaLN-Zero block attending within frames ("spatial") or across frames ("temporal"), with
    optional caption cross-attention. Tokens are [B, T, S, D] (S = tokens per frame)."""

    def __init__(self, cfg: DiTConfig, axis: Literal["spatial", "temporal"]) -> None:
        super().__init__()
        d = cfg.hidden
        self.axis = axis
        self.norm1 = LayerNorm32(d, affine=False)
        self.attn = SelfAttention(d, cfg.heads, cfg.qk_norm, cfg.dropout)
        self.norm_cross = LayerNorm32(d) if cfg.caption else None
        self.cross = CrossAttention(d, cfg.heads, cfg.qk_norm, cfg.dropout) if cfg.caption else None
        self.norm2 = LayerNorm32(d, affine=False)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio), cfg.dropout)
        self.ada = nn.Linear(d, 6 * d)  # shift/scale/gate for attention and MLP

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor | None, text_mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, t, s, d = x.shape
        mods = self.ada(F.silu(c)).to(x.dtype)[:, None, None, :]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods.chunk(6, dim=-1)
        h = _modulate(self.norm1(x), shift_a, scale_a)
        if self.axis == "spatial":
            h = self.attn(h.reshape(b * t, s, d)).view(b, t, s, d)
        else:
            h = self.attn(h.transpose(1, 2).reshape(b * s, t, d)).view(b, s, t, d).transpose(1, 2)
        x = x + gate_a * h
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x).reshape(b, t * s, d), text, text_mask).view(b, t, s, d)
        return x + gate_m * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.norm = LayerNorm32(dim, affine=False)
        self.ada = nn.Linear(dim, 2 * dim)
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(F.silu(c)).to(x.dtype)[:, None, None, :].chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(x), shift, scale))


class TextProjection(nn.Module):
    """A frozen pretrained encoder's token embeddings [B, L, width] -> the model's width (trained)."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm32(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(self.norm(embeddings)), mask


class DiTNet(nn.Module):
    """The trained part: (x_t [B, C, T, H, W], t [B], labels [B] | None, caption [B, L] byte ids or
    [B, L, W] pretrained embeddings | None, ...) -> the prediction, same shape as x_t."""

    def __init__(self, cfg: DiTConfig, text_dim: int = 0) -> None:
        super().__init__()
        d, shape = cfg.hidden, cfg.model_shape
        self.grid, self.patch, self.channels = cfg.grid, tuple(cfg.patch), shape.channels
        tg, hg, wg = self.grid
        self.patch_embed = nn.Conv3d(cfg.input_channels, d, self.patch, stride=self.patch)
        self.learned_positions = cfg.pos_embed == "learned"
        if self.learned_positions:  # tied to the preset's grid
            self.pos_spatial = nn.Parameter(torch.randn(hg * wg, d) * 0.02)
            self.pos_temporal = nn.Parameter(torch.randn(tg, d) * 0.02)
        self._sincos: dict = {}  # (grid, device) -> sin-cos positions: computed per grid, any grid
        self.t_embed = TimestepEmbedding(d)
        # Index num_classes is the "null" class used when the label is dropped (guidance).
        self.class_embed = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None
        self.text: nn.Module | None = None
        if cfg.caption and cfg.text_encoder == "byte":
            self.text = ByteTextEncoder(cfg.text_width, cfg.text_depth, cfg.text_heads, cfg.max_caption_bytes, d, cfg.dropout)
        elif cfg.caption:
            self.text = TextProjection(text_dim, d)
        self.blocks = nn.ModuleList(DiTBlock(cfg, "spatial" if i % 2 == 0 else "temporal") for i in range(cfg.depth))
        self.final = FinalLayer(d, math.prod(self.patch) * shape.channels)
        self.control = ControlBranch(cfg) if cfg.control else None
        # Splits each frame's spatial tokens across a sequence-parallel group (train/sequence_parallel's
        # TokenShards: shard(tokens) after the embedding, gather(out) after the final layer); None: whole.
        self.sequence = None
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: xavier linears, zero adaLN, cross-attention output and final layer
        (each block starts as the identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        if isinstance(self.text, ByteTextEncoder):
            nn.init.normal_(self.text.embed.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada.weight)
            nn.init.zeros_(block.ada.bias)
            if block.cross is not None:  # PixArt: captions start with no effect on the residual stream
                nn.init.zeros_(block.cross.proj.weight)
        for layer in (self.final.ada, self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.control is not None:
            self.control.reset(self.blocks)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        caption_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``image``: the first-frame condition in model space [B, C + 1, T, H, W] (zeros: none), required
        when the net was built with it; ``control``: a pixel-space edge map [B, 1, T, H, W] (None: the
        control branch is skipped, which is exactly the model without it); ``caption_mask``: bool [B, L],
        True on real tokens, with a pretrained encoder's embeddings (byte ids carry their own padding)."""
        b = x.shape[0]
        tg, hg, wg = self.grid_of(x.shape[2:])
        if self.patch_embed.in_channels != x.shape[1]:  # the image condition's channels join the input's
            if image is None:
                raise ValueError("this DiT is image-conditioned: pass image= (first_frame_condition; zeros for none)")
            x = torch.cat([x, image.to(x.dtype)], dim=1)
        tokens = self.patch_embed(x).flatten(3).permute(0, 2, 3, 1)  # [B, Tg, S, D]
        tokens = tokens + self.positions((tg, hg, wg), tokens.device).to(tokens.dtype)
        c = self.t_embed(t)
        if self.class_embed is not None:
            c = c + self.class_embed(labels)
        text = text_mask = None
        if isinstance(self.text, ByteTextEncoder):
            text, text_mask = self.text(caption_ids)
        elif self.text is not None:
            text, text_mask = self.text(caption_ids, caption_mask)
        split = self.sequence is not None
        hints: list[torch.Tensor] = []
        if self.control is not None and control is not None:
            hints = self.control(tokens, control.to(tokens.dtype), c, text, text_mask, self.sequence)
        if split:  # this rank's share of every frame's spatial tokens: [B, Tg, S / P, D]
            tokens = self.sequence.shard(tokens)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, c, text, text_mask)
            if i < len(hints):
                tokens = tokens + hints[i]
        out = self.final(tokens, c)  # [B, Tg, S, pt*ph*pw*C]
        if split:
            out = self.sequence.gather(out)
        pt, ph, pw = self.patch
        out = out.view(b, tg, hg, wg, pt, ph, pw, self.channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, self.channels, tg * pt, hg * ph, wg * pw)


    def grid_of(self, size) -> tuple[int, int, int]:
        """The token grid of an input of ``size`` (frames, height, width): any multiple of the patch."""
        if any(n % p for n, p in zip(size, self.patch)):
            raise ValueError(f"input {tuple(size)} is not a multiple of the patch {self.patch} (frames, height, width)")
        return tuple(n // p for n, p in zip(size, self.patch))  # type: ignore[return-value]

    def positions(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """[1, Tg, S, D] position embeddings of ``grid``: sin-cos computed for any grid (cached per grid),
        or the learned ones of the preset's grid."""
        tg, hg, wg = grid
        if self.learned_positions:
            if grid != tuple(self.grid):
                raise ValueError(f"learned positions exist for the grid {self.grid} only, not {grid}; use pos_embed=sincos")
            return self.pos_spatial[None, None] + self.pos_temporal[None, :, None]
        key = (grid, str(device))
        if key not in self._sincos:
            d = self.patch_embed.out_channels
            spatial, temporal = _sincos_2d(hg, wg, d).to(device), sincos_embedding(tg, d).to(device)
            self._sincos[key] = spatial[None, None] + temporal[None, :, None]
        return self._sincos[key]


class ControlBranch(nn.Module):
    """ControlNet for the DiT (PixArt-delta's): the edge map is patch-embedded (one token per model token: its
    kernel spans patch x VAE compression pixels), added to a copy of the input tokens through a zero-initialised
    projection, and run through trainable copies of the first ``control_blocks`` blocks; each copy's output
    joins the main stream after its block through another zero-initialised projection. At initialisation
    (and after ``reset``) every hint is exactly zero: the model samples as it did without control."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.hidden
        kernel = tuple(p * f for p, f in zip(cfg.patch, cfg.compression))
        self.embed = nn.Conv3d(1, d, kernel, stride=kernel)
        self.into = nn.Linear(d, d)
        self.blocks = nn.ModuleList(DiTBlock(cfg, "spatial" if i % 2 == 0 else "temporal") for i in range(cfg.control_blocks))
        self.out = nn.ModuleList(nn.Linear(d, d) for _ in range(cfg.control_blocks))

    @torch.no_grad()
    def reset(self, base_blocks: nn.ModuleList) -> None:
        """The copies take the base blocks' weights, the projections go to zero (ControlNet's start)."""
        for copy, base in zip(self.blocks, base_blocks):
            copy.load_state_dict(base.state_dict())
        for layer in (self.into, *self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor, control: torch.Tensor, c: torch.Tensor, text, text_mask, sequence) -> list[torch.Tensor]:
        edges = self.embed(control).flatten(3).permute(0, 2, 3, 1)  # [B, Tg, S, D], the tokens' grid
        if edges.shape != tokens.shape:
            raise ValueError(f"the control map's token grid {tuple(edges.shape[1:3])} is not the clip's "
                             f"{tuple(tokens.shape[1:3])}: give it the clip's frames, height and width")
        h = tokens + self.into(edges)
        if sequence is not None:
            h = sequence.shard(h)
        hints = []
        for block, out in zip(self.blocks, self.out):
            h = block(h, c, text, text_mask)
            hints.append(out(h))
        return hints


def _sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """2D sin-cos embedding [h * w, dim]: half the channels for rows, half for columns (DiT/MAE)."""
    half = dim // 2
    rows = sincos_embedding(h, half)[:, None, :].expand(h, w, half)
    cols = sincos_embedding(w, dim - half)[None, :, :].expand(h, w, dim - half)
    return torch.cat([rows, cols], dim=-1).reshape(h * w, dim)


def dit_flops(cfg: DiTConfig, text_dim: int = 0) -> int:
    """Analytic forward FLOPs of DiTNet for one clip (the formula FlopCounterMode reproduces); a frozen
    pretrained text encoder is not counted (like the frozen VAE), its projection is."""
    d, shape = cfg.hidden, cfg.model_shape
    tg, hg, wg = cfg.grid
    s, n = hg * wg, tg * hg * wg
    patch_out = math.prod(cfg.patch) * shape.channels
    mlp = int(d * cfg.mlp_ratio)
    total = linear_flops(math.prod(cfg.patch) * cfg.input_channels, d, n)  # patch embedding (a matmul per patch)
    total += linear_flops(256, d) + linear_flops(d, d)  # timestep MLP
    byte_text = cfg.caption and cfg.text_encoder == "byte"
    text_len = cfg.max_caption_bytes if byte_text else cfg.max_caption_tokens
    if cfg.caption and not byte_text:
        total += linear_flops(text_dim, d, text_len)
    blocks = list(range(cfg.depth))
    if cfg.control:  # edge embedding, the input projection, the block copies and their output projections
        total += linear_flops(math.prod(p * f for p, f in zip(cfg.patch, cfg.compression)), d, n)
        total += (1 + cfg.control_blocks) * linear_flops(d, d, n)
        blocks += list(range(cfg.control_blocks))
    for i in blocks:
        total += linear_flops(d, 6 * d)  # adaLN modulation (once per clip)
        total += linear_flops(d, 3 * d, n) + linear_flops(d, d, n)  # qkv + output projection
        total += attention_flops(tg, s, s, d) if i % 2 == 0 else attention_flops(s, tg, tg, d)
        total += 2 * linear_flops(d, mlp, n)
        if cfg.caption:
            total += 2 * linear_flops(d, d, n) + linear_flops(d, 2 * d, text_len)
            total += attention_flops(1, n, text_len, d)
    total += linear_flops(d, 2 * d) + linear_flops(d, patch_out, n)  # final adaLN + projection
    if byte_text:
        w = cfg.text_width
        per_layer = linear_flops(w, 3 * w, text_len) + attention_flops(1, text_len, text_len, w)
        per_layer += linear_flops(w, w, text_len) + 2 * linear_flops(w, 4 * w, text_len)
        total += cfg.text_depth * per_layer + linear_flops(w, d, text_len)
    return total


class VideoDiT(VideoModel):
    family = "dit"

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        # A pretrained caption encoder is frozen and outside the trained part (not in the state dict: the
        # checkpoint names its folder); only its width is read here, the weights on the first caption.
        self.text_encoder: PretrainedTextEncoder | None = None
        text_dim = 0
        if config.caption and config.text_encoder != "byte":
            self.text_encoder = PretrainedTextEncoder(config.text_encoder, config.text_encoder_path,
                                                      config.max_caption_tokens)
            text_dim = self.text_encoder.width
        self.net = DiTNet(config, text_dim)
        self.autoencoder: nn.Module | None = None
        self._flops = dit_flops(config, text_dim)

    def conditioning(self) -> Conditioning:
        cfg = self.config
        # The byte encoder spends one position on BOS and would cut the rest silently; a pretrained encoder's
        # tokenizer cuts at max_caption_tokens (a token is several bytes: the byte bound is a generous one).
        caption_bytes = (cfg.max_caption_bytes - 1 if cfg.text_encoder == "byte" else 16 * cfg.max_caption_tokens)
        return Conditioning(classes=cfg.num_classes, captions=cfg.caption,
                            max_caption_bytes=caption_bytes if cfg.caption else 0,
                            default_steps=cfg.sample_steps, default_guidance=cfg.guidance,
                            image=cfg.image_condition, sketch=cfg.control,
                            default_image_guidance=cfg.image_guidance if cfg.image_condition else None)

    # --- latent mode ----------------------------------------------------------------------
    def attach_autoencoder(self, vae: nn.Module) -> None:
        """Use a trained VAE (``VideoVAE`` or its ``Autoencoder``) as the frozen latent codec."""
        cfg = self.config
        if not cfg.latent:
            raise ValueError(f"{cfg.name} works in pixel space (latent_channels=0); set model.latent_channels")
        autoencoder = getattr(vae, "net", vae)
        vae_cfg = getattr(autoencoder, "config", None)
        if vae_cfg is None or getattr(vae_cfg, "family", None) != "vae":
            raise TypeError(f"attach_autoencoder needs a VideoVAE or its Autoencoder, got {type(vae).__name__}")
        ours = (cfg.latent_channels, cfg.latent_spatial_compression, cfg.latent_temporal_compression)
        theirs = (vae_cfg.z_channels, vae_cfg.spatial_compression, vae_cfg.temporal_compression)
        if ours != theirs:
            raise ValueError(
                f"{cfg.name} expects latents (channels, spatial, temporal compression) = {ours} but "
                f"{vae_cfg.name} gives {theirs}; set model.latent_channels / latent_spatial_compression / "
                "latent_temporal_compression to match the VAE"
            )
        autoencoder.requires_grad_(False)
        self.autoencoder = autoencoder.eval()

    def train(self, mode: bool = True) -> VideoDiT:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen codec: never in training mode
        return self

    def _autoencoder(self) -> nn.Module:
        if self.autoencoder is None:
            raise RuntimeError(
                f"{self.config.name} works on VAE latents (latent_channels={self.config.latent_channels}): "
                "call model.attach_autoencoder(vae) with a trained VideoVAE first (see docs/models.md)"
            )
        return self.autoencoder

    # --- conditioning ---------------------------------------------------------------------
    def _conditions(
        self, labels: torch.Tensor | None, captions: list[str] | None, drop: torch.Tensor, device: torch.device,
        embedded: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(labels, caption, caption mask) on ``device`` with the rows in ``drop`` (bool [n], CPU) made
        unconditional: the null class and the empty caption. The caption is byte ids (mask None) or a
        pretrained encoder's embeddings and mask: ``embedded`` (precomputed for ``captions``) or encoded now."""
        cfg = self.config
        label_out = text = mask = None
        if cfg.num_classes:
            labels = labels.to(device)
            label_out = torch.where(drop.to(device), torch.full_like(labels, cfg.num_classes), labels)
        if cfg.caption:
            kept = ["" if dropped else caption for caption, dropped in zip(captions, drop.tolist())]
            if self.text_encoder is None:
                text = encode_captions(kept, cfg.max_caption_bytes).to(device)
            elif embedded is not None:  # the cache's rows, with the dropped ones swapped for the empty caption
                text, mask = embedded[0].to(device), embedded[1].to(device)
                if bool(drop.any()):
                    empty, empty_mask = self.text_encoder.encode([""], device)
                    rows = drop.to(device)
                    text = torch.where(rows[:, None, None], empty.to(text.dtype), text)
                    mask = torch.where(rows[:, None], empty_mask, mask)
            else:
                text, mask = self.text_encoder.encode(kept, device)
        return label_out, text, mask

    def _check_batch(self, batch: Batch) -> None:
        cfg = self.config
        if cfg.num_classes and batch.label is None:
            raise ValueError(
                f"{cfg.name} is class-conditional (num_classes={cfg.num_classes}) but the batch has no "
                "labels; add labels to the manifest or set model.num_classes=0"
            )
        if cfg.caption and batch.caption is None:
            raise ValueError(
                f"{cfg.name} is caption-conditional but the batch has no captions; add captions to the "
                "manifest or set model.caption=false"
            )

    # --- trainer surface ------------------------------------------------------------------
    def parts(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def shard_units(self, part: str) -> list[nn.Module]:
        if part != "model":
            raise KeyError(f"dit has one part, 'model', not {part!r}")
        text_layers = list(self.net.text.layers) if isinstance(self.net.text, ByteTextEncoder) else []
        control = [] if self.net.control is None else list(self.net.control.blocks)
        return [*self.net.blocks, *text_layers, *control]

    def shard_sequence(self, attend, tokens) -> None:
        """Each rank keeps a share of every frame's spatial tokens: the spatial attention, which spans the
        frame, runs through ``attend``; temporal attention (one position across frames), caption cross-
        attention, the MLPs and the final layer are per position and need nothing."""
        if self.config.heads % tokens.size:
            raise ValueError(f"model.heads {self.config.heads} is not divisible by parallel.sequence_parallel="
                             f"{tokens.size} (Ulysses splits the heads); pick heads that are a multiple of it")
        _, hg, wg = self.config.grid
        if (hg * wg) % tokens.size:
            raise ValueError(f"{hg * wg} spatial tokens a frame are not divisible by parallel.sequence_parallel="
                             f"{tokens.size}; change it or the model's height / width / patch")
        self.net.sequence = tokens
        control = [] if self.net.control is None else list(self.net.control.blocks)
        for block in [*self.net.blocks, *control]:
            if block.axis == "spatial":
                block.attn.attend = attend

    def adapt_weights(self, part: str, weights: dict, own: dict) -> dict:
        """An image condition added to a trained model: its new input channels start at zero weight, so the
        patch embedding computes what it did (CogVideoX's image-to-video fine-tuning start)."""
        key = "patch_embed.weight"
        if key in weights and key in own and weights[key].shape[1] < own[key].shape[1]:
            old = weights[key]
            grown = old.new_zeros(own[key].shape)
            grown[:, : old.shape[1]] = old
            weights = {**weights, key: grown}
        return weights

    def after_init_from(self, missing: list[str]) -> None:
        """A control branch new to the checkpoint starts as ControlNet's: copies of the trained blocks,
        zero projections (the fine-tuned model's output is the trained model's at step 0)."""
        if self.net.control is not None and any(k.startswith("model.control.") for k in missing):
            self.net.control.reset(self.net.blocks)

    def losses(self, part: str, batch: Batch, step: int) -> LossOutput:
        if part != "model":
            raise KeyError(f"dit has one part, 'model', not {part!r}")
        cfg = self.config
        self._check_batch(batch)
        # Latents precomputed by `data prepare --encode` (the VAE's output, before this model's scale), else live.
        if batch.latent is not None and cfg.latent:
            x0 = batch.latent.to(batch.video.dtype) * cfg.latent_scale
        else:
            x0 = self._encode(batch.video)
        n, device = x0.shape[0], x0.device
        drop = torch.rand(n) < cfg.cond_dropout  # host RNG: caption dropping happens on the host
        embedded = None
        if batch.caption_embedding is not None and self.text_encoder is not None:
            embedded = (batch.caption_embedding, batch.caption_mask)
        labels, text, text_mask = self._conditions(batch.label, batch.caption, drop, device, embedded)
        image = control = None
        if cfg.image_condition:  # the clip's own first frame, dropped for some clips (guidance on the image)
            keep = torch.rand(n) >= cfg.image_dropout
            image = self.image_condition(batch.video[:, :, 0], keep, x0.shape[2])
        if cfg.control:
            control = sobel_edges(batch.video)
        noise = torch.randn_like(x0)
        t = sample_timesteps(n, cfg.timestep_sampling, device, cfg.timestep_shift)
        x_t = noisy_input(x0, noise, t)
        velocity = self.velocity(self.net(x_t, t, labels, text, image, control, text_mask), x_t, t)
        # A data prediction's target goes through the same floored t, so the clean clip stays the optimum
        # below min_t too (with the plain noise - x0 target it would be biased towards x_t there).
        target = self.velocity(x0, x_t, t) if cfg.prediction == "data" else velocity_target(x0, noise)
        loss = F.mse_loss(velocity.float(), target.float())
        return LossOutput(loss, {"loss": loss.detach()})

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels -> what the transformer models: the clip itself, or its scaled latents (frozen VAE)."""
        if not self.config.latent:
            return video
        codec = self._autoencoder()
        with torch.no_grad():
            return codec(video.to(param_dtype(codec)), mode="encode").to(video.dtype) * self.config.latent_scale

    def image_condition(self, first: torch.Tensor, keep: torch.Tensor | None, frames: int) -> torch.Tensor:
        """First frames float [B, C, H, W] (pixels in [-1, 1]) -> the condition in model space
        [B, C' + 1, frames, H', W']. In latent mode the picture is encoded as a still clip (it repeated over
        the VAE's temporal window) and its first latent frame kept: a latent frame covers several pixel frames."""
        if self.config.latent:
            still = first[:, :, None].expand(-1, -1, self.config.latent_temporal_compression, -1, -1)
            first = self._encode(still.contiguous())[:, :, 0]
        return first_frame_condition(first, frames, keep)

    def velocity(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, min_t: float | None = None) -> torch.Tensor:
        """The network's output as a velocity (dx_t/dt = noise - data), whatever it predicts. Training
        floors t at ``config.min_t`` (the loss weight 1/t^2 of a data prediction stays bounded);
        sampling passes a tiny floor, so that an Euler step from t to t' lands on
        (t'/t) x_t + (1 - t'/t) x_pred, and the last step (t' = 0) on the prediction itself."""
        if self.config.prediction == "velocity":
            return out
        floor = self.config.min_t if min_t is None else min_t
        t = t.clamp(min=floor).view(-1, *([1] * (x_t.dim() - 1))).to(torch.float32)
        return (x_t.float() - out.float()) / t

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        captions: list[str] | None = None,
        **options,
    ) -> torch.Tensor:
        """Options: ``steps`` (Euler steps, default config.sample_steps), ``guidance`` (CFG scale on class and
        caption, default config.guidance; 1 = no guidance), ``frames`` / ``height`` / ``width`` (another clip
        shape than the preset's, in pixels: any multiple of the patch (times the VAE's compression), with
        sin-cos positions). Without ``labels`` a class-conditional model draws random classes from the seed;
        without ``captions`` it samples caption-free ("").

        Image-to-video (``model.image_condition``): ``image`` float [n, C, H, W] (or [C, H, W] for all) in
        [-1, 1], the first frame to start from (``read_image`` makes one from PNG / JPEG), and
        ``image_guidance`` (default config.image_guidance). Without an image the model samples from noise.
        Sketch (``model.control``): ``sketch`` float [n, C, T, H, W] or [n, C, H, W] (a picture held over
        every frame) in [-1, 1], whose Sobel edges, computed as in training, steer the video."""
        cfg = self.config
        if cfg.latent:
            self._autoencoder()  # fail before sampling, not after
        steps = int(options.get("steps", cfg.sample_steps))
        guidance = float(options.get("guidance", cfg.guidance))
        image_guidance = float(options.get("image_guidance", cfg.image_guidance))
        device, dtype = param_device(self.net), param_dtype(self.net)
        rng = seeded_generator(seed, device)
        shape = cfg.model_shape
        size = self._model_size(options.get("frames"), options.get("height"), options.get("width"))
        pixel_size = tuple(s * f for s, f in zip(size, cfg.compression))
        noise = torch.randn(n, shape.channels, *size, device=device, generator=rng)
        if cfg.num_classes and labels is None:
            labels = torch.randint(cfg.num_classes, (n,), device=device, generator=rng)
        if cfg.caption and captions is None:
            captions = [""] * n
        image = self._sample_image(options.get("image"), n, pixel_size, size, device)
        control = self._sample_sketch(options.get("sketch"), n, pixel_size, device)
        # Condition sets, evaluated in one batched call: everything; no class / caption; nothing at all.
        # InstructPix2Pix's two-scale guidance combines them (a scale of 1 drops its set).
        full = (*self._conditions(labels, captions, torch.zeros(n, dtype=torch.bool), device), image)
        sets = [full]
        text_guided = guidance != 1.0 and (cfg.num_classes > 0 or cfg.caption)
        image_guided = cfg.image_condition and options.get("image") is not None and image_guidance != 1.0
        if text_guided:
            null = self._conditions(labels, captions, torch.ones(n, dtype=torch.bool), device)
            sets.append((*null, image))
            if image_guided:
                sets.append((*null, torch.zeros_like(image)))
        elif image_guided:  # the image alone: class and caption stay as asked in both terms
            sets.append((*full[:3], torch.zeros_like(image)))
        batched = [None if parts[0] is None else torch.cat(parts) for parts in zip(*sets)]
        control_all = None if control is None else torch.cat([control] * len(sets))

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            k = len(sets)
            xk, tk = torch.cat([x] * k), torch.cat([t] * k)
            labels_k, text_k, mask_k, image_k = batched
            out = self.net(xk.to(dtype), tk, labels_k, text_k, image_k, control_all, mask_k)
            v = self.velocity(out, xk, tk, SAMPLE_MIN_T).float().chunk(k)
            if text_guided and image_guided:  # v(none) + s_I (v(image) - v(none)) + s_T (v(all) - v(image))
                return v[2] + image_guidance * (v[1] - v[2]) + guidance * (v[0] - v[1])
            if text_guided:
                return v[1] + guidance * (v[0] - v[1])
            if image_guided:
                return v[1] + image_guidance * (v[0] - v[1])
            return v[0]

        with eval_mode(self):
            x = euler_sample(velocity, noise, steps, cfg.timestep_shift)  # the state stays fp32; the network sees `dtype`
            if cfg.latent:
                codec = self._autoencoder()
                x = codec((x / cfg.latent_scale).to(param_dtype(codec)), mode="decode")
        return to_channels_last(x.float().clamp(-1, 1))

    def _sample_image(self, image, n: int, pixel_size, model_size, device) -> torch.Tensor | None:
        """The image option -> the model-space condition (zeros when no image: the model's "no image" input)."""
        cfg = self.config
        if not cfg.image_condition:
            if image is not None:
                raise ValueError(f"{cfg.name} is not image-conditioned; drop image= or train with model.image_condition=true")
            return None
        c, (_, h, w), frames = cfg.channels, pixel_size, model_size[0]
        if image is None:
            return first_frame_condition(torch.zeros(n, cfg.model_shape.channels, *model_size[1:], device=device),
                                         frames, torch.zeros(n, dtype=torch.bool))
        image = torch.as_tensor(image, dtype=torch.float32, device=device)
        if image.dim() == 3:
            image = image[None].expand(n, -1, -1, -1)
        if tuple(image.shape) != (n, c, h, w):
            raise ValueError(f"image must be [{n}, {c}, {h}, {w}] (or [{c}, {h}, {w}]) in [-1, 1] for this clip "
                             f"shape, got {list(image.shape)}; read_image(data, {h}, {w}) makes one")
        return self.image_condition(image.to(param_dtype(self.net)), None, frames).float()

    def _sample_sketch(self, sketch, n: int, pixel_size, device) -> torch.Tensor | None:
        cfg = self.config
        if sketch is None:
            return None
        if not cfg.control:
            raise ValueError(f"{cfg.name} has no control branch; drop sketch= or train with model.control=true")
        t, h, w = pixel_size
        sketch = torch.as_tensor(sketch, dtype=torch.float32, device=device)
        if sketch.dim() == 3:
            sketch = sketch[None].expand(n, -1, -1, -1)
        if sketch.dim() == 4:  # one picture held over every frame
            sketch = sketch[:, :, None].expand(-1, -1, t, -1, -1)
        if sketch.shape[0] != n or tuple(sketch.shape[2:]) != (t, h, w) or sketch.shape[1] not in (1, 3):
            raise ValueError(f"sketch must be [{n}, 1 or 3, {t}, {h}, {w}] or [{n}, 1 or 3, {h}, {w}] in [-1, 1], "
                             f"got {list(sketch.shape)}")
        return sobel_edges(sketch.contiguous())

    def sample_conditioning(self, batch: Batch, n: int) -> dict:
        """Labels and captions, and where the model takes them the real clips' first frames and sketches."""
        out = super().sample_conditioning(batch, n)
        if self.config.image_condition:
            out["image"] = batch.video[:n, :, 0]
        if self.config.control:
            out["sketch"] = batch.video[:n]
        if self.config.image_condition or self.config.control:  # a bucketed batch's shape, which they have
            out.update(zip(("frames", "height", "width"), (int(v) for v in batch.video.shape[2:])))
        return out

    def _model_size(self, frames: int | None, height: int | None, width: int | None) -> tuple[int, int, int]:
        """(frames, height, width) the transformer sees for a pixel clip shape (the preset's where None)."""
        cfg, shape = self.config, self.config.model_shape
        pixel = (frames or cfg.frames, height or cfg.height, width or cfg.width)
        factors = ((cfg.latent_temporal_compression, cfg.latent_spatial_compression, cfg.latent_spatial_compression)
                   if cfg.latent else (1, 1, 1))
        unit = [f * p for f, p in zip(factors, cfg.patch)]
        if any(n < u or n % u for n, u in zip(pixel, unit)):
            raise ValueError(f"{cfg.name} samples clips whose frames x height x width are positive multiples of "
                             f"{unit[0]} x {unit[1]} x {unit[2]} (patch x compression); got {pixel[0]}x{pixel[1]}x{pixel[2]}")
        if pixel == (cfg.frames, cfg.height, cfg.width):
            return shape.frames, shape.height, shape.width
        return tuple(n // f for n, f in zip(pixel, factors))  # type: ignore[return-value]

    def tokens_per_sample(self) -> int:
        """Transformer tokens of one clip: (frames x height x width) of the model's input over the patch."""
        return math.prod(self.config.grid)

    def flops_per_sample(self) -> int:
        return self._flops
