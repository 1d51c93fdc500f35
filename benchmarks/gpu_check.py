"""The one-shot GPU check: what only a GPU shows, in one command of at most ~8 minutes, one JSON, one table.

    python benchmarks/gpu_check.py --json outputs/bench/gpu_check.json     # a machine with 1+ NVIDIA GPUs
    python benchmarks/gpu_check.py --dry --json /tmp/gpu_check.json        # no GPU: every path, CPU-sized (CI)

1. Training step throughput and MFU, bf16, for dit-b and dit-l: DDP and FSDP2, torch.compile off and on,
   activation checkpointing off and on (one process per GPU, NCCL; synthetic clips on the device, so
   this is the model and the strategy alone); where 2+ GPUs exist, dit-l with FSDP2 and sequence
   parallelism 2 (``parallel.sequence_parallel``: the GPUs in pairs, each pair splitting its clips' tokens). The latent presets' VAE encoder is a stand-in of the same
   geometry with 8 channels a level (``--codec vae-b`` for the real one): the figure is the transformer's.
2. DeepSpeed ZeRO-2 on NCCL, the same harness.
3. Data wait: the real pipeline (prepare -> Ray Data -> Ray Train, one worker per GPU) feeding the GPU
   trainer, with asynchronous checkpoint upload every few steps: the share of step time waiting for
   data, and how long each checkpoint stalled the loop.
4. Serve p50 / p95 of the checkpoint that run wrote (a dit preset), on the GPU.

Every row names the device. A row that would start past ``--budget-s`` is skipped and says so; one that
fails (out of memory, a missing kernel) records its error and the check goes on. ``--dry`` runs the same
code on the CPU with dit-debug, gloo and a few steps, so CI keeps every path working.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# (preset, strategy, compile, activation checkpointing[, sequence parallel]): dit-b gets the whole grid, dit-l
# without compile (its compile alone would take a minute of the budget), DeepSpeed ZeRO-2 once, and dit-l with
# FSDP2 at SP 2 (a row that needs more GPUs than there are says so).
GPU_GRID = (
    [("dit-b", s, c, a) for s in ("ddp", "fsdp2") for c in (False, True) for a in (False, True)]
    + [("dit-l", s, False, a) for s in ("ddp", "fsdp2") for a in (False, True)]
    + [("dit-b", "deepspeed", False, False), ("dit-l", "fsdp2", False, False, 2)]
)
DRY_GRID = [("dit-debug", s, c, a) for s in ("ddp", "fsdp2") for c, a in ((False, False), (True, False), (False, True))] + [
    ("dit-debug", "deepspeed", False, False)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_in_codec(cfg, real: bool):
    """A VAE with the latent preset's geometry: vae-b itself (``real``), or 8 channels a level."""
    from dataclasses import replace

    from vidgen_ray.models.registry import build_model, get_preset

    vae = get_preset("vae-b")
    vae = replace(vae, frames=cfg.frames, height=cfg.height, width=cfg.width, z_channels=cfg.latent_channels,
                  spatial_compression=cfg.latent_spatial_compression, temporal_compression=cfg.latent_temporal_compression)
    if not real:
        vae = replace(vae, name="vae-stand-in", hidden=(8,) * len(vae.hidden), blocks_per_level=1)
    return build_model(vae)


