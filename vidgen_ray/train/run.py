"""Driver side of training: data units -> plan -> TorchTrainer -> fit.

    vidgen-ray train --preset gan-debug --data ./outputs/synth --set train.max_steps=50
    ray job submit --working-dir . -- python jobs/train.py --preset dit-b --data s3://bucket/videos/

Rerunning with the same ``name`` and ``storage_path`` resumes from the newest checkpoint; within a
run, a dead worker or node restarts the worker group (``parallel.max_failures`` times) from the last
checkpoint. The train dataset is a factory that Ray Train calls at every (re)start, so the restarted
stream begins at the data position saved in that checkpoint instead of at item 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidgen_ray import preflight, storage, tracking
from vidgen_ray.config import ExperimentConfig
from vidgen_ray.configs import ConfigError
from vidgen_ray.data.normalize import Normalizer, channel_stats
from vidgen_ray.data.pipeline import Units, clip_stream, configure_data_context, row_video
from vidgen_ray.data.prepare import training_units
from vidgen_ray.runtime import get_logger, init_ray
from vidgen_ray.checkpoints import read_meta, registered_checkpoint
from vidgen_ray.train.loop import RunPlan, train_loop_per_worker

log = get_logger("train.run")


def clips_per_micro_batch(cfg: ExperimentConfig, train_units: Units, meta: dict | None = None) -> float:
    """Clips a micro-batch holds on average: ``train.batch_size``, or with buckets each bucket's batch size
    weighted by the batches its clips make (from the units' buckets, or a prepared set's clip counts)."""
    from collections import Counter

    from vidgen_ray.data.buckets import Bucket, batch_sizes

    buckets = cfg.data.bucket_shapes
    if not buckets:
        return float(cfg.train.batch_size)
    clip = cfg.data.clip
    sizes = dict(zip(map(str, buckets), batch_sizes(buckets, cfg.train.batch_size, Bucket(clip.frames, clip.height, clip.width))))
    counts: Counter = Counter()
    if train_units.kind == "video":
        for r in train_units.rows:
            counts[str(buckets[int(r["bucket"])])] += int(r.get("clips") or train_units.clips_per_unit)
    else:
        counts.update((meta or {}).get("summary", {}).get("clips_by_bucket") or {})
    if not counts:  # unknown: the largest batch, which uses the stream up fastest
        return float(max(sizes.values()))
    return sum(counts.values()) / sum(n / sizes[b] for b, n in counts.items())


def make_plan(cfg: ExperimentConfig, train_units: Units, clips_per_micro: float | None = None) -> RunPlan:
    """Steps and stream epochs. ``clips_per_micro`` (``clips_per_micro_batch``): what a micro-batch holds on
    average where buckets size it; the global batch counts micro-batches of ``train.batch_size``."""
    t = cfg.train
    global_batch = t.batch_size * cfg.parallel.num_workers * t.grad_accum
    clips_per_step = (clips_per_micro or t.batch_size) * cfg.parallel.num_workers * t.grad_accum
    clips_per_epoch = len(train_units) * train_units.clips_per_unit
    steps_per_epoch = int(clips_per_epoch // clips_per_step)
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the train split holds {clips_per_epoch:.0f} clips but one step needs {global_batch} "
            f"(batch {t.batch_size} x {cfg.parallel.num_workers} workers x accum {t.grad_accum}); "
            f"lower train.batch_size, raise data.clip.clips_per_video, or add videos"
        )
    # Buckets: ranks fill batches of different sizes from their shards and drop partial ones at the end.
    slack = 1 if cfg.data.bucket_shapes else 0
    if t.max_steps:
        total = t.max_steps
        # +1: slack for the equal split's remainder
        epochs = math.ceil(total * clips_per_step / clips_per_epoch) + 1 + slack
    else:
        total = int(t.epochs * clips_per_epoch // clips_per_step)
        # An elastic group of a size that does not divide the step's micro-batches shares them unevenly
        # (train/batches.micro_batches): a rank may need one more than its equal shard holds at the end.
        epochs = t.epochs + (1 if cfg.parallel.elastic else 0) + slack
    plan = RunPlan(total, epochs, steps_per_epoch, global_batch, clips_per_step / train_units.clips_per_unit,
                   train_units.clips_per_unit)
    assert plan.total_steps >= 1 and plan.epochs >= 1
    log.info("plan: %d steps, %d epoch(s) in the stream, %d steps/epoch, global batch %d, %.1f clips per unit",
             plan.total_steps, plan.epochs, plan.steps_per_epoch, plan.global_batch, plan.clips_per_item)
    return plan


@dataclass
class TrainStream:
    """``datasets={"train": TrainStream(...)}``: Ray Train calls it at every worker-group (re)start."""

    units: Units
    cfg: ExperimentConfig
    epochs: int
    decode_cpus: int | None  # CPUs for decode tasks (None: as many as are free)

    def __call__(self):
        # Called in Ray Train's controller process, whose DataContext is Ray's default: the dataset (and
        # the SplitCoordinator that feeds the workers from it) would draw progress bars into the job log.
        configure_data_context()
        start_item = skip_rows = 0
        skip: dict = {}
        # The checkpoint the workers will restore, so the data resumes where the model does.
        latest = registered_checkpoint(storage.join(self.cfg.storage_path, self.cfg.name))
        if latest is not None:
            state = read_meta_uri(latest)["state"]
            start_item, skip_rows = int(state["items_consumed"]), int(state.get("rows_into_item", 0))
            skip = state.get("skip") or {}  # bucketed: clips past the start already trained
        total = len(self.units) * self.epochs
        if start_item > total - 1:
            start_item, skip_rows = total - 1, 0
        log.info("train stream: %d units x %d epochs from item %d (less %d clips)", len(self.units), self.epochs,
                 start_item, skip_rows)
        return clip_stream(self.units, self.cfg.data, "train", epochs=self.epochs, start_item=start_item,
                           decode_cpus=self.decode_cpus, skip_rows=skip_rows, skip=skip)


def read_meta_uri(uri: str) -> dict:
    import json

    local = storage.local_path(uri)
    if local is not None:
        return read_meta(local)
    return json.loads(storage.read_text(storage.join(uri, "meta.json")))


def normalizer_for(cfg: ExperimentConfig, units: dict[str, Units], meta: dict) -> Normalizer:
    if cfg.data.normalize != "mean_std":
        return Normalizer(cfg.data.normalize)
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None:
        rows = clip_stream(units["train"], cfg.data, "train", augment=False, decode_cpus=1).take(cfg.data.stats_clips)
        mean, std = channel_stats([row_video(r) for r in rows])
    log.info("per-channel mean %s std %s (train split)", [round(m, 4) for m in mean], [round(s, 4) for s in std])
    return Normalizer("mean_std", tuple(mean), tuple(std))


def use_caches(cfg: ExperimentConfig, units: dict[str, Units], meta: dict, normalizer: Normalizer) -> list[str]:
    """Point the shard units at the prepared dataset's latent / caption-embedding caches whose keys match this run
    (data/latents.py), so the trainer stops encoding them live; returns what was attached. ``data.latent_cache``:
    auto logs why a cache is not used, require raises it, live skips the lookup."""
    from vidgen_ray.data import latents

    mode, model = cfg.data.latent_cache, cfg.model
    wanted = []
    if model.family == "dit" and model.latent and model.autoencoder:
        wanted.append("latents")
    if model.family == "dit" and model.caption and model.text_encoder != "byte":
        wanted.append("captions")
    if mode == "live" or not wanted:
        if mode == "require":
            raise ConfigError("data.latent_cache=require, but the model encodes nothing a cache holds (a latent DiT with "
                              "model.autoencoder, or model.text_encoder=t5/clip): set data.latent_cache=auto")
        return []
    root = meta.get("root")
    blocked = None
    if root is None or units["train"].kind != "shard":
        blocked = "the data is not a prepared dataset (vidgen-ray data prepare, or data.cache)"
    elif cfg.data.bucket_shapes:
        blocked = "data.buckets are not cached yet"
    elif cfg.parallel.sequence_parallel > 1:
        blocked = "parallel.sequence_parallel regroups batches without their cached columns"
    elif "latents" in wanted:
        blocked = latents.augment_blocks_cache(cfg.data.augment)
    found: dict[str, str] = {}
    shards = {split: {storage.basename(r["uri"]): int(r["rows"]) for r in u.rows} for split, u in units.items()}
    if blocked is None:
        if "latents" in wanted:
            key, _ = latents.latent_key(latents.checkpoint_sha(model.autoencoder), normalizer, meta["clip"])
            found["latents"] = latents.find(root, latents.LATENTS, key, shards) or ""
        if "captions" in wanted:
            from vidgen_ray.models.pretrained_text import PretrainedTextEncoder

            identity = PretrainedTextEncoder(model.text_encoder, model.text_encoder_path, model.max_caption_tokens).identity
            key, _ = latents.caption_key(model.text_encoder, identity, model.max_caption_tokens)
            found["captions"] = latents.find(root, latents.CAPTIONS, key, shards) or ""
        missing = [k for k, v in found.items() if not v]
        if missing:
            blocked = (f"{root} has no {' or '.join(missing)} for this run's encoder and preprocessing (run vidgen-ray data "
                       f"encode {root} --encode {model.autoencoder if 'latents' in missing else model.text_encoder_path})")
    if blocked:
        if mode == "require":
            raise ConfigError(f"data.latent_cache=require: {blocked}")
        log.info("encoding %s live: %s", " and ".join(wanted), blocked)
        return []
    for split in units.values():
        split.latents, split.captions = found.get("latents") or None, found.get("captions") or None
    log.info("training from precomputed %s", ", ".join(f"{k} at {v}" for k, v in found.items()))
    return list(found)


def build_trainer(cfg: ExperimentConfig, callbacks: list | None = None):
    """The TorchTrainer for ``cfg``; ``callbacks`` go to its RunConfig (Tune passes TuneReportCallback)."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    configure_data_context()  # the Trainer captures the DataContext when it is created
    units, meta = training_units(cfg.data)
    plan = make_plan(cfg, units["train"], clips_per_micro_batch(cfg, units["train"], meta))
    normalizer = normalizer_for(cfg, units, meta)
    use_caches(cfg, units, meta, normalizer)
    datasets = {"train": TrainStream(units["train"], cfg, plan.epochs, cfg.data.decode_workers or None)}
    if len(units["val"]):
        datasets["val"] = clip_stream(units["val"], cfg.data, "val", decode_cpus=1)
    else:
        log.warning("the val split is empty: validation, early stopping and keep-best are off")
    resources = {"CPU": cfg.parallel.cpus_per_worker}
    if cfg.parallel.worker_resource:
        resources[cfg.parallel.worker_resource] = 0.01
    storage_path, storage_fs = cfg.storage_path, None
    if storage.local_path(cfg.storage_path) is None:
        storage_fs, storage_path = storage.resolve(cfg.storage_path)
    else:
        storage_path = storage.local_path(cfg.storage_path)
    keep_best = cfg.train.keep_best if len(units["val"]) else None
    backend = cfg.parallel.backend if cfg.parallel.backend != "auto" else ("nccl" if cfg.parallel.use_gpu else "gloo")
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": cfg, "plan": plan, "normalizer": normalizer, "splits": tuple(datasets)},
        scaling_config=scaling_config(cfg.parallel, resources),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.parallel.max_failures),
            callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.train.keep_last,
                checkpoint_score_attribute=keep_best,
                checkpoint_score_order=cfg.train.keep_best_mode,
            ),
        ),
        datasets=datasets,
        dataset_config=ingest_config(datasets, ordered_train=cfg.data.ordered),
        torch_config=TorchConfig(backend=backend),
    )


