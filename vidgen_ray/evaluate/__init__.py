"""Evaluation of generated videos with the reference networks and protocols papers compare against.

    python -m vidgen_ray.evaluate      # are the shipped reference weights installed and intact?

Plain functions for scripts (uint8 arrays; [N, T, H, W, C] videos or [N, H, W, C] images):

    from vidgen_ray.evaluate import fid, fvd, psnr, ssim
    fvd(real_videos, fake_videos)            # TF-Hub I3D, StyleGAN-V protocol
    fid(real_frames, fake_frames)            # Inception 2015-12-05, pytorch-fid protocol
    psnr(video_a, video_b), ssim(video_a, video_b)

and the Ray runner for many videos: ``evaluate(real, fake, EvalConfig(...))``.
"""

from vidgen_ray.evaluate.config import ALL_METRICS, DEFAULT_METRICS, EvalConfig
from vidgen_ray.evaluate.fid import fid, inception_score, kid
from vidgen_ray.evaluate.frechet import (
    feature_moments,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
)
from vidgen_ray.evaluate.fvd import fvd
from vidgen_ray.evaluate.latency import LatencyResult, measure_latency
from vidgen_ray.evaluate.pixel import high_frequency_energy, psnr, psnr_per_frame, ssim, ssim_per_frame
from vidgen_ray.evaluate.precision_recall import precision_recall, precision_recall_from_features
from vidgen_ray.evaluate.report import EvalReport
from vidgen_ray.evaluate.runner import evaluate, evaluate_model, generated_videos
from vidgen_ray.evaluate.temporal import temporal_flicker, warping_error
from vidgen_ray.evaluate.weights import WeightsError

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "EvalConfig",
    "EvalReport",
    "LatencyResult",
    "WeightsError",
    "evaluate",
    "evaluate_model",
    "feature_moments",
    "fid",
    "frechet_distance",
    "frechet_distance_from_features",
    "fvd",
    "generated_videos",
    "high_frequency_energy",
    "inception_score",
    "kernel_inception_distance",
    "kid",
    "measure_latency",
    "precision_recall",
    "precision_recall_from_features",
    "psnr",
    "psnr_per_frame",
    "ssim",
    "ssim_per_frame",
    "temporal_flicker",
    "warping_error",
]
