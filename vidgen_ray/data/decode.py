"""Decode clips from one video: T frames at a target fps, chosen by presentation timestamps.

    python -c "from vidgen_ray.data.decode import decode_file, even_windows; \
clips = decode_file('../shared/videos/moviepy_fire2.mp4', [0.0], frames=8, fps=8, height=64, width=64); \
print(clips[0].shape, clips[0].dtype)"

How a clip is sampled: the target times of a window are ``start + k / fps``; for each, the decoded
frame whose timestamp is nearest wins. That one rule handles variable frame rate, sources faster or
slower than the target (frames are skipped or repeated), B-frame reordering (the decoder hands
frames out in presentation order) and streams whose first timestamp is not zero.

Only the frames that win are converted to RGB, and they are converted *at the output size*: one
swscale call scales and converts (no full-size RGB frame is ever made), then rotation metadata is
applied and the picture cropped to H x W. One decoder thread per call: parallelism comes from Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from vidgen_ray.data.probe import open_video

SEEK_GAP_S = 2.0  # decode through gaps shorter than this instead of seeking (keyframes are sparse)


@dataclass(frozen=True)
class Geometry:
    """How one stored frame becomes an upright H x W picture."""

    scale_w: int  # size to scale the *stored* frame to
    scale_h: int
    rotation: int  # degrees counter-clockwise the display matrix asks for (0/90/180/270)
    crop_y: int  # crop offsets in the upright, scaled picture
    crop_x: int
    height: int
    width: int


def geometry(stored_w: int, stored_h: int, rotation: int, height: int, width: int, crop_u: float = 0.5, crop_v: float = 0.5) -> Geometry:
    """Scale so the upright picture covers H x W (aspect kept), then crop at (crop_v, crop_u) in [0, 1]."""
    up_w, up_h = (stored_h, stored_w) if rotation in (90, 270) else (stored_w, stored_h)
    scale = max(width / up_w, height / up_h)
    sw_up, sh_up = max(width, round(up_w * scale)), max(height, round(up_h * scale))
    crop_y = int(round((sh_up - height) * crop_v))
    crop_x = int(round((sw_up - width) * crop_u))
    scale_w, scale_h = (sh_up, sw_up) if rotation in (90, 270) else (sw_up, sh_up)
    return Geometry(scale_w, scale_h, rotation, crop_y, crop_x, height, width)


def convert(frame: av.VideoFrame, g: Geometry, interpolation: str) -> np.ndarray:
    """Scale + colour-convert in one swscale pass at the small size, rotate upright, crop: uint8 [H, W, 3]."""
    rgb = frame.reformat(width=g.scale_w, height=g.scale_h, format="rgb24", interpolation=interpolation.upper()).to_ndarray()
    if g.rotation:
        # rotation is counter-clockwise in the display matrix sense; np.rot90 turns counter-clockwise too
        rgb = np.rot90(rgb, k=g.rotation // 90)
    return np.ascontiguousarray(rgb[g.crop_y : g.crop_y + g.height, g.crop_x : g.crop_x + g.width])


def even_windows(duration: float, clip_s: float, n: int) -> list[float]:
    """``n`` window starts spread evenly over the video (all at 0 when the video is just long enough)."""
    room = max(0.0, duration - clip_s)
    if n == 1:
        return [room / 2]
    return [room * i / (n - 1) for i in range(n)]


def random_windows(duration: float, clip_s: float, n: int, rng: np.random.Generator) -> list[float]:
    room = max(0.0, duration - clip_s)
    return sorted(float(x) for x in rng.uniform(0.0, room, size=n))


def _targets(start: float, frames: int, fps: float) -> np.ndarray:
    return start + np.arange(frames, dtype=np.float64) / fps


def _frames_from(container: av.container.InputContainer, stream, t: float, origin_pts: int, tb: float) -> Iterator[av.VideoFrame]:
    """Decoded frames starting at or before time ``t``: seek to the keyframe before ``t`` when that
    works, else decode from the beginning (MPEG-TS and sparse-keyframe files often refuse to seek)."""
    if t > 0:
        try:
            container.seek(int(origin_pts + t / tb), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            first = next(frames, None)
            if first is not None and (first.pts is None or (first.pts - origin_pts) * tb <= t + 1e-6):
                yield first
                yield from frames
                return
        except av.error.FFmpegError:
            pass
    container.seek(0, stream=stream, backward=True, any_frame=False)
    yield from container.decode(stream)


def decode_windows(
    container: av.container.InputContainer,
    starts: list[float],
    frames: int,
    fps: float,
    height: int,
    width: int,
    rotation: int | None = None,
    crop: tuple[float, float] = (0.5, 0.5),
    interpolation: str = "area",
    stats: dict | None = None,
) -> list[np.ndarray]:
    """One clip uint8 [frames, H, W, 3] per window start (seconds from the stream's first frame).
    ``stats["frames_decoded"]`` (when given) counts the source frames the decoder produced.

    All windows are served by ONE forward decode: their target times are merged and sorted, each
    decoded frame fills every slot it is nearest to (overlapping windows share frames and their
    conversion), and the decoder seeks only to jump a gap longer than ``SEEK_GAP_S``.
    ``rotation=None`` reads the display matrix from the first decoded frame.
    """
    stream = container.streams.video[0]
    if not stream.codec_context.is_open:
        stream.codec_context.thread_count = 1  # one decoder thread per task: parallelism comes from Ray
    tb = float(stream.time_base)
    origin_pts = stream.start_time if stream.start_time is not None else 0
    clips = [np.empty((frames, height, width, 3), dtype=np.uint8) for _ in starts]
    slots = sorted((t, w, k) for w, s0 in enumerate(starts) for k, t in enumerate(_targets(s0, frames, fps)))
    g: Geometry | None = None
    frame_iter = container.decode(stream) if slots and slots[0][0] <= SEEK_GAP_S else None
    position = 0.0
    prev_frame, prev_time = None, -np.inf
    last_pick, last_rgb = None, None
    i, seeked_for, decoded = 0, -1, 0
    while i < len(slots):
        # Seek over a long gap, once per target: a sparse-keyframe file lands far before it and
        # then decodes forward.
        if frame_iter is None or (slots[i][0] - position > SEEK_GAP_S and seeked_for != i):
            frame_iter = _frames_from(container, stream, max(0.0, slots[i][0]), origin_pts, tb)
            prev_frame, prev_time = None, -np.inf
            seeked_for = i
        frame = next(frame_iter, None)
        if frame is None:
            break  # the stream ended before the last targets (duration estimates can be long)
        decoded += 1
        if g is None:
            rot = rotation if rotation is not None else int(round((frame.rotation or 0) / 90.0)) * 90 % 360
            g = geometry(frame.width, frame.height, rot, height, width, crop_u=crop[0], crop_v=crop[1])
        t = (frame.pts - origin_pts) * tb if frame.pts is not None else prev_time + 1.0 / fps
        position = t
        while i < len(slots) and t >= slots[i][0]:
            target, w, k = slots[i]
            pick = prev_frame if prev_frame is not None and target - prev_time < t - target else frame
            if pick is not last_pick:  # picks move forward in time: one conversion per distinct frame
                last_pick, last_rgb = pick, convert(pick, g, interpolation)
            clips[w][k] = last_rgb
            i += 1
        prev_frame, prev_time = frame, t
    if i < len(slots):
        # Hold the last decoded frame for targets past the end of the stream.
        if prev_frame is None or g is None:
            raise ValueError(f"no frame could be decoded for windows starting at {sorted(starts)[:3]}")
        if prev_frame is not last_pick:
            last_rgb = convert(prev_frame, g, interpolation)
        for _, w, k in slots[i:]:
            clips[w][k] = last_rgb
    if stats is not None:
        stats["frames_decoded"] = stats.get("frames_decoded", 0) + decoded
    return clips


def decode_file(
    uri: str,
    starts: list[float],
    frames: int,
    fps: float,
    height: int,
    width: int,
    rotation: int | None = None,
    crop: tuple[float, float] = (0.5, 0.5),
    interpolation: str = "area",
    size: int | None = None,
    max_inmemory_mb: int = 512,
    stats: dict | None = None,
) -> list[np.ndarray]:
    """Open ``uri`` once and decode one clip per window start."""
    with open_video(uri, size, max_inmemory_mb) as container:
        return decode_windows(container, starts, frames, fps, height, width, rotation, crop, interpolation, stats)
