"""Buckets end to end on the shared local Ray instance: the probe puts every video in a bucket or drops it as
``no_bucket`` (accounted), ``prepare`` decodes each clip straight to its bucket's shape and counts clips per
bucket, and a DiT trains on 2 workers from the mixed shapes in one-shape batches."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tracker_files
from conftest import tiny_experiment
from vidgen_ray import storage
from vidgen_ray.checkpoints import read_meta
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.prepare import prepare, probe_report

pytestmark = [pytest.mark.ray, pytest.mark.gloo]

# At 8 fps: 16 frames need 1.875 s of video. The synthetic set: 128x128 (3 videos), 4:3 at 96x128 (5),
# 120x160 (3), 144x192 (3), 180x240 (2, one of 1.52 s), plus 5 broken files.
MIXED = ((8, 32, 32), (16, 24, 32), (8, 24, 32))


def _cfg(source, buckets) -> DataConfig:
    cfg = DataConfig(source=str(source), files_per_task=2, buckets=buckets)
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    cfg.clip.clips_per_video = 3
    cfg.split.train, cfg.split.val, cfg.split.test, cfg.split.salt = 0.7, 0.3, 0.0, "d"
    return cfg


def test_videos_that_fit_no_bucket_are_dropped_and_counted(ray_session, synth_dir: Path):
    # Without upscaling, a 96x128 video cannot fill 112x112 or 120x160.
    rows, summary = probe_report(_cfg(synth_dir, ((8, 112, 112), (8, 120, 160))))
    assert summary["dropped"]["no_bucket"] == 5
    assert all(r["width"] == 128 and r["height"] == 96 for r in rows if r["reason"] == "no_bucket")
    assert summary["videos_by_bucket"] == {"8x112x112": 3, "8x120x160": 8}
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["listed"]


def test_a_dit_trains_on_mixed_shapes_in_one_shape_batches(ray_session, synth_dir: Path, tmp_path: Path):
    from vidgen_ray.train.run import train

    out = tmp_path / "prepared"
    marker = prepare(_cfg(synth_dir, MIXED), str(out), rows_per_shard=3)  # a shard a video: items mix the buckets
    by_bucket = marker["summary"]["clips_by_bucket"]
    assert set(by_bucket) == {"8x32x32", "16x24x32", "8x24x32"} and sum(by_bucket.values()) == sum(marker["summary"]["clips"].values())
    assert marker["summary"]["videos_by_bucket"]["8x32x32"] == 3  # the square ones
    stored = set()
    for entry in storage.list_files(str(out / "train"), extensions=(".parquet",)):
        t = pq.read_table(entry.uri, columns=["frames", "height", "width", "bucket"]).to_pylist()
        stored |= {(r["bucket"], (r["frames"], r["height"], r["width"])) for r in t}
    assert all(MIXED[b] == shape for b, shape in stored) and len(stored) >= 2, stored  # decoded straight to its bucket

    buckets = "[" + ",".join("x".join(map(str, b)) for b in MIXED) + "]"
    cfg = tiny_experiment("dit-debug", out, str(tmp_path), "dit-buckets", "parallel.strategy=ddp",
                          f"data.buckets={buckets}", "train.val_every=3", "train.max_steps=6", "data.clip.clips_per_video=3",
                          "train.batch_size=1",  # batch sizes 1, 1, 1: each clip is a batch, in stream order
                          "data.ordered=true")  # the same shards first in every run (not a lucky draw)
    result = train(cfg)
    state = read_meta(result.checkpoint.path)["state"]
    assert state["step"] == 6 and 0 < result.metrics["val_loss"] < 1e3
    # Every step logged (train.log_every=1) rank 0's step time under the bucket its batch had. Which shards
    # rank 0 gets depends on timing (Ray Data's split), so how many shapes it saw does too: the 1-worker run
    # below, whose order is fixed, checks that several ran.
    events = tracker_files.tensorboard(tmp_path / "dit-buckets" / "tensorboard")
    per_bucket = {tag.removeprefix("perf/step_time_s/") for tag in events.Tags()["scalars"] if tag.startswith("perf/step_time_s/")}
    assert per_bucket and per_bucket <= {"x".join(map(str, shape)) for _, shape in stored}, (per_bucket, stored)


def test_a_bucketed_run_resumes_to_the_clip(ray_session, synth_dir: Path, tmp_path: Path):
    # One ordered worker on raw videos in three buckets (batches of 2, 1 and 2 clips): steps end with clips
    # waiting in partial batches. A run stopped at step 5 and resumed reproduces the uninterrupted losses: the
    # restart reads the pending clips again and skips the ones trained past them.
    from vidgen_ray.train.run import train

    buckets = "[" + ",".join("x".join(map(str, b)) for b in MIXED) + "]"
    sets = ("parallel.num_workers=1", "parallel.strategy=none", "data.ordered=true", "train.num_samples=0",
            f"data.buckets={buckets}", "data.clip.clips_per_video=3", "train.schedule.kind=constant",
            "train.schedule.warmup_steps=0", "train.checkpoint_every=5", "train.val_every=0")

    def history(result):
        return read_meta(result.checkpoint.path)["state"]["history"]

    whole = train(tiny_experiment("dit-debug", synth_dir, str(tmp_path), "whole", *sets, "train.max_steps=10"))
    first = tiny_experiment("dit-debug", synth_dir, str(tmp_path), "halves", *sets, "train.max_steps=5")
    head = train(first)
    state = read_meta(head.checkpoint.path)["state"]
    assert state["skip"], state  # clips trained past the restart point (a clip waited in a partial batch)
    first.train.max_steps = 10
    resumed = train(first)
    assert read_meta(resumed.checkpoint.path)["state"]["resumes"] == 1
    assert history(resumed) == history(whole), f"resumed {history(resumed)}\nwhole   {history(whole)}"
    # One ordered worker: its 10 steps ran batches of several shapes (each logged its bucket's step time).
    events = tracker_files.tensorboard(tmp_path / "whole" / "tensorboard")
    shapes = {tag.removeprefix("perf/step_time_s/") for tag in events.Tags()["scalars"] if tag.startswith("perf/step_time_s/")}
    assert len(shapes - {"mixed"}) >= 2, shapes
    for shape in shapes - {"mixed"}:  # and its samples and tokens a second
        rate = events.Scalars(f"perf/samples_per_s/{shape}")[-1].value
        tokens = events.Scalars(f"perf/tokens_per_s/{shape}")[-1].value
        assert rate > 0 and tokens > rate, (shape, rate, tokens)