def _measure(row: tuple, device, world: int, opts: dict) -> dict:
    import torch

    from vidgen_ray.models.base import Batch
    from vidgen_ray.models.registry import build_model, get_preset
    from vidgen_ray.train.config import ParallelConfig, TrainConfig
    from vidgen_ray.train.loop import train_step
    from vidgen_ray.train.strategies import strategy_class
    from vidgen_ray.train.telemetry import peak_flops

    from vidgen_ray.train.sequence_parallel import Mesh

    preset, strategy, compiled, checkpointed, sp = (*row, 1)[:5]
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = build_model(cfg, load_autoencoder=False)
    if getattr(cfg, "latent", False):
        model.attach_autoencoder(_stand_in_codec(cfg, opts["codec"] == "vae-b"))
    precision = "bf16" if cuda else "fp32"
    par = ParallelConfig(strategy=strategy, num_workers=world, use_gpu=cuda, precision=precision, compile=compiled,
                         activation_checkpointing=checkpointed, zero_stage=2, sequence_parallel=sp)
    # The strategy class itself, also on one GPU (build_strategy would run ddp/fsdp2 as `none` there). With SP
    # every rank of a pair gets the same clips (seeded alike below), as the train loop's gathered micro-batch.
    mesh = Mesh.build(sp, device.type) if sp > 1 else None
    parts = strategy_class(strategy)(par, device, mesh).parallelize(model, TrainConfig(batch_size=opts["batch"][preset]), 1000)
    batch_size = opts["batch"][preset]
    video = torch.rand(batch_size, cfg.channels, cfg.frames, cfg.height, cfg.width, device=device) * 2 - 1
    labels = torch.zeros(batch_size, dtype=torch.long, device=device) if cfg.num_classes else None
    captions = [""] * batch_size if getattr(cfg, "caption", False) else None
    batch = Batch(video=video, label=labels, caption=captions)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for i in range(opts["warmup"]):
        train_step(model, parts, [batch], i, 1)
    sync()
    first = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(opts["steps"]):
        train_step(model, parts, [batch], opts["warmup"] + i, 1)
    sync()
    seconds = time.perf_counter() - started
    samples_per_s = world // sp * batch_size * opts["steps"] / seconds  # an SP group trains on one batch
    peak = peak_flops(device, precision)
    out = {"samples_per_s": round(samples_per_s, 3), "step_s": round(seconds / opts["steps"], 4),
           "warmup_s": round(first, 2), "batch_per_gpu": batch_size, "precision": precision,
           "mfu": round(3 * model.flops_per_sample() * samples_per_s / (peak * world), 4) if peak else None}
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def _grid_worker(rank: int, world: int, port: int, rows: list, opts: dict, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    cuda = torch.cuda.is_available() and not opts["dry"]
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(1)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    # A rank stuck in a collective (another rank failed mid-step) errors after this instead of NCCL's 10 minutes.
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, device_id=device if cuda else None,
                            timeout=timedelta(seconds=180))
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)"
    results, deadline = [], opts["deadline"]

    def everyone(flag: bool) -> bool:  # rank-local decisions would split the ranks between rows
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    failed = False
    for row in rows:
        sp = row[4] if len(row) > 4 else 1
        entry = {"preset": row[0], "strategy": row[1], "compile": row[2], "activation_checkpointing": row[3],
                 "sequence_parallel": sp, "device": name, "gpus": world if cuda else 0}
        if world % sp:
            results.append(entry | {"skipped": f"sequence parallelism {sp} needs a multiple of {sp} GPUs"})
            continue
        if failed:
            results.append(entry | {"skipped": "an earlier row failed on some rank"})
            continue
        if everyone(time.time() > deadline):
            results.append(entry | {"skipped": "past --budget-s"})
            continue
        try:
            entry |= _measure(tuple(row), device, world, opts)
        except Exception as exc:  # noqa: BLE001 - one failed row (out of memory, a kernel) must not end the check
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        # A row that failed on one rank may have left the others mid-collective: stop the grid there.
        try:
            failed = everyone("error" in entry)
        except Exception:  # noqa: BLE001 - the group itself broke (a timed-out collective)
            failed = True
        results.append(entry)
        if rank == 0:
            print(json.dumps(entry), flush=True)
        torch._dynamo.reset()
        gc.collect()  # FSDP and DeepSpeed state holds reference cycles: free them before the next row
        if cuda:
            torch.cuda.empty_cache()
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    if not failed:
        dist.barrier()
        dist.destroy_process_group()


def step_grid(rows: list, world: int, opts: dict) -> list[dict]:
    import torch.multiprocessing as mp

    out = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "grid.json"
    mp.start_processes(_grid_worker, args=(world, _free_port(), rows, opts, str(out)), nprocs=world,
                       start_method="spawn", join=True)
    return json.loads(out.read_text())


