"""Training telemetry: throughput, data wait vs compute, MFU, memory; Ray metrics + a log line.

The step time is split where it is spent: ``data_wait`` is the time the loop blocks on the next
batch from the data shard (the GPU is idle then); ``compute`` is everything else. Both are wall
clock between log intervals (CUDA is synchronised only at the interval boundary, not per step).
MFU = achieved model FLOP/s / peak FLOP/s of the devices, with achieved = 3 x forward FLOPs per
sample (forward + backward) x samples/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

# Dense peak FLOP/s per device for bf16/fp16 tensor-core math (vendor datasheets, no sparsity).
PEAK_FLOPS_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one device, or None where MFU has no meaning (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):
        if key in name:
            peak = PEAK_FLOPS_BF16[key]
            # TF32 tensor cores run at half the bf16 rate on Ampere/Hopper.
            return peak if precision in ("bf16", "fp16") else peak / 2
    return None


@dataclass
class Interval:
    """Accumulates one logging interval."""

    started: float = field(default_factory=time.perf_counter)
    data_wait: float = 0.0
    samples: int = 0
    steps: int = 0
    work: float = 0.0  # samples in reference-shape clips: a bucketed clip counts its pixels / the reference's
    frames: int = 0
    bucket_time: dict = field(default_factory=dict)  # bucket -> [seconds, steps, samples, work]
    last_step: float = field(default_factory=time.perf_counter)  # end of the last step (or of a report)
    wait_mark: float = 0.0  # data_wait at that moment

    def elapsed(self) -> float:
        return max(1e-9, time.perf_counter() - self.started)


class Telemetry:
    def __init__(self, run: str, rank: int, world: int, flops_per_sample: int, tokens_per_sample: int,
                 device: torch.device, precision: str, frames_per_sample: int = 0) -> None:
        self.rank, self.world = rank, world
        self.flops_per_sample = flops_per_sample
        self.tokens_per_sample = tokens_per_sample  # VideoModel.tokens_per_sample: what the network computes on
        self.frames_per_sample = frames_per_sample
        self.device = device
        self.peak = peak_flops(device, precision)
        self.interval = Interval()
        self.tags = {"run": run, "rank": str(rank)}
        self._gauges = None
        try:
            from ray.util.metrics import Gauge

            keys = ("run", "rank")
            self._gauges = {
                name: Gauge(f"vidgen_train_{name}", description=desc, tag_keys=keys)
                for name, desc in (
                    ("samples_per_s", "training samples per second (all workers)"),
                    ("tokens_per_s", "model tokens per second (all workers): DiT tokens, pixel positions for conv nets"),
                    ("frames_per_s", "video frames trained on per second (all workers)"),
                    ("data_wait_fraction", "share of step time blocked on the data shard"),
                    ("step_time_s", "seconds per optimizer step"),
                    ("mfu", "model FLOPs utilisation (GPU only)"),
                    ("loss", "training loss"),
                    ("gpu_memory_gb", "peak GPU memory allocated, GB"),
                )
            }
        except Exception:  # noqa: BLE001 - metrics are optional outside a Ray worker
            self._gauges = None

    def waited(self, seconds: float) -> None:
        self.interval.data_wait += seconds

    def stepped(self, samples: int, work: float | None = None, frames: int | None = None, bucket: str = "") -> None:
        """One optimizer step over ``samples`` clips (per rank, of the global batch). Bucketed runs also give
        the clips' ``work`` in reference clips (tokens and FLOPs scale with pixels), their ``frames`` and the
        ``bucket`` the step's micro-batches shared: its step time, less the wait for data, is reported apart."""
        iv = self.interval
        iv.samples += samples
        iv.work += samples if work is None else work
        iv.frames += samples * self.frames_per_sample if frames is None else frames
        iv.steps += 1
        if bucket:
            spent = iv.bucket_time.setdefault(bucket, [0.0, 0, 0, 0.0])
            spent[0] += time.perf_counter() - iv.last_step - (iv.data_wait - iv.wait_mark)
            spent[1] += 1
            spent[2] += samples
            spent[3] += samples if work is None else work
        self.mark()

    def mark(self) -> None:
        """Where the next step's time starts: after a step, and after what is not a step (a report, samples)."""
        self.interval.last_step, self.interval.wait_mark = time.perf_counter(), self.interval.data_wait

    def flush(self, losses: dict[str, float]) -> dict[str, float]:
        """Close the interval: compute rates, publish Ray metrics, return them for ``ray.train.report``."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        iv = self.interval
        wall = iv.elapsed()
        samples_per_s = iv.samples * self.world / wall  # every worker runs the same number of samples (about,
        work_per_s = iv.work * self.world / wall  # where buckets make each rank's batches differ)
        out = {
            "samples_per_s": samples_per_s,
            "tokens_per_s": work_per_s * self.tokens_per_sample,
            "frames_per_s": iv.frames * self.world / wall,
            "data_wait_fraction": min(1.0, iv.data_wait / wall),
            "step_time_s": wall / max(1, iv.steps),
            # Batches hold one shape (buckets or not) and are never padded: 0 by construction, reported so a
            # dashboard comparing runs with padding-based systems has the figure.
            "padded_token_share": 0.0,
            # Bucketed clips' FLOPs scale as their pixels here (attention grows faster: an estimate for them).
            "mfu": (3 * self.flops_per_sample * work_per_s / (self.peak * self.world)) if self.peak else 0.0,
        }
        for bucket, (seconds, steps, samples, work) in sorted(iv.bucket_time.items()):
            # Per bucket, over the steps that ran it (their compute time, not the wait for data).
            out[f"step_time_s/{bucket}"] = seconds / steps
            out[f"samples_per_s/{bucket}"] = samples * self.world / max(seconds, 1e-9)
            out[f"tokens_per_s/{bucket}"] = work * self.world * self.tokens_per_sample / max(seconds, 1e-9)
        if self.device.type == "cuda":
            out["gpu_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        if self._gauges is not None:
            for key, value in {**out, "loss": losses.get("loss", 0.0)}.items():
                if key in self._gauges:
                    self._gauges[key].set(float(value), tags=self.tags)
        self.interval = Interval()
        return out


def progress_line(step: int, total: int, epoch: int, losses: dict[str, float], rates: dict[str, float], lr: float) -> str:
    loss_text = " ".join(f"{k} {v:.4f}" for k, v in losses.items() if k.startswith("loss"))
    mfu = f"mfu {rates['mfu'] * 100:.1f}%" if rates.get("mfu") else "mfu n/a (cpu)"
    mem = f" | mem {rates['gpu_memory_gb']:.1f}GB" if "gpu_memory_gb" in rates else ""
    return (
        f"step {step}/{total} ep {epoch} | {loss_text} | {rates['samples_per_s']:.1f} samples/s "
        f"{rates['tokens_per_s']:.0f} tok/s | data wait {rates['data_wait_fraction'] * 100:.0f}% | "
        f"{rates['step_time_s']:.2f}s/step | {mfu} | lr {lr:.2e}{mem}"
    )
