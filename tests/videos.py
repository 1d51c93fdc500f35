"""Test videos with ground truth built in: every frame shows its own index, so a decoded clip says
exactly which source frames it was made of. Written with PyAV (real H.264 files)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

STEP = 16  # grey-level step: survives yuv420 + lossy H.264 with a wide margin


def counter_frame(i: int, h: int, w: int) -> np.ndarray:
    """Left half encodes i % 16, right half i // 16 (so up to 256 distinct frames)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = (i % 16) * STEP + STEP // 2
    img[:, w // 2 :] = (i // 16) * STEP + STEP // 2
    return img


def read_counter(frame: np.ndarray) -> int:
    """Recover the source index from a decoded (possibly resized) counter frame."""
    h, w = frame.shape[:2]
    left = frame[h // 4 : 3 * h // 4, w // 8 : 3 * w // 8].mean()
    right = frame[h // 4 : 3 * h // 4, 5 * w // 8 : 7 * w // 8].mean()
    return int(round((left - STEP // 2) / STEP)) + 16 * int(round((right - STEP // 2) / STEP))


def write_counter_video(path: Path, fps: float, n: int, h: int = 96, w: int = 128, times: list[float] | None = None) -> Path:
    """n counter frames at ``fps`` (or at explicit presentation ``times`` in seconds: variable frame rate)."""
    with av.open(str(path), "w", format="mp4") as c:
        rate = Fraction(fps).limit_denominator(1001)
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "10", "preset": "veryfast", "bf": "2"}  # B-frames: decode order != display order
        tb = Fraction(1, 90000)
        s.codec_context.time_base = tb
        for i in range(n):
            f = av.VideoFrame.from_ndarray(counter_frame(i, h, w), format="rgb24")
            t = times[i] if times is not None else i / fps
            f.pts = int(round(t / tb))
            f.time_base = tb
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def set_mp4_rotation(path: Path, degrees_clockwise: int) -> None:
    """Patch the video track's tkhd display matrix in place (what phones write for portrait video)."""
    data = bytearray(path.read_bytes())
    one, zero, neg = 0x00010000, 0, 0xFFFF0000
    matrices = {
        0: (one, zero, zero, one),
        90: (zero, one, neg, zero),
        180: (neg, zero, zero, neg),
        270: (zero, neg, one, zero),
    }
    a, b, c, d = matrices[degrees_clockwise]
    pos = data.find(b"tkhd")
    if pos < 0:
        raise ValueError("no tkhd box")
    version = data[pos + 4]
    # tkhd: version/flags(4) times(8|16) track_id(4) reserved(4) duration(4|8) reserved(8) layer(2)
    # alt_group(2) volume(2) reserved(2) then the 3x3 matrix.
    offset = pos + 4 + 4 + (16 if version == 1 else 8) + 4 + 4 + (8 if version == 1 else 4) + 8 + 2 + 2 + 2 + 2
    struct.pack_into(">9I", data, offset, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
