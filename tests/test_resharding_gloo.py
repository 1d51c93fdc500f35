"""Checkpoints reshard: written by 2 gloo workers, resumed by 1 and by 3 (no Ray), for none / DDP / FSDP2,
including across those strategies. The resumed model, optimizer moments, EMA and LR schedule equal the
writer's, and the next step on the same global batch (its 3 micro-batches shared out over the new world
as an elastic run does: 3 accumulated on 1 worker, 2 + 1 on 2, 1 each on 3) gives the weights and
moments of the run that never stopped. DeepSpeed ZeRO-2 does the same through its universal checkpoint
(one micro-batch a rank: its engine fixes the accumulation); ZeRO-3 refuses before a step runs.

The model is the recurrent predictor with teacher forcing held at 1: its loss draws no random numbers,
so a step is a function of the weights and the global batch alone, whatever the world size.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo_group import run_group

pytestmark = pytest.mark.gloo

GLOBAL_BATCH, MICRO = 6, 2  # 3 micro-batches of 2 clips a step: 3 + 0 on 1 worker, 2 + 1 on 2, 1 each on 3


def _global_batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return torch.rand(GLOBAL_BATCH, 3, 8, 32, 32, generator=g) * 2 - 1


def _my_micro_batches(step: int, rank: int, world: int):
    """This rank's micro-batches of the step's global batch, shared out as the train loop does."""
    from vidgen_ray.models.base import Batch
    from vidgen_ray.train.batches import micro_batches

    total = GLOBAL_BATCH // MICRO
    first = sum(micro_batches(total, world, r, step) for r in range(rank))
    video = _global_batch(step)
    return [Batch(video=video[(first + i) * MICRO:(first + i + 1) * MICRO]) for i in range(micro_batches(total, world, rank, step))]


def _step(model, parts, step: int, rank: int, world: int) -> None:
    from vidgen_ray.models.base import Batch
    from vidgen_ray.train.loop import train_step

    if parts["model"].strategy.name == "deepspeed":  # its engine fixes the accumulation: one micro-batch a rank
        per = GLOBAL_BATCH // world
        train_step(model, parts, [Batch(video=_global_batch(step)[rank * per:(rank + 1) * per])], step, 1)
        return
    total = GLOBAL_BATCH // MICRO
    train_step(model, parts, _my_micro_batches(step, rank, world), step, total / world, passes=-(-total // world))


def _setup(strategy: str, seed: int):
    from dataclasses import replace

    from vidgen_ray.models.registry import build_model, get_preset
    from vidgen_ray.train.config import OptimConfig, ParallelConfig, ScheduleConfig, TrainConfig
    from vidgen_ray.train.ema import EMA
    from vidgen_ray.train.parallelize import parallelize

    torch.manual_seed(seed)
    model = build_model(replace(get_preset("rnn-debug"), teacher_forcing_floor=1.0))
    train = TrainConfig(batch_size=MICRO, grad_clip=1.0, optim=OptimConfig(lr=1e-2),
                        schedule=ScheduleConfig(kind="cosine", warmup_steps=2))
    zero_stage = 3 if strategy == "zero3" else 2
    strategy = "deepspeed" if strategy.startswith("zero") else strategy
    par = ParallelConfig(strategy=strategy, num_workers=dist.get_world_size(), zero_stage=zero_stage)
    parts = parallelize(model, par, train, torch.device("cpu"), total_steps=10)
    return model, parts, None if zero_stage == 3 else EMA(parts["model"].raw, 0.5)  # ZeRO-3 refuses an EMA


def _full_state(parts, ema) -> dict:
    """Whole weights, Adam moments, EMA and LR, gathered to rank 0 (a collective for FSDP2). DeepSpeed's
    ZeRO-2 keeps whole weights on every rank and flat partitions of the moments: weights, EMA and LR
    (the step after a load tests the moments)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    part = parts["model"]
    if part.strategy.name == "deepspeed":
        weights = {k: v.detach().clone() for k, v in part.raw.state_dict().items()}
        with ema.applied():
            averaged = {k: v.detach().clone() for k, v in part.raw.state_dict().items()}
        return {"model": weights, "optim": {}, "ema": averaged, "lr": part.lr}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # Copied at once: on one device the state dicts hold the live tensors, which ema.applied() overwrites.
    copy = lambda tree: torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.detach().clone(), tree)  # noqa: E731
    model_sd, optim_sd = copy(get_state_dict(part.raw, part.optimizer, options=options))
    with ema.applied():
        ema_sd = copy(get_state_dict(part.raw, [], options=options)[0])
    return {"model": model_sd, "optim": optim_sd.get("state", {}), "ema": ema_sd, "lr": part.lr}


