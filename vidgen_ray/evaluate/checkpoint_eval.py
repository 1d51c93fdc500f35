"""Evaluate a training checkpoint against real clips of a dataset.

    vidgen-ray eval --checkpoint ./outputs/demo/runs/demo-dit/checkpoint_000000500 --data ./outputs/demo/clips --videos 16 \
        --set classifier=./outputs/demo/eval/classifier
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
from vidgen_ray.data.config import BucketRule
from vidgen_ray.data.pipeline import clip_stream, reference_rows
from vidgen_ray.data.prepare import is_prepared, training_units
from vidgen_ray.evaluate.config import EvalConfig
from vidgen_ray.evaluate.fvd import CLIP_FRAMES
from vidgen_ray.evaluate.latency import measure_latency
from vidgen_ray.evaluate.report import EvalReport
from vidgen_ray.evaluate.runner import evaluate
from vidgen_ray.models.base import Batch, to_uint8
from vidgen_ray.runtime import get_logger
from vidgen_ray.checkpoints import load_for_inference

log = get_logger("evaluate.checkpoint")


def real_clips(experiment, data: str | None, num_videos: int) -> list[dict]:
    """Up to ``num_videos`` real clips (uint8 video, label, caption) decoded like validation clips."""
    data_cfg = copy.deepcopy(experiment.data)
    if data:
        data_cfg.source = data
    data_cfg.cache = None if data else data_cfg.cache
    if data_cfg.bucket_shapes and not is_prepared(data_cfg.source) and not data_cfg.cache:
        # A bucketed run's raw videos: decode every one at the model's own shape (data.clip) to compare with.
        data_cfg.buckets, data_cfg.bucket_rule = (), BucketRule()
    units, _ = training_units(data_cfg)
    split = next((s for s in ("test", "val", "train") if len(units[s])), None)
    if split is None:
        raise ValueError(f"no usable videos in {data_cfg.source}")
    if split == "train":
        log.warning("test and val splits are empty: evaluating against train clips (optimistic numbers)")
    # "val" mode: evenly spaced windows, no augmentation, whatever split the clips come from.
    # A prepared bucketed set: the clips of the model's own shape (the others cannot stand beside its samples).
    rows = reference_rows(clip_stream(units[split], data_cfg, "val").take(num_videos), data_cfg)
    if len(rows) < num_videos:
        log.warning("only %d real clips available in the %s split (asked for %d)", len(rows), split, num_videos)
    return rows


def _conditioning(model, experiment, rows: list[dict], normalizer: Normalizer) -> dict:
    video = normalizer(torch.from_numpy(np.stack([r["video"] for r in rows])))
    labels = torch.as_tensor([int(r["label"]) for r in rows], dtype=torch.int64)
    num_classes = model.conditioning().classes
    batch = Batch(video=video, label=labels.clamp(min=0) % num_classes if num_classes else None,
                  caption=[str(r["caption"]) for r in rows])
    return model.sample_conditioning(batch, len(rows))


def generated(model, experiment, rows: list[dict], batch_size: int, seed: int, normalizer: Normalizer,
              on_batch=None, **options) -> Iterator[np.ndarray]:
    """uint8 batches [B, T, H, W, C], each conditioned on the matching real clips; ``on_batch(videos,
    cond)`` sees every batch with its conditioning (class accuracy counts there)."""
    for index, start in enumerate(range(0, len(rows), batch_size)):
        chunk = rows[start : start + batch_size]
        cond = _conditioning(model, experiment, chunk, normalizer)
        videos = to_uint8(model.sample(len(chunk), seed=seed + index, **cond, **options)).cpu().numpy()
        if on_batch is not None:
            on_batch(videos, cond)
        yield videos


class ClassTally:
    """Class accuracy of generated videos as they stream past: the class each was asked for (its
    label) against what the classifier of real clips sees in it. A predictor's clips start with real
    context frames, which the classifier would see too: they are not counted."""

    def __init__(self, classifier) -> None:
        self.classifier = classifier
        self.correct = self.seen = 0
        self.why_not = ""

    def __call__(self, videos: np.ndarray, cond: dict) -> None:
        from vidgen_ray.evaluate.classifier import predict

        if "labels" not in cond:
            self.why_not = ("its clips begin with real context frames, which the classifier would see"
                            if "context" in cond else "the model is unconditional: no class was asked for")
            return
        self.correct += int((predict(self.classifier, videos) == cond["labels"].cpu().numpy()).sum())
        self.seen += len(videos)


def class_metrics(tally: ClassTally, real: np.ndarray, rows: list[dict]) -> tuple[dict, dict]:
    """(metrics, skipped) for the report: class_accuracy of the generated side, real_accuracy its ceiling."""
    from vidgen_ray.evaluate.classifier import accuracy

    metrics = {"real_accuracy": accuracy(tally.classifier, real, np.array([int(r["label"]) for r in rows]))}
    if tally.seen and not tally.why_not:
        metrics["class_accuracy"] = tally.correct / tally.seen
        return metrics, {}
    return metrics, {"class_accuracy": tally.why_not or "no generated video was classified"}


def evaluate_checkpoint(checkpoint: str, config: EvalConfig, data: str | None = None, rows: list[dict] | None = None,
                        **sample_options) -> EvalReport:
    from vidgen_ray.tracking import require

    if config.output_uri:
        require(config.trackers, "eval.trackers")
    model, experiment, meta = load_for_inference(checkpoint, device="cuda" if config.gpus_per_actor and torch.cuda.is_available() else "cpu")
    step = int(meta["state"]["step"])
    report = evaluate_loaded(model, experiment, step, config, data, rows, **sample_options)
    if config.output_uri:
        track_report(report, config, experiment.name, step)
    return report


def track_report(report: EvalReport, config: EvalConfig, run: str, step: int) -> None:
    """The report's numbers (``eval/<metric>`` at the checkpoint's step), its real | generated grid and
    report.json, to ``eval.trackers`` in the evaluation's output folder."""
    import dataclasses
    import io

    from PIL import Image

    from vidgen_ray import storage
    from vidgen_ray.tracking import TrackerRun, open_trackers

    tracker_run = TrackerRun(name=f"{run}-eval", run_dir=config.output_uri, group=run, job="eval",
                             config=dataclasses.asdict(config), start_step=0)
    with open_trackers(config.trackers, tracker_run) as tracker:
        tracker.log_scalars({f"eval/{k}": v for k, v in report.metrics.items()}, step)
        tracker.log_scalars({f"eval/latency_{k}": v for k, v in (report.latency or {}).items()}, step)
        if "grid_png" in report.outputs:
            grid = np.asarray(Image.open(io.BytesIO(storage.read_bytes(report.outputs["grid_png"]))).convert("RGB"))
            tracker.log_image("eval/samples", grid, step)
        local = storage.local_path(report.outputs.get("report", ""))
        if local:
            tracker.log_artifact(local)


