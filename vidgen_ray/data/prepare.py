"""Probe reports, prepared clip datasets and the clip cache.

    vidgen-ray data probe ../shared/videos --report ./outputs/probe
    vidgen-ray data prepare ../shared/videos --out ./outputs/clips --frames 8 --fps 8 --size 64x64

A prepared dataset (also what the clip cache stores) is a folder or prefix holding

    report.parquet / report.json   one row per listed file: kept or dropped, with the reason
    train/ val/ test/              parquet shards of uint8 clips (video as raw bytes + shape columns)
    prepared.json                  written last: clip spec, counts, label names, channel mean/std

``prepared.json`` is the commit marker: a dataset without it is incomplete and never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidgen_ray import storage
from vidgen_ray.configs import ConfigError, to_dict
from vidgen_ray.data.catalog import SPLITS, build_catalog
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.normalize import channel_stats
from vidgen_ray.data.pipeline import Units, clip_stream, probe_all, video_units
from vidgen_ray.progress import Progress
from vidgen_ray.runtime import get_logger

log = get_logger("data.prepare")

MARKER = "prepared.json"
FORMAT_VERSION = 1


# --- the accounting report ------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict:
    """Counts that must add up: kept + sum(dropped by reason) == listed."""
    listed = len(rows)
    kept = sum(r["status"] == "kept" for r in rows)
    dropped = Counter(r["reason"] for r in rows if r["status"] != "kept")
    if kept + sum(dropped.values()) != listed:
        raise AssertionError(f"accounting identity broken: {kept} kept + {sum(dropped.values())} dropped != {listed} listed")
    out = {
        "listed": listed,
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "kept_by_split": {s: sum(r["status"] == "kept" and r["split"] == s for r in rows) for s in SPLITS},
    }
    if any("bucket_shape" in r for r in rows):  # data.buckets: kept videos per bucket (frames x height x width)
        out["videos_by_bucket"] = dict(sorted(Counter(r["bucket_shape"] for r in rows if r["status"] == "kept").items()))
    return out


def format_summary(summary: dict) -> str:
    lines = [f"listed {summary['listed']}  kept {summary['kept']}  dropped {summary['listed'] - summary['kept']}"]
    for reason, n in summary["dropped"].items():
        lines.append(f"  dropped {reason:<20} {n}")
    lines.append("  kept by split: " + ", ".join(f"{k} {v}" for k, v in summary["kept_by_split"].items()))
    if "videos_by_bucket" in summary:
        lines.append("  kept videos by bucket: " + ", ".join(f"{k} {v}" for k, v in summary["videos_by_bucket"].items()))
    if "clips" in summary:
        lines.append("  clips written: " + ", ".join(f"{k} {v}" for k, v in summary["clips"].items()))
    if "clips_by_bucket" in summary:
        lines.append("  clips by bucket: " + ", ".join(f"{k} {v}" for k, v in summary["clips_by_bucket"].items()))
    return "\n".join(lines)


def _report_table(rows: list[dict]) -> pa.Table:
    columns = ["uri", "rel_path", "size", "split", "label", "caption", "source_id", "status", "reason", "error", "container",
               "codec", "width", "height", "rotation", "fps", "vfr", "duration", "frames", "has_audio", "bucket_shape"]
    return pa.table({c: [r.get(c) for r in rows] for c in columns})


def write_report(rows: list[dict], out: str, extra: dict | None = None) -> dict:
    summary = {**summarize(rows), **(extra or {})}
    buf = io.BytesIO()
    pq.write_table(_report_table(rows), buf)
    storage.write_bytes(storage.join(out, "report.parquet"), buf.getvalue())
    storage.write_text(storage.join(out, "report.json"), json.dumps(summary, indent=2))
    return summary


def probe_report(cfg: DataConfig, out: str | None = None) -> tuple[list[dict], dict]:
    """Probe + clean only. Writes report.parquet/json under ``out`` when given."""
    t0 = time.perf_counter()
    rows, label_names = probe_all(cfg)
    summary = write_report(rows, out) if out else summarize(rows)
    log.info("probed %d files in %.1fs\n%s", len(rows), time.perf_counter() - t0, format_summary(summary))
    return rows, summary


# --- writing clips --------------------------------------------------------------------------------


def _to_parquet_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clips as raw bytes + shape: plain parquet any reader understands, no tensor extension type.
    Bucketed clips arrive as bytes + shape already (one block holds several shapes) and keep their bucket."""
    video = batch["video"]
    n = len(video)
    if "shape" in batch:
        shape = np.asarray(batch["shape"], np.int32).reshape(-1, 3)
        extra = {"bucket": batch["bucket"]}
    else:
        t, h, w = video.shape[1:4] if n else (0, 0, 0)
        shape = np.tile(np.asarray([t, h, w], np.int32), (n, 1))
        video = np.array([v.tobytes() for v in video], dtype=object)
        extra = {}
    return {
        **extra,
        "video": video,
        "frames": shape[:, 0],
        "height": shape[:, 1],
        "width": shape[:, 2],
        "label": batch["label"],
        "caption": batch["caption"],
        "source_id": batch["source_id"],
        "start_s": batch["start_s"],
        "clip_index": batch["clip_index"],
    }


