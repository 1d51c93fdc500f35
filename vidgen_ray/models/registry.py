"""Named model presets for every family, and the one way to build a model from a config.

    python -c "from vidgen_ray.models.registry import describe; print(describe('dit-xl'))"

``PRESETS`` is a plain dict of configs (DiT-style names: ``<family>-<size>``). ``get_preset``
returns a fresh copy to override; ``build_model`` turns any family config into its
``VideoModel``; ``describe`` reports parameters and forward FLOPs per sample after building on
the ``meta`` device (no memory, no time, even for the 1B preset).

Sizes: ``debug`` trains on CPU in seconds (8 frames of 32x32); the transformer presets follow the
DiT / Latte widths and depths (S 384x12, B 768x12, L 1024x24, XL 1152x28; 1B 1536x26) on 16 frames
of 256x256 seen through an 8x spatial VAE (latents 16x32x32x4, patch 1x2x2: 4,096 tokens), the
setting of Latte. They are unconditional; ``--set model.num_classes=101`` or
``--set model.caption=true`` adds class or caption conditioning.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, replace

import torch

from .base import VideoModel, VideoShape
from .dit import DiTConfig, VideoDiT
from .gan import GANConfig, VideoGAN
from .rnn import RNNConfig, VideoPredictor
from .vae import VAEConfig, VideoVAE

AnyModelConfig = GANConfig | VAEConfig | RNNConfig | DiTConfig

FAMILIES: dict[str, type[VideoModel]] = {"gan": VideoGAN, "vae": VideoVAE, "rnn": VideoPredictor, "dit": VideoDiT}

# fmt: off
# Each family config's defaults are its debug preset.
_GAN_DEBUG, _VAE_DEBUG, _RNN_DEBUG = GANConfig(), VAEConfig(), RNNConfig()
# Pixel space with 4x4 patches: a token holds 48 pixel values, most of the width of a 64-wide model,
# so it predicts the clean clip (JiT), not the velocity (whose samples kept their noise as speckles).
# Time shifted 4x towards noise (SD3): on the motion set, in 4 CPU-minutes of a plain loop, class
# accuracy of its samples went from 0.45 to 0.61 with the shift alone (BENCHMARKS.md).
# Training t drawn uniformly (then shifted), not logit-normal: shifted 4x, a logit-normal puts 0.3 % of
# training at t < 0.2, where the sampler's last steps decide the final pixels (the last Euler step lands
# on the prediction at t = 0.11); uniform puts 5.9 % there. Plain loop, 16x32x32 motion set, N = 64:
# class accuracy 0.50 -> 0.72-0.75 at 400 steps (three seeds/widths), 0.59 -> 0.73 at 800. In the learning
# benchmark (1300 steps, N = 256) class accuracy held (0.660 -> 0.652) and FVD fell 5,404 -> 3,019 (BENCHMARKS.md).
_DIT_DEBUG = DiTConfig(prediction="data", timestep_shift=4.0, timestep_sampling="uniform")
# The transformer presets' shared geometry: 16 x 256 x 256 clips through an 8x spatial VAE.
_DIT_LATENT = DiTConfig(
    name="dit-s", frames=16, height=256, width=256, patch=(1, 2, 2), latent_channels=4,
    latent_spatial_compression=8, latent_temporal_compression=1, num_classes=0, caption=False,
    text_width=512, text_depth=4, text_heads=8, max_caption_bytes=128, sample_steps=50,
)

PRESETS: dict[str, AnyModelConfig] = {
    # Video GAN (MoCoGAN-style: video D + per-frame image D), factorised (2+1)D convolutions.
    "gan-debug": _GAN_DEBUG,
    # Image-to-video: its clips start with the given frame (models/gan.py).
    "gan-i2v-debug": replace(_GAN_DEBUG, name="gan-i2v-debug", image_condition=True),
    "gan-s": replace(
        _GAN_DEBUG, name="gan-s", frames=16, height=64, width=64, z_dim=128, base_frames=2,
        gen_channels=(512, 256, 128, 64), disc_channels=(64, 128, 256, 512),
    ),
    "gan-b": replace(
        _GAN_DEBUG, name="gan-b", frames=16, height=128, width=128, z_dim=256, base_frames=1,
        gen_channels=(1024, 512, 256, 128, 64), disc_channels=(64, 128, 256, 512, 1024),
    ),
    # Video VAE. vae-b's latent geometry (16x32x32x4) is the transformer presets' input.
    "vae-debug": _VAE_DEBUG,
    "vae-s": replace(
        _VAE_DEBUG, name="vae-s", frames=16, height=128, width=128, hidden=(64, 128, 256),
        blocks_per_level=2, spatial_compression=4, temporal_compression=4, z_channels=8,
    ),
    "vae-b": replace(
        _VAE_DEBUG, name="vae-b", frames=16, height=256, width=256, hidden=(128, 256, 512, 512),
        blocks_per_level=2, spatial_compression=8, temporal_compression=1, z_channels=4, conv="factorised",
    ),
    # Recurrent predictors (ConvLSTM / ConvGRU); -s and -b patchify frames 4x like PredRNN.
    "rnn-debug": _RNN_DEBUG,
    "gru-debug": replace(_RNN_DEBUG, name="gru-debug", cell="gru"),
    "rnn-s": replace(
        _RNN_DEBUG, name="rnn-s", frames=16, height=64, width=64, context_frames=8,
        hidden=(128, 128, 128, 128), stem_stride=4,
    ),
    "rnn-b": replace(
        _RNN_DEBUG, name="rnn-b", frames=16, height=128, width=128, context_frames=8,
        hidden=(256, 256, 256, 256), stem_stride=4,
    ),
    # Video diffusion transformers (Latte / Open-Sora factorised attention, rectified flow).
    "dit-debug": _DIT_DEBUG,
    # Image-to-video (first frame + mask beside the noisy input) and sketch control (a ControlNet branch on
    # Sobel edges): the debug model with each input; train.init_from starts either from a trained dit-debug.
    "dit-i2v-debug": replace(_DIT_DEBUG, name="dit-i2v-debug", image_condition=True),
    "dit-control-debug": replace(_DIT_DEBUG, name="dit-control-debug", control=True),
    "dit-s": replace(_DIT_LATENT, name="dit-s", hidden=384, depth=12, heads=6),
    "dit-b": replace(_DIT_LATENT, name="dit-b", hidden=768, depth=12, heads=12),
    "dit-l": replace(_DIT_LATENT, name="dit-l", hidden=1024, depth=24, heads=16),
    "dit-xl": replace(_DIT_LATENT, name="dit-xl", hidden=1152, depth=28, heads=16),
    "dit-1b": replace(_DIT_LATENT, name="dit-1b", hidden=1536, depth=26, heads=24),
}
# fmt: on


def get_preset(name: str) -> AnyModelConfig:
    """A fresh copy of preset ``name`` (mutating it leaves ``PRESETS`` untouched)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown model preset {name!r}.{hint} Valid presets: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def build_model(config: AnyModelConfig, load_autoencoder: bool = True) -> VideoModel:
    """The family model for ``config`` (validated first; errors name the field to fix). A latent DiT
    whose ``model.autoencoder`` names a trained VAE checkpoint gets it attached as its frozen codec."""
    if config.family not in FAMILIES:
        raise ValueError(f"{config.name}: unknown family {config.family!r}; valid: {', '.join(FAMILIES)}")
    model = FAMILIES[config.family](config)
    if load_autoencoder and getattr(config, "autoencoder", None):
        from vidgen_ray.checkpoints import load_for_inference  # the VAE's own checkpoint, EMA weights

        vae, _, _ = load_for_inference(config.autoencoder)
        model.attach_autoencoder(vae)
    return model


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    input_shape: VideoShape  # pixel clips the preset trains on
    model_shape: VideoShape  # what the network sees (latents for the latent transformer)
    params: int  # trainable parameters of all parts
    flops_per_sample: int  # forward FLOPs per training sample (see each family's convention)

    def as_dict(self) -> dict:
        def dims(s: VideoShape) -> list[int]:
            return [s.frames, s.height, s.width, s.channels]

        return {
            "name": self.name,
            "family": self.family,
            "input_shape": dims(self.input_shape),
            "model_shape": dims(self.model_shape),
            "params": self.params,
            "flops_per_sample": self.flops_per_sample,
        }


def describe(name_or_config: str | AnyModelConfig) -> ModelInfo:
    """Parameter count and FLOPs of a preset or config, built on the meta device."""
    config = get_preset(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        model = build_model(config, load_autoencoder=False)
    params = sum(p.numel() for part in model.parts().values() for p in part.parameters())
    model_shape = config.model_shape if isinstance(config, DiTConfig) else config.shape
    return ModelInfo(config.name, config.family, config.shape, model_shape, params, model.flops_per_sample())
