"""The train loop that runs on every Ray Train worker, top to bottom.

    setup -> parallelize -> resume -> for each batch: [wait for data] -> [step every part]
          -> log / validate / sample / checkpoint at their intervals -> final report

Ray Train calls ``train_loop_per_worker({"experiment": ExperimentConfig, ...})``. The model family
supplies the losses; ``parallelize`` supplies the strategy; this file owns the order of events.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from vidgen_ray import storage
from vidgen_ray.config import ExperimentConfig
from vidgen_ray.configs import to_dict
from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.data.pipeline import torch_batches
from vidgen_ray.models.base import Batch, VideoModel
from vidgen_ray.models.registry import build_model
from vidgen_ray.media import contact_sheet
from vidgen_ray.runtime import get_logger
from vidgen_ray.tracking import Tracker, TrackerRun, open_trackers
from vidgen_ray.train import checkpoint as ckpt
from vidgen_ray.train.ema import EMA
from vidgen_ray.train.parallelize import Part, parallelize
from vidgen_ray.train.samples import due as sampling_due
from vidgen_ray.train.samples import write_samples
from vidgen_ray.train.telemetry import Telemetry, progress_line
from vidgen_ray.data.buckets import resume_point
from vidgen_ray.train.batches import micro_batches, to_batch
from vidgen_ray.train.sequence_parallel import group_micro_batches
from vidgen_ray.train.validate import validate

log = get_logger("train")


@dataclass
class RunPlan:
    """Derived values, computed once on the driver, asserted and printed."""

    total_steps: int
    epochs: int  # passes in the train stream
    steps_per_epoch: int
    global_batch: int
    items_per_step: float  # stream items consumed per optimizer step (for the data position)
    clips_per_item: float


def _all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def _any_rank_ran_out(ran_out: bool, device: torch.device) -> bool:
    """Whether any rank's train stream has ended (a collective: every rank calls it at the same point)."""
    flag = torch.tensor([1.0 if ran_out else 0.0], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def untrained_model(cfg: ExperimentConfig) -> VideoModel:
    """The model exactly as a run of ``cfg`` starts training it (same seed, same initialisation): the
    step-0 point of a learning curve."""
    _seed_everything(cfg.train.seed)
    return build_model(cfg.model).eval()


def train_step(model: VideoModel, parts: dict[str, Part], batches: list[Batch], step: int, grad_accum: float,
               passes: int | None = None) -> dict[str, torch.Tensor | float]:
    """One optimizer step of every part (in the family's order) over this rank's micro-batches
    ``batches``; each loss is divided by ``grad_accum``, the global batch's micro-batches per rank
    (``len(batches)`` unless an elastic group shares them unevenly). The metrics stay on the device
    (``host_metrics`` reads them).

    ``passes`` (>= ``len(batches)``): forward/backward passes every rank runs. FSDP2 gathers parameters
    in every forward, a collective, so a rank with fewer micro-batches than the others pads with
    passes over its last batch whose loss counts zero."""
    passes = passes or len(batches)
    metrics: dict[str, float] = {}
    for name, part in parts.items():
        others = [p for n, p in parts.items() if n != name]
        totals: dict[str, float] = {}
        for i in range(passes):
            batch, real = batches[min(i, len(batches) - 1)], i < len(batches)
            last = i == passes - 1
            with contextlib.ExitStack() as stack:
                stack.enter_context(part.accumulating(last))  # accumulate locally, all-reduce once
                for other in others:
                    stack.enter_context(other.inactive())  # an inactive part never syncs grads
                with part.strategy.autocast():
                    out = model.losses(name, batch, step)
                part.backward(out.loss if real else out.loss * 0.0, grad_accum, last)
            if not real:
                continue
            # Tensors on the device: summed here, read on the host at log_every (host_metrics).
            totals[f"loss_{name}"] = totals.get(f"loss_{name}", 0.0) + out.loss.detach() / len(batches)
            for k, v in out.metrics.items():
                totals[k] = totals.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v) / len(batches)
        totals[f"grad_norm_{name}"] = part.step()
        for other in others:
            other.zero_grad()  # grads an inactive part may have received are never applied
        metrics.update(totals)
    metrics["loss"] = sum(v for k, v in metrics.items() if k.startswith("loss_"))
    return metrics


