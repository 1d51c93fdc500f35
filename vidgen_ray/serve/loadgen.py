"""A bounded closed-loop HTTP load generator (asyncio + aiohttp), run outside Ray.

    python -c "from vidgen_ray.serve.loadgen import run_load; \
print(run_load('http://127.0.0.1:8000/generate', {'seed': 0}, concurrency=2, max_requests=8).summary())"

``concurrency`` clients each send one request, wait for the whole answer, send the next, until
``max_requests`` have been sent or ``time_limit_s`` has passed (requests in flight then finish):
the load can never run away, whatever the server does. Seeds go up by one per request so no two
requests are the same. Latency is client-side: connect, send, whole body received.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np


@dataclass
class Sample:
    status: int  # HTTP status, or 0 when no answer came (connection error, client timeout)
    latency_ms: float
    nbytes: int
    batch_size: int = 0  # requests in the replica's batch (x-vidgen-batch-size), 0 if not reported
    replica_ms: float = float("nan")  # time inside the replica (x-vidgen-replica-ms): the rest is proxy + HTTP


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict:
        ok = [s for s in self.samples if 200 <= s.status < 300]
        lat = np.array([s.latency_ms for s in ok]) if ok else np.array([np.nan])
        n = len(self.samples)
        statuses: dict[str, int] = {}
        for s in self.samples:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        return {
            "concurrency": self.concurrency,
            "requests": n,
            "ok": len(ok),
            "error_rate": (n - len(ok)) / n if n else 0.0,
            "statuses": statuses,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()),
            "throughput_rps": len(ok) / self.wall_s if self.wall_s > 0 else 0.0,
            "replica_p50_ms": float(np.percentile([s.replica_ms for s in ok], 50)) if ok else float("nan"),
            "mean_batch_size": float(np.mean([s.batch_size for s in ok])) if ok else 0.0,
            "wall_s": self.wall_s,
        }


async def _one(session: aiohttp.ClientSession, url: str, payload: dict) -> Sample:
    start = time.perf_counter()
    try:
        async with session.post(url, json=payload) as response:
            body = await response.read()
            status = response.status
            if status == 200 and response.content_length is not None and len(body) != response.content_length:
                status = 0  # a truncated answer counts as a failure, never as a success
            batch = int(response.headers.get("x-vidgen-batch-size", 0))
            replica_ms = float(response.headers.get("x-vidgen-replica-ms", "nan"))
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return Sample(0, (time.perf_counter() - start) * 1e3, 0)
    return Sample(status, (time.perf_counter() - start) * 1e3, len(body), batch, replica_ms)


async def _load(url: str, payload: dict, concurrency: int, max_requests: int, time_limit_s: float,
                request_timeout_s: float, first_seed: int) -> LoadResult:
    counter = iter(range(max_requests))
    samples: list[Sample] = []
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        deadline = start + time_limit_s

        async def client() -> None:
            for i in counter:  # shared iterator: the request budget is global, not per client
                if time.perf_counter() >= deadline:
                    return
                samples.append(await _one(session, url, payload | {"seed": first_seed + i}))

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return LoadResult(concurrency, wall, samples)


def run_load(url: str, payload: dict, concurrency: int, max_requests: int, time_limit_s: float = 60.0,
             request_timeout_s: float = 120.0, first_seed: int = 0) -> LoadResult:
    """Closed-loop load at ``concurrency`` (see the module docstring); blocks until done."""
    if concurrency < 1 or max_requests < 1:
        raise ValueError(f"concurrency ({concurrency}) and max_requests ({max_requests}) must be >= 1")
    return asyncio.run(_load(url, payload, concurrency, max_requests, time_limit_s, request_timeout_s, first_seed))
