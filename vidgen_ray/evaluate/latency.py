"""Generation time of a model: per video and per frame, warm-up excluded, on the device it ran on.

    python -c "from vidgen_ray.models import build_model, get_preset; from vidgen_ray.evaluate import measure_latency; \
print(measure_latency(build_model(get_preset('gan-debug')), batch_size=2))"

``model.sample(n, seed)`` is timed end to end (the caller's view: the float [n, T, H, W, C] result on
the model's device, CUDA synchronised before the clock stops). The first ``warmup`` calls are not
counted (allocator growth, cuDNN autotuning, lazy initialisation); each timed call uses a fresh seed
so no cache can serve it. Times are wall-clock seconds; compare them only on the same device.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class LatencyResult:
    device: str  # e.g. "NVIDIA H100 80GB HBM3" or "cpu (x86_64, 2 threads)"
    batch_size: int  # videos per sample() call
    frames_per_video: int
    warmup_calls: int
    timed_calls: int
    seconds_per_call: list[float]
    per_video_s_mean: float
    per_video_s_median: float
    per_frame_s_mean: float
    videos_per_s: float
    frames_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_latency(
    model: torch.nn.Module,
    batch_size: int = 1,
    timed_calls: int = 5,
    warmup: int = 2,
    seed: int = 0,
    **sample_options,
) -> LatencyResult:
    """Time ``model.sample(batch_size, seed, **sample_options)``; ``warmup`` untimed calls first."""
    if batch_size < 1 or timed_calls < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, timed_calls >= 1, warmup >= 0; got {batch_size}, {timed_calls}, {warmup}")
    model.eval()
    device = _model_device(model)
    for i in range(warmup):
        model.sample(batch_size, seed=seed + i, **sample_options)
    _synchronize(device)
    seconds: list[float] = []
    frames = 0
    for i in range(timed_calls):
        start = time.perf_counter()
        out = model.sample(batch_size, seed=seed + warmup + i, **sample_options)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
        frames = int(out.shape[1])
    per_video = [s / batch_size for s in seconds]
    total = sum(seconds)
    return LatencyResult(
        device=device_description(device),
        batch_size=batch_size,
        frames_per_video=frames,
        warmup_calls=warmup,
        timed_calls=timed_calls,
        seconds_per_call=seconds,
        per_video_s_mean=statistics.fmean(per_video),
        per_video_s_median=statistics.median(per_video),
        per_frame_s_mean=statistics.fmean(per_video) / frames,
        videos_per_s=batch_size * timed_calls / total,
        frames_per_s=batch_size * timed_calls * frames / total,
    )