def host_metrics(metrics: dict) -> dict[str, float]:
    """A step's metrics as Python floats: one device sync for all of them (tensors on several devices,
    such as a CPU-offloaded grad norm beside CUDA losses, are gathered on the first one's)."""
    tensors = {k: v for k, v in metrics.items() if torch.is_tensor(v)}
    values = []
    if tensors:
        device = next(iter(tensors.values())).device
        values = torch.stack([v.detach().float().to(device, non_blocking=True) for v in tensors.values()]).tolist()
    return {**{k: float(v) for k, v in metrics.items() if not torch.is_tensor(v)}, **dict(zip(tensors, values))}


def open_tracker(cfg: ExperimentConfig, rank: int, start_step: int) -> Tracker:
    """Rank 0 logs to ``train.trackers`` (in the run's folder); the other ranks get a no-op tracker."""
    if rank != 0 or not cfg.train.trackers:
        return Tracker()
    run = TrackerRun(name=cfg.name, run_dir=storage.join(cfg.storage_path, cfg.name), project=cfg.train.tracker_project,
                     group=cfg.train.tracker_group, config=to_dict(cfg), start_step=start_step)
    return open_trackers(cfg.train.trackers, run)


def _quiet_train_reports() -> None:
    """Ray Train v2 logs every ``ray.train.report`` call (metrics dict and all) at INFO, one line per rank
    and checkpoint, through a logger named by its *file path*, which ``ray.train`` does not cover."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray Train layout: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg: ExperimentConfig = config["experiment"]
    plan: RunPlan = config["plan"]
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # our own progress line says it better
    _quiet_train_reports()
    normalizer: Normalizer = config["normalizer"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # The global batch is fixed by the plan (micro-batches of train.batch_size); an elastic group of
    # another size shares them out differently (train/batches.micro_batches), never changes their number.
    total_micro = plan.global_batch // cfg.train.batch_size
    assert total_micro * cfg.train.batch_size == plan.global_batch and total_micro >= world, (plan.global_batch, world)
    # Buckets: a rank's stream of one-shape batches ends when its own clips run out (they fill batches of other
    # sizes than its neighbours'), so ranks agree on the stream's end before every step, as with uneven shares.
    buckets = cfg.data.bucket_shapes
    uneven = total_micro % world != 0 or bool(buckets)
    device = ray.train.torch.get_device() if cfg.parallel.use_gpu else torch.device("cpu")
    torch.set_num_threads(max(1, int(cfg.parallel.cpus_per_worker)))
    _seed_everything(cfg.train.seed)  # identical init on every rank; data order differs by shard

    # --- model, strategy, EMA ----------------------------------------------------------------------
    model = build_model(cfg.model)
    if cfg.train.init_from and ray.train.get_checkpoint() is None:  # a resumed run has its own weights
        from vidgen_ray.checkpoints import initialise_from

        new = initialise_from(model, cfg.train.init_from)
        if rank == 0:
            log.info("initialised from %s%s", cfg.train.init_from,
                     f" ({len(new)} tensors new to it, e.g. {new[0]})" if new else "")
    parts = parallelize(model, cfg.parallel, cfg.train, device, plan.total_steps)
    ema_part = model.sampling_part
    mesh = parts[ema_part].strategy.mesh  # (dp, sp): the ranks of a sequence-parallel group train on one batch
    ema = EMA(parts[ema_part].raw, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None

    # --- resume ------------------------------------------------------------------------------------
    state = ckpt.TrainState()
    restored = ray.train.get_checkpoint()
    rng_restored = False
    if restored is not None:
        with restored.as_directory() as d:
            state = ckpt.load(d, parts, ema)
            rng_restored = (Path(d) / "rng" / f"rank{ckpt.rng_rank(rank, mesh.sp)}.pt").exists()
        state.resumes += 1
        if rank == 0:
            log.info("resumed from %s at step %d (epoch %d, item %d)", restored.path, state.step, state.epoch, state.items_consumed)
    if not state.workers or state.workers[-1][1] != world:
        if state.workers and rank == 0:
            per_rank = sorted({micro_batches(total_micro, world, r, 0) for r in range(world)})
            log.info("the worker group is now %d workers (was %d): accumulating %s micro-batches each keeps the "
                     "global batch at %d", world, state.workers[-1][1], "-".join(map(str, per_rank)), plan.global_batch)
        state.workers.append([state.step, world])
    if not rng_restored:
        # Per-rank randomness (noise, timesteps, dropout). A resumed run keeps the RNG states its
        # checkpoint restored instead, so it continues the uninterrupted run's random stream
        # (a rank the checkpoint has no state for, at another world size, is seeded like a new one).
        # The ranks of a sequence-parallel group share their data-parallel rank's seed: they draw the same
        # noise and timesteps for the clips they train on together.
        _seed_everything(cfg.train.seed + 1000 * mesh.dp_rank + state.step)

    flops = model.flops_per_sample()
    reference_numel = cfg.model.channels * cfg.data.clip.frames * cfg.data.clip.height * cfg.data.clip.width
    telemetry = Telemetry(cfg.name, rank, world, flops, model.tokens_per_sample(), device, cfg.parallel.precision,
                          frames_per_sample=cfg.model.frames)
    if rank == 0:
        params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ZeRO-3 partitions
        log.info("%s | %d params | %.3g forward GFLOP/sample | %d workers x batch %d x accum %.3g = %d/step | %d steps%s",
                 cfg.model.name, params, flops / 1e9, world, cfg.train.batch_size, total_micro / world,
                 plan.global_batch, plan.total_steps,
                 f" | sequence parallel: {mesh.dp} groups of {mesh.sp}, each training on its {mesh.sp} micro-batches "
                 "together" if mesh.sp > 1 else "")

    # `with`: a run failing in this worker (a NaN loss, an error) still writes what it logged up to there.
    with open_tracker(cfg, rank, state.step) as tracker:
        train_shard = ray.train.get_dataset_shard("train")
        val_shard = ray.train.get_dataset_shard("val") if "val" in config.get("splits", ()) else None
        step_losses: dict = {}  # the last step's metrics: device tensors until logged
        stop_reason = ""

        last_reported = last_checkpointed = -1
        last_val: dict[str, float] = {}

        def report(validate_now: bool, checkpoint_now: bool, final: bool = False) -> None:
            """Validate / sample / checkpoint, then ``ray.train.report``. Every rank calls this at the same
            steps with the same arguments: report is a barrier, and validation and sharded saves are
            collectives."""
            nonlocal stop_reason, last_reported, last_checkpointed, last_val
            metrics = _all_reduce_mean(host_metrics(step_losses), device)
            metrics.update(step=state.step, epoch=state.epoch, items_consumed=state.items_consumed, workers=world)
            if validate_now and val_shard is not None:
                last_val = _all_reduce_mean(validate(model, parts, val_shard, cfg, normalizer, device, state.step), device)
                _update_early_stopping(cfg, state, last_val)
                tracker.log_scalars({f"val/{k.removeprefix('val_')}": v for k, v in last_val.items()}, state.step)
            metrics.update(last_val)  # keep-best needs the metric on every checkpoint
            metrics.update(telemetry_last)
            if not math.isfinite(metrics.get("loss", 0.0)):  # a NaN run must not become the resume point
                raise FloatingPointError(f"loss is {metrics['loss']} at step {state.step}; lower train.optim.lr or use fp32")
            checkpoint = None
            stall_from = time.perf_counter()  # the loop is blocked from here to the report's return
            if state.checkpoint_stalls:
                metrics["checkpoint_stall_s"] = state.checkpoint_stalls[-1][1]
            if checkpoint_now:
                tmp = Path(tempfile.mkdtemp(prefix="vidgen-ckpt-"))
                ckpt.save(tmp, parts, ema, ema_part, state, to_dict(cfg))
                checkpoint = ray.train.Checkpoint.from_directory(str(tmp))
                last_checkpointed = state.step
            # Before the report: Tune may stop a trial there, and a stopped trial's workers are killed,
            # not closed. An object-store run's tracker files go up with its checkpoints.
            tracker.sync() if checkpoint_now else tracker.flush()
            ray.train.report(
                metrics,
                checkpoint=checkpoint,
                checkpoint_dir_name=f"checkpoint_{state.step:09d}" if checkpoint else None,
                checkpoint_upload_mode=(ray.train.CheckpointUploadMode.ASYNC if cfg.train.async_checkpoint_upload
                                        else ray.train.CheckpointUploadMode.SYNC),
                delete_local_checkpoint_after_upload=True,
            )
            last_reported = state.step
            if checkpoint_now:  # saved on every rank, and with an async upload, only scheduled to upload
                state.checkpoint_stalls.append([state.step, round(time.perf_counter() - stall_from, 4)])
            if rank == 0:
                val_text = " ".join(f"{k} {v:.4f}" for k, v in last_val.items()) if validate_now else ""
                what = "checkpoint" if checkpoint_now else "validation"
                log.info("%s at step %d%s", what, state.step, f" | {val_text}" if val_text else "")
            if cfg.train.early_stop_metric and state.validations_without_improvement >= cfg.train.early_stop_patience:
                stop_reason = f"early stop: {cfg.train.early_stop_metric} did not improve in {cfg.train.early_stop_patience} validations"

        telemetry_last: dict[str, float] = {}
        last_batch: Batch | None = None
        batches_iter = iter(torch_batches(train_shard, cfg.train.batch_size, cfg.data))
        micro: list[Batch] = []
        micro_items: list[list[int]] = []  # stream item of every clip in ``micro``
        micro_rows: list[list] = []  # bucketed: (item, clip index in it) of every clip in ``micro``
        clock = time.perf_counter()  # training wall time, carried across resumes in TrainState.train_seconds
        # The data position to the clip needs one reader of an ordered, unshuffled stream; otherwise (several
        # workers, Ray Data's unordered delivery, a local shuffle buffer) it is estimated from samples seen.
        exact_position = world == 1 and cfg.data.ordered and not cfg.data.shuffle_buffer
        # Buckets train clips out of stream order: the exact position is then the clips trained past the
        # restart point and those read but pending in a partial batch (data/buckets.resume_point).
        trained_rows = {int(k): set(v) for k, v in state.skip.items()}
        pending: list = []
        last_sampled = -1
        while state.step < plan.total_steps and not stop_reason:
            # --- wait for data (measured: the accelerator idles here) -------------------------------------
            t0 = time.perf_counter()
            state.train_seconds += t0 - clock
            clock = t0
            raw = next(batches_iter, None)
            telemetry.waited(time.perf_counter() - t0)
            if raw is None:
                # Equal shares: every worker sees the end at the same step. Shared unevenly, the shards can end
                # a micro-batch apart: the rank that ran out tells the others (one flag per rank and step).
                if uneven:
                    _any_rank_ran_out(True, device)
                break
            last_batch = to_batch(raw, normalizer, device, cfg.model.num_classes)
            if mesh.sp_group is None:
                micro.append(last_batch)
            else:  # the SP group's micro-batches, each of which its ranks train on together
                group = group_micro_batches(last_batch, mesh.sp_group)
                micro.extend(group)
                last_batch = group[0]  # the same on every rank of the group (sampling conditions on it)
            micro_items.append(raw["items"].tolist())
            if buckets:
                micro_rows.append(raw["rows"])
                pending = raw["pending"]
            state.epoch = max(state.epoch, raw["epoch"])  # shards interleave items; the epoch only moves forward
            if len(micro) < micro_batches(total_micro, world, rank, state.step) * mesh.sp:
                continue
            if uneven and _any_rank_ran_out(False, device):  # this rank's share is complete; is everyone's?
                break
            # --- compute ------------------------------------------------------------------------------------
            model.train()
            # An SP group accumulates over its ranks' micro-batches: total / dp of them per rank.
            step_losses = train_step(model, parts, micro, state.step, total_micro / mesh.dp,
                                     passes=-(-total_micro // world) * mesh.sp)
            if ema is not None:
                ema.update()
            state.step += 1
            clips = sum(b.size for b in micro) // mesh.sp  # this rank's share (an SP group shares its micro-batches)
            # Bucketed batches differ in size between ranks: the global count is estimated from this rank's.
            state.samples_seen += clips * world if buckets else plan.global_batch
            if exact_position and buckets:
                for item, row in (r for rows in micro_rows for r in rows):
                    trained_rows.setdefault(item, set()).add(row)
                state.items_consumed, skip = resume_point(trained_rows, pending)
                state.rows_into_item, state.skip = 0, {str(k): v for k, v in skip.items()}
                trained_rows = {k: v for k, v in trained_rows.items() if k >= state.items_consumed}
            elif exact_position:  # every clip this step trained on, in stream order
                for item in (int(i) for b in micro_items for i in b):
                    if item != state.items_consumed:
                        state.items_consumed, state.rows_into_item = item, 0
                    state.rows_into_item += 1
            else:
                state.items_consumed = int(math.floor(state.samples_seen / plan.clips_per_item))
                state.rows_into_item, state.skip = 0, {}
            if buckets:  # tokens and FLOPs in reference clips (data.clip), the step time per bucket
                shapes = {tuple(b.video.shape[2:]) for b in micro}
                telemetry.stepped(clips, work=sum(b.size * b.video[0].numel() for b in micro) / reference_numel,
                                  frames=sum(b.size * b.video.shape[2] for b in micro),
                                  bucket="x".join(map(str, shapes.pop())) if len(shapes) == 1 else "mixed")
            else:
                telemetry.stepped(plan.global_batch // world)  # the global batch, not this rank's share of it
            micro, micro_items, micro_rows = [], [], []
            # --- log (the step's metrics reach the host only here: reading them waits for the device) --------
            if state.step % cfg.train.log_every == 0 or state.step == plan.total_steps:
                step_losses = host_metrics(step_losses)
                if not math.isfinite(step_losses["loss"]):
                    raise FloatingPointError(f"loss is {step_losses['loss']} at step {state.step} (checked every "
                                             "train.log_every steps); lower train.optim.lr or use fp32")
                telemetry_last = telemetry.flush(step_losses)
                state.history.append([state.step, round(step_losses["loss"], 6)])
                lr = next(iter(parts.values())).lr
                if rank == 0:
                    log.info(progress_line(state.step, plan.total_steps, state.epoch, step_losses, telemetry_last, lr))
                tracker.log_scalars({**{f"train/{k}": v for k, v in step_losses.items()}, "train/lr": lr,
                                     "train/epoch": state.epoch, "perf/workers": world,
                                     **{f"perf/{k}": v for k, v in telemetry_last.items()}},
                                    state.step)
            # --- sample, validate, checkpoint -----------------------------------------------------------------
            state.train_seconds += time.perf_counter() - clock
            if state.step < plan.total_steps and sampling_due(cfg, state.step, False):  # at train.sample_every
                _log_samples(tracker, write_samples(model, ema, cfg, state.step, False, rank, batch=last_batch), cfg, state.step)
                last_sampled = state.step
            validate_now = bool(cfg.train.val_every) and state.step % cfg.train.val_every == 0
            checkpoint_now = state.step % cfg.train.checkpoint_every == 0
            if (validate_now or checkpoint_now) and state.step < plan.total_steps:
                report(validate_now, checkpoint_now)
            clock = time.perf_counter()  # sampling, validation and checkpoints are not training time
            telemetry.mark()  # nor any bucket's step time
        if not stop_reason and state.step < plan.total_steps and rank == 0:
            log.info("the train stream ended at step %d of %d", state.step, plan.total_steps)
        # The final checkpoint (validation too unless it just ran at this very step, as on an early stop).
        if last_sampled != state.step:  # an early stop or an ended stream may fall on a sample step
            _log_samples(tracker, write_samples(model, ema, cfg, state.step, True, rank, batch=last_batch), cfg, state.step)
        if last_checkpointed != state.step:
            report(validate_now=last_reported != state.step, checkpoint_now=True, final=True)
        if rank == 0:
            log.info("done at step %d%s", state.step, f" ({stop_reason})" if stop_reason else "")


def _log_samples(tracker: Tracker, frames: np.ndarray | None, cfg: ExperimentConfig, step: int) -> None:
    if frames is not None:
        tracker.log_video("samples", frames, step, fps=cfg.data.clip.fps)
        tracker.log_image("samples_grid", contact_sheet(frames), step)


def _update_early_stopping(cfg: ExperimentConfig, state: ckpt.TrainState, metrics: dict) -> None:
    name = cfg.train.early_stop_metric
    if not name:
        return
    if name not in metrics:
        raise KeyError(f"train.early_stop_metric {name!r} is not a reported metric; choose from {sorted(metrics)}")
    value = float(metrics[name])
    delta = cfg.train.early_stop_min_delta
    better = state.best_metric is None or (
        value < state.best_metric - delta if cfg.train.early_stop_mode == "min" else value > state.best_metric + delta
    )
    if better:
        state.best_metric = value
        state.validations_without_improvement = 0
    else:
        state.validations_without_improvement += 1
