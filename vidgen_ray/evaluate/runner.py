"""Evaluate generated videos against real ones on Ray: features in parallel actors, statistics on the driver.

    python -c "import numpy as np; from vidgen_ray.evaluate.runner import evaluate; from vidgen_ray.evaluate.config import EvalConfig; \
r = np.random.default_rng(0); v = lambda: r.integers(0, 256, (4, 16, 32, 32, 3), dtype=np.uint8); \
print(evaluate(v(), v(), EvalConfig(num_videos=4, batch_size=2, image_frames_per_video=2, output_uri='/tmp/vidgen_eval')).metrics)"

Entry points:

* ``evaluate(real, fake, config)``: ``real`` and ``fake`` are uint8 videos, either arrays
  [N, T, H, W, C] or iterables yielding [T, H, W, C] videos or [B, T, H, W, C] batches (a generator
  that decodes real clips or samples a model streams through without holding everything). The first
  ``config.num_videos`` of each side are used; both sides must provide that many (or the same
  smaller number), since psnr/ssim pair video i with video i.
* ``generated_videos(model, n, batch_size)``: the iterable for a ``VideoModel`` (``sample`` + ``to_uint8``).
* ``evaluate_model(model, real, config)``: both of the above plus generation latency.

Flow: the driver reads and hash-checks the weight files once and puts them in the object store;
``num_actors`` ``FeatureWorker`` actors load the networks from there; batches of (real, generated)
videos go to them round-robin with at most ``max_in_flight_per_actor`` per actor outstanding (so
memory stays bounded however many videos stream through); the actors return features and per-video
scores; the driver concatenates them in order, fits the Gaussians and computes every distance, then
writes ``report.json`` and the real | generated grid to ``config.output_uri``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Iterable, Iterator

import numpy as np

from vidgen_ray.evaluate.config import INCEPTION_METRICS, EvalConfig
from vidgen_ray.evaluate.frechet import frechet_distance_from_features, kernel_inception_distance
from vidgen_ray.evaluate.fvd import CLIP_FRAMES
from vidgen_ray.evaluate.i3d import read_i3d_weights
from vidgen_ray.evaluate.inception import (
    IS_WEIGHTS_HELP,
    class_probabilities,
    inception_score_from_probs,
    logits_weight_from_bytes,
    read_inception_weights,
)
from vidgen_ray.evaluate.precision_recall import VGG_WEIGHTS_HELP, precision_recall_from_features, read_vgg16_weights
from vidgen_ray.evaluate.report import EvalReport, write_outputs
from vidgen_ray.evaluate.weights import FID_INCEPTION, I3D_KINETICS400, PinnedWeights, installed_path, read_user_file
from vidgen_ray.evaluate.worker import BatchResult, FeatureWorker, NetworkBytes
from vidgen_ray.progress import Progress
from vidgen_ray.runtime import get_logger

log = get_logger("evaluate")

VideoSource = np.ndarray | Iterable[np.ndarray]


# --- inputs ------------------------------------------------------------------------------------


def video_batches(source: VideoSource, batch_size: int, limit: int, side: str) -> Iterator[np.ndarray]:
    """Re-batch a source of uint8 videos into [<= batch_size, T, H, W, C] arrays, stopping after ``limit``."""
    items = [source] if isinstance(source, np.ndarray) and source.ndim == 5 else source
    pending: list[np.ndarray] = []
    taken = 0
    shape = None
    for item in items:
        item = np.asarray(item)
        if item.ndim == 4:
            item = item[None]
        if item.ndim != 5 or item.dtype != np.uint8:
            raise ValueError(
                f"{side} videos must be uint8 [T, H, W, C] or [N, T, H, W, C], got {item.dtype} {item.shape}; "
                "convert model output with vidgen_ray.models.base.to_uint8"
            )
        if shape is None:
            shape = item.shape[1:]
        elif item.shape[1:] != shape:
            raise ValueError(f"{side} videos change shape mid-stream: {shape} then {item.shape[1:]}")
        for video in item:
            if taken == limit:
                break
            pending.append(video)
            taken += 1
            if len(pending) == batch_size:
                yield np.stack(pending)
                pending = []
        if taken == limit:
            break
    if pending:
        yield np.stack(pending)


def generated_videos(model, num_videos: int, batch_size: int, seed: int = 0, **sample_options) -> Iterator[np.ndarray]:
    """uint8 batches [B, T, H, W, C] sampled from a ``VideoModel`` (seed + batch index per call)."""
    from vidgen_ray.models.base import to_uint8

    for index, start in enumerate(range(0, num_videos, batch_size)):
        n = min(batch_size, num_videos - start)
        yield to_uint8(model.sample(n, seed=seed + index, **sample_options)).cpu().numpy()


# --- weights -----------------------------------------------------------------------------------


def _pinned_info(weights: PinnedWeights, override: str | None) -> dict[str, str]:
    return {
        "source": override or str(installed_path(weights)),
        "sha256": weights.sha256,
        "package": f"{weights.distribution}=={weights.version}",
    }


def _skipped(config: EvalConfig) -> dict[str, str]:
    """Metrics asked for whose weights have no shipped copy and were not given: why, and what to supply."""
    skipped = {}
    if config.wants("is") and not config.is_weights:
        skipped["is"] = IS_WEIGHTS_HELP
    if config.wants("precision_recall") and not config.vgg16_weights:
        skipped["precision_recall"] = VGG_WEIGHTS_HELP
    return skipped


def _read_networks(config: EvalConfig, metrics: tuple[str, ...]) -> tuple[NetworkBytes, np.ndarray | None, dict]:
    """Read and hash-check every weight file ``metrics`` need, before any video is processed."""
    networks, info, is_logits = NetworkBytes(), {}, None
    if any(m in metrics for m in INCEPTION_METRICS):
        networks.inception = read_inception_weights(config.inception_weights)
        info["inception"] = _pinned_info(FID_INCEPTION, config.inception_weights)
    if "is" in metrics:
        data = read_user_file(config.is_weights, "Inception Score", IS_WEIGHTS_HELP, "EvalConfig.is_weights")
        is_logits = logits_weight_from_bytes(data, config.is_weights)
        info["is_logits"] = {"source": config.is_weights, "sha256": hashlib.sha256(data).hexdigest()}
    if "fvd" in metrics:
        networks.i3d = read_i3d_weights(config.i3d_weights)
        info["i3d"] = _pinned_info(I3D_KINETICS400, config.i3d_weights)
    if "precision_recall" in metrics:
        networks.vgg16 = read_vgg16_weights(config.vgg16_weights)
        info["vgg16"] = {"source": config.vgg16_weights, "sha256": hashlib.sha256(networks.vgg16).hexdigest()}
    return networks, is_logits, info


# --- reduction on the driver -------------------------------------------------------------------


def _cat(results: list[BatchResult], get) -> np.ndarray:
    return np.concatenate([get(r) for r in results])


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    with np.errstate(invalid="ignore"):  # identical videos: PSNR inf, whose std is nan
        return float(np.mean(values)), float(np.std(values))


def reduce_results(results: list[BatchResult], config: EvalConfig, metrics: tuple[str, ...], is_logits: np.ndarray | None) -> dict[str, float]:
    """Per-batch features and scores -> the final numbers (flat names, as they go into the report)."""
    out: dict[str, float] = {}
    if "fid" in metrics or "kid" in metrics:
        real_f, fake_f = _cat(results, lambda r: r.real.inception), _cat(results, lambda r: r.fake.inception)
        if "fid" in metrics:
            out["fid"] = frechet_distance_from_features(real_f, fake_f)
        if "kid" in metrics:
            out["kid"] = kernel_inception_distance(real_f, fake_f, config.kid_subsets, config.kid_subset_size, config.seed)
    if "is" in metrics:
        for side, get in (("", lambda r: r.fake.inception), ("_real", lambda r: r.real.inception)):
            mean, std = inception_score_from_probs(class_probabilities(_cat(results, get), is_logits))
            out[f"is{side}_mean"], out[f"is{side}_std"] = mean, std
    if "fvd" in metrics:
        out["fvd"] = frechet_distance_from_features(_cat(results, lambda r: r.real.i3d), _cat(results, lambda r: r.fake.i3d))
    if "precision_recall" in metrics:
        out["precision"], out["recall"] = precision_recall_from_features(
            _cat(results, lambda r: r.real.vgg16), _cat(results, lambda r: r.fake.vgg16)
        )
    for name in ("psnr", "ssim"):
        if name in metrics:
            out[name], out[f"{name}_std"] = _mean_std(_cat(results, lambda r: getattr(r, name)))
    for name in ("flicker", "warping_error"):
        if name in metrics:
            out[name], out[f"{name}_std"] = _mean_std(_cat(results, lambda r: getattr(r.fake, name)))
            out[f"{name}_real"], out[f"{name}_real_std"] = _mean_std(_cat(results, lambda r: getattr(r.real, name)))
    if "high_frequency" in metrics:  # speckle (> 1) or blur (< 1) against the real clips, which FVD at small N misses
        fake_hf, real_hf = _cat(results, lambda r: r.fake.high_frequency), _cat(results, lambda r: r.real.high_frequency)
        out["high_frequency"], out["high_frequency_real"] = float(np.mean(fake_hf)), float(np.mean(real_hf))
        out["high_frequency_ratio"] = out["high_frequency"] / max(out["high_frequency_real"], 1e-12)
    return out


# --- the run -----------------------------------------------------------------------------------


def _start_actors(config: EvalConfig, metrics: tuple[str, ...], networks: NetworkBytes) -> list:
    import ray

    from vidgen_ray import preflight
    from vidgen_ray.runtime import init_ray

    init_ray()
    preflight.check_eval(config)  # actors that cannot be placed fail here, not in a wait without end
    networks_ref = ray.put(networks)  # one copy in the object store, shared by every actor
    actor_cls = ray.remote(FeatureWorker).options(num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor)
    return [
        actor_cls.remote(metrics, networks_ref, config.image_frames_per_video, int(config.cpus_per_actor), config.gpus_per_actor > 0)
        for _ in range(config.num_actors)
    ]


def _paired_batches(real: VideoSource, fake: VideoSource, config: EvalConfig) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    real_it = video_batches(real, config.batch_size, config.num_videos, "real")
    fake_it = video_batches(fake, config.batch_size, config.num_videos, "generated")
    for real_batch, fake_batch in itertools.zip_longest(real_it, fake_it):
        if real_batch is None or fake_batch is None or len(real_batch) != len(fake_batch):
            raise ValueError(
                "real and generated sources gave different numbers of videos; give both at least "
                f"eval.num_videos={config.num_videos} videos, or lower eval.num_videos"
            )
        yield real_batch, fake_batch


def _check_clip_length(metrics: tuple[str, ...], real: np.ndarray, fake: np.ndarray) -> None:
    """FVD needs 16-frame clips; say so on the driver before any actor works on the batch."""
    if "fvd" in metrics and min(real.shape[1], fake.shape[1]) < CLIP_FRAMES:
        raise ValueError(
            f"FVD uses clips of {CLIP_FRAMES} consecutive frames; got {real.shape[1]} real and {fake.shape[1]} "
            "generated frames per video: generate or sample longer clips, or leave 'fvd' out of eval.metrics"
        )


@dataclasses.dataclass
class _Collected:
    """What the driver keeps from the feature pass: per-batch results in input order, and the grid rows."""

    results: list[BatchResult]
    num_videos: int
    real_shape: tuple[int, ...]
    fake_shape: tuple[int, ...]
    real_grid: list[np.ndarray]
    fake_grid: list[np.ndarray]
    devices: list[str]


def _extract(actors: list, real: VideoSource, fake: VideoSource, config: EvalConfig, metrics: tuple[str, ...]) -> _Collected:
    """Stream (real, generated) batches to the actors round-robin, with bounded work in flight."""
    import ray

    max_in_flight = config.num_actors * config.max_in_flight_per_actor
    pending: dict = {}  # object ref -> batch index
    results: dict[int, BatchResult] = {}
    out = _Collected([], 0, (), (), [], [], [])
    progress = Progress("evaluate", total=config.num_videos, unit="videos")  # generated and sent to the actors
    for index, (real_batch, fake_batch) in enumerate(_paired_batches(real, fake, config)):
        if index == 0:
            _check_clip_length(metrics, real_batch, fake_batch)
            out.real_shape, out.fake_shape = tuple(real_batch.shape[1:]), tuple(fake_batch.shape[1:])
        if len(pending) >= max_in_flight:
            done, _ = ray.wait(list(pending), num_returns=1)
            results[pending.pop(done[0])] = ray.get(done[0])
        pending[actors[index % len(actors)].process.remote(real_batch, fake_batch)] = index
        out.num_videos += len(real_batch)
        progress.update(len(real_batch))
        room = config.grid_videos - len(out.real_grid)
        out.real_grid.extend(real_batch[:room])
        out.fake_grid.extend(fake_batch[:room])
    for ref, index in pending.items():
        results[index] = ray.get(ref)
    progress.close()
    out.results = [results[i] for i in sorted(results)]
    out.devices = ray.get([a.device_name.remote() for a in actors])
    return out


def evaluate(real: VideoSource, fake: VideoSource, config: EvalConfig, latency: dict | None = None) -> EvalReport:
    """Compute ``config.metrics`` for generated ``fake`` videos against ``real`` ones; write the report if asked."""
    import ray

    config.validate()
    started = time.perf_counter()
    skipped = _skipped(config)
    for metric, why in skipped.items():
        log.warning("skipping %s: %s", metric, why)
    metrics = tuple(m for m in config.metrics if m not in skipped)
    networks, is_logits, weights_info = _read_networks(config, metrics)
    actors = _start_actors(config, metrics, networks)
    try:
        collected = _extract(actors, real, fake, config, metrics)
    finally:
        for actor in actors:
            ray.kill(actor)
    if collected.num_videos < 2:
        raise ValueError(f"need at least 2 videos per side to fit a Gaussian, got {collected.num_videos}")
    features_done = time.perf_counter()
    values = reduce_results(collected.results, config, metrics, is_logits)
    finished = time.perf_counter()
    report = EvalReport(
        metrics=values,
        skipped=skipped,
        num_videos=collected.num_videos,
        real_shape=tuple(int(x) for x in collected.real_shape),
        fake_shape=tuple(int(x) for x in collected.fake_shape),
        weights=weights_info,
        devices=collected.devices,
        seconds={
            "features_wall": features_done - started,
            "features_actor_sum": float(sum(r.seconds for r in collected.results)),
            "reduce": finished - features_done,
        },
        config=dataclasses.asdict(config),
        latency=latency,
    )
    log.info("evaluated %d videos per side in %.1f s: %s", collected.num_videos, finished - started, values)
    if config.output_uri:
        grid = (np.stack(collected.real_grid), np.stack(collected.fake_grid)) if collected.real_grid else (None, None)
        write_outputs(report, config.output_uri, *grid, fps=config.grid_fps)
    return report


def evaluate_model(model, real: VideoSource, config: EvalConfig, latency_batch_size: int = 1, **sample_options) -> EvalReport:
    """Sample ``config.num_videos`` videos from ``model``, time generation, and evaluate against ``real``."""
    from vidgen_ray.evaluate.latency import measure_latency

    latency = measure_latency(model, batch_size=latency_batch_size, seed=config.seed, **sample_options).to_dict()
    fake = generated_videos(model, config.num_videos, config.batch_size, config.seed, **sample_options)
    return evaluate(real, fake, config, latency=latency)
