"""Serve latency benchmark: the HTTP service under a grid of (max batch size x concurrent clients)
against the bare model timed in-process in the same run, on the same code path (Engine.run).

    python jobs/serve_bench.py --checkpoint outputs/runs/demo/checkpoint_000004 --json out.json --png out.png
    python -c "from vidgen_ray.serve.bench import serve_and_benchmark; serve_and_benchmark('CKPT', 'outputs/serve')"

Per grid point: a bounded closed-loop load on 127.0.0.1 (``requests_per_point`` requests or
``time_limit_s``, whichever comes first, after ``warmup_requests`` that are not counted), reporting
p50/p95/p99 latency, throughput and error rate. ``replica_p50_ms`` is the time the request spent
inside the replica (batch wait + generation + encoding); the client's latency minus it is the
proxy and HTTP. ``bare_p50_ms`` is the in-process latency of one ``Engine.run`` over
min(concurrency, max batch size) requests (what one replica batch costs without Serve, HTTP or
queueing); ``overhead_ratio`` = serve p50 / bare p50. At concurrency 1 that ratio is Serve's
overhead; above it, it also counts time queued behind other clients' requests.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vidgen_ray.configs import ConfigError, to_dict
from vidgen_ray.runtime import get_logger
from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.engine import Engine, cpu_threads
from vidgen_ray.serve.loadgen import run_load
from vidgen_ray.serve.report import plot_png, table
from vidgen_ray.serve.schema import GenerateRequest

log = get_logger("serve.bench")


@dataclass
class BenchConfig:
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    batch_sizes: tuple[int, ...] = (1, 4, 8)  # max_batch_size of the deployment, one redeploy each
    # ServeConfig.batch_wait of the deployment, one redeploy each: side by side in one run.
    batch_waits: tuple[str, ...] = ("adaptive", "fixed")
    requests_per_point: int = 48
    time_limit_s: float = 60.0  # per grid point: the load stops sending after this
    warmup_requests: int = 4  # per grid point, not counted
    bare_repeats: int = 10  # timed in-process runs per batch size (after one warm-up run)
    steps: int | None = 8  # sampling steps per request for families that have them; None = model default
    format: str = "mp4"

    def validate(self) -> BenchConfig:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError(f"concurrency {self.concurrency} needs positive levels, e.g. 1,2,4")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes {self.batch_sizes} needs positive sizes, e.g. 1,4")
        if self.requests_per_point < 1 or self.bare_repeats < 1 or self.warmup_requests < 0:
            raise ConfigError("requests_per_point and bare_repeats must be >= 1, warmup_requests >= 0")
        if self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s must be > 0, got {self.time_limit_s}")
        if not self.batch_waits or set(self.batch_waits) - {"adaptive", "fixed"}:
            raise ConfigError(f"batch_waits {self.batch_waits} must list 'adaptive' and/or 'fixed'")
        if self.format not in ("mp4", "npy"):
            raise ConfigError(f"format {self.format!r} must be 'mp4' or 'npy'")
        return self


# A small grid for `make demo` and tests: one deployment, three load levels, a few seconds each.
QUICK = BenchConfig(concurrency=(1, 2, 4), batch_sizes=(4,), requests_per_point=12, time_limit_s=15.0,
                    warmup_requests=2, bare_repeats=5, steps=4)


def _percentiles(times_ms: list[float]) -> dict:
    a = np.asarray(times_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean())}


def bare_latency(engine: Engine, payload: dict, batch_size: int, repeats: int) -> dict:
    """In-process latency of ``Engine.run`` over ``batch_size`` requests (validate, sample, encode)."""
    def jobs(first_seed: int):
        return [engine.validate(GenerateRequest(**payload, seed=first_seed + i)) for i in range(batch_size)]

    engine.run(jobs(0))  # warm-up, not timed
    times = []
    for r in range(repeats):
        batch = jobs((r + 1) * batch_size)
        start = time.perf_counter()
        outputs = engine.run(batch)
        times.append((time.perf_counter() - start) * 1e3)
        failed = [o.error for o in outputs if o.error]
        if failed:
            raise RuntimeError(f"the bare model failed on the benchmark request: {failed[0]}")
    out = {"batch_size": batch_size, "repeats": repeats} | _percentiles(times)
    out["per_video_ms"] = out["p50_ms"] / batch_size
    return out


def describe_device(config: ServeConfig) -> str:
    if config.num_gpus > 0 and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, {cpu_threads(config)} torch thread(s) per replica"


def run_benchmark(serve_config: ServeConfig, bench: BenchConfig, base_url: str) -> dict:
    """The grid against a Serve HTTP proxy at ``base_url`` (Serve started); the app is (re)deployed
    once per batch size and left running (the caller deletes it). The bare model is timed right
    before each deployment's load, while its replica idles, so both see the machine in the same state."""
    from vidgen_ray.serve.app import check_checkpoint, run as deploy

    bench.validate()
    check_checkpoint(serve_config.validate())
    # The bare model runs in this process with the replica's thread count, so the ratio compares like with like.
    threads_before = torch.get_num_threads()
    engine = Engine(serve_config)
    card = engine.card.as_dict()
    payload: dict = {"format": bench.format}
    if bench.steps is not None and engine.card.default_steps is not None:
        payload["steps"] = bench.steps
    url = base_url.rstrip("/") + serve_config.route_prefix.rstrip("/") + "/generate"
    load_before = os.getloadavg()[0]  # other work on the host skews both sides; the report says how much
    bare_runs, grid = [], []
    seed = 10_000  # distinct from the bare runs' seeds; every request gets its own
    for b in bench.batch_sizes:
        bare = None  # timed once per batch size, before its first deployment's load
        for wait in bench.batch_waits:
            config = replace(serve_config, max_batch_size=b, max_ongoing_requests=max(serve_config.max_ongoing_requests, b),
                             batch_wait=wait)
            deploy(config)
            if bare is None:
                torch.set_num_threads(cpu_threads(serve_config))
                try:
                    bare = {n: bare_latency(engine, payload, n, bench.bare_repeats)
                            for n in sorted({min(c, b) for c in bench.concurrency})}
                finally:
                    torch.set_num_threads(threads_before)
                bare_runs += [{"max_batch_size": b} | stats for stats in bare.values()]
            for c in bench.concurrency:
                if bench.warmup_requests:
                    run_load(url, payload, c, bench.warmup_requests, bench.time_limit_s, first_seed=seed)
                    seed += bench.warmup_requests
                row = run_load(url, payload, c, bench.requests_per_point, bench.time_limit_s, first_seed=seed).summary()
                seed += bench.requests_per_point
                ref = bare[min(c, b)]
                row |= {"max_batch_size": b, "batch_wait": wait, "bare_batch_size": ref["batch_size"],
                        "bare_p50_ms": ref["p50_ms"], "overhead_ratio": row["p50_ms"] / ref["p50_ms"]}
                log.info("batch %d (%s wait), concurrency %d: p50 %.1f ms (bare %.1f ms), %.2f req/s, errors %.1f%%", b,
                         wait, c, row["p50_ms"], ref["p50_ms"], row["throughput_rps"], 100 * row["error_rate"])
                grid.append(row)
    c1 = [r for r in grid if r["concurrency"] == 1]
    return {
        "device": describe_device(serve_config),
        "host_load_1m": [load_before, os.getloadavg()[0]],  # before and after the grid
        "checkpoint": serve_config.checkpoint,
        "model": card,
        "sampling": serve_config.sampling,
        "request": payload,
        "serve": {k: v for k, v in to_dict(serve_config).items() if k != "loader"},
        "bench": to_dict(bench),
        "bare": bare_runs,
        "grid": grid,
        # The smallest Serve-over-bare ratio at one client: the batch size that adds the least waiting.
        "overhead_ratio_c1": min(r["overhead_ratio"] for r in c1) if c1 else None,
        "overhead_ratio_c1_by_wait": {w: min(r["overhead_ratio"] for r in c1 if r["batch_wait"] == w)
                                      for w in bench.batch_waits if any(r["batch_wait"] == w for r in c1)},
    }


