"""Telemetry arithmetic: throughput, data-wait share, step time and MFU from the registry's FLOPs
and the device's peak (GPU names resolved the way torch reports them)."""

from __future__ import annotations

import time

import pytest
import torch

from vidgen_ray.train import telemetry
from vidgen_ray.train.telemetry import Interval, Telemetry, peak_flops


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),      # the longer key wins over "H100"
    ("NVIDIA H100 80GB HBM3", "fp32", 989e12 / 2),  # TF32 tensor cores: half the bf16 rate
    ("NVIDIA A100-SXM4-80GB", "fp16", 312e12),
    ("Some Future GPU", "bf16", None),           # unknown: MFU reported as 0, never invented
])
def test_peak_flops_by_device_name(monkeypatch, name, precision, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(torch.device("cuda"), precision) == expected


def test_cpu_has_no_peak_so_mfu_is_zero():
    assert peak_flops(torch.device("cpu"), "bf16") is None


def test_flush_computes_rates_and_mfu_over_the_interval():
    tel = Telemetry("run", rank=0, world=2, flops_per_sample=10**9, tokens_per_sample=256,
                    device=torch.device("cpu"), precision="bf16")
    tel.peak = 1e12  # as if on a 1 TFLOP/s device
    tel.interval = Interval(started=time.perf_counter() - 2.0)
    tel.waited(0.5)
    for _ in range(4):
        tel.stepped(samples=2)  # 4 steps x 2 samples on this rank, 2 ranks
    out = tel.flush({"loss": 1.0})
    assert out["samples_per_s"] == pytest.approx(8.0, rel=0.02)          # 16 samples in 2 s
    assert out["tokens_per_s"] == pytest.approx(8.0 * 256, rel=0.02)
    assert out["data_wait_fraction"] == pytest.approx(0.25, rel=0.02)
    assert out["step_time_s"] == pytest.approx(0.5, rel=0.02)
    # 3 x forward FLOPs (forward + backward) x samples/s over the peak of both devices.
    assert out["mfu"] == pytest.approx(3 * 1e9 * 8.0 / (1e12 * 2), rel=0.02)
    assert tel.interval.samples == 0 and tel.interval.steps == 0  # the next interval starts empty


def test_progress_line_reads_well():
    line = telemetry.progress_line(40, 60, 3, {"loss_model": 0.41, "loss": 0.41},
                                   {"samples_per_s": 9.8, "tokens_per_s": 1254, "data_wait_fraction": 0.02,
                                    "step_time_s": 0.41, "mfu": 0.0}, 9.1e-4)
    assert line.startswith("step 40/60 ep 3") and "data wait 2%" in line and "9.8 samples/s" in line
