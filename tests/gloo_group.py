"""Plain torch.distributed process groups for the gloo tier (no Ray): spawn ``world`` processes on one
free port, collect what each puts on the results queue, and fail on the first one that dies."""

from __future__ import annotations

import queue
import socket
import time

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(target, world: int, *args, timeout: float = 300) -> list:
    """``target(rank, world, port, *args, results)`` in ``world`` spawned processes; returns the items
    they put on ``results`` (one each, in arrival order). Tensors do not survive the queue: pass
    files for those."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, results)) for r in range(world)]
    for p in procs:
        p.start()
    out: list = []
    deadline = time.time() + timeout
    while len(out) < world and time.time() < deadline:
        try:
            out.append(results.get(timeout=2))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a worker failed (exit codes {dead}); see its traceback above"
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return out
