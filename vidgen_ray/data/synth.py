"""A synthetic, labelled video dataset: real H.264 MP4 files with known motion, plus broken files.

    vidgen-ray data synth --out ./outputs/synth --videos 48 --seed 0
    vidgen-ray data synth --out s3://my-bucket/synth --videos 200 --seed 1

Four motion classes, each with a caption that says what moves and how:

    0 bouncing_shape   a coloured disc or square bouncing off the walls
    1 moving_digit     a bitmap digit drifting across a noisy background
    2 rotating_bar     a bar spinning about the centre
    3 zooming_texture  a checkerboard or stripes zooming in or out

Frame rate, resolution and duration vary per video (the pipeline must standardise them). A few
deliberately bad files exercise cleaning: truncated, zero bytes, not a video, too short, too small.
Everything is a pure function of ``seed``: the same seed writes byte-identical files.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidgen_ray import storage
from vidgen_ray.media import encode_mp4

CLASSES = ("bouncing_shape", "moving_digit", "rotating_bar", "zooming_texture")
FRAME_RATES = (8.0, 12.5, 24.0, 25.0, 30000 / 1001, 30.0)
SIZES = ((96, 128), (120, 160), (128, 128), (144, 192), (180, 240))  # (height, width)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 90, 230),
    "yellow": (235, 210, 40),
    "white": (240, 240, 240),
    "magenta": (210, 50, 200),
}
BAD_KINDS = ("truncated", "zero_bytes", "not_a_video", "too_short", "too_small")

# 5x7 bitmap digits, one string of 7 rows of 5 bits each.
_DIGITS = [
    "01110100011001110101110011000101110", "00100011000010000100001000010001110",
    "01110100010000100010001000100011111", "11111000100010000010000011000101110",
    "00010001100101010010111110001000010", "11111100001111000001000011000101110",
    "00110010001000011110100011000101110", "11111000010001000100010000100001000",
    "01110100011000101110100011000101110", "01110100011000101111000010001001100",
]


@dataclass(frozen=True)
class SynthSpec:
    index: int
    label: int
    fps: float
    height: int
    width: int
    frames: int
    seed: int


def _digit_mask(d: int, scale: int) -> np.ndarray:
    bits = np.array([int(b) for b in _DIGITS[d]], dtype=bool).reshape(7, 5)
    return np.kron(bits, np.ones((scale, scale), dtype=bool))


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def render(spec: SynthSpec) -> tuple[np.ndarray, str]:
    """The frames uint8 [T, H, W, 3] and the caption of one synthetic video."""
    rng = np.random.default_rng(spec.seed)
    h, w, t = spec.height, spec.width, spec.frames
    yy, xx = _grid(h, w)
    colour_name = str(rng.choice(list(COLOURS)))
    colour = np.array(COLOURS[colour_name], dtype=np.float32)
    bg = rng.uniform(10, 60, size=3).astype(np.float32)
    video = np.empty((t, h, w, 3), dtype=np.uint8)
    # Speeds are in pixels per *second*, so the same class looks the same at any frame rate.
    dt = 1.0 / spec.fps
    name = CLASSES[spec.label]
    if name == "bouncing_shape":
        shape = str(rng.choice(["disc", "square"]))
        r = rng.uniform(0.08, 0.15) * min(h, w)
        pos = np.array([rng.uniform(r, h - r), rng.uniform(r, w - r)])
        vel = rng.uniform(40, 90, size=2) * rng.choice([-1, 1], size=2)
        for i in range(t):
            if shape == "disc":
                mask = (yy - pos[0]) ** 2 + (xx - pos[1]) ** 2 <= r * r
            else:
                mask = (np.abs(yy - pos[0]) <= r) & (np.abs(xx - pos[1]) <= r)
            frame = np.broadcast_to(bg, (h, w, 3)).copy()
            frame[mask] = colour
            video[i] = frame.astype(np.uint8)
            pos = pos + vel * dt
            for k, lim in ((0, h), (1, w)):
                if pos[k] < r or pos[k] > lim - r:
                    vel[k] = -vel[k]
                    pos[k] = np.clip(pos[k], r, lim - r)
        direction = ("down" if vel[0] > 0 else "up") + "-" + ("right" if vel[1] > 0 else "left")
        caption = f"a {colour_name} {shape} bouncing off the walls, moving {direction}"
    elif name == "moving_digit":
        digit = int(rng.integers(0, 10))
        scale = max(2, min(h, w) // 14)
        glyph = _digit_mask(digit, scale)
        gh, gw = glyph.shape
        pos = np.array([rng.uniform(0, h - gh), rng.uniform(0, w - gw)])
        vel = rng.uniform(25, 60, size=2) * rng.choice([-1, 1], size=2)
        noise = rng.integers(0, 25, size=(h, w, 1)).astype(np.float32)
        for i in range(t):
            frame = np.broadcast_to(bg, (h, w, 3)) + noise
            y0, x0 = int(round(pos[0])) % (h - gh), int(round(pos[1])) % (w - gw)
            region = frame[y0 : y0 + gh, x0 : x0 + gw]
            region[glyph] = colour
            video[i] = np.clip(frame, 0, 255).astype(np.uint8)
            pos = pos + vel * dt
        caption = f"the digit {digit} in {colour_name} drifting across a noisy background"
    elif name == "rotating_bar":
        omega = rng.uniform(1.0, 3.0) * rng.choice([-1, 1])  # radians per second
        theta = rng.uniform(0, math.pi)
        half_len, half_width = 0.4 * min(h, w), max(2.0, 0.05 * min(h, w))
        cy, cx = h / 2, w / 2
        for i in range(t):
            c, s = math.cos(theta), math.sin(theta)
            along = (xx - cx) * c + (yy - cy) * s
            across = -(xx - cx) * s + (yy - cy) * c
            mask = (np.abs(along) <= half_len) & (np.abs(across) <= half_width)
            frame = np.broadcast_to(bg, (h, w, 3)).copy()
            frame[mask] = colour
            video[i] = frame.astype(np.uint8)
            theta += omega * dt
        caption = f"a {colour_name} bar rotating {'counter-clockwise' if omega < 0 else 'clockwise'} about the centre"
    else:  # zooming_texture
        pattern = str(rng.choice(["checkerboard", "stripes"]))
        rate = rng.uniform(0.3, 0.7) * rng.choice([-1, 1])  # log-scale per second
        period = rng.uniform(8, 16)
        cy, cx = h / 2, w / 2
        for i in range(t):
            zoom = math.exp(rate * i * dt)
            u, v = (xx - cx) / zoom, (yy - cy) / zoom
            if pattern == "checkerboard":
                on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
            else:
                on = np.floor((u + v) / period) % 2 == 0
            frame = np.where(on[..., None], colour, bg)
            video[i] = frame.astype(np.uint8)
        caption = f"a {colour_name} {pattern} texture zooming {'in' if rate > 0 else 'out'}"
    return video, caption


def plan(videos: int, seed: int) -> list[SynthSpec]:
    """The good videos' specs: classes balanced, everything else drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(videos):
        fps = float(FRAME_RATES[rng.integers(len(FRAME_RATES))])
        height, width = SIZES[rng.integers(len(SIZES))]
        duration = rng.uniform(1.5, 3.5)
        frames = max(8, int(round(duration * fps)))
        specs.append(SynthSpec(i, i % len(CLASSES), fps, height, width, frames, int(rng.integers(2**31))))
    return specs