def write_report(result: dict, json_path: str | Path | None, png_path: str | Path | None) -> None:
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    if png_path:
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        Path(png_path).write_bytes(plot_png(result))


# --- Serve lifecycle --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_serve(port: int | None = None) -> tuple[int, bool]:
    """(HTTP port, whether we started Serve): reuse a running Serve instance, else start one on
    127.0.0.1 (``port`` or a free one)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is not None:
        return client.http_config.port, False
    port = port or free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port, True


def benchmark_app(config: ServeConfig, bench: BenchConfig, port: int | None = None) -> dict:
    """Run the grid on the connected Ray cluster: Serve started if needed, the app deleted after
    (and Serve shut down again if this call started it)."""
    from ray import serve

    port, started = ensure_serve(port)
    try:
        return run_benchmark(config, bench, f"http://127.0.0.1:{port}")
    finally:
        serve.delete(config.app_name)
        if started:
            serve.shutdown()


def print_report(result: dict) -> None:
    print(f"\nServe latency: {result['model']['name']} ({result['device']}), sampling={result['sampling']}, "
          f"request {result['request']}")
    print(table(result))


def serve_and_benchmark(checkpoint: str, out_dir: str | Path, quick: bool = True,
                        serve_config: ServeConfig | None = None, bench: BenchConfig | None = None,
                        port: int | None = None) -> dict:
    """Start the app from ``checkpoint``, run the grid (``QUICK`` or the full ``BenchConfig()``),
    write ``serve_latency.json`` and ``serve_latency.png`` into ``out_dir``, print the table, remove
    the app (and Serve, if this call started it). Returns the result dict (plus ``json``/``png`` paths)."""
    from vidgen_ray.runtime import init_ray

    init_ray()
    config = replace(serve_config or ServeConfig(), checkpoint=checkpoint)
    result = benchmark_app(config, bench or (replace(QUICK) if quick else BenchConfig()), port)
    out = Path(out_dir)
    result["json"], result["png"] = str(out / "serve_latency.json"), str(out / "serve_latency.png")
    write_report(result, result["json"], result["png"])
    print_report(result)
    return result
