"""Typed configuration of the data pipeline: what clips look like, what gets dropped, how to split,
augment, normalise and feed. Every field can be set from YAML (``data: {clip: {frames: 16}}``) or
the command line (``--set data.clip.frames=16``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
DEFAULT_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "prores", "theora", "h263")


@dataclass
class ClipSpec:
    """Every training clip: ``frames`` frames sampled at ``fps`` (by timestamps), ``height`` x ``width``."""

    frames: int = 8
    fps: float = 8.0
    height: int = 64
    width: int = 64
    clips_per_video: int = 1  # clips taken from each opened file (one decode pass per file)
    window: Literal["random", "even"] = "random"  # train windows; val/test always use "even"
    crop: Literal["center", "random"] = "center"  # after scaling the short side to cover H x W
    interpolation: Literal["area", "bilinear", "bicubic", "fast_bilinear", "point"] = "area"

    def validate(self) -> None:
        if self.frames < 1:
            raise ValueError(f"data.clip.frames must be >= 1, got {self.frames}")
        if not (0 < self.fps <= 240):
            raise ValueError(f"data.clip.fps must be in (0, 240], got {self.fps}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"data.clip size {self.height}x{self.width} is too small; use at least 8x8")
        if self.clips_per_video < 1:
            raise ValueError("data.clip.clips_per_video must be >= 1")

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


@dataclass
class CleanRules:
    """Rules that drop a video, each with a named reason in the report."""

    min_side: int = 64  # shorter side of the (rotated) picture, pixels
    max_side: int = 8192
    min_duration_s: float = 0.0  # the clip length is always added as a floor
    min_frames: int = 2
    probe_frames: int = 2  # frames that must decode at the start of the file
    allowed_codecs: tuple[str, ...] = DEFAULT_CODECS

    def validate(self) -> None:
        if self.min_side < 1 or self.max_side < self.min_side:
            raise ValueError(f"data.clean: need 1 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        if self.probe_frames < 1:
            raise ValueError("data.clean.probe_frames must be >= 1 (decodability is checked on real frames)")
        if not self.allowed_codecs:
            raise ValueError("data.clean.allowed_codecs is empty: every video would be dropped")


@dataclass
class SplitConfig:
    """Fractions by a stable hash of the *source* video, so no video lands in two splits."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    salt: str = ""  # change it to draw a different (still stable) split

    def validate(self) -> None:
        parts = (self.train, self.val, self.test)
        if any(p < 0 for p in parts) or not math.isclose(sum(parts), 1.0, abs_tol=1e-6):
            raise ValueError(f"data.split fractions must be >= 0 and sum to 1, got {parts}")


