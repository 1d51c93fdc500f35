"""The Ray Data pipeline end to end on the shared local Ray instance: probe + accounting, clip
streams, prepared datasets and the clip cache, from a local folder and through the S3 server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vidgen_ray import storage
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.data.pipeline import ClipCollate, StreamItems, clip_stream, decode_task_shape, probe_all, video_units
from vidgen_ray.data.prepare import load_prepared, prepare, probe_report, summarize, training_units
from vidgen_ray.data.synth import generate
from vidgen_ray.runtime import local_system_config

pytestmark = pytest.mark.ray


def small_cfg(source: str, **clip) -> DataConfig:
    cfg = DataConfig(source=source, files_per_task=2)
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    for k, v in clip.items():
        setattr(cfg.clip, k, v)
    cfg.augment.temporal_shift = 2
    return cfg


def test_probe_accounts_for_every_synthetic_file(ray_session, synth_dir: Path, tmp_path: Path):
    rows, summary = probe_report(small_cfg(str(synth_dir)), str(tmp_path / "report"))
    assert summary["listed"] == 21 and summary["kept"] == 16
    assert summary["dropped"] == {"resolution_too_low": 1, "too_short": 1, "unreadable": 2, "zero_bytes": 1}
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["listed"]
    report = pq.read_table(tmp_path / "report" / "report.parquet").to_pylist()
    assert len(report) == 21 and all(r["status"] in ("kept", "dropped") for r in report)
    assert all(r["reason"] for r in report if r["status"] == "dropped")
    assert json.loads((tmp_path / "report" / "report.json").read_text())["listed"] == 21


def test_real_clips_through_s3(ray_session, shared_videos: Path, s3_bucket: str):
    """All 26 real clips uploaded to SeaweedFS: listed, probed, accounted for and decoded from s3://."""
    src = storage.join(s3_bucket, "real")
    for path in sorted(shared_videos.glob("*")):
        if path.suffix != ".tsv":
            storage.write_bytes(storage.join(src, path.name), path.read_bytes())
    cfg = small_cfg(src, height=48, width=64)
    rows, labels = probe_all(cfg)
    summary = summarize(rows)
    assert summary["listed"] == 26
    assert summary["dropped"] == {"too_short": 2}  # the two 3-frame phone clips
    units = video_units((rows, labels), cfg)
    clips = clip_stream(units["train"], cfg, "train", decode_cpus=2).take_all()
    assert len(clips) == len(units["train"])
    for clip in clips:
        assert clip["video"].shape == (8, 48, 64, 3) and clip["video"].dtype == np.uint8
        assert clip["source_id"] in {r["source_id"] for r in units["train"].rows}


def test_prepare_writes_clips_report_and_marker_without_leakage(ray_session, synth_dir: Path, tmp_path: Path):
    cfg = small_cfg(str(synth_dir), clips_per_video=2)
    cfg.split.train, cfg.split.val, cfg.split.test = 0.6, 0.2, 0.2
    out = str(tmp_path / "prepared")
    marker = prepare(cfg, out)
    summary = marker["summary"]
    assert summary["kept"] == 16 and sum(summary["clips"].values()) == 2 * 16
    assert marker["train_frames"] == 8 + 2  # extra decoded frames for the temporal shift
    units, meta = load_prepared(out, cfg)
    sources: dict[str, set] = {"train": set(), "val": set(), "test": set()}
    for split in ("train", "val", "test"):
        for shard in units[split].rows:
            table = pq.read_table(shard["uri"])
            assert set(table.column("frames").to_pylist()) == {marker["train_frames"] if split == "train" else 8}
            sources[split] |= set(table.column("source_id").to_pylist())
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"]) and not (sources["val"] & sources["test"])
    assert len(meta["mean"]) == 3 and all(0 < s < 1 for s in meta["std"])
    # Streaming from shards: train clips are augmented down to 8 frames; every clip appears once per epoch.
    train = clip_stream(units["train"], cfg, "train", epochs=2, decode_cpus=1).take_all()
    assert len(train) == 2 * summary["clips"]["train"] and {r["epoch"] for r in train} == {0, 1}
    assert all(r["video"].shape == (8, 32, 32, 3) for r in train)