def _bad_file(kind: str, seed: int) -> tuple[bytes, str]:
    rng = np.random.default_rng(seed)
    if kind == "zero_bytes":
        return b"", "an empty file"
    if kind == "not_a_video":
        return b"this is a text file with a video extension\n" * 20, "a text file"
    if kind == "truncated":
        frames, _ = render(SynthSpec(0, 0, 25.0, 96, 128, 50, seed))
        data = encode_mp4(frames, fps=25.0)
        return data[: len(data) // 3], "an mp4 cut to a third of its size"
    if kind == "too_short":
        frames, _ = render(SynthSpec(0, 2, 25.0, 96, 128, 3, seed))
        return encode_mp4(frames, fps=25.0), "three frames only"
    if kind == "too_small":
        frames, _ = render(SynthSpec(0, 1, 25.0, 24, 32, 40, seed))
        return encode_mp4(frames, fps=25.0), "a 32x24 video"
    raise ValueError(f"unknown bad file kind {kind!r}; choose from {BAD_KINDS}")


def generate(out: str, videos: int = 48, seed: int = 0, broken: bool = True) -> dict:
    """Write ``videos`` good clips (+ the bad ones) and ``manifest.parquet`` under ``out``.

    Returns a summary dict (counts and the manifest URI). Works for local paths and object-store URIs.
    """
    if videos < 1:
        raise ValueError("--videos must be at least 1")
    storage.makedirs(out)
    rows: dict[str, list] = {k: [] for k in ("path", "label", "label_name", "caption", "fps", "width", "height", "frames", "kind")}
    for spec in plan(videos, seed):
        frames, caption = render(spec)
        name = f"{CLASSES[spec.label]}/{spec.index:05d}.mp4"
        storage.write_bytes(storage.join(out, name), encode_mp4(frames, fps=spec.fps))
        for key, value in (("path", name), ("label", spec.label), ("label_name", CLASSES[spec.label]), ("caption", caption),
                           ("fps", spec.fps), ("width", spec.width), ("height", spec.height), ("frames", spec.frames), ("kind", "ok")):
            rows[key].append(value)
    if broken:
        for j, kind in enumerate(BAD_KINDS):
            data, what = _bad_file(kind, seed * 1000 + j)
            name = f"broken/{kind}.mp4"
            storage.write_bytes(storage.join(out, name), data)
            for key, value in (("path", name), ("label", 0), ("label_name", CLASSES[0]), ("caption", what),
                               ("fps", 0.0), ("width", 0), ("height", 0), ("frames", 0), ("kind", kind)):
                rows[key].append(value)
    table = pa.table(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    manifest = storage.join(out, "manifest.parquet")
    storage.write_bytes(manifest, buf.getvalue())
    return {"out": out, "videos": videos, "bad_files": len(BAD_KINDS) if broken else 0, "manifest": manifest}
