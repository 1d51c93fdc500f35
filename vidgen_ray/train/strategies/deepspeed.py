"""DeepSpeed ZeRO-1/2/3: one engine per part over a client AdamW/Adam/SGD optimizer.

Mixed precision comes from the loop's ``torch.autocast`` (fp32 master weights), the same numerics
as DDP and FSDP2; DeepSpeed's own bf16/fp16 modes stay off. Checkpoints are the engines' own
(``save_checkpoint``), partitioned by world size. Resuming at another world size goes through
DeepSpeed's universal checkpoint: every rank converts the engine checkpoint (``ds_to_universal``) into
a folder of its own and loads it with ``load_universal``. That conversion handles ZeRO-1/2 with the
Adam family (it reads ``exp_avg`` / ``exp_avg_sq``); ZeRO-3 (whose universal load gives every
parameter group the first group's hyperparameters) and SGD / RMSprop are refused before a step runs,
with the way out in the message.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
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
    checkpoint_format = "deepspeed"

    def __init__(self, par: ParallelConfig, device: torch.device, mesh=None) -> None:
        init_deepspeed_env()
        super().__init__(par, device, mesh)
        self.engines: dict[str, Any] = {}
        self.owners: dict[str, tuple[nn.Module, str]] = {}  # part -> (model, attribute holding it)
        self.optimizer_name = ""

    def wrap(self, model: VideoModel, name: str, raw: nn.Module, train: TrainConfig, lr: float, total_steps: int) -> Part:
        import deepspeed

        optimizer = build_optimizer(raw.parameters(), train.optim, lr)
        self.optimizer_name = train.optim.name
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
        # Written before checkpoints named their format: DeepSpeed's layout was the same.
        written_format = meta.get("format") or ("deepspeed" if meta.get("strategy") == "deepspeed" else None)
        if written_format != self.checkpoint_format:
            raise ConfigError(format_mismatch(meta, self))
        written = int(meta.get("world_size", world_size()))
        if written == world_size():
            for name in parts:
                self.engines[name].load_checkpoint(str(directory / f"ds_{name}"), tag="state")
        else:
            check_reshardable(written, world_size(), self.par.zero_stage, self.optimizer_name)
            for name in parts:
                self._load_universal(directory / f"ds_{name}" / "state", self.engines[name])
        if ema is not None and (directory / EMA_FILE).exists():
            ema.load_state_dict(torch.load(directory / EMA_FILE, map_location="cpu", weights_only=False))


    @staticmethod
    def _load_universal(state_dir: Path, engine) -> None:
        """Convert one engine's checkpoint to DeepSpeed's universal format, in a folder of this rank's own
        (the checkpoint folder may be shared by the ranks of a node), and load it at this world size."""
        from deepspeed.checkpoint import ds_to_universal

        root = Path(tempfile.mkdtemp(prefix="vidgen-ds-universal-"))
        ds_to_universal.main(SimpleNamespace(input_folder=str(state_dir), output_folder=str(root / "state"),
                                             num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                             strict=True, inject_missing_state=True))
        engine._config.load_universal_checkpoint = True  # read when loading only; the engine was built without it
        try:
            engine.load_checkpoint(str(root), tag=None)  # the conversion wrote root/latest_universal
        finally:
            engine._config.load_universal_checkpoint = False


def check_reshardable(written: int, workers: int, zero_stage: int, optimizer: str) -> None:
    """What DeepSpeed's universal checkpoint can carry to another world size: ZeRO-1/2, Adam family."""
    if zero_stage <= 2 and optimizer in ("adam", "adamw"):
        return
    why = (f"ZeRO-{zero_stage}'s universal load gives every parameter group the first group's settings" if zero_stage > 2
           else f"DeepSpeed's universal conversion reads Adam's moments, and this run uses {optimizer}")
    raise ConfigError(
        f"this DeepSpeed checkpoint was written by {written} workers and the run now has {workers}: {why}. Resume "
        f"with parallel.num_workers={written}, or train with parallel.strategy=fsdp2 (or ddp), whose checkpoints "
        f"resume at any world size")