def _counted(batch: dict[str, np.ndarray], counter) -> dict[str, np.ndarray]:
    counter.add.remote(len(batch["video"]))  # fire and forget: the driver's progress line polls it
    return _to_parquet_rows(batch)


def _write_split(units: Units, cfg: DataConfig, split: str, out: str, rows_per_shard: int) -> None:
    import threading

    import ray

    counter = ray.remote(num_cpus=0)(_ClipCounter).remote()
    # Shards are the unit of shuffling and of the resume position in training: keep them small.
    ds = clip_stream(units, cfg, split, epochs=1, augment=False).map_batches(_counted, fn_kwargs={"counter": counter},
                                                                            batch_format="numpy")
    fs, path = storage.resolve(storage.join(out, split))
    expected = sum(int(r.get("clips") or units.clips_per_unit) for r in units.rows)
    done = threading.Event()

    def watch() -> None:
        with Progress(f"prepare {split}", total=expected, unit="clips") as progress:
            while not done.wait(0.5):
                progress.update(ray.get(counter.count.remote()) - progress.done)
            progress.update(ray.get(counter.count.remote()) - progress.done)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ds.write_parquet(path, filesystem=fs, min_rows_per_file=rows_per_shard)
    finally:
        done.set()
        watcher.join(30)
        ray.kill(counter)


