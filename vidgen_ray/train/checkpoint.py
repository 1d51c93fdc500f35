"""Checkpoints that resume exactly, for every strategy, plus consolidated weights for inference.

A checkpoint directory (one per ``ray.train.report``; Ray merges every rank's files into it):

    meta.json           rank 0, written last: TrainState (step, epoch, data position, early-stopping
                        state, loss history), the experiment config, strategy and world size
    rng/rank{r}.pt      every rank: Python, NumPy, torch (and CUDA) RNG states
    state.pt            none / ddp: per part model + optimizer + scheduler (+ fp16 scaler), and the EMA
    dcp/                fsdp2: torch.distributed.checkpoint shards of models, optimizers and EMA
    sched.pt            fsdp2: schedulers
    ds_<part>/          deepspeed: the engine's own ZeRO checkpoint per part; EMA in ema.pt
    model.pt            rank 0: consolidated weights (+ EMA) that evaluate/serve load on one device

Reading a checkpoint for inference, and finding a run's newest or registered one, is
``vidgen_ray.checkpoints`` (evaluation and Serve use it without importing the trainer).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from vidgen_ray.checkpoints import META, WEIGHTS, read_meta
from vidgen_ray.configs import ConfigError
from vidgen_ray.train.ema import EMA
from vidgen_ray.train.parallelize import Part


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    # Data position. One worker: the stream item the next clip comes from and how many of its clips
    # were trained on (exact). Several: items of the stream fully consumed by all workers (estimated
    # from samples seen, since each worker reads its own share of the stream).
    items_consumed: int = 0
    rows_into_item: int = 0
    samples_seen: int = 0
    resumes: int = 0  # how many times this run restarted from a checkpoint (failures and reruns)
    best_metric: float | None = None
    validations_without_improvement: int = 0
    history: list = field(default_factory=list)  # [step, loss] at every log interval
    train_seconds: float = 0.0  # wall time in data wait + steps (not validation, samples, checkpoints), all resumes

    def to_json(self) -> dict:
        return asdict(self)


def _clean_key(key: str) -> str:
    # Activation checkpointing and torch.compile wrap modules; weights keep their plain names.
    return key.replace("._checkpoint_wrapped_module", "").replace("_checkpoint_wrapped_module.", "").replace("._orig_mod", "")


def clean_state_dict(sd: dict) -> dict:
    return {_clean_key(k): v for k, v in sd.items()}


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


# --- saving ------------------------------------------------------------------------------------------


def _save_rng(directory: Path) -> None:
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, directory / "rng" / f"rank{_rank()}.pt")


def _full_state_dict(part: Part) -> dict:
    """Unsharded weights of one part on rank 0 (a collective for FSDP2 and ZeRO-3: every rank calls it)."""
    if part.strategy == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(part.raw, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    elif part.engine is not None and part.engine.zero_optimization_stage() == 3:
        sd = part.engine._zero3_consolidated_16bit_state_dict() or {}
    else:
        sd = {k: v.detach().cpu() for k, v in part.raw.state_dict().items()}
    return clean_state_dict(sd)


def _consolidated(parts: dict[str, Part], ema: EMA | None, ema_part: str | None) -> tuple[dict, dict | None]:
    """Full weights of every part, and the EMA weights of the sampling part, the same way for all
    strategies: the averaged weights are swapped in and read like the live ones."""
    weights = {name: _full_state_dict(part) for name, part in parts.items()}
    ema_sd = None
    if ema is not None and ema_part is not None:
        with ema.applied():
            ema_sd = _full_state_dict(parts[ema_part])
    return weights, ema_sd


def save(directory: str | Path, parts: dict[str, Part], ema: EMA | None, ema_part: str | None, state: TrainState,
         experiment: dict, export_weights: bool = True) -> None:
    """Every rank calls this with its own local ``directory``; Ray merges them on upload."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rank = _rank()
    _save_rng(directory)
    strategy = next(iter(parts.values())).strategy
    if strategy in ("none", "ddp"):
        if rank == 0:
            payload = {
                name: {
                    "model": clean_state_dict(p.raw.state_dict()),
                    "optimizer": p.optimizer.state_dict(),
                    "scheduler": p.scheduler.state_dict(),
                    "scaler": p.scaler.state_dict() if p.scaler is not None else None,
                }
                for name, p in parts.items()
            }
            payload["__ema__"] = ema.state_dict() if ema is not None else None
            torch.save(payload, directory / "state.pt")
    elif strategy == "fsdp2":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        sd = {}
        for name, p in parts.items():
            model_sd, optim_sd = get_state_dict(p.raw, p.optimizer)
            sd[name] = {"model": model_sd, "optimizer": optim_sd}
        if ema is not None:
            sd["__ema__"] = {str(i): t for i, t in enumerate(ema.shadow)}
        dcp.save(sd, checkpoint_id=str(directory / "dcp"))
        if rank == 0:
            torch.save({name: p.scheduler.state_dict() for name, p in parts.items()}, directory / "sched.pt")
    else:  # deepspeed
        for name, p in parts.items():
            p.engine.save_checkpoint(str(directory / f"ds_{name}"), tag="state")
        if rank == 0 and ema is not None:
            torch.save(ema.state_dict(), directory / "ema.pt")
    if export_weights:
        weights, ema_sd = _consolidated(parts, ema, ema_part)
        if rank == 0:
            torch.save({"weights": weights, "ema": ema_sd, "ema_part": ema_part}, directory / WEIGHTS)
    if rank == 0:
        meta = {"state": state.to_json(), "experiment": experiment, "strategy": strategy, "parts": list(parts),
                "world_size": dist.get_world_size() if dist.is_initialized() else 1}
        (directory / META).write_text(json.dumps(meta, indent=1, default=str))