def test_clip_cache_hits_on_the_second_run(ray_session, synth_dir: Path, tmp_path: Path):
    cfg = small_cfg(str(synth_dir))
    cfg.cache = str(tmp_path / "cache")
    units1, meta1 = training_units(cfg)
    keys = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(keys) == 1 and units1["train"].kind == "shard"
    marker = (tmp_path / "cache" / keys[0] / "prepared.json").read_text()
    units2, _ = training_units(cfg)
    assert (tmp_path / "cache" / keys[0] / "prepared.json").read_text() == marker  # reused, not rewritten
    cfg.clip.fps = 4.0  # a different preprocessing config gets a different key
    training_units(cfg)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_synth_and_prepare_through_s3(ray_session, s3_bucket: str):
    src, out = storage.join(s3_bucket, "synth"), storage.join(s3_bucket, "prepared")
    generate(src, videos=8, seed=5)
    marker = prepare(small_cfg(src), out)
    assert marker["summary"]["listed"] == 13 and marker["summary"]["kept"] == 8
    assert storage.exists(storage.join(out, "prepared.json")) and storage.exists(storage.join(out, "report.parquet"))
    units, _ = load_prepared(out, small_cfg(src))
    assert sum(s["rows"] for split in units.values() for s in split.rows) == 8


def test_stream_ids_come_lazily_in_bounded_read_tasks():
    # A large bucket x many epochs: the read tasks Ray Data builds up front stay few and cheap.
    assert len(StreamItems(10**9, 2).get_read_tasks(5 * 10**8)) == 4096
    # Every id exactly once, in order, in blocks of at most per_block, however tasks are cut.
    for n, per_block, max_tasks, parallelism in ((11, 2, 3, 6), (11, 2, 4096, 6), (7, 3, 2, 1), (1, 4, 8, 8)):
        tasks = StreamItems(n, per_block, max_tasks).get_read_tasks(parallelism)
        blocks = [b["id"].to_pylist() for task in tasks for b in task()]
        assert [i for b in blocks for i in b] == list(range(n)) and max(map(len, blocks)) <= per_block
        assert len(tasks) <= min(max_tasks, parallelism) and sum(t.metadata.num_rows for t in tasks) == n


def test_decode_tasks_share_cpus_within_the_cpus_given():
    cfg = DataConfig(source="x")  # 1.5 decode tasks per CPU by default
    per_task, tasks = decode_task_shape(cfg, 2)
    assert tasks == 3 and tasks * per_task <= 2  # Ray counts CPUs in 1e-4 units: 3 x 0.6666 fits in 2
    assert decode_task_shape(cfg, 1)[1] == 1 and decode_task_shape(cfg, 64)[1] == 96
    assert decode_task_shape(cfg, None) == (per_task, None)  # Ray Data sizes the pool from the free CPUs
    one = DataConfig(source="x", decode_tasks_per_cpu=1.0)
    assert decode_task_shape(one, 2) == (1.0, 2)
    for bad in (0.5, 5.0):
        with pytest.raises(ValueError, match="decode_tasks_per_cpu"):
            DataConfig(source="x", decode_tasks_per_cpu=bad).validate()


