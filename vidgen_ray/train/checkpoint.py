"""Checkpoints that resume exactly, for every strategy and at any world size (DeepSpeed: ZeRO-1/2 with
Adam), plus consolidated weights for inference.

A checkpoint directory (one per ``ray.train.report``; Ray merges every rank's files into it):

    meta.json           rank 0, written last: TrainState (step, epoch, data position, early-stopping
                        state, loss history), the experiment config, strategy, format and world size
    rng/rank{r}.pt      every rank: Python, NumPy, torch (and CUDA) RNG states
    dcp/                none / ddp / fsdp2: torch.distributed.checkpoint of every part's model and
                        optimizer and of the EMA, by parameter name: any world size, any of the three
    schedules.pt        none / ddp / fsdp2: LR schedules (and fp16 grad scalers)
    ds_<part>/, ema.pt  deepspeed: the engine's own ZeRO checkpoint per part (another world size reads
                        it through DeepSpeed's universal-checkpoint conversion)
    model.pt            rank 0: consolidated weights (+ EMA) that evaluate/serve load on one device

What each strategy writes and reads is its own (``train/strategies``); this file holds what they
share. Reading a checkpoint for inference, and finding a run's newest or registered one, is
``vidgen_ray.checkpoints`` (evaluation and Serve use it without importing the trainer).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidgen_ray.checkpoints import META, WEIGHTS, read_meta
from vidgen_ray.train.ema import EMA
from vidgen_ray.train.strategies import Part
from vidgen_ray.train.strategies.base import rank as _rank
from vidgen_ray.train.strategies.base import world_size


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    # Data position. One worker: the stream item the next clip comes from and how many of its clips
    # were trained on (exact). Several: items of the stream fully consumed by all workers (estimated
    # from samples seen, since each worker reads its own share of the stream).
    items_consumed: int = 0
    rows_into_item: int = 0
    # Bucketed, one ordered worker: clips of items_consumed and later items already trained (item -> clip
    # indices); the resumed stream skips them (data/buckets.resume_point).
    skip: dict = field(default_factory=dict)
    samples_seen: int = 0
    resumes: int = 0  # how many times this run restarted from a checkpoint (failures and reruns)
    best_metric: float | None = None
    validations_without_improvement: int = 0
    history: list = field(default_factory=list)  # [step, loss] at every log interval
    workers: list = field(default_factory=list)  # [first step, world size] each time the group's size changed
    checkpoint_stalls: list = field(default_factory=list)  # [step, seconds the loop waited to save and report it]
    train_seconds: float = 0.0  # wall time in data wait + steps (not validation, samples, checkpoints), all resumes

    def to_json(self) -> dict:
        return asdict(self)


# --- saving ------------------------------------------------------------------------------------------


def _save_rng(directory: Path) -> None:
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # this rank's device only: a resumed rank may see another set of GPUs
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    torch.save(state, directory / "rng" / f"rank{_rank()}.pt")


def _consolidated(parts: dict[str, Part], ema: EMA | None, ema_part: str | None) -> tuple[dict, dict | None]:
    """Full weights of every part, and the EMA weights of the sampling part, the same way for all
    strategies: the averaged weights are swapped in and read like the live ones."""
    weights = {name: part.strategy.full_state_dict(part) for name, part in parts.items()}
    ema_sd = None
    if ema is not None and ema_part is not None:
        with ema.applied():
            ema_sd = parts[ema_part].strategy.full_state_dict(parts[ema_part])
    return weights, ema_sd


def save(directory: str | Path, parts: dict[str, Part], ema: EMA | None, ema_part: str | None, state: TrainState,
         experiment: dict, export_weights: bool = True) -> None:
    """Every rank calls this with its own local ``directory``; Ray merges them on upload."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rank = _rank()
    _save_rng(directory)
    strategy = next(iter(parts.values())).strategy
    strategy.save(directory, parts, ema)
    if export_weights:
        weights, ema_sd = _consolidated(parts, ema, ema_part)
        if rank == 0:
            torch.save({"weights": weights, "ema": ema_sd, "ema_part": ema_part}, directory / WEIGHTS)
    if rank == 0:
        meta = {"state": state.to_json(), "experiment": experiment, "strategy": strategy.name,
                "format": strategy.checkpoint_format, "parts": list(parts), "world_size": world_size()}
        (directory / META).write_text(json.dumps(meta, indent=1, default=str))


# --- loading -----------------------------------------------------------------------------------------


def rng_rank(rank: int, sp: int) -> int:
    """Whose saved RNG state ``rank`` restores: its own, or with sequence parallelism its group's first rank's,
    so the ranks of a group (consecutive ranks) draw alike even from a checkpoint of another layout."""
    return rank - rank % sp


def load(directory: str | Path, parts: dict[str, Part], ema: EMA | None) -> TrainState:
    """Restore everything ``save`` wrote into the live parts. A rank the writer did not have (a
    larger world) finds no RNG state of its own and keeps the seeding the loop gave it."""
    directory = Path(directory)
    meta = read_meta(str(directory))
    strategy = next(iter(parts.values())).strategy
    strategy.load(directory, parts, ema, meta)
    rng_file = directory / "rng" / f"rank{rng_rank(_rank(), strategy.mesh.sp)}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if torch.is_tensor(rng.get("cuda")) and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], torch.cuda.current_device())
    return TrainState(**meta["state"])
