"""The one seam between a model and the hardware: activation checkpointing, compile, DDP / FSDP2 /
DeepSpeed ZeRO, mixed precision, optimizers and LR schedules all happen here and nowhere else.

``parallelize(model, ...)`` turns every part of a family (the GAN's generator and discriminator,
or the single ``model`` part of the others) into a ``Part``: the module to call, its optimizer and
schedule, and the strategy's way to run backward and step. The family keeps calling
``self.<part>(...)``; the attribute now holds the wrapped (or in-place sharded) module.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.config import OptimConfig, ParallelConfig, ScheduleConfig, TrainConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(params, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            # Norm scales, biases and embeddings-as-vectors are not weight-decayed (standard practice).
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, eps=cfg.eps)


def lr_lambda(cfg: ScheduleConfig, total_steps: int):
    """Linear warmup, then constant or cosine decay to ``min_lr_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.kind == "constant" or total_steps <= cfg.warmup_steps:
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class Part:
    """One independently optimised piece of a model, ready for the train loop."""

    name: str
    module: nn.Module  # what the family calls (DDP / DeepSpeed wrapper, or the FSDP2-sharded module)
    raw: nn.Module  # the underlying module (state dicts, EMA, sampling)
    optimizer: Any
    scheduler: Any
    strategy: str
    grad_clip: float
    engine: Any = None  # DeepSpeed engine
    scaler: Any = None  # fp16 GradScaler (ddp / none)
    extra: dict = field(default_factory=dict)

    def backward(self, loss: torch.Tensor, grad_accum: int, last: bool = True) -> None:
        if self.engine is not None:
            self.engine.backward(loss)  # DeepSpeed scales by its own gradient_accumulation_steps
            if not last:
                self.engine.step()  # DeepSpeed counts micro-steps in step(); it updates only at the boundary
        elif self.scaler is not None:
            self.scaler.scale(loss / grad_accum).backward()
        else:
            (loss / grad_accum).backward()

    def step(self) -> float:
        """Clip, step optimizer and schedule, zero grads. Returns the pre-clip global grad norm."""
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = _clip_grad_norm(self.raw, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def zero_grad(self) -> None:
        if self.engine is not None:
            self.engine.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """No gradient all-reduce for this forward/backward (accumulation micro-steps, inactive parts)."""
        if self.strategy == "ddp":
            with self.module.no_sync():
                yield
        elif self.strategy == "fsdp2":
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)
        elif self.engine is not None and "owner" in self.extra:
            # DeepSpeed's engine.forward arms backward hooks for *its* optimizer; a part that is only
            # passed through (the discriminator during the generator step) is called unwrapped.
            owner, attr = self.extra["owner"], self.extra["attr"]
            setattr(owner, attr, self.raw)
            try:
                yield
            finally:
                setattr(owner, attr, self.engine)
        else:  # single process: nothing to sync
            yield

    @contextlib.contextmanager
    def inactive(self) -> Iterator[None]:
        """While another part steps: no gradient sync and, for DeepSpeed, no engine bookkeeping."""
        with self.no_sync():
            yield

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _clip_grad_norm(module: nn.Module, max_norm: float) -> float:
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor norm over all shards
        norm = norm.full_tensor()
    return float(norm)


def autocast(device: torch.device, precision: str):
    """Mixed precision of the forward pass for every strategy (FSDP2 also casts its parameters)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def _apply_activation_checkpointing(model: VideoModel, part: str) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing, checkpoint_wrapper

    units = {id(u) for u in model.shard_units(part)}
    if not units:
        return
    root = model.parts()[part]
    apply_activation_checkpointing(root, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=lambda m: id(m) in units)


def _set_part(model: VideoModel, part: str, module: nn.Module) -> str:
    """Replace the attribute that holds ``part`` (the family looks it up on every call)."""
    current = model.parts()[part]
    for name, child in model.named_children():
        if child is current:
            setattr(model, name, module)
            return name
    raise RuntimeError(f"{type(model).__name__}.parts()[{part!r}] is not a direct attribute; the family must hold parts as attributes")


def deepspeed_config(train: TrainConfig, par: ParallelConfig, lr: float) -> dict:
    zero: dict[str, Any] = {"stage": par.zero_stage, "overlap_comm": False, "contiguous_gradients": True,
                            # rank 0 can export whole weights from ZeRO-3 partitions for serving/eval
                            "stage3_gather_16bit_weights_on_model_save": True}
    if par.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": par.use_gpu}
    if par.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": par.use_gpu}
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        # Mixed precision comes from the train loop's torch.autocast (fp32 master weights), the same
        # numerics as DDP and FSDP2; DeepSpeed's own bf16/fp16 modes stay off.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def parallelize(
    model: VideoModel,
    par: ParallelConfig,
    train: TrainConfig,
    device: torch.device,
    total_steps: int,
) -> dict[str, Part]:
    """Wrap every part of ``model`` for ``par.strategy`` and give it an optimizer and LR schedule."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    strategy = par.strategy if world > 1 or par.strategy == "deepspeed" else "none"
    parts: dict[str, Part] = {}
    for name, raw in model.parts().items():
        lr = train.optim.lr * (train.optim.discriminator_lr_mult if name == "discriminator" else 1.0)
        if par.activation_checkpointing:
            _apply_activation_checkpointing(model, name)
            raw = model.parts()[name]
        if par.compile:
            for unit in model.shard_units(name):
                unit.compile()
        if strategy == "deepspeed":
            import deepspeed

            optimizer = build_optimizer(raw.parameters(), train.optim, lr)
            schedule = lr_lambda(train.schedule, total_steps)
            engine, ds_opt, _, ds_sched = deepspeed.initialize(
                model=raw,
                optimizer=optimizer,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                config=deepspeed_config(train, par, lr),
                dist_init_required=False,
            )
            attr = _set_part(model, name, engine)
            parts[name] = Part(name, engine, engine.module, ds_opt, ds_sched, strategy, train.grad_clip, engine=engine,
                               extra={"owner": model, "attr": attr})
            continue
        raw.to(device)
        if strategy == "fsdp2":
            from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

            kwargs: dict[str, Any] = {}
            if par.precision == "bf16":
                kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if par.fsdp_cpu_offload:
                kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=par.use_gpu)
            for unit in model.shard_units(name):
                fully_shard(unit, **kwargs)
            fully_shard(raw, **kwargs)
            module = raw
        elif strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
            _set_part(model, name, module)
        else:
            module = raw
        optimizer = build_optimizer(raw.parameters(), train.optim, lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train.schedule, total_steps))
        scaler = torch.amp.GradScaler(device.type) if par.precision == "fp16" and strategy in ("ddp", "none") else None
        parts[name] = Part(name, module, raw, optimizer, scheduler, strategy, train.grad_clip, scaler=scaler)
    # Frozen helpers (a latent model's autoencoder) just move to the device.
    model.to(device) if strategy != "deepspeed" else None
    return parts


def init_deepspeed_env() -> None:
    """DeepSpeed on CPU picks its CPU accelerator; keep its op builds in the cached extensions dir."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