def _worker(rank: int, world: int, port: int, role: str, strategy: str, directory: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from vidgen_ray.configs import ConfigError
    from vidgen_ray.train import checkpoint as ckpt
    out: dict = {"rank": rank}
    d = Path(directory)
    if role == "write":  # 2 steps, checkpoint, then the step the resumed runs must reproduce
        model, parts, ema = _setup(strategy, seed=0)
        for step in range(2):
            _step(model, parts, step, rank, world)
            if ema is not None:
                ema.update()
        ckpt.save(d / "ckpt", parts, ema, "model", ckpt.TrainState(step=2, samples_seen=12), {"note": "test"})
        if ema is None:  # ZeRO-3: only its refusal is tested
            results.put(out)
            dist.barrier()
            dist.destroy_process_group()
            return
        at_save = _full_state(parts, ema)
        _step(model, parts, 2, rank, world)
        ema.update()
        after = _full_state(parts, ema)
        if rank == 0:
            torch.save({"at_save": at_save, "after": after}, d / "reference.pt")
    else:
        model, parts, ema = _setup(strategy, seed=12345)  # other initial weights: everything must come from the checkpoint
        try:
            state = ckpt.load(d / "ckpt", parts, ema)
        except ConfigError as e:
            out["refused"] = str(e)
        else:
            out["step"] = state.step
            loaded = _full_state(parts, ema)
            _step(model, parts, 2, rank, world)
            ema.update()
            after = _full_state(parts, ema)
            if rank == 0:  # through a file: tensors in a queue die with the process that sent them
                torch.save({"loaded": loaded, "after": after}, d / f"resumed_{world}.pt")
    results.put(out)
    dist.barrier()
    dist.destroy_process_group()


def _run(world: int, role: str, strategy: str, directory: Path) -> list[dict]:
    return sorted(run_group(_worker, world, role, strategy, str(directory)), key=lambda o: o["rank"])


def _assert_same(got: dict, want: dict, what: str, atol: float) -> None:
    assert set(got["model"]) == set(want["model"]), what
    for k, v in want["model"].items():
        torch.testing.assert_close(got["model"][k], v, rtol=0, atol=atol, msg=f"{what}: weight {k}")
        torch.testing.assert_close(got["ema"][k], want["ema"][k], rtol=0, atol=atol, msg=f"{what}: EMA {k}")
    assert set(got["optim"]) == set(want["optim"]), what
    for k, moments in want["optim"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(got["optim"][k][name], moments[name], rtol=0, atol=atol, msg=f"{what}: {name} of {k}")
    assert got["lr"] == pytest.approx(want["lr"], rel=1e-12), what


# (writer strategy on 2 workers, reader strategy, reader world sizes)
CASES = {
    "ddp": ("ddp", "ddp", (1, 3)),
    "fsdp2": ("fsdp2", "fsdp2", (1, 3)),
    "ddp-to-fsdp2": ("ddp", "fsdp2", (3,)),
    "zero2": ("zero2", "zero2", (1, 3)),  # through DeepSpeed's universal checkpoint
}
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))
# The writer runs on 2 workers, which share the 3 micro-batches of a step unevenly (2 + 1, rotating):
# the readers at 1 (3 accumulated) and 3 (1 each) match it, so uneven sharing is the same global step.


@pytest.mark.parametrize("name", list(CASES))
def test_a_checkpoint_from_2_workers_resumes_on_1_and_on_3(name: str, tmp_path: Path):
    writer, reader, worlds = CASES[name]
    _run(2, "write", writer, tmp_path)
    reference = torch.load(tmp_path / "reference.pt", weights_only=False)
    # The writer really trained: the step after the checkpoint moved the weights.
    at_save = reference["at_save"]
    moved = max(float((reference["after"]["model"][k] - v).abs().max()) for k, v in at_save["model"].items())
    averaged = max(float((at_save["ema"][k] - v).abs().max()) for k, v in at_save["model"].items())
    assert moved > 1e-4 and averaged > 1e-4  # ... and the EMA is not a copy of the weights
    for world in worlds:
        out = _run(world, "resume", reader, tmp_path)
        assert all(o.get("step") == 2 for o in out), out
        resumed = torch.load(tmp_path / f"resumed_{world}.pt", weights_only=False)
        _assert_same(resumed["loaded"], reference["at_save"], f"{name} loaded on {world}", atol=0)
        # Same global batch, split over another world size: only the reduction order differs.
        _assert_same(resumed["after"], reference["after"], f"{name} stepped on {world}", atol=2e-6)


def test_zero3_refuses_another_world_size_before_a_step(tmp_path: Path):
    _run(2, "write", "zero3", tmp_path)
    message = _run(1, "resume", "zero3", tmp_path)[0].get("refused", "")
    assert "written by 2 workers" in message and "parallel.num_workers=2" in message and "ZeRO-3" in message, message
    # ... and a DCP-format run refuses the DeepSpeed checkpoint with the strategies that can read it.
    assert "deepspeed only its own" in _run(1, "resume", "ddp", tmp_path)[0].get("refused", "")
