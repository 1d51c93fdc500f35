"""The model zoo: video GAN, VAE, ConvLSTM/ConvGRU predictor and video diffusion transformer,
all behind one registry of named presets.

    python -m vidgen_ray.models.listing
"""

from .base import Batch, LossOutput, ModelConfig, VideoModel, VideoShape, to_uint8
from .registry import FAMILIES, PRESETS, AnyModelConfig, ModelInfo, build_model, describe, get_preset

__all__ = [
    "FAMILIES",
    "PRESETS",
    "AnyModelConfig",
    "Batch",
    "LossOutput",
    "ModelConfig",
    "ModelInfo",
    "VideoModel",
    "VideoShape",
    "build_model",
    "describe",
    "get_preset",
    "to_uint8",
]