def pipeline_run(preset: str, gpus: int, dry: bool, steps: int, root: Path) -> dict:
    """The real pipeline feeding the trainer: data wait and checkpoint stalls from a Ray Train run."""
    from train_throughput import prepared_synthetic

    from vidgen_ray.checkpoints import read_meta
    from vidgen_ray.config import load_experiment
    from vidgen_ray.runtime import init_ray
    from vidgen_ray.train.run import local_cpus_needed, train

    probe = load_experiment(preset, sets=["data.source=/unused"])
    init_ray(num_cpus=None if not dry else local_cpus_needed(probe) + 2)
    data = prepared_synthetic(root, probe.data.clip.frames, probe.data.clip.height)
    sets = [f"data.source={data}", f"storage_path={root / 'runs'}", "name=gpu-check", "data.clip.fps=8",
            "parallel.strategy=ddp", f"parallel.num_workers={max(1, gpus)}", f"parallel.use_gpu={not dry}",
            f"parallel.precision={'fp32' if dry else 'bf16'}", f"train.max_steps={steps}", "train.batch_size=2",
            f"train.log_every={max(1, steps // 2)}", f"train.checkpoint_every={max(1, steps // 3)}",
            "train.async_checkpoint_upload=true", "train.num_samples=0", "train.trackers=[]", "parallel.max_failures=0"]
    if getattr(probe.model, "latent", False):
        sets.append(f"model.autoencoder={_stand_in_checkpoint(probe, root)}")
    cfg = load_experiment(preset, sets=sets)
    started = time.perf_counter()
    result = train(cfg)
    meta = read_meta(result.checkpoint.path)
    stalls = [s for _, s in meta["state"]["checkpoint_stalls"]]
    # Each checkpoint's stall is recorded after it is saved, so the final checkpoint lists all but its own.
    return {"preset": preset, "steps": steps, "wall_s": round(time.perf_counter() - started, 1),
            "samples_per_s": result.metrics.get("samples_per_s"), "data_wait_fraction": result.metrics.get("data_wait_fraction"),
            "checkpoint_stalls_s": stalls, "checkpoint": result.checkpoint.path}


def _stand_in_checkpoint(cfg, root: Path) -> str:
    """A checkpoint of the stand-in VAE (random weights), where a latent preset expects a trained one."""
    from vidgen_ray.config import ExperimentConfig
    from vidgen_ray.configs import to_dict
    from vidgen_ray.train import checkpoint as ckpt
    from vidgen_ray.train.config import ParallelConfig, TrainConfig
    from vidgen_ray.train.strategies import build_strategy

    import torch

    vae = _stand_in_codec(cfg.model, real=False)
    parts = build_strategy(ParallelConfig(strategy="none"), torch.device("cpu")).parallelize(vae, TrainConfig(), 1)
    directory = root / "stand-in-vae"
    experiment = ExperimentConfig(model=vae.config)
    clip = experiment.data.clip
    clip.frames, clip.height, clip.width = vae.config.frames, vae.config.height, vae.config.width
    ckpt.save(directory, parts, None, None, ckpt.TrainState(), to_dict(experiment))
    return str(directory)


