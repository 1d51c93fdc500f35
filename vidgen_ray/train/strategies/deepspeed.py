"""DeepSpeed ZeRO-1/2/3: one engine per part over a client AdamW/Adam/SGD optimizer.

Mixed precision comes from the loop's ``torch.autocast`` (fp32 master weights), the same numerics
as DDP and FSDP2; DeepSpeed's own bf16/fp16 modes stay off. Checkpoints are the engines' own
(``save_checkpoint``), which need the world size that wrote them: resuming at another size is
refused before a step runs, with the way out in the message. (DeepSpeed's universal-checkpoint
conversion, ``ds_to_universal``, could carry ZeRO-1/2 Adam states across sizes; it is not wired in.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from vidgen_ray.configs import ConfigError
from vidgen_ray.models.base import VideoModel
from vidgen_ray.train.config import ParallelConfig, TrainConfig
from vidgen_ray.train.ema import EMA
from vidgen_ray.train.optim import build_optimizer, lr_lambda
from vidgen_ray.train.strategies.base import Part, Strategy, clean_state_dict, format_mismatch, rank, set_part, world_size

EMA_FILE = "ema.pt"


def init_deepspeed_env() -> None:
    """DeepSpeed on CPU picks its CPU accelerator; its op builds go to the cached extensions dir."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def deepspeed_config(train: TrainConfig, par: ParallelConfig) -> dict:
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
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedStrategy(Strategy):
    name = "deepspeed"
    resumes_at_any_world_size = False
    checkpoint_format = "deepspeed"

    def __init__(self, par: ParallelConfig, device: torch.device) -> None:
        init_deepspeed_env()
        super().__init__(par, device)
        self.engines: dict[str, Any] = {}
        self.owners: dict[str, tuple[nn.Module, str]] = {}  # part -> (model, attribute holding it)

    def wrap(self, model: VideoModel, name: str, raw: nn.Module, train: TrainConfig, lr: float, total_steps: int) -> Part:
        import deepspeed

        optimizer = build_optimizer(raw.parameters(), train.optim, lr)
        schedule = lr_lambda(train.schedule, total_steps)
        engine, ds_opt, _, ds_sched = deepspeed.initialize(
            model=raw,
            optimizer=optimizer,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
            config=deepspeed_config(train, self.par),
            dist_init_required=False,
        )
        self.engines[name] = engine
        self.owners[name] = (model, set_part(model, name, engine))
        return Part(name, engine, engine.module, ds_opt, ds_sched, self, train.grad_clip)

    def move_rest(self, model: VideoModel) -> None:
        pass  # the engines placed their parameters; moving the model would undo ZeRO-3's partitions

    def backward(self, part: Part, loss: torch.Tensor, grad_accum: float, last: bool) -> None:
        engine = self.engines[part.name]
        engine.backward(loss)  # DeepSpeed scales by its own gradient_accumulation_steps
        if not last:
            engine.step()  # DeepSpeed counts micro-steps in step(); it updates only at the boundary

    def step(self, part: Part) -> float:
        engine = self.engines[part.name]
        engine.step()
        norm = engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def zero_grad(self, part: Part) -> None:
        self.engines[part.name].zero_grad()

    @contextlib.contextmanager
    def no_sync(self, part: Part) -> Iterator[None]:
        yield  # the engine counts micro-steps itself and reduces at the accumulation boundary

    @contextlib.contextmanager
    def inactive(self, part: Part) -> Iterator[None]:
        # engine.forward arms backward hooks for *its* optimizer; a part that is only passed through
        # (the discriminator during the generator step) is called unwrapped.
        owner, attr = self.owners[part.name]
        setattr(owner, attr, part.raw)
        try:
            yield
        finally:
            setattr(owner, attr, self.engines[part.name])

    def full_state_dict(self, part: Part) -> dict:
        engine = self.engines[part.name]
        if engine.zero_optimization_stage() == 3:
            return clean_state_dict(engine._zero3_consolidated_16bit_state_dict() or {})
        return super().full_state_dict(part)

    def save(self, directory: Path, parts: dict[str, Part], ema: EMA | None) -> None:
        for name in parts:
            self.engines[name].save_checkpoint(str(directory / f"ds_{name}"), tag="state")
        if rank() == 0 and ema is not None:
            torch.save(ema.state_dict(), directory / EMA_FILE)

    def load(self, directory: Path, parts: dict[str, Part], ema: EMA | None, meta: dict) -> None:
        if meta.get("format") != self.checkpoint_format:
            raise ConfigError(format_mismatch(meta, self))
        check_world_size(meta, world_size())
        for name in parts:
            self.engines[name].load_checkpoint(str(directory / f"ds_{name}"), tag="state")
        if ema is not None and (directory / EMA_FILE).exists():
            ema.load_state_dict(torch.load(directory / EMA_FILE, map_location="cpu", weights_only=False))


def check_world_size(meta: dict, workers: int) -> None:
    """A DeepSpeed checkpoint resumes only at the world size that wrote it."""
    written = int(meta.get("world_size", workers))
    if written != workers:
        raise ConfigError(
            f"this DeepSpeed checkpoint was written by {written} workers and the run now has {workers}: ZeRO "
            f"partitions the optimizer state by world size. Resume with parallel.num_workers={written}, or "
            f"train with parallel.strategy=fsdp2 (or ddp), whose checkpoints resume at any world size"
        )
