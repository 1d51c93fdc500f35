"""Evaluate a training checkpoint against real clips of a dataset.

    vidgen-ray eval --checkpoint ./outputs/runs/demo/checkpoint_000000060 --data ./outputs/demo/clips --videos 64
    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoint s3://bucket/runs/x/checkpoint_000100000 \
        --data s3://bucket/videos --videos 2048 --out s3://bucket/evals/x

Real clips come through the data pipeline's own decoder at the generator's frame count, size and
frame rate (the experiment stored in the checkpoint says which); the test split is used when it has
clips, else val. Generated videos are conditioned like the real ones they are compared with (their
labels, captions, or for a predictor their context frames).
"""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch

from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.data.pipeline import clip_stream
from vidgen_ray.data.prepare import training_units
from vidgen_ray.evaluate.config import EvalConfig
from vidgen_ray.evaluate.fvd import CLIP_FRAMES
from vidgen_ray.evaluate.latency import measure_latency
from vidgen_ray.evaluate.report import EvalReport
from vidgen_ray.evaluate.runner import evaluate
from vidgen_ray.models.base import Batch, to_uint8
from vidgen_ray.runtime import get_logger
from vidgen_ray.train.checkpoint import load_for_inference

log = get_logger("evaluate.checkpoint")


def real_clips(experiment, data: str | None, num_videos: int) -> list[dict]:
    """Up to ``num_videos`` real clips (uint8 video, label, caption) decoded like validation clips."""
    data_cfg = copy.deepcopy(experiment.data)
    if data:
        data_cfg.source = data
    data_cfg.cache = None if data else data_cfg.cache
    units, _ = training_units(data_cfg)
    split = next((s for s in ("test", "val", "train") if len(units[s])), None)
    if split is None:
        raise ValueError(f"no usable videos in {data_cfg.source}")
    if split == "train":
        log.warning("test and val splits are empty: evaluating against train clips (optimistic numbers)")
    # "val" mode: evenly spaced windows, no augmentation, whatever split the clips come from.
    rows = clip_stream(units[split], data_cfg, "val").take(num_videos)
    if len(rows) < num_videos:
        log.warning("only %d real clips available in the %s split (asked for %d)", len(rows), split, num_videos)
    return rows


def _conditioning(model, experiment, rows: list[dict], normalizer: Normalizer) -> dict:
    video = normalizer(torch.from_numpy(np.stack([r["video"] for r in rows])))
    labels = torch.as_tensor([int(r["label"]) for r in rows], dtype=torch.int64)
    num_classes = getattr(experiment.model, "num_classes", 0)
    batch = Batch(video=video, label=labels.clamp(min=0) % num_classes if num_classes else None,
                  caption=[str(r["caption"]) for r in rows])
    return model.sample_conditioning(batch, len(rows))


def generated(model, experiment, rows: list[dict], batch_size: int, seed: int, normalizer: Normalizer,
              **options) -> Iterator[np.ndarray]:
    """uint8 batches [B, T, H, W, C], each conditioned on the matching real clips."""
    for index, start in enumerate(range(0, len(rows), batch_size)):
        chunk = rows[start : start + batch_size]
        cond = _conditioning(model, experiment, chunk, normalizer)
        yield to_uint8(model.sample(len(chunk), seed=seed + index, **cond, **options)).cpu().numpy()


def evaluate_checkpoint(checkpoint: str, config: EvalConfig, data: str | None = None, **sample_options) -> EvalReport:
    model, experiment, meta = load_for_inference(checkpoint, device="cuda" if config.gpus_per_actor and torch.cuda.is_available() else "cpu")
    frames = experiment.model.frames
    if frames < CLIP_FRAMES and "fvd" in config.metrics:
        log.warning("FVD needs clips of at least %d frames; %s makes %d: FVD is skipped", CLIP_FRAMES, experiment.model.name, frames)
        config.metrics = tuple(m for m in config.metrics if m != "fvd")
    rows = real_clips(experiment, data, config.num_videos)
    config.num_videos = len(rows)
    normalizer = Normalizer(experiment.data.normalize) if experiment.data.normalize != "mean_std" else Normalizer()
    real = np.stack([r["video"] for r in rows])
    cond = _conditioning(model, experiment, rows[:1], normalizer)
    latency = measure_latency(model, batch_size=1, seed=config.seed, **cond, **sample_options).to_dict()
    log.info("evaluating %s (step %s) on %d real clips of %s", experiment.model.name, meta["state"]["step"], len(rows),
             "x".join(map(str, real.shape[1:])))
    fake = generated(model, experiment, rows, config.batch_size, config.seed, normalizer, **sample_options)
    report = evaluate(real, fake, config, latency=latency)
    return report
