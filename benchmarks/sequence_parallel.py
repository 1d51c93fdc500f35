"""Sequence parallelism: activation memory per rank and step time of one long clip, SP = 1 against SP = N,
measured side by side in one run (gloo processes on CPU; with --gpu, one process per GPU and NCCL).

    python benchmarks/sequence_parallel.py                                     # CPU: 16 x 128 x 128, SP 1,2,4
    python benchmarks/sequence_parallel.py --frames 32 --size 256 --hidden 384 --heads 6 --depth 4 \
        --sp 1,2,3,6 --budget-gib 2 --json out.json

Each SP size runs a group of that many processes on one micro-batch of ``--batch`` clips (what one SP group
trains on together), forward and backward of a ``dit`` network of the given width. Activation memory is
what autograd keeps for backward on a rank (every tensor saved by a ``saved_tensors_hooks`` pack, counted
once per storage): that is what grows with the clip and what SP divides. On a GPU the peak allocated memory
is reported as well. ``--budget-gib`` marks which sizes fit a rank's activation budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, results) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS=str(args.threads))
    torch.set_num_threads(args.threads)
    device = torch.device("cuda", rank) if args.gpu else torch.device("cpu")
    if args.gpu:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if args.gpu else "gloo", rank=rank, world_size=world)
    from vidgen_ray.models.base import Batch
    from vidgen_ray.models.dit import DiTConfig, VideoDiT
    from vidgen_ray.train.sequence_parallel import Mesh, sum_gradients

    torch.manual_seed(0)
    cfg = DiTConfig(frames=args.frames, height=args.size, width=args.size, hidden=args.hidden, depth=args.depth,
                    heads=args.heads, num_classes=4, caption=False, prediction="data")
    cfg.validate()
    model = VideoDiT(cfg).to(device)
    mesh = Mesh.build(world, device.type)
    mesh.apply(model)
    g = torch.Generator().manual_seed(1)
    batch = Batch(video=(torch.rand(args.batch, 3, args.frames, args.size, args.size, generator=g) * 2 - 1).to(device),
                  label=torch.zeros(args.batch, dtype=torch.long, device=device))
    times, saved = [], 0
    for i in range(args.repeats + 1):  # the first is a warm-up
        if args.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        nbytes, out = _saved_bytes(lambda: model.losses("model", batch, 0))
        out.loss.backward()
        if mesh.sp_group is not None:
            sum_gradients(model.parameters(), mesh.sp_group)
        if args.gpu:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
        saved = nbytes
        model.zero_grad(set_to_none=True)
    row = {"rank": rank, "sp": world, "activation_gib": saved / 2**30, "step_s": min(times)}
    if args.gpu:
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    results.put(row)
    if world > 1:
        dist.destroy_process_group()


def _run_group(world: int, args: argparse.Namespace) -> list[dict]:
    import queue
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world, port, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    rows: list[dict] = []
    while len(rows) < world:
        try:
            rows.append(results.get(timeout=5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit(f"an SP={world} worker failed; see its traceback above")
    for p in procs:
        p.join()
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="height = width, pixels (4x4 patches)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--depth", type=int, default=2, help="blocks: spatial and temporal alternate")
    ap.add_argument("--batch", type=int, default=1, help="clips in the micro-batch an SP group trains on")
    ap.add_argument("--sp", default="1,2,4", help="SP sizes, each a group of that many processes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    ap.add_argument("--budget-gib", type=float, default=0.0, help="a rank's activation budget (0: none)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sp.split(",")]
    tokens = args.frames * (args.size // 4) ** 2
    print(f"dit hidden {args.hidden} x depth {args.depth}, {args.heads} heads; clip {args.frames}x{args.size}x"
          f"{args.size} = {tokens} tokens; micro-batch {args.batch}", flush=True)
    rows = []
    for sp in sizes:
        ranks = _run_group(sp, args)
        worst = max(ranks, key=lambda r: r["activation_gib"])
        rows.append({"sp": sp, "activation_gib_per_rank": round(worst["activation_gib"], 4),
                     "step_s": round(max(r["step_s"] for r in ranks), 3),
                     **({"peak_allocated_gib": round(max(r["peak_allocated_gib"] for r in ranks), 3)} if args.gpu else {})})
    base = rows[0]
    for row in rows:
        row["memory_vs_first"] = round(row["activation_gib_per_rank"] / base["activation_gib_per_rank"], 3)
        row["time_vs_first"] = round(row["step_s"] / base["step_s"], 3)
        if args.budget_gib:
            row["fits_budget"] = row["activation_gib_per_rank"] <= args.budget_gib
        print(json.dumps(row), flush=True)
    result = {"tokens": tokens, "args": vars(args), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