@dataclass
class AugmentConfig:
    """Train-split augmentation; one draw per clip, applied identically to all of its frames."""

    enabled: bool = True
    hflip: float = 0.5  # probability
    vflip: float = 0.0  # probability
    rotate_p: float = 0.0
    rotate_deg: float = 10.0  # max absolute angle; the picture is zoomed so no empty corners appear
    zoom_p: float = 0.0  # random resized crop
    zoom_min_scale: float = 0.6  # smallest crop area as a fraction of the frame
    jitter_p: float = 0.0
    brightness: float = 0.2  # +-fraction
    contrast: float = 0.2
    saturation: float = 0.2
    temporal_shift: int = 0  # max start offset, in frames at the target fps
    speed_p: float = 0.0
    speed_min: float = 0.8
    speed_max: float = 1.25
    noise_p: float = 0.0
    noise_std: float = 4.0  # in 0..255 pixel units

    def validate(self) -> None:
        for name in ("hflip", "vflip", "rotate_p", "zoom_p", "jitter_p", "speed_p", "noise_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"data.augment.{name} is a probability; got {p}, use a value in [0, 1]")
        if not 0.05 <= self.zoom_min_scale <= 1.0:
            raise ValueError("data.augment.zoom_min_scale must be in [0.05, 1]")
        if not 0 < self.speed_min <= 1.0 <= self.speed_max <= 4.0:
            raise ValueError("data.augment needs 0 < speed_min <= 1 <= speed_max <= 4")
        if self.temporal_shift < 0 or self.noise_std < 0 or self.rotate_deg < 0:
            raise ValueError("data.augment: temporal_shift, noise_std and rotate_deg must be >= 0")

    def extra_frames(self, frames: int) -> int:
        """Frames decoded beyond ``frames`` so temporal shift and speed-up can pick from real frames."""
        if not self.enabled:
            return 0
        speed = self.speed_max if self.speed_p > 0 else 1.0
        return int(math.ceil((frames - 1) * speed + 1)) - frames + self.temporal_shift


@dataclass
class BucketRule:
    """Buckets as a rule (Open-Sora's table): about ``pixels`` pixels a frame at each aspect ratio (width /
    height), sides a multiple of ``multiple``, at each frame count. Adds to ``data.buckets``."""

    pixels: tuple[int, ...] = ()
    aspects: tuple[float, ...] = (1.0,)
    frames: tuple[int, ...] = ()
    multiple: int = 16

    def validate(self) -> None:
        if bool(self.pixels) != bool(self.frames) or min((*self.pixels, *self.frames, self.multiple), default=1) < 1:
            raise ValueError("data.bucket_rule needs positive pixels and frames lists (or neither), and multiple >= 1")
        if any(a <= 0 for a in self.aspects):
            raise ValueError("data.bucket_rule.aspects are width / height ratios > 0")


@dataclass
class DataConfig:
    source: str = ""  # URI of raw videos, or of a dataset written by `vidgen-ray data prepare`
    manifest: str | None = None  # parquet/csv/jsonl with path,label,caption; default: <source>/manifest.*
    labels_from_dirs: bool = False  # without a manifest, use the parent folder name as the class
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    clip: ClipSpec = field(default_factory=ClipSpec)
    clean: CleanRules = field(default_factory=CleanRules)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalize: Literal["minus_one_one", "zero_one", "mean_std"] = "minus_one_one"
    cache: str | None = None  # URI root for decoded-clip parquet shards keyed by the preprocessing config
    # Precomputed VAE latents / caption embeddings of a prepared dataset (data/latents.py, `data prepare
    # --encode`): "auto" uses them when their key matches the run, "require" fails when they do not, "live" never
    # reads them (the encoders run at every step).
    latent_cache: Literal["auto", "require", "live"] = "auto"
    files_per_task: int = 2  # decode batch: a few files, since decoded video is 10-100x its file size
    # A file asked for more clips than this is cut into time segments, each its own decode unit, so a
    # long video is decoded by several tasks at once instead of holding up the stream (0 = never cut).
    # Each segment seeks to its start (decoding from the keyframe before it): cutting short files
    # costs more than it gains (benchmarks/data_throughput.py: 8 -> ~8% less single-task throughput).
    max_clips_per_task: int = 32
    decode_workers: int = 0  # CPUs given to decode tasks; 0 = as many as are free (autoscales)
    # Decode tasks per CPU. Above 1, a CPU stays busy while one of its tasks waits: on an object-store
    # read, or on Ray Data 2.60 noticing a finished task (it polls with a 100 ms timeout, so a freed
    # slot idles 100-200 ms per task). benchmarks/data_throughput.py measures 1.5 against 1.
    decode_tasks_per_cpu: float = 1.5
    decode_resource: str | None = None  # a custom node resource decode tasks must sit on, e.g. "decode"
    decode_memory_mb: int = 1024  # per decode task, so Ray's scheduler sees the heap it will use
    max_inmemory_mb: int = 512  # remote files up to this size are fetched whole (one GET), larger ones streamed
    prefetch_batches: int = 2
    shuffle_buffer: int = 0  # local shuffle buffer in rows on the worker; 0 = off; must be >> 2 x batch
    # The train stream in item order (Ray Data's preserve_order): a seeded run then reproduces its loss
    # curve exactly (the golden-loss test); off by default, since in-order delivery costs throughput.
    ordered: bool = False
    stats_clips: int = 64  # training clips used to compute per-channel mean/std
    seed: int = 0
    # Shapes one run trains on (data/buckets.py), [[frames, height, width], ...] at data.clip.fps; each video
    # goes to the one it fits best, batches hold one shape. Empty (and no bucket_rule): every clip is data.clip.
    buckets: tuple[tuple[int, int, int], ...] = ()
    bucket_rule: BucketRule = field(default_factory=BucketRule)
    bucket_max_upscale: float = 1.0  # a video may be scaled up at most this much to fill a bucket

    @property
    def bucket_shapes(self) -> list:
        """``buckets`` and ``bucket_rule`` as ``Bucket`` objects (empty: no bucketing)."""
        from vidgen_ray.data.buckets import from_rule, parse

        out = parse(self.buckets)
        r = self.bucket_rule
        if r.pixels:
            out += [b for b in from_rule(r.pixels, r.aspects, r.frames, r.multiple) if b not in out]
        return out

    def validate(self) -> None:
        self.bucket_rule.validate()
        shapes = self.bucket_shapes
        if shapes and min(min(b.height, b.width) for b in shapes) < 8:
            raise ValueError("data.buckets: every bucket needs a height and width of at least 8")
        if self.bucket_max_upscale < 1.0:
            raise ValueError("data.bucket_max_upscale must be >= 1 (1: never scale a video up)")
        if self.files_per_task < 1:
            raise ValueError("data.files_per_task must be >= 1")
        if self.max_clips_per_task < 0:
            raise ValueError("data.max_clips_per_task must be >= 1, or 0 to never cut a file into segments")
        if not 1 <= self.decode_tasks_per_cpu <= 4:
            raise ValueError(f"data.decode_tasks_per_cpu={self.decode_tasks_per_cpu}: use 1 (one task per CPU) to 4")
        if self.decode_memory_mb < 64:
            raise ValueError("data.decode_memory_mb below 64 cannot hold a decoded clip; raise it")
        if self.shuffle_buffer and self.shuffle_buffer < 8:
            raise ValueError("data.shuffle_buffer must be 0 (off) or a few hundred rows")
        if not self.extensions:
            raise ValueError("data.extensions is empty: no file would be listed")
