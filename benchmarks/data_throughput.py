"""Data pipeline throughput against the decoder's own speed, side by side in one run.

    python benchmarks/data_throughput.py                       # the real clips of ../shared/videos
    python benchmarks/data_throughput.py --src s3://bucket/videos --json out.json

On the same files and the same clip spec (16 frames at 8 fps, 128x128, windows tiling each video so
every frame is decoded once), frames per second of source video for:

    (a) raw      PyAV decode, no pixel conversion, one thread         -- the decoder's ceiling
    (b) pyav_rgb PyAV decode + full-size RGB conversion, one thread   -- what naive loaders do
    (c) pipeline this project's Ray Data pipeline (probe results in hand) on 1 and on 2 CPUs
                 (data.decode_workers), with data.decode_tasks_per_cpu as configured (1.5: 1 task on
                 1 CPU, 3 on 2) and, side by side, at 1 task per CPU; one stream of --epochs passes
                 over the files, as training reads it (a stream's start and its last task are paid
                 once per stream, not per epoch); clips consumed on the driver, after a warm-up pass;
                 the local instance keeps the pool's processes between streams, as a training run
                 does between validation passes (runtime.local_system_config)
    (d) pyav_rgb in 2 plain processes (no Ray), one file per call      -- the machine's own 2-CPU
                 scaling, the ceiling that (c) on 2 CPUs is compared against

"frames" are source frames decoded, so all variants count the same work per pass over the files. Each
variant runs --rounds times, interleaved with the others, and its fastest pass counts. Peak memory is
the largest sum of RSS over the driver and all Ray worker processes while the variants run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import av
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from vidgen_ray import storage  # noqa: E402
from vidgen_ray.data.config import DataConfig  # noqa: E402
from vidgen_ray.data.pipeline import Units, clip_stream, configure_data_context, decode_task_shape, probe_all, segment_units  # noqa: E402
from vidgen_ray.data.probe import open_video  # noqa: E402


def decode_all(rows: list[dict], rgb: bool) -> tuple[int, float]:
    t0 = time.perf_counter()
    frames = _decode(rows, rgb)
    return frames, time.perf_counter() - t0


def decode_all_in_processes(rows: list[dict], processes: int) -> tuple[int, float]:
    """(b)'s work over ``processes`` plain processes, one file per call, biggest first: what the
    machine itself gives for more CPUs, with no Ray at all. Spawned, not forked (Ray runs here)."""
    import multiprocessing

    ordered = sorted(rows, key=lambda r: -r["size"])
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_decode_rgb_one, ordered[:processes])  # processes started and imports done
        t0 = time.perf_counter()
        frames = sum(pool.map(_decode_rgb_one, ordered, chunksize=1))
        return frames, time.perf_counter() - t0


def _decode_rgb_one(row: dict) -> int:
    return _decode([row], rgb=True)


def _decode(rows: list[dict], rgb: bool) -> int:
    frames = 0
    for r in rows:
        with open_video(r["uri"], r["size"]) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            for f in c.decode(s):
                if rgb:
                    f.to_ndarray(format="rgb24")
                frames += 1
    return frames


class PeakRSS:
    """Samples the summed RSS of this process and every Ray worker process."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "ray::" in cmd or "default_worker.py" in cmd:
                    total += p.info["memory_info"].rss
            self.peak = max(self.peak, total / 2**20)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_pipeline(units: Units, cfg: DataConfig, cpus: int, epochs: int) -> tuple[int, float]:
    """One stream of ``epochs`` passes, decoded on ``cpus`` CPUs: (clips, seconds)."""
    t0 = time.perf_counter()
    clips = 0
    # "val": even windows, no augmentation, so every pass does the same work; unordered, as the
    # train stream is (an evaluation split keeps its order, which this benchmark does not need).
    ds = clip_stream(units, cfg, "val", epochs=epochs, decode_cpus=cpus)
    ds.context.execution_options.preserve_order = False
    for batch in ds.iter_batches(batch_size=None):
        clips += len(batch["video"])
    return clips, time.perf_counter() - t0


def _with_fast_poll(fn, *args):
    """Ray Data 2.60's executor waits for *all* active tasks with a 0.1 s timeout before it sees a
    finished one (streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S), so with 2+ tasks in
    flight a free slot idles up to 100 ms per task. Shortening it shows what that costs."""
    import ray.data._internal.execution.streaming_executor_state as state

    saved = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = 0.01
    try:
        return fn(*args)
    finally:
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = saved


