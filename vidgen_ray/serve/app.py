"""The Ray Serve application: a FastAPI ingress over ``engine.Engine`` with dynamic batching.

    python jobs/serve.py --checkpoint outputs/runs/demo/checkpoint_000004 --port 8000
    curl -s localhost:8000/metadata
    curl -s -X POST localhost:8000/generate -d '{"class": 3, "seed": 7, "steps": 8}' -o video.mp4

Routes (under ``route_prefix``):
    POST /generate   JSON GenerateRequest -> video/mp4, or application/x-npy (uint8 [T, H, W, C])
                     400 bad JSON, 413 body too large, 422 bad field or value, 500 generation failed,
                     503 (from Serve, with Retry-After) when replicas and queue are full
    GET  /health     200 {"status": "ok", "model": ..., "replica": id} once the model is loaded and warmed up
    GET  /metadata   the ModelCard plus the batching / limits in force

Generation runs on one worker thread per replica, so the event loop keeps answering /health and
queueing requests into the next batch while a batch computes.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request) at runtime.

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.config import BackpressureConfig

from vidgen_ray.configs import to_dict
from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.engine import Engine, Job, Output, cpu_threads
from vidgen_ray.serve.metrics import metrics
from vidgen_ray.serve.schema import RequestError, parse_request

api = FastAPI(title="vidgen-ray", description="video generation from a vidgen-ray checkpoint")


@api.middleware("http")
async def _observe(request: Request, call_next):
    """Latency and status of every request, 4xx and 5xx included, as Ray metrics."""
    start = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        # Time inside the replica: the benchmark subtracts it from the client's to split Serve's overhead.
        response.headers["x-vidgen-replica-ms"] = f"{(time.perf_counter() - start) * 1e3:.2f}"
        return response
    finally:
        route = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
        metrics().request(route, status, (time.perf_counter() - start) * 1e3)


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


@serve.deployment(name="VideoGenerator")
@serve.ingress(api)
class VideoGenerator:
    def __init__(self, config: ServeConfig) -> None:
        import torch

        self.config = config
        self.replica = serve.get_replica_context().replica_id.unique_id  # which replica answered (/health)
        if config.num_gpus == 0:
            torch.set_num_threads(cpu_threads(config))
        self.engine = Engine(config)
        self.engine.warm_up()
        # One thread: batches run one after another, the model is never used from two threads.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidgen-generate")
        self.generate_batch.set_max_batch_size(config.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "model": self.engine.card.name, "replica": self.replica}

    @api.get("/metadata")
    async def metadata(self) -> dict:
        c = self.config
        return self.engine.card.as_dict() | {
            "sampling": c.sampling,
            "max_batch_size": c.max_batch_size,
            "batch_wait_timeout_s": c.batch_wait_timeout_s,
            "max_ongoing_requests": c.max_ongoing_requests,
            "max_queued_requests": c.max_queued_requests,
            "limits": to_dict(c.limits),
            "formats": ["mp4", "npy"],
        }

    @api.post("/generate")
    async def generate(self, request: Request) -> Response:
        parsed = parse_request(await request.body(), self.config.limits.max_body_bytes)
        job = self.engine.validate(parsed)
        async for out in self.generate_batch(job):
            if out is None:  # another request of the batch finished first
                continue
            if out.error:
                return JSONResponse({"error": out.error}, status_code=500)
            return Response(out.body, media_type=out.media_type, headers=out.headers)
        return JSONResponse({"error": "the batch ended without an answer for this request"}, status_code=500)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)  # both reset from the config in __init__
    async def generate_batch(self, jobs: list[Job]) -> AsyncIterator[list[Output | None]]:
        """A batch of requests -> one yield per finished ``model.sample`` call: the Output for the
        requests it answered, None for the others (an async generator, so each request is answered
        as soon as its own video is encoded, not when the whole batch is)."""
        metrics().batch_size("/generate", len(jobs))
        loop = asyncio.get_running_loop()
        groups = self.engine.run_groups(jobs)
        while (done := await loop.run_in_executor(self.executor, next, groups, None)) is not None:
            answers: list[Output | None] = [None] * len(jobs)
            for i, out in done:
                if out.headers is not None:
                    out.headers["x-vidgen-batch-size"] = str(len(jobs))
                answers[i] = out
            yield answers


def deployment_options(config: ServeConfig) -> dict:
    """``serve.deployment`` options for a config: backpressure, resources, fixed or autoscaled replicas."""
    options: dict = {
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=config.retry_after_s),
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
    }
    if config.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas,
            "initial_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = config.min_replicas
    return options


def build_app(config: ServeConfig):
    """ServeConfig -> a Serve Application (deploy with ``serve.run`` or ``run`` below)."""
    return VideoGenerator.options(**deployment_options(config.validate())).bind(config)


def check_checkpoint(config: ServeConfig) -> None:
    """Fail here, with the fix, rather than in every replica's constructor (Serve retries those)."""
    from vidgen_ray import storage
    from vidgen_ray.configs import ConfigError

    if config.loader is None and not storage.exists(storage.join(config.checkpoint, "meta.json")):
        raise ConfigError(f"{config.checkpoint} holds no meta.json: pass a checkpoint directory written by "
                          "training, e.g. <storage_path>/<run name>/checkpoint_000004")


def run(config: ServeConfig, blocking: bool = False):
    """Deploy (or update) the app on the connected Ray cluster; returns its DeploymentHandle."""
    check_checkpoint(config.validate())
    return serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
