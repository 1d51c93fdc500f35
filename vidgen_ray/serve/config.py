"""What a serving deployment is: which checkpoint, how it batches, scales and pushes back, and
which requests it accepts.

    python -c "from vidgen_ray.serve.config import ServeConfig; \
print(ServeConfig(checkpoint='outputs/runs/demo/checkpoint_000004').validate())"

Capacity of one replica = ``max_ongoing_requests`` (running or waiting for a batch slot) and the
router holds at most ``max_queued_requests`` more per deployment; anything beyond that is answered
at once with 503 (``Retry-After`` set) instead of queueing without bound and timing out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from vidgen_ray.configs import ConfigError

# ``sampling``:
#   per_request  each request is its own ``model.sample(1, seed, ...)`` call inside the batch: a video
#                depends only on its request, and equals what the bare model gives offline for it.
#   fused        one ``model.sample(n, seed, ...)`` per group of batched requests with equal sampling
#                options (faster per video, above all on a GPU); a video then depends on the batch it
#                ran in (the response headers name the batch seed, size and row).
SamplingMode = Literal["per_request", "fused"]


@dataclass
class RequestLimits:
    """Bounds on one ``POST /generate`` request; the model's own limits apply on top (its frame count,
    its caption length)."""

    max_frames: int = 256
    max_steps: int = 100
    max_guidance: float = 20.0
    max_caption_chars: int = 512
    max_seed: int = 2**31 - 1
    max_body_bytes: int = 16 * 1024  # without images; a model that takes images allows body_limit(...)
    max_image_bytes: int = 4 * 1024 * 1024  # one decoded-from-base64 PNG / JPEG ('image', 'sketch')
    max_image_pixels: int = 4096 * 4096

    def body_limit(self, images: int) -> int:
        """The request body bound for a model taking ``images`` pictures: base64 is 4/3 of the bytes."""
        return self.max_body_bytes + images * (4 * self.max_image_bytes // 3 + 4)

    def validate(self) -> None:
        for name in ("max_frames", "max_steps", "max_caption_chars", "max_seed", "max_body_bytes", "max_image_bytes",
                     "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_guidance >= 1.0:
            raise ConfigError(f"limits.max_guidance must be >= 1 (1 = no guidance), got {self.max_guidance}")


@dataclass
class ServeConfig:
    checkpoint: str = ""  # a checkpoint directory: local path or s3:// / gs:// / abfs:// URI
    app_name: str = "vidgen"
    route_prefix: str = "/"
    use_ema: bool = True
    device: str = "auto"  # auto = cuda when the replica has a GPU, else cpu
    sampling: SamplingMode = "per_request"
    # Dynamic batching (@serve.batch).
    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.01
    # "adaptive": a request is dispatched at once when the replica has held no two requests at once for
    # a second (one client at a time: nothing is coming to share its batch); under load it waits up to
    # batch_wait_timeout_s for company as "fixed" always does.
    batch_wait: str = "adaptive"
    # Backpressure: see the module docstring.
    max_ongoing_requests: int = 8
    max_queued_requests: int = 16
    retry_after_s: float = 1.0
    # Replicas: min == max means a fixed count, otherwise Serve autoscales on ongoing requests.
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    limits: RequestLimits = field(default_factory=RequestLimits)
    # Replaces ``load_for_inference`` (uri, use_ema, device) -> (model, experiment, meta): wrap a model,
    # attach a VAE to a latent transformer, or inject faults in tests. Pickled to the replicas.
    loader: Callable | None = None

    def validate(self) -> ServeConfig:
        if not self.checkpoint:
            raise ConfigError("no checkpoint: pass --checkpoint PATH_OR_URI "
                              "(a directory holding meta.json and model.pt)")
        if not self.route_prefix.startswith("/"):
            raise ConfigError(f"route_prefix {self.route_prefix!r} must start with '/', e.g. '/' or '/vidgen'")
        if not self.app_name or "/" in self.app_name:
            raise ConfigError(f"app_name {self.app_name!r} must be non-empty and contain no '/'")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device {self.device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
        if self.device.startswith("cuda") and self.num_gpus <= 0:
            raise ConfigError(f"device {self.device!r} needs a GPU per replica: set num_gpus (e.g. 1)")
        if self.sampling not in ("per_request", "fused"):
            raise ConfigError(f"sampling {self.sampling!r} must be 'per_request' or 'fused'")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait not in ("adaptive", "fixed"):
            raise ConfigError(f"batch_wait {self.batch_wait!r} must be 'adaptive' or 'fixed'")
        if not 0.0 <= self.batch_wait_timeout_s <= 10.0:
            raise ConfigError(f"batch_wait_timeout_s {self.batch_wait_timeout_s} must be in [0, 10] seconds")
        if self.max_ongoing_requests < self.max_batch_size:
            # A replica only ever holds max_ongoing_requests requests, so a larger batch can never fill.
            raise ConfigError(
                f"max_ongoing_requests {self.max_ongoing_requests} < max_batch_size {self.max_batch_size}: "
                f"batches could never fill; set max_ongoing_requests >= {self.max_batch_size}"
            )
        if self.max_queued_requests < 0:
            raise ConfigError(f"max_queued_requests must be >= 0 (0 = reject when replicas are full), "
                              f"got {self.max_queued_requests}")
        if self.retry_after_s < 0:
            raise ConfigError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                f"replicas: need 1 <= min_replicas ({self.min_replicas}) <= max_replicas ({self.max_replicas}); "
                "set both equal for a fixed count"
            )
        if self.target_ongoing_requests <= 0:
            raise ConfigError(f"target_ongoing_requests must be > 0, got {self.target_ongoing_requests}")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError(f"num_cpus must be > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}")
        if self.loader is not None and not callable(self.loader):
            raise ConfigError("loader must be a callable (uri, use_ema, device) -> (model, experiment, meta)")
        self.limits.validate()
        return self

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > self.min_replicas