def scaling_config(par, resources: dict):
    """Fixed ``num_workers``, or elastic between ``min_workers`` and ``num_workers``: Ray Train starts with
    what the cluster holds in that range, restarts on fewer when a node dies (without waiting for a
    replacement) and, every ``elastic_resize_interval_s``, restarts on more when nodes return. Every
    restart resumes from the newest checkpoint, which reshards (train/strategies)."""
    import ray.train

    if not par.elastic:
        return ray.train.ScalingConfig(num_workers=par.num_workers, use_gpu=par.use_gpu, resources_per_worker=resources)
    return ray.train.ScalingConfig(num_workers=(par.min_workers, par.num_workers), use_gpu=par.use_gpu,
                                   resources_per_worker=resources,
                                   elastic_resize_monitor_interval_s=par.elastic_resize_interval_s)


def ingest_config(datasets: dict, ordered_train: bool = False):
    """Ray Train replaces every dataset's execution options with its own (copied from the global
    DataContext, where ``preserve_order`` is off for throughput), so the order a Dataset asked for in
    ``clip_stream`` (the evaluation splits) is handed back to Ray Train here: in order, the val shard
    meets the same noise draws at every validation and early stopping compares like with like."""
    import ray.data
    import ray.train

    ordered = {}
    for name, ds in datasets.items():
        # The train stream is a factory (TrainStream): data.ordered says whether it keeps its order.
        keeps = ordered_train if isinstance(ds, TrainStream) else isinstance(ds, ray.data.Dataset) and ds.context.execution_options.preserve_order
        if keeps:
            options = ray.train.DataConfig.default_ingest_options()
            options.preserve_order = True
            ordered[name] = options
    return ray.train.DataConfig(execution_options=ordered or None)


