"""Size a cluster for a training run before renting it: decode CPUs and nodes that keep the GPUs fed,
object-storage read bandwidth, the clip cache, the checkpoint and its upload against the checkpoint
interval, and the epoch time.

    vidgen-ray plan --preset dit-b --gpus 64 --gpu h100 --clips 2000000
    vidgen-ray plan --preset dit-b --gpus 64 --data-bench outputs/bench/data_throughput.json --gpu-samples-per-s 41

Every figure says where it comes from. "measured": a benchmark JSON you pass (`benchmarks/data_throughput.py
--json`, a GPU's training samples/s), else the figure BENCHMARKS.md records with its machine. "estimate":
arithmetic on stated assumptions (model FLOPs from the registry at an assumed MFU, a source bitrate, an
upload bandwidth), printed with the plan so it can be argued with. The arithmetic is `make_plan`; a test
checks it against a hand-worked case.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from vidgen_ray.models.registry import describe, get_preset
from vidgen_ray.train.telemetry import PEAK_FLOPS_BF16

# BENCHMARKS.md, "Data pipeline against the decoder", 2026-11-28 (commit f793a32, the 2-core AMD EPYC VM):
# this pipeline on 1 decode CPU, median of five runs (1072, 790, 1031, 1107, 705 source frames/s), clips of
# 16x128x128 from the 26 clips of ../shared/videos (mostly <= 720p H.264/VP9).
MEASURED_DECODE_FPS_PER_CPU = 1031.0
MEASURED_DECODE_SOURCE = "BENCHMARKS.md 2026-11-28: pipeline on 1 CPU, median of 5 runs, 2-core AMD EPYC VM"

GPUS = {"h100": "H100", "h200": "H200", "a100": "A100", "b200": "B200", "l40s": "L40S", "l4": "L4"}


@dataclass
class Assumptions:
    """What the plan cannot measure here; every one is printed with the plan."""

    mfu: float = 0.35  # model FLOPs utilisation, when no measured samples/s is given
    backward_factor: float = 3.0  # a training step ~ forward + backward = 3 forwards
    source_fps: float = 30.0  # frame rate of the source videos (decode cost counts source frames)
    source_mbps: float = 8.0  # their bitrate: ~1080p H.264
    cpus_per_decode_node: int = 32  # cluster/aws.yaml's decode node type (c7i.8xlarge)
    decode_headroom: float = 1.25  # decode capacity over the GPUs' need: stragglers, retries, validation
    upload_gbps: float = 2.0  # checkpoint upload bandwidth of rank 0's node to object storage, Gbit/s
    checkpoint_bytes_per_param: float = 16.0  # fp32 weights 4 + Adam moments 8 + EMA 4


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    source: str  # "measured: ..." or "estimate: ..."


@dataclass
class Plan:
    preset: str
    gpus: int
    gpu: str
    figures: list[Figure] = field(default_factory=list)
    assumptions: Assumptions = field(default_factory=Assumptions)
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)

    def as_dict(self) -> dict:
        return {"preset": self.preset, "gpus": self.gpus, "gpu": self.gpu, "assumptions": vars(self.assumptions),
                "figures": [vars(f) for f in self.figures], "warnings": self.warnings}


def read_decode_fps(path: str | None) -> tuple[float, str]:
    """Source frames/s one decode CPU delivers: from a `benchmarks/data_throughput.py --json` file, else
    the figure BENCHMARKS.md records."""
    if path is None:
        return MEASURED_DECODE_FPS_PER_CPU, f"measured: {MEASURED_DECODE_SOURCE}"
    from vidgen_ray import storage

    figures = json.loads(storage.read_text(path))
    return float(figures["pipeline_fps_1cpu"]), f"measured: {path} (pipeline_fps_1cpu)"


def read_gpu_check(path: str, preset: str) -> tuple[float, str]:
    """Samples/s of one GPU for ``preset`` from a ``benchmarks/gpu_check.py --json`` file: its fastest
    measured row for that preset (any strategy, compile and checkpointing setting), per GPU."""
    from vidgen_ray import storage

    figures = json.loads(storage.read_text(path))
    if figures.get("dry"):
        raise ValueError(f"{path} is a dry (CPU-sized) GPU check: it holds no GPU figure; run it on a GPU machine")
    rows = [r for r in figures.get("steps", []) if r.get("preset") == preset and r.get("samples_per_s") and r.get("gpus")]
    if not rows:
        raise ValueError(f"{path} has no measured row for {preset}; pass --gpu-samples-per-s or run the check with it")
    best = max(rows, key=lambda r: r["samples_per_s"] / r["gpus"])
    setting = f"{best['strategy']}, compile {best['compile']}, checkpointing {best['activation_checkpointing']}"
    return best["samples_per_s"] / best["gpus"], f"measured: {path} ({best['device']}, {setting})"


def make_plan(preset: str, gpus: int, gpu: str = "h100", clips: int = 1_000_000, batch_per_gpu: int = 8,
              checkpoint_every: int = 1000, fps: float = 8.0, decode_fps_per_cpu: float | None = None, decode_source: str = "",
              gpu_samples_per_s: float | None = None, assumptions: Assumptions | None = None,
              gpu_source: str = "measured: given (--gpu-samples-per-s)") -> Plan:
    """The plan's arithmetic. ``gpu_samples_per_s``: a measured training throughput of one GPU for this
    preset (the GPU check's); without it, one is estimated from the preset's FLOPs at ``assumptions.mfu``."""
    a = assumptions or Assumptions()
    if gpus < 1 or clips < 1 or batch_per_gpu < 1 or checkpoint_every < 1:
        raise ValueError("gpus, clips, batch_per_gpu and checkpoint_every must be >= 1")
    key = gpu.lower()
    if key not in GPUS:
        raise ValueError(f"unknown --gpu {gpu!r}: one of {', '.join(GPUS)}")
    if decode_fps_per_cpu is None:
        decode_fps_per_cpu, decode_source = read_decode_fps(None)
    cfg = get_preset(preset)
    info = describe(cfg)
    plan = Plan(preset, gpus, GPUS[key], assumptions=a)
    add = plan.figures.append

    # GPU throughput.
    if gpu_samples_per_s is None:
        peak = PEAK_FLOPS_BF16[GPUS[key]]
        per_gpu = a.mfu * peak / (a.backward_factor * info.flops_per_sample)
        source = (f"estimate: {info.flops_per_sample / 1e12:.3g} TFLOP forward/sample x {a.backward_factor:g} at "
                  f"MFU {a.mfu:g} of {peak / 1e12:.0f} TFLOP/s bf16")
        if getattr(cfg, "latent", False):
            plan.warnings.append("the latent model's FLOPs leave out the frozen VAE's encoder, which runs on every "
                                 "step unless latents are precomputed")
    else:
        per_gpu, source = gpu_samples_per_s, gpu_source
    add(Figure("samples/s per GPU", per_gpu, "samples/s", source))
    total = per_gpu * gpus
    add(Figure("samples/s, all GPUs", total, "samples/s", f"{gpus} x samples/s per GPU"))
    step_s = batch_per_gpu / per_gpu
    add(Figure("step time", step_s, "s", f"batch {batch_per_gpu} per GPU / samples/s per GPU"))

    # Decoding: a clip of F frames at the training fps (data.clip.fps) covers F / fps seconds of source video.
    clip_seconds = cfg.frames / fps
    source_frames = total * clip_seconds * a.source_fps
    add(Figure("source frames to decode", source_frames, "frames/s",
               f"{total:.4g} clips/s x {clip_seconds:g} s a clip x {a.source_fps:g} fps source"))
    add(Figure("decode throughput per CPU", decode_fps_per_cpu, "frames/s", decode_source))
    cpus = math.ceil(source_frames * a.decode_headroom / decode_fps_per_cpu)
    add(Figure("decode CPUs", cpus, "CPUs", f"x {a.decode_headroom:g} headroom"))
    add(Figure("decode nodes", math.ceil(cpus / a.cpus_per_decode_node), "nodes",
               f"{a.cpus_per_decode_node} CPUs a node"))
    bandwidth = total * clip_seconds * a.source_mbps / 8  # MB/s
    add(Figure("object-storage reads", bandwidth, "MB/s", f"estimate: sources at {a.source_mbps:g} Mbit/s"))

    # The prepared clip cache: raw uint8 frames (parquet's compression gains little on decoded video).
    clip_bytes = cfg.frames * cfg.height * cfg.width * 3
    add(Figure("clip cache", clips * clip_bytes / 1e12, "TB", f"{clips} clips x {clip_bytes / 1e6:.3g} MB raw uint8"))
    add(Figure("clip-cache reads", total * clip_bytes / 1e6, "MB/s",
               "training from the prepared cache instead of decoding: no decode CPUs, this read rate"))

    # Checkpoints.
    ckpt_gb = info.params * a.checkpoint_bytes_per_param / 1e9
    add(Figure("checkpoint size", ckpt_gb, "GB", f"{info.params / 1e6:.4g} M parameters x "
                                                   f"{a.checkpoint_bytes_per_param:g} bytes"))
    upload_s = ckpt_gb * 8 / a.upload_gbps
    add(Figure("checkpoint upload", upload_s, "s", f"estimate: {a.upload_gbps:g} Gbit/s, asynchronous"))
    interval_s = checkpoint_every * step_s
    add(Figure("checkpoint interval", interval_s, "s", f"{checkpoint_every} steps x step time"))
    if upload_s > interval_s:
        plan.warnings.append(f"an upload ({upload_s:.0f} s) outlasts the checkpoint interval ({interval_s:.0f} s): "
                             f"checkpoint every >= {math.ceil(upload_s / step_s)} steps or the uploads queue")

    add(Figure("epoch", clips / total / 3600, "h", f"{clips} clips / samples/s, all GPUs"))
    return plan


def format_plan(plan: Plan) -> str:
    lines = [f"plan: {plan.preset} on {plan.gpus} x {plan.gpu}", ""]
    width = max(len(f.name) for f in plan.figures)
    for f in plan.figures:
        value = f"{f.value:,.0f}" if f.value >= 100 or f.unit in ("CPUs", "nodes") else f"{f.value:.3g}"
        lines.append(f"  {f.name:<{width}}  {value:>12} {f.unit:<9}  {f.source}")
    lines += ["", "assumptions (override with the flags of `vidgen-ray plan --help`):"]
    lines += [f"  {k} = {v}" for k, v in vars(plan.assumptions).items()]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


__all__ = ["Assumptions", "Plan", "make_plan", "format_plan", "read_decode_fps"]