def test_local_instance_keeps_a_decode_pool_warm_between_streams(ray_session, tmp_path: Path):
    """1.5 decode tasks per CPU need more idle processes than Ray keeps by default (one per CPU); the
    local instance keeps them, so the next stream (a validation pass, a sweep trial) finds its pool
    started instead of paying a worker start and the torch and PyAV imports again."""
    import os
    import time

    cpus = int(ray_session.cluster_resources()["CPU"])
    assert local_system_config(cpus, 1.5) == {"num_workers_soft_limit": math.ceil(cpus * 1.5)}
    assert local_system_config(cpus, 1.0) == {}  # Ray's own default is one per CPU

    @ray_session.remote(num_cpus=decode_task_shape(DataConfig(source="x"), 1)[0])
    def pid(barrier: str, n: int) -> int:
        # All n in flight at once, so each round takes n processes (a barrier of files: one node).
        Path(barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(barrier)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return os.getpid()

    def round_of(n: int, name: str) -> set[int]:
        (tmp_path / name).mkdir()
        return set(ray_session.get([pid.remote(str(tmp_path / name), n) for _ in range(n)]))

    n = decode_task_shape(DataConfig(source="x"), cpus)[1]
    first = round_of(n, "first")
    assert len(first) == n
    time.sleep(3)  # Ray kills idle workers above its soft limit after 1 s
    again = round_of(n, "again")
    assert again == first, f"{len(again - first)} of {n} decode processes were started anew"


def test_resumed_stream_starts_at_the_saved_item(ray_session, synth_dir: Path):
    cfg = small_cfg(str(synth_dir))
    units = video_units(probe_all(cfg), cfg)["train"]
    full = clip_stream(units, cfg, "train", epochs=2, decode_cpus=1).take_all()
    tail = clip_stream(units, cfg, "train", epochs=2, start_item=5, decode_cpus=1).take_all()
    assert sorted(r["item"] for r in tail) == list(range(5, 2 * len(units)))
    by_item = {r["item"]: r for r in full}
    for r in tail:  # the same item decodes to the same clip (windows and augmentation are seeded)
        np.testing.assert_array_equal(r["video"], by_item[r["item"]]["video"])


def test_streaming_split_feeds_torch_batches(ray_session, synth_dir: Path):
    """Two consumers (as two Train workers would be) read equal shards as torch batches."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = small_cfg(str(synth_dir))
    units = video_units(probe_all(cfg), cfg)["train"]
    shards = clip_stream(units, cfg, "train", epochs=1, decode_cpus=1).streaming_split(2, equal=True)

    def consume(shard) -> int:
        n = 0
        for batch in shard.iter_torch_batches(batch_size=2, collate_fn=ClipCollate(), drop_last=True):
            assert batch["video"].dtype == torch.uint8 and tuple(batch["video"].shape) == (2, 8, 32, 32, 3)
            assert len(batch["caption"]) == 2 and batch["label"].dtype == torch.int64
            x = Normalizer("minus_one_one")(batch["video"])
            assert tuple(x.shape) == (2, 3, 8, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
            n += 1
        return n

    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(consume, shards))
    assert counts[0] == counts[1] >= 1  # equal shards: every worker steps the same number of times
    assert sum(counts) * 2 <= len(units) * cfg.clip.clips_per_video


def test_normalizer_modes_round_trip():
    video = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    for norm in (Normalizer("minus_one_one"), Normalizer("zero_one"), Normalizer("mean_std", (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))):
        x = norm(video)
        assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3, 4, 8, 8)
        torch.testing.assert_close(norm.inverse(x), video, atol=1, rtol=0)
    with pytest.raises(ValueError, match="std must be positive"):
        Normalizer("mean_std", (0.5,) * 3, (0.0, 1.0, 1.0))


def test_a_long_file_is_cut_into_segments_that_decode_the_same_windows(ray_session, synth_dir: Path):
    from vidgen_ray.data.decode import even_windows
    from vidgen_ray.data.pipeline import Units, segment_units

    cfg = DataConfig(source=str(synth_dir))
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 4, 8.0, 32, 32
    rows, labels = probe_all(cfg)
    video = max((r for r in rows if r["status"] == "kept"), key=lambda r: r["duration"])
    clip_s = cfg.clip.frames / cfg.clip.fps
    n = int(video["duration"] // clip_s)  # back-to-back windows over the whole file
    assert n >= 5, video["duration"]
    whole = Units("video", [{**video, "clips": n}], n, label_names=labels)
    cut = segment_units(whole, max_clips=2)
    assert len(cut) == -(-n // 2) and sum(r["clips"] for r in cut.rows) == n
    # The segments tile the file: consecutive, no gap, no overlap, ending at its duration.
    assert cut.rows[0]["t0"] == 0 and cut.rows[-1]["t0"] + cut.rows[-1]["span"] == pytest.approx(video["duration"])
    for a, b in zip(cut.rows, cut.rows[1:]):
        assert b["t0"] == pytest.approx(a["t0"] + a["span"])
    starts = [r["t0"] + s for r in cut.rows for s in even_windows(r["span"], clip_s, r["clips"])]
    assert all(b - a >= clip_s - 1e-9 for a, b in zip(starts, starts[1:]))  # windows never overlap
    assert segment_units(whole, max_clips=0) is whole and segment_units(whole, max_clips=n) is whole

    # Decoded through the pipeline, the segments give every clip, at its start time in the file.
    clips = list(clip_stream(cut, cfg, "val", decode_cpus=2).iter_rows())
    assert len(clips) == n
    assert sorted(float(c["start_s"]) for c in clips) == pytest.approx(sorted(starts), abs=1e-6)
    assert all(c["video"].shape == (4, 32, 32, 3) for c in clips)