def local_cpus_needed(cfg: ExperimentConfig) -> int:
    """Logical CPUs a local instance needs: the workers, decode tasks for train and val, one spare."""
    decode = cfg.data.decode_workers or 2
    return int(math.ceil(cfg.parallel.num_workers * cfg.parallel.cpus_per_worker)) + decode + 2


def train(cfg: ExperimentConfig, address: str | None = None):
    tracking.require(cfg.train.trackers)  # a missing package says so now, not from every worker later
    init_ray(address=address, num_cpus=local_cpus_needed(cfg), workers_per_cpu=cfg.data.decode_tasks_per_cpu)
    preflight.check_training(cfg)  # seconds, not a job waiting forever for a CPU
    autoencoder = getattr(cfg.model, "autoencoder", None)
    if autoencoder and not storage.exists(storage.join(autoencoder, "meta.json")):
        raise ConfigError(f"model.autoencoder={autoencoder} is not a checkpoint (no meta.json there): give the "
                          f"directory of a trained VAE's checkpoint, e.g. runs/<name>/checkpoint_000001000")
    start = cfg.train.init_from
    if start and not storage.exists(storage.join(start, "meta.json")):
        raise ConfigError(f"train.init_from={start} is not a checkpoint (no meta.json there): give the directory "
                          f"of a trained model's checkpoint, e.g. runs/<name>/checkpoint_000001000")
    log.info("%s", cfg.summary())
    trainer = build_trainer(cfg)
    result = trainer.fit()
    if result.error:
        raise result.error
    log.info("finished: checkpoint %s", result.checkpoint.path if result.checkpoint else None)
    return result
