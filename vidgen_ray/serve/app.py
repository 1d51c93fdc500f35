"""The Ray Serve application: a FastAPI ingress over ``engine.Engine`` with dynamic batching.

    python jobs/serve.py --checkpoint outputs/runs/demo/checkpoint_000004 --port 8000
    curl -s localhost:8000/metadata
    curl -s -X POST localhost:8000/generate -d '{"class": 3, "seed": 7, "steps": 8}' -o video.mp4

Routes (under ``route_prefix``):
    GET  /           the playground: a page offering the served model's inputs, playing what it makes
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
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.config import BackpressureConfig

from vidgen_ray.configs import to_dict
from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.engine import Engine, Job, Output, cpu_threads
from vidgen_ray.serve.metrics import metrics
from vidgen_ray.serve.schema import RequestError, parse_request

PLAYGROUND = (Path(__file__).parent / "playground.html").read_text()

# How long a replica remembers holding two requests at once (the adaptive batch wait, see _answer).
CROWD_MEMORY_S = 1.0

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


GONE_MEMORY_S = 600.0  # a cancelled request that never joined a batch is forgotten after this

# Defined before the deployment class: Serve ships the class with the globals it sees at that point.
async def _drain(stream: AsyncIterator) -> None:
    try:
        async for _ in stream:
            pass
    except Exception:  # noqa: BLE001 - a later call of the batch failed; this request was answered already
        pass


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
        self._drains: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        # Requests whose client went away mid-batch, by id (the Job held so the id is not reused), with
        # the time they left: the batch gives them Serve's end-of-stream sentinel from then on.
        self._gone: dict[int, tuple[Job, float]] = {}
        self._in_flight = 0  # /generate requests in this replica (validated, not yet answered)
        self._crowded_at = -math.inf  # when this replica last held two or more of them

    @api.get("/", response_class=HTMLResponse)
    async def playground(self) -> HTMLResponse:
        return HTMLResponse(PLAYGROUND)

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
            "batch_wait": c.batch_wait,
            "max_ongoing_requests": c.max_ongoing_requests,
            "max_queued_requests": c.max_queued_requests,
            "limits": to_dict(c.limits),
            "formats": ["mp4", "npy"],
        }

    @api.post("/generate")
    async def generate(self, request: Request) -> Response:
        card = self.engine.card
        parsed = parse_request(await request.body(), self.config.limits.body_limit(int(card.image) + int(card.sketch)))
        job = self.engine.validate(parsed)
        self._in_flight += 1
        try:
            return await self._answer(job)
        finally:
            self._in_flight -= 1

    async def _answer(self, job: Job) -> Response:
        if self.config.batch_wait == "adaptive":
            # Serve reads the timeout when it takes a batch's first request. A replica that has not held
            # two requests at once for a while serves one client at a time: waiting for company that
            # is not coming only adds the whole timeout. Under load (two or more in flight lately) the
            # configured wait stays, so requests arriving a moment apart still share a batch.
            now = time.monotonic()
            if self._in_flight > 1:
                self._crowded_at = now
            alone = self._in_flight == 1 and now - self._crowded_at > CROWD_MEMORY_S
            self.generate_batch.set_batch_wait_timeout_s(0.0 if alone else self.config.batch_wait_timeout_s)
        answers = self.generate_batch(job)
        try:
            async for out in answers:
                if out is None:  # another request of the batch finished first
                    continue
                # Answer now, but read this request's stream to its end in the background: Serve resolves
                # one more future per request when the batch ends (StopAsyncIteration), and an unread one
                # is logged as "Future exception was never retrieved" at every request.
                self._drains.add(task := asyncio.create_task(_drain(answers)))
                task.add_done_callback(self._drains.discard)
                if out.error:
                    return JSONResponse({"error": out.error}, status_code=500)
                return Response(out.body, media_type=out.media_type, headers=out.headers)
        except asyncio.CancelledError:
            # The client disconnected and Serve cancelled this handler. Its stream's pending future is
            # cancelled with it, but each further yield of the batch would make a new one that nobody
            # reads ("never retrieved" again), unless the batch ends this request's stream now.
            now = time.monotonic()
            self._gone = {k: v for k, v in self._gone.items() if now - v[1] < GONE_MEMORY_S}
            self._gone[id(job)] = (job, now)
            raise
        return JSONResponse({"error": "the batch ended without an answer for this request"}, status_code=500)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.01)  # both reset from the config in __init__
    async def generate_batch(self, jobs: list[Job]) -> AsyncIterator[list[Output | None]]:
        """A batch of requests -> one yield per finished ``model.sample`` call: the Output for the
        requests it answered, None for the others (an async generator, so each request is answered
        as soon as its own video is encoded, not when the whole batch is)."""
        metrics().batch_size("/generate", len(jobs))
        loop = asyncio.get_running_loop()
        groups = self.engine.run_groups(jobs)
        answered: set[int] = set()
        try:
            while (done := await loop.run_in_executor(self.executor, next, groups, None)) is not None:
                # A request answered by an earlier call, or whose client went away, gets Serve's
                # end-of-stream sentinel: its stream ends at once instead of waiting for the whole batch.
                ended = answered | {i for i, job in enumerate(jobs) if id(job) in self._gone}
                answers: list = [StopAsyncIteration if i in ended else None for i in range(len(jobs))]
                for i, out in done:
                    if i in ended:
                        continue
                    if out.headers is not None:
                        out.headers["x-vidgen-batch-size"] = str(len(jobs))
                    answers[i] = out
                    answered.add(i)
                yield answers
        finally:
            for job in jobs:
                self._gone.pop(id(job), None)


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