def serve_latency(checkpoint: str, dry: bool, root: Path) -> dict:
    from dataclasses import replace

    from vidgen_ray.serve.bench import QUICK, serve_and_benchmark
    from vidgen_ray.serve.config import ServeConfig

    bench = replace(QUICK, concurrency=(1, 4), batch_sizes=(4,), batch_waits=("adaptive",), requests_per_point=8 if dry else 24,
                    steps=2 if dry else 8)
    result = serve_and_benchmark(checkpoint, root / "serve", serve_config=ServeConfig(num_gpus=0 if dry else 1), bench=bench)
    return {"device": result["device"], "model": result["model"]["name"], "steps": bench.steps,
            "points": [{k: r[k] for k in ("concurrency", "p50_ms", "p95_ms", "throughput_rps", "error_rate") if k in r}
                       for r in result["grid"]]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU-sized: dit-debug, gloo, a few steps (no GPU needed)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="rows that would start after this are skipped")
    parser.add_argument("--codec", choices=("stand-in", "vae-b"), default="stand-in")
    parser.add_argument("--pipeline-preset", default=None, help="preset of the Ray pipeline run (default dit-b; dry: dit-debug)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    gpus = 0 if args.dry else torch.cuda.device_count()
    if not gpus and not args.dry:
        raise SystemExit("no CUDA device: run on a GPU machine, or add --dry for the CPU-sized check")
    started = time.time()
    # The step grid gets ~55 % of the budget (the pipeline run and Serve the rest); a dry run skips no row.
    grid_budget_s = float("inf") if args.dry else 0.55 * args.budget_s
    opts = {"dry": args.dry, "codec": args.codec, "deadline": started + grid_budget_s,
            "warmup": 2 if args.dry else 3, "steps": 2 if args.dry else 10,
            "batch": {"dit-debug": 2, "dit-b": 4, "dit-l": 2}}
    figures: dict = {"dry": args.dry, "gpus": gpus, "budget_s": args.budget_s,
                     "note": "dry run: no GPU figure was taken" if args.dry else "measured on the GPUs named per row"}
    try:
        figures["steps"] = step_grid(DRY_GRID if args.dry else GPU_GRID, 1 if args.dry else gpus, opts)
    except Exception as exc:  # noqa: BLE001 - a crashed rank: the pipeline and Serve figures are still taken
        figures["steps"], figures["steps_error"] = [], f"{type(exc).__name__}: {str(exc)[:500]}"
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    preset = args.pipeline_preset or ("dit-debug" if args.dry else "dit-b")
    try:
        figures["pipeline"] = pipeline_run(preset, gpus, args.dry, 6 if args.dry else 60, root)
        figures["serve"] = serve_latency(figures["pipeline"]["checkpoint"], args.dry, root)
    except Exception as exc:  # noqa: BLE001 - the step grid's figures still get written
        figures["pipeline_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    figures["seconds"] = round(time.time() - started, 1)
    print_table(figures)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def print_table(f: dict) -> None:
    where = "dry, CPU-sized" if f["dry"] else f"{f['gpus']} GPU(s)"
    print(f"\nGPU check ({where}), {f['seconds']} s")
    print(f"{'preset':<10}{'strategy':<10}{'compile':>8}{'ckpt':>6}{'SP':>4}{'samples/s':>11}{'s/step':>8}{'MFU':>7}{'GiB':>7}  device")
    for r in f["steps"]:
        head = (f"{r['preset']:<10}{r['strategy']:<10}{str(r['compile']):>8}{str(r['activation_checkpointing']):>6}"
                f"{r.get('sequence_parallel', 1):>4}")
        if "samples_per_s" not in r:
            print(f"{head}  {r.get('skipped') or r.get('error')}")
            continue
        mfu = f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"{head}{r['samples_per_s']:>11.2f}{r['step_s']:>8.3f}{mfu:>7}{r.get('peak_memory_gib', 0):>7.1f}  {r['device']}")
    p = f.get("pipeline")
    if p:
        stalls = ", ".join(f"{s:.2f}" for s in p["checkpoint_stalls_s"]) or "-"
        print(f"pipeline {p['preset']}: {p['samples_per_s']:.2f} samples/s, data wait {100 * p['data_wait_fraction']:.1f} %, "
              f"checkpoint stalls {stalls} s (async upload)")
    s = f.get("serve")
    if s:
        for point in s["points"]:
            print(f"serve {s['model']} on {s['device']}, {s['steps']} steps, concurrency {point['concurrency']}: "
                  f"p50 {point['p50_ms']:.0f} ms, p95 {point.get('p95_ms', float('nan')):.0f} ms")
    if f.get("steps_error"):
        print("step grid failed:", f["steps_error"])
    if f.get("pipeline_error"):
        print("pipeline/serve failed:", f["pipeline_error"])
    if f["dry"]:
        print("DRY RUN: no GPU figure was taken; these CPU numbers only show that every path works.")


if __name__ == "__main__":
    main()
