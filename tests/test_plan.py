"""`vidgen-ray plan`: its arithmetic against a case worked by hand, and its FLOPs estimate."""

from __future__ import annotations

import json

import pytest

from vidgen_ray.cli import main
from vidgen_ray.models.registry import describe
from vidgen_ray.plan import Assumptions, make_plan


def test_a_hand_worked_plan():
    # dit-b trains on 16 x 256 x 256 clips. Given: 8 GPUs measured at 50 samples/s each, batch 4 per GPU,
    # 1,000,000 clips at 8 fps, a checkpoint every 500 steps, 1,000 source frames/s per decode CPU, and the
    # default assumptions (30 fps sources at 8 Mbit/s, 1.25 decode headroom, 32-CPU decode nodes, 2 Gbit/s upload).
    plan = make_plan("dit-b", gpus=8, gpu="h100", clips=1_000_000, batch_per_gpu=4, checkpoint_every=500, fps=8.0,
                     decode_fps_per_cpu=1000.0, decode_source="given", gpu_samples_per_s=50.0)
    v = {f.name: f.value for f in plan.figures}
    assert v["samples/s, all GPUs"] == 400  # 8 x 50
    assert v["step time"] == pytest.approx(0.08)  # 4 / 50
    assert v["source frames to decode"] == pytest.approx(24_000)  # 400 clips/s x 16/8 s x 30 fps
    assert v["decode CPUs"] == 30  # ceil(24,000 x 1.25 / 1,000)
    assert v["decode nodes"] == 1  # ceil(30 / 32)
    assert v["object-storage reads"] == pytest.approx(800)  # 400 x 2 s x 8 Mbit/s / 8 bits = 800 MB/s
    assert v["clip cache"] == pytest.approx(3.145728)  # 1e6 x 16 x 256 x 256 x 3 bytes, in TB
    assert v["clip-cache reads"] == pytest.approx(1258.2912)  # 400 x 3.145728 MB
    params = describe("dit-b").params
    assert v["checkpoint size"] == pytest.approx(params * 16 / 1e9)
    assert v["checkpoint upload"] == pytest.approx(params * 16 / 1e9 * 8 / 2)  # GB x 8 bits / 2 Gbit/s
    assert v["checkpoint interval"] == pytest.approx(40.0)  # 500 x 0.08 s
    assert v["epoch"] == pytest.approx(1_000_000 / 400 / 3600)
    assert plan["samples/s per GPU"].source.startswith("measured") and not plan.warnings


def test_the_flops_estimate_and_the_warnings():
    flops = describe("dit-l").flops_per_sample
    plan = make_plan("dit-l", gpus=1, gpu="h200", assumptions=Assumptions(mfu=0.45), checkpoint_every=1)
    assert plan["samples/s per GPU"].value == pytest.approx(0.45 * 989e12 / (3 * flops))
    assert plan["samples/s per GPU"].source.startswith("estimate")
    # One step between checkpoints: the upload of a 24-layer model's checkpoint cannot keep up.
    assert any("outlasts the checkpoint interval" in w for w in plan.warnings)
    assert any("VAE's encoder" in w for w in plan.warnings)  # a latent preset: its FLOPs leave the encoder out
    with pytest.raises(ValueError, match="unknown --gpu"):
        make_plan("dit-b", gpus=1, gpu="tpu")


def test_the_command_prints_a_plan(capsys):
    assert main(["plan", "--preset", "dit-b", "--gpus", "64", "--clips", "2000000", "--json", "--mfu", "0.4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == 64 and out["assumptions"]["mfu"] == 0.4
    assert {f["name"] for f in out["figures"]} >= {"decode CPUs", "decode nodes", "clip cache", "checkpoint upload", "epoch"}


def test_the_plan_takes_a_gpu_checks_fastest_row_per_gpu(tmp_path, capsys):
    check = {"dry": False, "steps": [
        {"preset": "dit-b", "strategy": "ddp", "compile": False, "activation_checkpointing": False, "gpus": 8,
         "samples_per_s": 160.0, "device": "NVIDIA H100 80GB HBM3"},
        {"preset": "dit-b", "strategy": "fsdp2", "compile": True, "activation_checkpointing": False, "gpus": 8,
         "samples_per_s": 200.0, "device": "NVIDIA H100 80GB HBM3"},
        {"preset": "dit-b", "strategy": "deepspeed", "compile": False, "activation_checkpointing": False, "gpus": 8,
         "error": "OutOfMemoryError"},
        {"preset": "dit-l", "strategy": "ddp", "compile": False, "activation_checkpointing": False, "gpus": 8,
         "samples_per_s": 900.0, "device": "NVIDIA H100 80GB HBM3"}]}
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(check))
    assert main(["plan", "--preset", "dit-b", "--gpus", "64", "--gpu-check", str(path), "--json"]) == 0
    per_gpu = next(f for f in json.loads(capsys.readouterr().out)["figures"] if f["name"] == "samples/s per GPU")
    assert per_gpu["value"] == 25.0 and "fsdp2, compile True" in per_gpu["source"]  # 200 / 8, not dit-l's
    path.write_text(json.dumps({**check, "dry": True}))
    assert main(["plan", "--preset", "dit-b", "--gpus", "64", "--gpu-check", str(path)]) == 2
    assert "no GPU figure" in capsys.readouterr().err
