"""The data benchmark runs end to end and writes the figures the issue names (a smoke run: one
round on the small synthetic set, in its own Ray instance; the figures themselves are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_data_benchmark_writes_its_figures(synth_dir: Path, tmp_path: Path):
    out = tmp_path / "data.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_throughput.py"), "--src", str(synth_dir), "--rounds", "1", "--epochs", "2",
         "--frames", "8", "--size", "64", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("raw_fps", "pyav_rgb_fps", "pipeline_fps_1cpu", "pipeline_fps_2cpu", "peak_rss_mb", "pyav_rgb_fps_2proc"):
        assert figures[key] > 0, key
    # The 16 good videos were kept (the 5 broken ones dropped), and the benchmark exits non-zero when
    # a pipeline pass yields fewer clips than the windows tiling those videos.
    assert figures["videos"] == 16 and figures["frames"] > 0 and figures["clips"] >= 2 * 16
    # 1.5 decode tasks per CPU: one task on 1 CPU, three on 2; the 1-task-per-CPU variant ran beside.
    assert (figures["decode_tasks_1cpu"], figures["decode_tasks_2cpu"], figures["epochs_per_stream"]) == (1, 3, 2)
    assert figures["pipeline_fps_2cpu_one_task_per_cpu"] > 0
    assert figures["ratio_pipeline_2cpu_vs_1cpu"] == figures["pipeline_fps_2cpu"] / figures["pipeline_fps_1cpu"]
    assert "(c) pipeline, 2 CPUs" in proc.stdout
