"""The per-batch work of an evaluation: features and per-video scores of real and generated videos.

``FeatureWorker`` is a plain class; ``runner.py`` runs it as a Ray actor so each worker loads the
reference networks once and then takes batches of uint8 videos. It returns features and per-video
numbers only (a few KB per video); the driver fits the Gaussians and computes the distances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vidgen_ray.evaluate.config import INCEPTION_METRICS, PAIRED_METRICS
from vidgen_ray.evaluate.fvd import i3d_features
from vidgen_ray.evaluate.i3d import i3d_from_bytes
from vidgen_ray.evaluate.inception import inception_features, inception_from_bytes
from vidgen_ray.evaluate.pixel import high_frequency_energy, psnr, ssim
from vidgen_ray.evaluate.precision_recall import vgg16_features, vgg16_from_bytes
from vidgen_ray.evaluate.temporal import temporal_flicker, warping_error


@dataclass
class NetworkBytes:
    """Hash-checked weight files, read once on the driver and shipped to every actor by the object store."""

    inception: bytes | None = None
    i3d: bytes | None = None
    vgg16: bytes | None = None


@dataclass
class SideFeatures:
    """What one batch of videos (real or generated) contributes; None where no metric asked for it."""

    inception: np.ndarray | None = None  # [n * frames, 2048] pool3
    i3d: np.ndarray | None = None  # [n, 400] Kinetics logits
    vgg16: np.ndarray | None = None  # [n * frames, 4096] fc2
    flicker: np.ndarray | None = None  # [n]
    warping_error: np.ndarray | None = None  # [n]
    high_frequency: np.ndarray | None = None  # [n]


@dataclass
class BatchResult:
    real: SideFeatures
    fake: SideFeatures
    psnr: np.ndarray | None  # [n], generated video i against real video i
    ssim: np.ndarray | None  # [n]
    seconds: float


def pick_frames(videos: np.ndarray, frames_per_video: int) -> np.ndarray:
    """[N, T, H, W, C] -> [N, k, H, W, C] with k evenly spaced frames (all when 0 or >= T)."""
    t = videos.shape[1]
    if frames_per_video <= 0 or frames_per_video >= t:
        return videos
    return videos[:, np.linspace(0, t - 1, frames_per_video).round().astype(int)]


class FeatureWorker:
    def __init__(self, metrics: tuple[str, ...], networks: NetworkBytes, image_frames_per_video: int, threads: int, use_cuda: bool):
        torch.set_num_threads(max(1, threads))
        self.metrics = metrics
        self.image_frames = image_frames_per_video
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if use_cuda and not torch.cuda.is_available():
            raise RuntimeError("eval.gpus_per_actor > 0 but this worker sees no CUDA device")
        wants = lambda *names: any(m in metrics for m in names)
        self.inception = inception_from_bytes(networks.inception, self.device) if wants(*INCEPTION_METRICS) else None
        self.i3d = i3d_from_bytes(networks.i3d, self.device) if wants("fvd") else None
        self.vgg16 = vgg16_from_bytes(networks.vgg16, self.device) if wants("precision_recall") else None

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"

    def features(self, videos: np.ndarray) -> SideFeatures:
        """Features and per-video scores of one side alone (a benchmark caches the real side's)."""
        return self._side(videos)

    def _side(self, videos: np.ndarray) -> SideFeatures:
        frames = pick_frames(videos, self.image_frames)
        return SideFeatures(
            inception=inception_features(self.inception, frames) if self.inception is not None else None,
            i3d=i3d_features(self.i3d, videos) if self.i3d is not None else None,
            vgg16=vgg16_features(self.vgg16, frames) if self.vgg16 is not None else None,
            flicker=np.array([temporal_flicker(v) for v in videos]) if "flicker" in self.metrics else None,
            warping_error=np.array([warping_error(v) for v in videos]) if "warping_error" in self.metrics else None,
            high_frequency=(np.array([high_frequency_energy(v) for v in videos])
                            if "high_frequency" in self.metrics else None),
        )

    def process(self, real: np.ndarray, fake: np.ndarray) -> BatchResult:
        start = time.perf_counter()
        paired = any(m in self.metrics for m in PAIRED_METRICS)
        if paired and real.shape != fake.shape:
            raise ValueError(
                f"psnr/ssim compare generated video i with real video i, so shapes must match: real "
                f"{real.shape[1:]}, generated {fake.shape[1:]}; sample real clips at the generator's size "
                "or drop psnr/ssim from eval.metrics"
            )
        return BatchResult(
            real=self._side(real),
            fake=self._side(fake),
            psnr=np.array([psnr(r, f) for r, f in zip(real, fake)]) if "psnr" in self.metrics else None,
            ssim=np.array([ssim(r, f) for r, f in zip(real, fake)]) if "ssim" in self.metrics else None,
            seconds=time.perf_counter() - start,
        )