# --- loading -----------------------------------------------------------------------------------------


def load(directory: str | Path, parts: dict[str, Part], ema: EMA | None) -> TrainState:
    """Restore everything ``save`` wrote into the live parts (same strategy and world size)."""
    directory = Path(directory)
    meta = read_meta(str(directory))
    strategy = next(iter(parts.values())).strategy
    if meta["strategy"] != strategy:
        raise ConfigError(f"checkpoint was written with strategy {meta['strategy']!r}, this run uses {strategy!r}; "
                         f"use the same parallel.strategy to resume (or start a new run name)")
    if strategy in ("none", "ddp"):
        payload = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
        for name, p in parts.items():
            missing = p.raw.load_state_dict(payload[name]["model"], strict=False)
            if missing.missing_keys or missing.unexpected_keys:
                _load_wrapped(p.raw, payload[name]["model"])
            p.optimizer.load_state_dict(payload[name]["optimizer"])
            p.scheduler.load_state_dict(payload[name]["scheduler"])
            if p.scaler is not None and payload[name]["scaler"] is not None:
                p.scaler.load_state_dict(payload[name]["scaler"])
        if ema is not None and payload.get("__ema__"):
            ema.load_state_dict(payload["__ema__"])
    elif strategy == "fsdp2":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        sd = {}
        for name, p in parts.items():
            model_sd, optim_sd = get_state_dict(p.raw, p.optimizer)
            sd[name] = {"model": model_sd, "optimizer": optim_sd}
        if ema is not None:
            sd["__ema__"] = {str(i): t for i, t in enumerate(ema.shadow)}
        dcp.load(sd, checkpoint_id=str(directory / "dcp"))
        for name, p in parts.items():
            set_state_dict(p.raw, p.optimizer, model_state_dict=sd[name]["model"], optim_state_dict=sd[name]["optimizer"])
        scheds = torch.load(directory / "sched.pt", map_location="cpu", weights_only=False)
        for name, p in parts.items():
            p.scheduler.load_state_dict(scheds[name])
    else:
        for name, p in parts.items():
            p.engine.load_checkpoint(str(directory / f"ds_{name}"), tag="state")
        if ema is not None and (directory / "ema.pt").exists():
            ema.load_state_dict(torch.load(directory / "ema.pt", map_location="cpu", weights_only=False))
    rng_file = directory / "rng" / f"rank{_rank()}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, map_location="cpu", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState(**meta["state"])


def _load_wrapped(module: torch.nn.Module, sd: dict) -> None:
    """Load plain-named weights into a module whose blocks are wrapped (activation checkpointing)."""
    own = {_clean_key(k): k for k in module.state_dict()}
    module.load_state_dict({own[k]: v for k, v in sd.items()}, strict=True)
