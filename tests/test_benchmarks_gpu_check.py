"""The one-shot GPU check keeps working without a GPU: ``--dry`` runs every path CPU-sized (the step grid
over DDP / FSDP2 / DeepSpeed with compile and activation checkpointing, the Ray pipeline run with its
data wait and checkpoint stalls, Serve latency). Its GPU figures come from a GPU machine (BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_dry_gpu_check_runs_every_path(ray_session, tmp_path: Path):
    out = tmp_path / "gpu_check.json"
    figures = _gpu_check().main(["--dry", "--json", str(out)])
    assert json.loads(out.read_text())["steps"] == figures["steps"]
    assert "steps_error" not in figures, figures.get("steps_error")
    rows = figures["steps"]
    assert {r["strategy"] for r in rows} == {"ddp", "fsdp2", "deepspeed"}
    assert any(r["compile"] for r in rows) and any(r["activation_checkpointing"] for r in rows)
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert r["samples_per_s"] > 0 and r["device"].startswith("cpu"), r
    assert "pipeline_error" not in figures, figures.get("pipeline_error")
    pipeline = figures["pipeline"]
    assert 0 <= pipeline["data_wait_fraction"] <= 1 and pipeline["samples_per_s"] > 0
    assert pipeline["checkpoint_stalls_s"] and all(s > 0 for s in pipeline["checkpoint_stalls_s"])
    points = figures["serve"]["points"]
    assert [p["concurrency"] for p in points] == [1, 4]
    assert all(0 < p["p50_ms"] <= p["p95_ms"] and p["error_rate"] == 0 for p in points), points


@pytest.mark.gloo
def test_the_gpu_checks_sequence_parallel_row_runs_on_a_pair_and_is_skipped_where_gpus_do_not_divide():
    grid = _gpu_check().step_grid([("dit-debug", "fsdp2", False, False, 2), ("dit-debug", "ddp", False, False, 4)], 2,
                                  {"dry": True, "codec": "stand-in", "deadline": float("inf"), "warmup": 1, "steps": 1,
                                   "batch": {"dit-debug": 2}})
    measured, skipped = grid
    assert measured["sequence_parallel"] == 2 and measured["samples_per_s"] > 0 and "error" not in measured, measured
    assert "needs a multiple of 4" in skipped["skipped"]