def evaluate_loaded(model, experiment, step: int, config: EvalConfig, data: str | None = None,
                    rows: list[dict] | None = None, on_batch=None, **sample_options) -> EvalReport:
    """Evaluate a model in memory (a loaded checkpoint, or the untrained model a demo compares with)
    against ``rows`` (real clips from ``real_clips``; decoded here when not given). ``on_batch(videos,
    cond)`` also sees every generated batch."""
    frames = experiment.model.frames
    if frames < CLIP_FRAMES and "fvd" in config.metrics:
        log.warning("FVD needs clips of at least %d frames; %s makes %d: FVD is skipped", CLIP_FRAMES, experiment.model.name, frames)
        config.metrics = tuple(m for m in config.metrics if m != "fvd")
    rows = rows[: config.num_videos] if rows is not None else real_clips(experiment, data, config.num_videos)
    config.num_videos = len(rows)
    normalizer = Normalizer(experiment.data.normalize) if experiment.data.normalize != "mean_std" else Normalizer()
    real = np.stack([r["video"] for r in rows])
    cond = _conditioning(model, experiment, rows[:1], normalizer)
    latency = measure_latency(model, batch_size=1, seed=config.seed, **cond, **sample_options).to_dict()
    log.info("evaluating %s (step %s) on %d real clips of %s", experiment.model.name, step, len(rows),
             "x".join(map(str, real.shape[1:])))
    tally, class_skip = None, {}
    if config.classifier:
        from vidgen_ray.evaluate.classifier import load_classifier

        classifier = load_classifier(config.classifier).model
        if classifier.config.frames > frames:  # said before any sampling, not halfway through it
            class_skip["class_accuracy"] = (f"the classifier at {config.classifier} takes {classifier.config.frames}-frame "
                                            f"clips and {experiment.model.name} makes {frames}: train one on clips of {frames}")
        else:
            tally = ClassTally(classifier)
    hooks = [h for h in (tally, on_batch) if h is not None]
    fake = generated(model, experiment, rows, config.batch_size, config.seed, normalizer,
                     on_batch=(lambda videos, cond: [h(videos, cond) for h in hooks]) if hooks else None, **sample_options)
    report = evaluate(real, fake, config, latency=latency)
    extra, skipped = class_metrics(tally, real, rows) if tally is not None else ({}, class_skip)
    if extra or skipped:
        report.metrics.update(extra)
        report.skipped.update(skipped)
        if config.output_uri:  # the report was written before the tally was final
            from vidgen_ray import storage
            from vidgen_ray.evaluate.report import REPORT_NAME, report_json

            storage.write_bytes(storage.join(config.output_uri, REPORT_NAME), report_json(report))
    return report
