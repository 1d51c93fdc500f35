"""What every strategy offers the train loop and the checkpoint code, and the parts it hands out.

A ``Strategy`` turns each part of a model family into a ``Part`` (``parallelize``), runs its
backward / step / gradient-sync suppression, and saves and restores its state. The loop and the
checkpoint code call this interface only; they never name a strategy. The subclasses:

    local.py      LocalStrategy    one process (also what ddp / fsdp2 become on a 1-worker group)
    ddp.py        DDPStrategy      DistributedDataParallel
    fsdp2.py      FSDP2Strategy    fully_shard per shard unit, MixedPrecisionPolicy, CPU offload
    deepspeed.py  DeepSpeedStrategy  ZeRO-1/2/3 engines

The first three share one checkpoint format, torch.distributed.checkpoint over ``get_state_dict``
(fully qualified names, logical tensors), so a checkpoint written by N workers under any of them
resumes on M workers under any of them. DeepSpeed keeps its engines' own format; at another world
size it converts it to DeepSpeed's universal checkpoint (ZeRO-1/2 with Adam; ZeRO-3 is refused).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
import torch.distributed as dist
from torch import nn

from vidgen_ray.configs import ConfigError
from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.config import ParallelConfig, TrainConfig
from vidgen_ray.train.ema import EMA, clean_key
from vidgen_ray.train.sequence_parallel import Mesh, sum_gradients

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

DCP_DIR = "dcp"  # torch.distributed.checkpoint shards of every part's model + optimizer, and the EMA
SCHEDULES = "schedules.pt"  # rank 0: every part's LR schedule (and fp16 grad scaler); world-size free


def autocast(device: torch.device, precision: str):
    """Mixed precision of the forward pass for every strategy (FSDP2 also casts its parameters)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def clean_state_dict(sd: dict) -> dict:
    return {clean_key(k): v for k, v in sd.items()}


@dataclass
class Part:
    """One independently optimised piece of a model, ready for the train loop. Its methods are its
    strategy's; ``module`` is what the family calls (a wrapper, or the module sharded in place) and
    ``raw`` the module underneath (weights, EMA, sampling)."""

    name: str
    module: nn.Module
    raw: nn.Module
    optimizer: Any
    scheduler: Any
    strategy: "Strategy"
    grad_clip: float
    scaler: Any = None  # fp16 GradScaler where the strategy uses one

    def backward(self, loss: torch.Tensor, grad_accum: float, last: bool = True) -> None:
        self.strategy.backward(self, loss, grad_accum, last)

    def step(self) -> torch.Tensor | float:
        """Clip, step optimizer and schedule, zero grads. Returns the pre-clip global grad norm (a
        device tensor where reading it would wait for the device)."""
        return self.strategy.step(self)

    def zero_grad(self) -> None:
        self.strategy.zero_grad(self)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Around a micro-step's forward and backward: no gradient sync unless it is the ``last`` one."""
        return contextlib.nullcontext() if last else self.strategy.no_sync(self)

    def inactive(self) -> contextlib.AbstractContextManager:
        """While another part steps: no gradient sync and no strategy bookkeeping for this one."""
        return self.strategy.inactive(self)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


