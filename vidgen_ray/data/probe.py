"""Probe one video and decide whether it is kept: container, codec, size, rotation, timing, audio.

    python -c "from vidgen_ray.data.probe import probe; from vidgen_ray.data.config import CleanRules; \
print(probe('../shared/videos/moviepy_fire2.mp4', CleanRules(), 1.0))"

Nothing here raises for a bad file: every failure becomes a ``reason`` in the result, so the
accounting identity (kept + dropped by reason = listed) always holds.
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterator

import av
import numpy as np

from vidgen_ray import storage
from vidgen_ray.data.config import CleanRules

# Dropping reasons, in the order the rules are checked.
REASONS = (
    "zero_bytes",
    "unreadable",
    "no_video_stream",
    "codec_not_allowed",
    "undecodable",
    "resolution_too_low",
    "resolution_too_high",
    "too_short",
    "no_bucket",  # data.buckets is set and the video fits none of them (data/buckets.py)
)


class _ReadableStream(io.RawIOBase):
    """A pyarrow random-access file as a Python raw stream, so PyAV can read and seek it."""

    def __init__(self, f) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


@contextlib.contextmanager
def open_video(uri: str, size: int | None = None, max_inmemory_mb: int = 512) -> Iterator[av.container.InputContainer]:
    """Open a video for decoding wherever it lives.

    Local files go to FFmpeg by path. Remote objects up to ``max_inmemory_mb`` are fetched with one
    GET (FFmpeg's small reads would each become a ranged request); larger ones are streamed through
    an 8 MiB read buffer.
    """
    local = storage.local_path(uri)
    if local is not None:
        container = av.open(local, mode="r")
    else:
        size = storage.size(uri) if size is None else size
        if size <= max_inmemory_mb * 2**20:
            container = av.open(io.BytesIO(storage.read_bytes(uri)), mode="r")
        else:
            raw = _ReadableStream(storage.open_input(uri))
            container = av.open(io.BufferedReader(raw, buffer_size=8 * 2**20), mode="r")
    try:
        yield container
    finally:
        container.close()


def _frame_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> np.ndarray:
    """Presentation times (s, from the stream's start) of every video packet, by demuxing only."""
    tb = float(stream.time_base)
    pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    if not pts:
        return np.zeros(0)
    times = np.sort(np.asarray(pts, dtype=np.float64)) * tb
    return times - times[0]


def probe(uri: str, rules: CleanRules, min_duration_s: float, size: int | None = None, max_inmemory_mb: int = 512) -> dict:
    """Everything the cleaning rules and the clip decoder need to know about one file."""
    out: dict = {
        "uri": uri, "status": "dropped", "reason": "", "error": "", "container": "", "codec": "", "width": 0,
        "height": 0, "rotation": 0, "fps": 0.0, "vfr": False, "duration": 0.0, "frames": 0, "has_audio": False,
        "start_time": 0.0,
    }
    try:
        size = storage.size(uri) if size is None else size
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reason
        out.update(reason="unreadable", error=f"cannot stat: {exc}")
        return out
    if size == 0:
        out.update(reason="zero_bytes", error="the file is empty")
        return out
    try:
        with open_video(uri, size, max_inmemory_mb) as container:
            out["container"] = container.format.name
            if not container.streams.video:
                out.update(reason="no_video_stream", error="no video stream in the container")
                return out
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            out["has_audio"] = bool(container.streams.audio)
            out["codec"] = stream.codec_context.name
            if out["codec"] not in rules.allowed_codecs:
                out.update(reason="codec_not_allowed", error=f"codec {out['codec']} not in data.clean.allowed_codecs")
                return out
            frames = []
            try:
                for frame in container.decode(stream):
                    frames.append(frame)
                    if len(frames) >= rules.probe_frames:
                        break
            except av.error.FFmpegError as exc:
                out.update(reason="undecodable", error=f"decoding the first frames failed: {exc}")
                return out
            if len(frames) < rules.probe_frames:
                out.update(reason="undecodable", error=f"only {len(frames)} of {rules.probe_frames} first frames decoded")
                return out
            first = frames[0]
            out["rotation"] = int(round((first.rotation or 0) / 90.0)) * 90 % 360
            w, h = first.width, first.height
            if out["rotation"] in (90, 270):
                w, h = h, w
            out["width"], out["height"] = w, h
            out["start_time"] = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            container.seek(0)
            times = _frame_times(container, stream)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, not a video: never crash the job
        if not out["reason"]:
            out.update(reason="unreadable", error=f"{type(exc).__name__}: {exc}")
        return out
    n = len(times)
    out["frames"] = n
    if n >= 2:
        intervals = np.diff(times)
        intervals = intervals[intervals > 0]
        median = float(np.median(intervals)) if len(intervals) else 0.0
        out["fps"] = (n - 1) / times[-1] if times[-1] > 0 else 0.0
        out["duration"] = float(times[-1] + median)
        out["vfr"] = bool(len(intervals) and np.mean(np.abs(intervals - median) > 0.05 * median) > 0.05)
    short = min(out["width"], out["height"])
    if short < rules.min_side:
        out.update(reason="resolution_too_low", error=f"{out['width']}x{out['height']}: shorter side below data.clean.min_side={rules.min_side}")
    elif max(out["width"], out["height"]) > rules.max_side:
        out.update(reason="resolution_too_high", error=f"{out['width']}x{out['height']}: longer side above data.clean.max_side={rules.max_side}")
    elif n < rules.min_frames or out["duration"] < max(rules.min_duration_s, min_duration_s):
        out.update(
            reason="too_short",
            error=f"{n} frames, {out['duration']:.2f}s: needs {max(rules.min_duration_s, min_duration_s):.2f}s and {rules.min_frames} frames",
        )
    else:
        out["status"] = "kept"
    return out


def probe_row(row: dict, cfg) -> dict:
    """A catalog row + its probe result (the Ray Data ``map`` function; no torch import here). With
    ``data.buckets``, a kept video also gets the bucket it fits best, or is dropped as ``no_bucket``."""
    from vidgen_ray.data.buckets import assign

    buckets = cfg.bucket_shapes
    shortest = min(b.frames for b in buckets) if buckets else cfg.clip.frames
    out = {**row, **probe(row["uri"], cfg.clean, (shortest - 1) / cfg.clip.fps, size=row["size"],
                          max_inmemory_mb=cfg.max_inmemory_mb)}
    if buckets:
        out["bucket"] = -1
        if out["status"] == "kept":
            index = assign(out, buckets, cfg.clip.fps, cfg.bucket_max_upscale)
            if index is None:
                out.update(status="dropped", reason="no_bucket",
                           error=f"{out['width']}x{out['height']}, {out['duration']:.2f}s fits none of data.buckets "
                                 f"{[str(b) for b in buckets]} (frames x height x width at {cfg.clip.fps} fps, at most "
                                 f"{cfg.bucket_max_upscale}x upscaling)")
            else:
                out["bucket"] = index
        out["bucket_shape"] = str(buckets[out["bucket"]]) if out["bucket"] >= 0 else ""
    return out
