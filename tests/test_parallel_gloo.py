"""The parallelize seam and checkpoints in plain 2-process gloo groups (no Ray): every strategy
trains the two-model GAN, and a checkpoint restores so exactly that the next step gives the same
loss as the run that never stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo_group import run_group

pytestmark = pytest.mark.gloo

CASES = {
    "ddp": dict(strategy="ddp"),
    "fsdp2": dict(strategy="fsdp2"),
    "fsdp2-checkpointed": dict(strategy="fsdp2", activation_checkpointing=True),
    "zero2": dict(strategy="deepspeed", zero_stage=2),
    "zero3": dict(strategy="deepspeed", zero_stage=3),
}


def _batches(rank: int, n: int):
    from vidgen_ray.models.base import Batch

    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data, as with a sharded dataset
    return [Batch(video=torch.rand(2, 3, 8, 32, 32, generator=g) * 2 - 1) for _ in range(n)]


def _setup(case: dict):
    from vidgen_ray.models.registry import build_model, get_preset
    from vidgen_ray.train.config import ParallelConfig, TrainConfig
    from vidgen_ray.train.ema import EMA
    from vidgen_ray.train.parallelize import parallelize

    torch.manual_seed(0)  # identical initial weights on every rank
    model = build_model(get_preset("gan-debug"))
    train_cfg = TrainConfig(batch_size=2, grad_clip=1.0)
    parts = parallelize(model, ParallelConfig(num_workers=2, **case), train_cfg, torch.device("cpu"), total_steps=10)
    zero3 = case.get("strategy") == "deepspeed" and case.get("zero_stage") == 3
    ema = None if zero3 else EMA(parts["generator"].raw, 0.9)  # EMA is refused with ZeRO-3
    return model, parts, ema, case.get("precision", "fp32")


def _worker(rank: int, world: int, port: int, case: dict, directory: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from vidgen_ray.train import checkpoint as ckpt
    from vidgen_ray.train.loop import train_step

    batches = _batches(rank, 4)
    model, parts, ema, _ = _setup(case)
    losses = []
    for step in range(2):
        losses.append(float(train_step(model, parts, [batches[step]], step, 1)["loss"]))
        if ema is not None:
            ema.update()
    ckpt.save(directory, parts, ema, "generator", ckpt.TrainState(step=2), {"note": "test"})
    dist.barrier()
    uninterrupted = float(train_step(model, parts, [batches[2]], 2, 1)["loss"])

    # A fresh process state: new model and wrappers, everything restored from the checkpoint.
    torch.manual_seed(12345)
    model2, parts2, ema2, _ = _setup(case)
    state = ckpt.load(directory, parts2, ema2)
    resumed = float(train_step(model2, parts2, [batches[2]], 2, 1)["loss"])
    results.put((rank, losses, uninterrupted, resumed, state.step))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("name", list(CASES))
def test_checkpoint_restores_training_exactly(name: str, tmp_path: Path):
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))
    out = run_group(_worker, 2, CASES[name], str(tmp_path))
    out.sort()
    for rank, losses, uninterrupted, resumed, step in out:
        assert step == 2
        assert all(torch.isfinite(torch.tensor(losses)))
        assert resumed == pytest.approx(uninterrupted, rel=1e-5, abs=1e-6), (name, rank, uninterrupted, resumed)
    assert (tmp_path / "meta.json").exists() and (tmp_path / "model.pt").exists()
