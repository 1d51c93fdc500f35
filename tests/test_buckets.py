"""Buckets of clip shapes (data/buckets.py): which bucket a probed video goes to, batch sizes that keep a
step's cost level, and one-shape batches out of a mixed stream."""

from __future__ import annotations

import numpy as np
import pytest

from vidgen_ray.data.buckets import Bucket, assign, batch_sizes, from_rule, parse

BUCKETS = [Bucket(8, 32, 32), Bucket(16, 24, 32), Bucket(8, 24, 32)]


def _video(width, height, duration):
    return {"width": width, "height": height, "duration": duration}


def test_a_video_goes_to_the_nearest_aspect_it_can_fill_then_the_largest():
    assert assign(_video(128, 128, 3.0), BUCKETS, fps=8.0, max_upscale=1.0) == 0  # square
    assert assign(_video(160, 120, 3.0), BUCKETS, fps=8.0, max_upscale=1.0) == 1  # 4:3, long enough for 16 frames
    assert assign(_video(160, 120, 1.5), BUCKETS, fps=8.0, max_upscale=1.0) == 2  # 4:3, too short for 16 frames
    assert assign(_video(30, 40, 3.0), BUCKETS, fps=8.0, max_upscale=1.0) is None  # would need upscaling
    assert assign(_video(30, 40, 3.0), BUCKETS, fps=8.0, max_upscale=1.2) is not None
    assert assign(_video(0, 0, 3.0), BUCKETS, fps=8.0, max_upscale=1.0) is None


def test_batch_sizes_keep_the_pixels_of_a_reference_batch():
    assert batch_sizes(BUCKETS, 4, Bucket(8, 32, 32)) == [4, 2, 5]
    assert batch_sizes([Bucket(64, 256, 256)], 2, Bucket(8, 32, 32)) == [1]  # never empty


def test_rules_and_config_lists_parse():
    rule = from_rule([1024], [1.0, 4 / 3], [8, 16], 4)
    assert rule == [Bucket(8, 32, 32), Bucket(16, 32, 32), Bucket(8, 28, 36), Bucket(16, 28, 36)]
    assert parse([[8, 32, 32], (16, 24, 32)]) == BUCKETS[:2]
    with pytest.raises(ValueError, match="twice"):
        parse([[8, 32, 32], [8, 32, 32]])
    with pytest.raises(ValueError, match="positive ints"):
        parse([[8, 32]])


class _Shard:
    """What ``bucket_batches`` reads from a Ray Train shard: ``iter_batches`` of numpy blocks."""

    def __init__(self, shapes):
        self.shapes = shapes

    def iter_batches(self, batch_size, **_):
        rows = []
        for i, (b, shape) in enumerate(self.shapes):
            rows.append({"video": np.full((*shape, 3), i, np.uint8).tobytes(), "shape": np.asarray(shape, np.int32),
                         "bucket": b, "label": i % 3, "caption": f"c{i}", "epoch": 0, "item": i, "row": 0})
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            yield {k: np.asarray([r[k] for r in chunk], dtype=object if k in ("video", "caption") else None)
                   for k in chunk[0]}


def test_a_mixed_stream_comes_out_in_one_shape_batches():
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.pipeline import bucket_batches

    cfg = DataConfig(buckets=((8, 32, 32), (16, 24, 32)))
    cfg.clip.frames, cfg.clip.height, cfg.clip.width = 8, 32, 32
    stream = [(0, (8, 32, 32)), (1, (16, 24, 32)), (0, (8, 32, 32)), (1, (16, 24, 32)), (0, (8, 32, 32))]
    batches = list(bucket_batches(_Shard(stream), 2, cfg))  # batch sizes: 2 and 1
    assert [(b["bucket"], tuple(b["video"].shape)) for b in batches] == [
        (1, (1, 16, 24, 32, 3)), (0, (2, 8, 32, 32, 3)), (1, (1, 16, 24, 32, 3))]
    assert batches[1]["items"].tolist() == [0, 2] and batches[1]["video"][1].float().mean() == 2
    assert batches[0]["pending"] == [(0, 0)] and batches[1]["pending"] == []  # read, not yet in a batch
    kept = list(bucket_batches(_Shard(stream), 2, cfg, drop_last=False))
    assert [b["bucket"] for b in kept] == [1, 0, 1, 0] and kept[-1]["items"].tolist() == [4]  # the partial one last


def test_a_bucketed_run_plans_its_steps_from_the_clips_its_batches_hold():
    from vidgen_ray.config import load_experiment
    from vidgen_ray.data.pipeline import Units
    from vidgen_ray.train.run import clips_per_micro_batch, make_plan

    cfg = load_experiment("dit-debug", sets=["data.source=/unused", "train.batch_size=4", "parallel.num_workers=2",
                                             "train.max_steps=100", "data.clip.frames=8",
                                             "data.buckets=[8x32x32,16x32x32]"])
    # 60 videos of 2 clips: 40 in the reference bucket (batches of 4), 80 clips in 16x32x32 (batches of 2).
    rows = [{"bucket": 0 if i < 20 else 1, "clips": 2} for i in range(60)]
    units = Units("video", rows, 2.0)
    per_micro = clips_per_micro_batch(cfg, units)
    assert per_micro == pytest.approx(120 / (40 / 4 + 80 / 2))  # 2.4 clips a micro-batch, not 4
    plan = make_plan(cfg, units, per_micro)
    assert plan.global_batch == 8 and plan.steps_per_epoch == int(120 // (2.4 * 2))
    # 100 steps x 4.8 clips = 480 clips = 4 epochs, + 1 for the split's remainder, + 1 for partial bucket batches
    assert plan.epochs == 6
    prepared = Units("shard", [{"uri": "x", "rows": 120}], 120.0)
    meta = {"summary": {"clips_by_bucket": {"8x32x32": 40, "16x32x32": 80}}}
    assert clips_per_micro_batch(cfg, prepared, meta) == pytest.approx(per_micro)


def test_the_resume_point_rereads_pending_clips_and_skips_trained_ones():
    from vidgen_ray.data.buckets import resume_point

    # Items 3-5 read; clip (4, 1) waits in a partial batch; everything else read was trained.
    trained = {3: {0, 1, 2}, 4: {0, 2}, 5: {0}}
    assert resume_point(trained, [(4, 1)]) == (4, {4: [0, 2], 5: [0]})
    assert resume_point(trained, []) == (5, {5: [0]})  # nothing pending: the last item read, less what was trained
    assert resume_point({}, []) == (0, {})
