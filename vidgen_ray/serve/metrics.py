"""The serve app's own Ray metrics (Prometheus via Ray's metrics agent; the Grafana dashboard in
``cluster/`` reads these names):

    vidgen_serve_latency_ms     histogram, tag route          time inside the replica per request
    vidgen_serve_requests       counter,   tags route, status  requests answered, by HTTP status
    vidgen_serve_batch_size     gauge,     tag route          size of the last batch run

Created lazily inside the replica process: ``ray.util.metrics`` objects need a running Ray worker.
"""

from __future__ import annotations

from functools import cache

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
KNOWN_ROUTES = ("/generate", "/health", "/metadata")


class ServeMetrics:
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.latency = Histogram("vidgen_serve_latency_ms", description="request latency inside the replica (ms)",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route",))
        self.requests = Counter("vidgen_serve_requests", description="requests answered, by route and HTTP status",
                                tag_keys=("route", "status"))
        self.batch = Gauge("vidgen_serve_batch_size", description="requests in the last batch", tag_keys=("route",))

    def request(self, route: str, status: int, latency_ms: float) -> None:
        route = route if route in KNOWN_ROUTES else "other"  # bounded tag values: no path explosion
        self.latency.observe(latency_ms, tags={"route": route})
        self.requests.inc(tags={"route": route, "status": str(status)})

    def batch_size(self, route: str, size: int) -> None:
        self.batch.set(size, tags={"route": route})


@cache
def metrics() -> ServeMetrics:
    return ServeMetrics()
