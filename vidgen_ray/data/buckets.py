"""Buckets of clip shapes: one run trains on videos as they come, each at the (frames, height, width) that
fits it best, in batches of one shape (no padding), each batch costing about the same.

    python -c "from vidgen_ray.data.buckets import *; b = [Bucket(16, 32, 32), Bucket(8, 24, 32)]; \
print(assign({'width': 160, 'height': 120, 'duration': 1.2, 'status': 'kept'}, b, fps=8.0, max_upscale=1.0)); \
print(batch_sizes(b, 4, Bucket(16, 32, 32)))"

- ``data.buckets`` lists shapes (or ``data.bucket_rule`` expands pixel counts x aspect ratios x frame counts
  into them). Each kept video goes, by its probed (rotated) size and duration, to the bucket it fits best:
  among the buckets whose duration (frames / data.clip.fps) the video covers and which need no more than
  ``data.bucket_max_upscale`` times its size, the nearest in aspect ratio, then the one that keeps most of the
  video (frames x pixels). A video that fits none is dropped with reason ``no_bucket``, counted in the report
  like every other drop. Its clips are decoded straight to the bucket's shape (scaled to cover, centre crop).
- Batches: a bucket's batch size keeps the tokens of a batch near ``train.batch_size`` clips of the reference
  shape (``data.clip``): ``batch_size x reference pixels // bucket pixels`` (at least 1), so every step
  costs about the same. ``BucketBatcher`` groups a worker's stream by bucket and hands out a batch as soon as
  one bucket has enough clips; nothing is padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.frames * self.height * self.width

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def parse(buckets: Iterable) -> list[Bucket]:
    """``[[frames, height, width], ...]`` (config form) -> buckets, validated."""
    out = []
    for b in buckets:
        if isinstance(b, Bucket):
            out.append(b)
            continue
        if len(b) != 3 or min(int(v) for v in b) < 1:
            raise ValueError(f"data.buckets: {b!r} is not [frames, height, width] of positive ints")
        out.append(Bucket(int(b[0]), int(b[1]), int(b[2])))
    if len(set(out)) != len(out):
        raise ValueError("data.buckets lists a shape twice")
    return out


def from_rule(pixels: Iterable[int], aspects: Iterable[float], frames: Iterable[int], multiple: int) -> list[Bucket]:
    """Shapes of about ``pixels`` pixels a frame at each aspect ratio (width / height), sides rounded to a
    ``multiple`` (the model's patch x VAE compression), for each frame count: Open-Sora's bucket table."""
    out: list[Bucket] = []
    for p in pixels:
        for a in aspects:
            h = max(multiple, round(math.sqrt(p / a) / multiple) * multiple)
            w = max(multiple, round(h * a / multiple) * multiple)
            for f in frames:
                b = Bucket(int(f), int(h), int(w))
                if b not in out:
                    out.append(b)
    return out


def assign(row: dict, buckets: list[Bucket], fps: float, max_upscale: float) -> int | None:
    """Index of the bucket a probed video fits best, or None (see the module docstring)."""
    w, h, duration = row["width"], row["height"], row["duration"]
    if not (w and h):
        return None
    best, best_key = None, None
    for i, b in enumerate(buckets):
        if (b.frames - 1) / fps > duration:  # the clip's span must lie inside the video
            continue
        if max(b.height / h, b.width / w) > max_upscale:  # scaled to cover the bucket, then centre-cropped
            continue
        key = (abs(math.log((w / h) / b.aspect)), -b.pixels)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def batch_sizes(buckets: list[Bucket], batch_size: int, reference: Bucket) -> list[int]:
    """Clips a batch of each bucket holds: about the pixels (so tokens) of ``batch_size`` reference clips."""
    return [max(1, batch_size * reference.pixels // b.pixels) for b in buckets]


class BucketBatcher:
    """Groups rows by bucket: ``add`` returns the bucket's rows once it holds its batch size, else None."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.pending: dict[int, list] = {}

    def add(self, bucket: int, row) -> list | None:
        rows = self.pending.setdefault(bucket, [])
        rows.append(row)
        if len(rows) < self.sizes[bucket]:
            return None
        self.pending[bucket] = []
        return rows

    def leftovers(self) -> Iterator[tuple[int, list]]:
        """Partial batches at the end of a stream (validation reads them; training drops them)."""
        for bucket, rows in sorted(self.pending.items()):
            if rows:
                yield bucket, rows
        self.pending = {}


def resume_point(trained: dict[int, set[int]], pending: list[tuple[int, int]]) -> tuple[int, dict[int, list[int]]]:
    """Where one ordered worker's bucketed stream restarts exactly: (the stream item to start from, item -> the
    clips of it and of later items already trained, to skip). ``trained``: item -> clip indices trained (of
    items not yet behind the start); ``pending``: (item, clip) read but waiting in a bucket's partial batch. The
    restart reads the pending clips again, in stream order, so the buckets refill as they were."""
    start = min(pending)[0] if pending else (max(trained) if trained else 0)
    return start, {item: sorted(rows) for item, rows in sorted(trained.items()) if item >= start}