def best_of(rounds: int, variants: dict) -> dict:
    """Each variant ``rounds`` times, interleaved (a, b, c, a, b, c, ...) so a slow spell of a shared
    machine hits all of them alike; the fastest pass of each counts (as timeit does: noise only ever
    adds time). Returns name -> (result of the fastest pass, seconds)."""
    best: dict = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            out = fn()
            if name not in best or out[1] < best[name][1]:
                best[name] = (out, out[1])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=str(REPO.parent / "shared" / "videos"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--max-clips-per-task", type=int, default=DataConfig.max_clips_per_task,
                        help="cut longer files into segments of this many clips (0: never)")
    parser.add_argument("--files-per-task", type=int, default=DataConfig.files_per_task,
                        help="decode units per Ray task (data.files_per_task)")
    parser.add_argument("--tasks-per-cpu", type=float, default=DataConfig.decode_tasks_per_cpu,
                        help="data.decode_tasks_per_cpu for (c); (c) at 1 task per CPU runs beside it")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the files in each pipeline stream")
    parser.add_argument("--rounds", type=int, default=3, help="passes of each variant; the fastest counts")
    parser.add_argument("--poll-diagnostic", action="store_true",
                        help="also run (c) on 2 CPUs with Ray Data's task-completion poll at 10 ms instead of "
                             "100 ms (patches a Ray internal; a diagnostic, never what the project runs)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import ray

    from vidgen_ray.runtime import init_ray

    init_ray(num_cpus=2, include_dashboard=False, for_tests=True, workers_per_cpu=args.tasks_per_cpu)
    configure_data_context()
    cfg = DataConfig(source=args.src, files_per_task=args.files_per_task, max_clips_per_task=args.max_clips_per_task,
                     decode_tasks_per_cpu=args.tasks_per_cpu)
    cfg.validate()
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = args.frames, args.fps, args.size, args.size
    cfg.clip.clips_per_video = 1
    one_per_cpu = dataclasses.replace(cfg, decode_tasks_per_cpu=1.0)  # (c) at 1 task per CPU, beside
    rows, labels = probe_all(cfg)
    kept = [r for r in rows if r["status"] == "kept"]
    clip_s = args.frames / args.fps
    # Tile each video with back-to-back windows, so one forward decode covers every frame once.
    tiled = [{**r, "clips": max(1, int(r["duration"] // clip_s))} for r in kept]
    # Long files are cut into segments of data.max_clips_per_task clips (as video_units does), and the
    # costliest units (pixels x frames) go first: no straggler at the end.
    units = segment_units(Units("video", tiled, sum(r["clips"] for r in tiled) / len(tiled), label_names=labels),
                          cfg.max_clips_per_task)
    units.rows.sort(key=lambda r: -r["width"] * r["height"] * r["frames"] * r.get("span", r["duration"]) / r["duration"])
    total_frames = sum(r["frames"] for r in kept)
    print(f"{len(kept)} videos in {len(units)} decode units, {total_frames} frames, {sum(r['clips'] for r in tiled)} clips of "
          f"{args.frames}x{args.size}x{args.size} @ {args.fps} fps")

    shapes = {cpus: decode_task_shape(cfg, cpus) for cpus in (1, 2)}
    print("decode tasks: " + ", ".join(f"{c} CPU(s) -> {n} x {per} CPU" for c, (per, n) in shapes.items())
          + f"; at 1 per CPU: 2 x 1 CPU; {args.epochs} epoch(s) per stream")
    run_pipeline(units, cfg, 2, 1)  # warm-up: worker processes started, imports done, files in page cache
    E = args.epochs
    with PeakRSS() as rss:
        best = best_of(args.rounds, {
            "raw": lambda: decode_all(kept, rgb=False),
            "rgb": lambda: decode_all(kept, rgb=True),
            "rgb_2proc": lambda: decode_all_in_processes(kept, 2),
            "pipe_1": lambda: run_pipeline(units, cfg, 1, E),
            "pipe_2": lambda: run_pipeline(units, cfg, 2, E),
            "pipe_2_one_per_cpu": lambda: run_pipeline(units, one_per_cpu, 2, E),
            **({"pipe_2_poll10ms": lambda: _with_fast_poll(run_pipeline, units, cfg, 2, E)} if args.poll_diagnostic else {}),
        })
    raw_fps, rgb_fps, rgb2_fps = (best[k][0][0] / best[k][1] for k in ("raw", "rgb", "rgb_2proc"))
    expected_clips = E * sum(r["clips"] for r in tiled)
    results = {}
    for name in [k for k in best if k.startswith("pipe_")]:
        (clips, seconds), _ = best[name]
        if clips != expected_clips:  # a fast pass that lost clips would be a false figure
            raise SystemExit(f"the pipeline ({name}) gave {clips} clips, expected {expected_clips}")
        results[name] = (clips, seconds, E * total_frames / seconds)
    one, two = results["pipe_1"], results["pipe_2"]
    figures = {
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, ray {ray.__version__}, av {av.__version__}",
        "videos": len(kept),
        "files_per_task": cfg.files_per_task,
        "decode_tasks_per_cpu": cfg.decode_tasks_per_cpu,
        "decode_tasks_1cpu": shapes[1][1],
        "decode_tasks_2cpu": shapes[2][1],
        "epochs_per_stream": E,
        "rounds": args.rounds,
        "frames": total_frames,  # per pass over the files
        "clips": expected_clips,  # per stream (epochs_per_stream passes)
        "raw_fps": raw_fps,
        "pyav_rgb_fps": rgb_fps,
        "pyav_rgb_fps_2proc": rgb2_fps,
        "pipeline_fps_1cpu": one[2],
        "pipeline_fps_2cpu": two[2],
        "pipeline_fps_2cpu_one_task_per_cpu": results["pipe_2_one_per_cpu"][2],
        "clips_per_s_1cpu": one[0] / one[1],
        "clips_per_s_2cpu": two[0] / two[1],
        "peak_rss_mb": rss.peak,
        "ratio_pipeline_1cpu_vs_pyav_rgb": one[2] / rgb_fps,
        "ratio_pipeline_2cpu_vs_1cpu": two[2] / one[2],
        "ratio_pipeline_2cpu_one_task_per_cpu_vs_1cpu": results["pipe_2_one_per_cpu"][2] / one[2],
        "ratio_machine_2proc_vs_1proc": rgb2_fps / rgb_fps,
        "ratio_pipeline_2cpu_vs_machine_2proc": two[2] / rgb2_fps,
    }
    print(f"{'':24s}{'frames/s':>10s}  ratio")
    print(f"{'(a) raw decode':24s}{raw_fps:10.0f}  {raw_fps / rgb_fps:5.2f}x of (b)")
    print(f"{'(b) decode + full RGB':24s}{rgb_fps:10.0f}  1.00x")
    print(f"{'(c) pipeline, 1 CPU':24s}{one[2]:10.0f}  {figures['ratio_pipeline_1cpu_vs_pyav_rgb']:5.2f}x of (b)  (target >= 0.8)")
    print(f"{'(c) pipeline, 2 CPUs':24s}{two[2]:10.0f}  {figures['ratio_pipeline_2cpu_vs_1cpu']:5.2f}x of 1 CPU (target >= 1.7)")
    print(f"{'(c) 2 CPUs, 1 task/CPU':24s}{results['pipe_2_one_per_cpu'][2]:10.0f}  "
          f"{figures['ratio_pipeline_2cpu_one_task_per_cpu_vs_1cpu']:5.2f}x of 1 CPU (data.decode_tasks_per_cpu=1)")
    if "pipe_2_poll10ms" in best:
        figures["pipeline_fps_2cpu_poll10ms"] = results["pipe_2_poll10ms"][2]
        figures["ratio_pipeline_2cpu_poll10ms_vs_1cpu"] = results["pipe_2_poll10ms"][2] / one[2]
        print(f"{'(c) 2 CPUs, 10 ms poll':24s}{results['pipe_2_poll10ms'][2]:10.0f}  "
              f"{figures['ratio_pipeline_2cpu_poll10ms_vs_1cpu']:5.2f}x of 1 CPU (diagnostic: Ray Data's completion poll shortened)")
    print(f"{'(d) (b) in 2 processes':24s}{rgb2_fps:10.0f}  {figures['ratio_machine_2proc_vs_1proc']:5.2f}x of (b)  (the machine's own 2-CPU scaling, no Ray)")
    print(f"peak RSS (driver + Ray workers): {figures['peak_rss_mb']:.0f} MiB")
    if args.json:
        storage.write_text(args.json, json.dumps(figures, indent=2)) if "://" in args.json else _write_local(args.json, figures)


def _write_local(path: str, figures: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