class _ClipCounter:
    """Clips written so far, counted by the write's tasks (a Ray actor, see ``_write_split``)."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def count(self) -> int:
        return self.n


def _shard_counts(uri: str, buckets: list | None = None) -> tuple[list[dict], Counter, Counter]:
    """Shards of one split with their row counts, clips per source and, with ``buckets``, clips per bucket
    shape (read from those columns only)."""
    shards, per_source, per_bucket = [], Counter(), Counter()
    if not storage.exists(uri):
        return shards, per_source, per_bucket
    for entry in storage.list_files(uri, extensions=(".parquet",)):
        with storage.open_input(entry.uri) as f:
            table = pq.read_table(f, columns=["source_id", "bucket"] if buckets else ["source_id"])
        shards.append({"uri": entry.uri, "rows": table.num_rows})
        per_source.update(table.column("source_id").to_pylist())
        if buckets:
            per_bucket.update(str(buckets[i]) for i in table.column("bucket").to_pylist())
    return shards, per_source, per_bucket


def prepare(cfg: DataConfig, out: str, rows_per_shard: int = 16) -> dict:
    """The whole pipeline: catalog -> probe/clean -> decode clips -> parquet shards + report + marker."""
    t0 = time.perf_counter()
    catalog = build_catalog(cfg)
    rows, label_names = probe_all(cfg, catalog)
    units = video_units((rows, label_names), cfg)
    clips, late, by_bucket = {}, [], Counter()
    for split in SPLITS:
        if len(units[split]):
            _write_split(units[split], cfg, split, out, rows_per_shard)
        shards, per_source, per_bucket = _shard_counts(storage.join(out, split), cfg.bucket_shapes)
        clips[split] = sum(s["rows"] for s in shards)
        by_bucket.update(per_bucket)
        # A file that passed the probe can still fail mid-stream: account for it, never lose it silently.
        for r in (r for r in rows if r["status"] == "kept" and r["split"] == split):  # files, not segments
            if per_source[r["source_id"]] == 0:
                late.append(r["uri"])
                r["status"], r["reason"], r["error"] = "dropped", "decode_failed", "no clip could be decoded after the probe passed"
    stats = None
    if clips["train"]:
        stats = _train_stats(storage.join(out, "train"), cfg.stats_clips)
    summary = write_report(rows, out, {"clips": clips, **({"clips_by_bucket": dict(sorted(by_bucket.items()))}
                                                          if cfg.bucket_shapes else {})})
    marker = {
        "format": FORMAT_VERSION,
        "source": cfg.source,
        "clip": to_dict(cfg.clip),
        "buckets": [[b.frames, b.height, b.width] for b in cfg.bucket_shapes],
        "bucket_max_upscale": cfg.bucket_max_upscale,
        "train_frames": cfg.clip.frames + cfg.augment.extra_frames(cfg.clip.frames),
        "label_names": label_names,
        "mean": stats[0] if stats else None,
        "std": stats[1] if stats else None,
        "summary": summary,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    storage.write_text(storage.join(out, MARKER), json.dumps(marker, indent=2))
    log.info("prepared %s in %.1fs\n%s", out, marker["seconds"], format_summary(summary))
    if late:
        log.warning("%d files passed the probe but yielded no clip: %s", len(late), late[:5])
    return marker


def _train_stats(uri: str, max_clips: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    clips = []
    for entry in storage.list_files(uri, extensions=(".parquet",)):
        with storage.open_input(entry.uri) as f:
            table = pq.read_table(f, columns=["video", "frames", "height", "width"])
        for r in table.to_pylist():
            clips.append(np.frombuffer(r["video"], np.uint8).reshape(r["frames"], r["height"], r["width"], 3))
            if len(clips) >= max_clips:
                return channel_stats(clips)
    return channel_stats(clips)


# --- reading prepared datasets and the cache ----------------------------------------------------------


def is_prepared(uri: str) -> bool:
    return storage.exists(storage.join(uri, MARKER))


def load_prepared(uri: str, cfg: DataConfig) -> tuple[dict[str, Units], dict]:
    marker = json.loads(storage.read_text(storage.join(uri, MARKER)))
    clip = marker["clip"]
    want = (cfg.clip.frames, cfg.clip.height, cfg.clip.width, cfg.clip.fps)
    have = (clip["frames"], clip["height"], clip["width"], clip["fps"])
    if want != have:
        raise ConfigError(
            f"{uri} holds clips of frames/height/width/fps {have}, but the run asks for {want}: "
            f"set data.clip to match, or prepare the data again with the new clip spec"
        )
    buckets = [[b.frames, b.height, b.width] for b in cfg.bucket_shapes]
    if marker.get("buckets", []) != buckets or (buckets and marker.get("bucket_max_upscale") != cfg.bucket_max_upscale):
        raise ConfigError(f"{uri} was prepared with data.buckets {marker.get('buckets', [])} (max upscale "
                          f"{marker.get('bucket_max_upscale')}) and the run asks for {buckets} (max upscale "
                          f"{cfg.bucket_max_upscale}): set them to match, or prepare the data again")
    units = {}
    for split in SPLITS:
        shards, _, _ = _shard_counts(storage.join(uri, split))
        n = sum(s["rows"] for s in shards)
        frames = marker["train_frames"] if split == "train" else clip["frames"]
        units[split] = Units("shard", shards, n / len(shards) if shards else 0.0, frames=frames, label_names=marker["label_names"])
    return units, {**marker, "root": uri}


def cache_key(cfg: DataConfig, rows: list[dict]) -> str:
    """Changes whenever anything that shapes a decoded clip changes (spec, rules, split, files)."""
    relevant = {
        "format": FORMAT_VERSION,
        "clip": to_dict(cfg.clip),
        # Only when set: a run without buckets keeps the key (and the cache) it had before they existed.
        **({"buckets": [str(b) for b in cfg.bucket_shapes], "bucket_max_upscale": cfg.bucket_max_upscale}
           if cfg.bucket_shapes else {}),
        "clean": to_dict(cfg.clean),
        "split": to_dict(cfg.split),
        "extra": cfg.augment.extra_frames(cfg.clip.frames),
        "seed": cfg.seed,
        "files": sorted((r["uri"], r["size"]) for r in rows),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_units(cfg: DataConfig) -> tuple[dict[str, Units], dict]:
    """Units for each split, from a prepared dataset, the cache (built on a miss), or raw videos."""
    if is_prepared(cfg.source):
        log.info("using the prepared dataset at %s", cfg.source)
        return load_prepared(cfg.source, cfg)
    catalog = build_catalog(cfg)
    if cfg.cache:
        key = cache_key(cfg, [{"uri": r["uri"], "size": r["size"]} for r in catalog.rows])
        where = storage.join(cfg.cache, key)
        if is_prepared(where):
            log.info("clip cache hit: %s", where)
        else:
            log.info("clip cache miss: decoding into %s", where)
            prepare(dataclasses.replace(cfg, source=cfg.source), where)
        return load_prepared(where, cfg)
    rows, label_names = probe_all(cfg, catalog)
    summary = summarize(rows)
    log.info("probe: %s", format_summary(summary))
    stats = None
    units = video_units((rows, label_names), cfg)
    return units, {"label_names": label_names, "mean": None, "std": None, "summary": summary, "stats": stats}