class Strategy:
    """Base class: the per-part template, plain backward/step, and the resharding checkpoint format."""

    name: ClassVar[str] = ""
    checkpoint_format: ClassVar[str] = "dcp"

    def __init__(self, par: ParallelConfig, device: torch.device, mesh: Mesh | None = None) -> None:
        self.par, self.device = par, device
        self.mesh = mesh or Mesh()  # the (dp, sp) layout: the strategy synchronises over "dp"

    # --- wrapping ---------------------------------------------------------------------------------
    def parallelize(self, model: VideoModel, train: TrainConfig, total_steps: int) -> dict[str, Part]:
        """Every part of ``model``, in the family's stepping order: activation checkpointing and compile
        on its shard units, then the strategy's wrapping, optimizer and LR schedule."""
        parts: dict[str, Part] = {}
        self.mesh.apply(model)  # sequence parallelism first: wrappers would hide the blocks it changes
        for name in model.parts():
            if self.par.activation_checkpointing:
                apply_activation_checkpointing(model, name)
            raw = model.parts()[name]
            if self.par.compile:
                for unit in model.shard_units(name):
                    unit.compile()
            lr = train.optim.lr * model.lr_multiplier(name, train.optim)
            parts[name] = self.wrap(model, name, raw, train, lr, total_steps)
        self.move_rest(model)
        return parts

    def move_rest(self, model: VideoModel) -> None:
        """Frozen helpers no part owns (a latent model's autoencoder) go to the device too."""
        model.to(self.device)

    def wrap(self, model: VideoModel, name: str, raw: nn.Module, train: TrainConfig, lr: float, total_steps: int) -> Part:
        raise NotImplementedError

    def autocast(self):
        return autocast(self.device, self.par.precision)

    # --- stepping ---------------------------------------------------------------------------------
    def backward(self, part: Part, loss: torch.Tensor, grad_accum: float, last: bool) -> None:
        if part.scaler is not None:
            part.scaler.scale(loss / grad_accum).backward()
        else:
            (loss / grad_accum).backward()

    def step(self, part: Part) -> torch.Tensor | float:
        if self.mesh.sp_group is not None:  # each rank of an SP group holds its tokens' share of every gradient
            sum_gradients(part.raw.parameters(), self.mesh.sp_group)
        if part.scaler is not None:
            part.scaler.unscale_(part.optimizer)
        norm = clip_grad_norm(part.raw, part.grad_clip)
        if part.scaler is not None:
            part.scaler.step(part.optimizer)
            part.scaler.update()
        else:
            part.optimizer.step()
        part.scheduler.step()
        part.optimizer.zero_grad(set_to_none=True)
        return norm

    def zero_grad(self, part: Part) -> None:
        part.optimizer.zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def no_sync(self, part: Part) -> Iterator[None]:
        yield  # one process: nothing to sync

    def inactive(self, part: Part) -> contextlib.AbstractContextManager:
        return self.no_sync(part)

    # --- state ------------------------------------------------------------------------------------
    def full_state_dict(self, part: Part) -> dict:
        """Unsharded weights of one part on rank 0 (a collective where the weights are sharded)."""
        return clean_state_dict({k: v.detach().cpu() for k, v in part.raw.state_dict().items()})

    def _dcp_state(self, parts: dict[str, Part], ema: EMA | None) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        sd: dict[str, Any] = {}
        for name, p in parts.items():
            model_sd, optim_sd = get_state_dict(p.raw, p.optimizer)
            sd[name] = {"model": model_sd, "optimizer": optim_sd}
        if ema is not None:
            sd["__ema__"] = dict(ema.named_shadow())
        return sd

    def save(self, directory: Path, parts: dict[str, Part], ema: EMA | None) -> None:
        """Every rank calls this with its own local ``directory`` (Ray merges them on upload)."""
        import torch.distributed.checkpoint as dcp

        dcp.save(self._dcp_state(parts, ema), checkpoint_id=str(directory / DCP_DIR))
        if rank() == 0:
            torch.save({name: {"scheduler": p.scheduler.state_dict(),
                               "scaler": p.scaler.state_dict() if p.scaler is not None else None}
                        for name, p in parts.items()}, directory / SCHEDULES)

    def load(self, directory: Path, parts: dict[str, Part], ema: EMA | None, meta: dict) -> None:
        """Restore what ``save`` wrote, at this world size and strategy, whatever the writer's were
        (DCP reads each rank's share of every logical tensor, however it was split when saved)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        if meta.get("format") != self.checkpoint_format:
            raise ConfigError(format_mismatch(meta, self))
        sd = self._dcp_state(parts, ema)
        dcp.load(sd, checkpoint_id=str(directory / DCP_DIR))
        for name, p in parts.items():
            set_state_dict(p.raw, p.optimizer, model_state_dict=sd[name]["model"], optim_state_dict=sd[name]["optimizer"])
        if ema is not None:
            ema.load_named(sd["__ema__"])
        schedules = torch.load(directory / SCHEDULES, map_location="cpu", weights_only=False)
        for name, p in parts.items():
            p.scheduler.load_state_dict(schedules[name]["scheduler"])
            if p.scaler is not None and schedules[name]["scaler"] is not None:
                p.scaler.load_state_dict(schedules[name]["scaler"])


def format_mismatch(meta: dict, strategy: Strategy) -> str:
    written = meta.get("strategy", "?")
    if meta.get("format") is None:
        return (f"this checkpoint was written by an older vidgen-ray ({written}, before the resharding format); "
                "resume it with the version that wrote it, or start a new run (a new name or storage_path)")
    return (f"the checkpoint was written with parallel.strategy={written} ({meta['format']} format) and this run "
            f"uses {strategy.name} ({strategy.checkpoint_format}); none, ddp and fsdp2 resume each other's "
            f"checkpoints, deepspeed only its own: set parallel.strategy={written} or start a new run")


def clip_grad_norm(module: nn.Module, max_norm: float) -> torch.Tensor | float:
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor norm over all shards
        norm = norm.full_tensor()
    return norm.detach()


def apply_activation_checkpointing(model: VideoModel, part: str) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing as apply
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    units = {id(u) for u in model.shard_units(part)}
    if units:
        apply(model.parts()[part], checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=lambda m: id(m) in units)


def set_part(model: VideoModel, part: str, module: nn.Module) -> str:
    """Replace the attribute that holds ``part`` (the family looks it up on every call)."""
    current = model.parts()[part]
    for name, child in model.named_children():
        if child is current:
            setattr(model, name, module)
            return name
    raise RuntimeError(f"{type(model).__name__}.parts()[{part!r}] is not a direct attribute; the family must hold parts as attributes")
