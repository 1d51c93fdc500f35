"""The Ray Data pipeline: probe files in parallel, then stream uniformly shaped uint8 clips.

    python -c "from vidgen_ray.runtime import init_ray; init_ray(num_cpus=2); \
from vidgen_ray.data.config import DataConfig; from vidgen_ray.data.pipeline import *; \
cfg = DataConfig(source='../shared/videos'); units = video_units(probe_all(cfg), cfg); \
print(clip_stream(units['train'], cfg, 'train').take(1)[0]['video'].shape)"

A clip stream is a Ray Dataset over *items*: item ``g`` is (epoch ``g // n``, unit ``perm_epoch[g % n]``),
where a unit is a video file (decoded on the fly) or a parquet shard of already decoded clips (the
cache, or a dataset written by ``vidgen-ray data prepare``). Items are plain integers made lazily
(``StreamItems``), so a stream of many epochs costs nothing to describe, every epoch has its own
seeded order, and a resumed run starts at item ``g`` exactly (``start_item``). Decoding runs in a
pool of CPU tasks (Ray reuses their processes), a few files per call, each with a ``memory=`` request, so the scheduler sees the
heap that decoded video takes; only uint8 clips reach the object store.
"""

from __future__ import annotations

import dataclasses

import functools
import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.data.datasource import Datasource, ReadTask

from vidgen_ray import storage
from vidgen_ray.configs import ConfigError
from vidgen_ray.data import augment as aug_lib
from vidgen_ray.data.catalog import SPLITS, build_catalog
from vidgen_ray.data.latents import CacheMismatch, column_shapes, read_sidecar
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.decode import decode_file, even_windows, random_windows
from vidgen_ray.data.probe import probe_row
from vidgen_ray.progress import Progress
from vidgen_ray.runtime import get_logger

log = get_logger("data.pipeline")


def stable_int(*parts: object) -> int:
    """A process-independent 63-bit hash (Python's ``hash`` of a str changes between processes)."""
    return int.from_bytes(hashlib.sha1("\x00".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


@dataclass
class Units:
    """What a clip stream draws from: video files or parquet shards of decoded clips."""

    kind: Literal["video", "shard"]
    rows: list[dict]
    clips_per_unit: float  # average clips one unit yields (exact for videos)
    frames: int = 0  # frames stored per clip in shards (may exceed the clip length, for temporal augmentation)
    label_names: list[str] = field(default_factory=list)
    # Shards' precomputed latents / caption embeddings (data/latents.py cache folders), read beside each shard.
    latents: str | None = None
    captions: str | None = None

    def __len__(self) -> int:
        return len(self.rows)


# --- probing --------------------------------------------------------------------------------------


def probe_all(cfg: DataConfig, catalog=None) -> tuple[list[dict], list[str]]:
    """Probe every listed file as Ray tasks. Returns (rows with probe fields and status, label names)."""
    import ray

    catalog = catalog or build_catalog(cfg)
    if not catalog.rows:
        raise ConfigError(f"no videos under {cfg.source} with extensions {list(cfg.extensions)}; check data.source / data.extensions")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items(catalog.rows, override_num_blocks=max(1, min(len(catalog.rows), 4 * cpus)))
    extra = {"resources": {cfg.decode_resource: 0.01}} if cfg.decode_resource else {}
    ds = ds.map(functools.partial(probe_row, cfg=cfg), num_cpus=1, memory=cfg.decode_memory_mb * 2**20, **extra)
    rows = []
    with Progress("probe", total=len(catalog.rows), unit="files") as progress:
        for row in ds.iter_rows():  # streamed: a bucket's first results show while the rest probe
            rows.append(row)
            progress.update(dropped=row["reason"] if row["status"] == "dropped" else None)
    rows.sort(key=lambda r: r["uri"])
    if len(rows) != len(catalog.rows):  # the accounting identity starts here
        raise RuntimeError(f"probing returned {len(rows)} rows for {len(catalog.rows)} files")
    return rows, catalog.label_names


def video_units(probed: tuple[list[dict], list[str]], cfg: DataConfig) -> dict[str, Units]:
    rows, label_names = probed
    kept = [r for r in rows if r["status"] == "kept"]
    units = {s: Units("video", [r for r in kept if r["split"] == s], cfg.clip.clips_per_video, label_names=label_names) for s in SPLITS}
    return {s: segment_units(u, cfg.max_clips_per_task) for s, u in units.items()}


def segment_units(units: Units, max_clips: int) -> Units:
    """Cut every video unit that asks for more than ``max_clips`` clips (its ``clips``, else
    ``units.clips_per_unit``) into consecutive time segments (``t0``, ``span``) of at most
    ``max_clips`` clips each: one long file then feeds several decode tasks at once (each seeks to its
    segment) instead of being one straggler. Clips keep the same spacing; the row count grows."""
    if units.kind != "video" or max_clips <= 0 or all(int(r.get("clips") or units.clips_per_unit) <= max_clips for r in units.rows):
        return units
    out: list[dict] = []
    for row in units.rows:
        n = int(row.get("clips") or units.clips_per_unit)
        if n <= max_clips:
            out.append(row)
            continue
        t0, span = float(row.get("t0", 0.0)), float(row.get("span", row["duration"]))
        pieces = math.ceil(n / max_clips)
        sizes = [n // pieces + (i < n % pieces) for i in range(pieces)]
        for size in sizes:
            part = span * size / n
            out.append({**row, "clips": size, "t0": t0, "span": part})
            t0 += part
    return Units("video", out, sum(int(r.get("clips") or units.clips_per_unit) for r in out) / max(1, len(out)),
                 units.frames, units.label_names)


# --- reading units ----------------------------------------------------------------------------------


class UnitReader:
    """Ray Data callable: item ids -> clips. One instance per decode actor."""

    def __init__(self, units: Units, cfg: DataConfig, split: str, start_item: int, augment: bool = True,
                 skip_rows: int = 0, skip: dict | None = None) -> None:
        import torch

        torch.set_num_threads(1)  # parallelism comes from Ray, not from threads inside one decoder
        self.units, self.cfg, self.split, self.start_item = units, cfg, split, start_item
        self.skip_rows = skip_rows  # clips of the first item a resumed run already trained on
        # Bucketed runs train clips out of stream order: item -> its clips (by index in the item) already trained.
        self.skip = {int(k): set(v) for k, v in (skip or {}).items()}
        self.train = split == "train"
        self.augment = augment and self.train and cfg.augment.enabled
        self.buckets = cfg.bucket_shapes  # empty: every clip has data.clip's shape
        self.failures = 0
        self.stats: dict = {}

    def _shape(self, unit: dict) -> tuple[int, int, int]:
        """(frames, height, width) of a unit's clips: its bucket's, or data.clip's."""
        if self.buckets:
            b = self.buckets[int(unit["bucket"])]
            return b.frames, b.height, b.width
        return self.cfg.clip.frames, self.cfg.clip.height, self.cfg.clip.width

    def _decoded(self, frames: int) -> int:
        """Frames decoded per clip: train clips keep extra ones for temporal augmentation."""
        return frames + (self.cfg.augment.extra_frames(frames) if self.train else 0)

    def _out_frames(self, frames: int) -> int:
        # Stored train clips (prepare / cache, no augmentation yet) keep the extra frames.
        return self._decoded(frames) if (self.train and not self.augment and self.units.kind == "video") else frames

    def _unit(self, g: int) -> tuple[int, dict]:
        n = len(self.units)
        epoch, pos = divmod(g, n)
        if not self.train:
            return epoch, self.units.rows[pos]
        return epoch, self.units.rows[int(_epoch_order(self.cfg.seed, epoch, n)[pos])]

    def _augment(self, clip: np.ndarray, rng: np.random.Generator, frames: int) -> np.ndarray:
        if not self.augment:
            # Without augmentation a train clip keeps its extra frames only when they are being stored
            # (prepare / cache), so temporal augmentation can still pick from them later.
            return clip[: self._out_frames(frames)]
        a = aug_lib.draw(self.cfg.augment, rng, frames, clip.shape[0])
        return aug_lib.apply(clip, a, frames)

    def _video_clips(self, unit: dict, epoch: int, rng: np.random.Generator) -> list[tuple[np.ndarray, float, int]]:
        spec = self.cfg.clip
        frames, height, width = self._shape(unit)
        decoded = self._decoded(frames)
        window_s = decoded / spec.fps
        n = int(unit.get("clips") or spec.clips_per_video)  # a unit may ask for its own number of windows
        t0, span = float(unit.get("t0", 0.0)), float(unit.get("span", unit["duration"]))  # a segment of the file
        if self.train and spec.window == "random":
            starts = random_windows(span, window_s, n, rng)
        else:
            starts = even_windows(span, window_s, n)
        starts = [t0 + s for s in starts]
        crop = (float(rng.uniform()), float(rng.uniform())) if self.train and spec.crop == "random" else (0.5, 0.5)
        clips = decode_file(
            unit["uri"], starts, decoded, spec.fps, height, width, rotation=unit["rotation"],
            crop=crop, interpolation=spec.interpolation, size=unit["size"], max_inmemory_mb=self.cfg.max_inmemory_mb,
            stats=self.stats,
        )
        return [(self._augment(c, rng, frames), s, i) for i, (c, s) in enumerate(zip(clips, starts))]

    def _shard_rows(self, unit: dict, epoch: int, rng: np.random.Generator) -> list[dict]:
        table = pq.read_table(io.BytesIO(storage.read_bytes(unit["uri"])))
        rows = table.to_pylist()
        for root in (self.units.latents, self.units.captions):
            if root:  # the cache's rows are the shard's, in order
                try:
                    side = read_sidecar(root, self.split, unit["uri"])
                except Exception as exc:  # noqa: BLE001 - a missing sidecar is a cache error, not a bad video
                    raise CacheMismatch(f"{root} has no rows for {unit['uri']} ({type(exc).__name__}: {exc}): "
                                        "encode the dataset again (vidgen-ray data encode)") from exc
                for key, values in side.items():
                    if len(values) != len(rows):
                        raise CacheMismatch(f"{root} has {len(values)} rows for {unit['uri']}, which has {len(rows)}: "
                                            "encode the dataset again (vidgen-ray data encode)")
                    for r, v in zip(rows, values):
                        r[key] = v
        if self.train:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        out = []
        for r in rows:
            clip = np.frombuffer(r["video"], dtype=np.uint8).reshape(r["frames"], r["height"], r["width"], 3)
            frames = self._shape(r)[0] if self.buckets else self.cfg.clip.frames
            if "latent" in r and self.augment:
                # The same draw as _augment (so a run's flips do not depend on the cache); a cached run allows
                # horizontal flips only (data/latents.py), which flip the latent's width axis too.
                # Start 0: the latent is of the stored clip's first frames, whatever spare frames it keeps.
                a = dataclasses.replace(aug_lib.draw(self.cfg.augment, rng, frames, clip.shape[0]), start=0)
                clip = aug_lib.apply(clip, a, frames)
                if a.hflip:
                    r["latent"] = np.ascontiguousarray(r["latent"][..., ::-1])
            else:
                clip = self._augment(clip, rng, frames)
            out.append({**r, "video": clip})
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cached = [k for k, root in (("latent", self.units.latents), ("caption_embedding", self.units.captions),
                                    ("caption_mask", self.units.captions)) if root]
        cols: dict[str, list] = {k: [] for k in ("video", "label", "caption", "source_id", "start_s", "clip_index", "epoch",
                                                 "item", "bucket", "row", *cached)}
        for gid in batch["id"]:
            g = int(gid) + self.start_item
            epoch, unit = self._unit(g)
            rng = np.random.default_rng([self.cfg.seed, epoch, stable_int(unit_key(unit))])
            first_row = len(cols["video"])
            try:
                if self.units.kind == "video":
                    for clip, start, ci in self._video_clips(unit, epoch, rng):
                        for k, v in (("video", clip), ("label", unit["label"]), ("caption", unit["caption"]),
                                     ("source_id", unit["source_id"]), ("start_s", start), ("clip_index", ci)):
                            cols[k].append(v)
                        cols["epoch"].append(epoch)
                        cols["item"].append(g)
                        cols["bucket"].append(int(unit.get("bucket", -1)))
                else:
                    for r in self._shard_rows(unit, epoch, rng):
                        for k in ("video", "label", "caption", "source_id", "start_s", "clip_index", *cached):
                            cols[k].append(r[k])
                        cols["epoch"].append(epoch)
                        cols["item"].append(g)
                        cols["bucket"].append(int(r.get("bucket", -1)))
            except CacheMismatch:
                raise  # a stale cache would silently drop every shard it does not cover
            except Exception as exc:  # noqa: BLE001 - one bad file must not end a training job
                self.failures += 1
                log.warning("skipping %s (epoch %d): %s: %s", unit["uri"], epoch, type(exc).__name__, exc)
            cols["row"].extend(range(len(cols["video"]) - first_row))  # each clip's index in its item
            if g == self.start_item and self.skip_rows:
                # The item is made whole (same seeded shuffle and augmentation) and its consumed head dropped.
                for values in cols.values():
                    del values[first_row : first_row + self.skip_rows]
            trained = self.skip.get(g)
            if trained:  # by each clip's index in the item, whatever was dropped before
                keep = [i for i in range(first_row, len(cols["row"])) if cols["row"][i] not in trained]
                for values in cols.values():
                    values[first_row:] = [values[i] for i in keep]
        _publish(self.split, clips=len(cols["video"]), frames=self.stats.pop("frames_decoded", 0), failures=self.failures)
        self.failures = 0
        out = {
            "label": np.asarray(cols["label"], dtype=np.int64),
            "caption": np.asarray(cols["caption"], dtype=object),
            "source_id": np.asarray(cols["source_id"], dtype=object),
            "start_s": np.asarray(cols["start_s"], dtype=np.float64),
            "clip_index": np.asarray(cols["clip_index"], dtype=np.int64),
            "epoch": np.asarray(cols["epoch"], dtype=np.int64),
            "item": np.asarray(cols["item"], dtype=np.int64),
        }
        if self.buckets:
            # Clips of several shapes in one block: raw bytes + each clip's shape (plain Arrow columns, like the
            # prepared shards), regrouped into one-shape batches on the trainer (data/buckets.py).
            out["video"] = np.array([np.ascontiguousarray(v).tobytes() for v in cols["video"]], dtype=object)
            out["shape"] = np.asarray([v.shape[:3] for v in cols["video"]], dtype=np.int32).reshape(-1, 3)
            out["bucket"] = np.asarray(cols["bucket"], dtype=np.int64)
            out["row"] = np.asarray(cols["row"], dtype=np.int64)
            return out
        spec = self.cfg.clip
        out["video"] = (np.stack(cols["video"]) if cols["video"]
                        else np.zeros((0, self._out_frames(spec.frames), spec.height, spec.width, 3), np.uint8))
        for k in cached:  # an empty block's columns get the cache's shapes (blocks concatenate by schema)
            if cols[k]:
                out[k] = np.stack(cols[k])
            else:
                root = self.units.latents if k == "latent" else self.units.captions
                out[k] = np.zeros((0, *column_shapes(root)[k]), bool if k == "caption_mask" else np.float32)
        return out


@functools.lru_cache(maxsize=1)
def _counters():
    """Ray metrics of the data pipeline (Prometheus names ray_vidgen_data_*_total), one set per process."""
    try:
        from ray.util.metrics import Counter

        return {
            "clips": Counter("vidgen_data_clips", "clips produced by the decode pipeline", tag_keys=("split",)),
            "frames": Counter("vidgen_data_frames", "source frames decoded", tag_keys=("split",)),
            "failures": Counter("vidgen_data_failures", "files that failed to decode after the probe", tag_keys=("split",)),
        }
    except Exception:  # noqa: BLE001 - outside a Ray worker there is nowhere to publish
        return None


def _publish(split: str, **counts: int) -> None:
    counters = _counters()
    if counters is None:
        return
    for name, value in counts.items():
        if value:
            counters[name].inc(value, tags={"split": split})


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled unit order of one epoch (cached per worker process: tasks reuse processes)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class StreamItems(Datasource):
    """Item ids ``0..n-1`` in blocks of ``per_block``: the stream's source, made lazily when its read
    tasks run. At most ``max_tasks`` read tasks, each yielding its blocks one by one: Ray Data builds
    every read task on the driver before the first block (~0.5 KB and ~50 us each), so one task per
    block would cost GBs and minutes for epochs x videos of a large bucket."""

    def __init__(self, n: int, per_block: int, max_tasks: int = 4096) -> None:
        self.n, self.per_block, self.max_tasks = int(n), int(per_block), int(max_tasks)

    def estimate_inmemory_data_size(self) -> int:
        return 8 * self.n

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        import pyarrow as pa

        blocks = math.ceil(self.n / self.per_block)
        blocks_per_task = math.ceil(blocks / max(1, min(parallelism, blocks, self.max_tasks)))
        per_task = blocks_per_task * self.per_block
        schema = pa.schema([("id", pa.int64())])
        tasks = []
        for start in range(0, self.n, per_task):
            stop = min(self.n, start + per_task)
            meta = BlockMetadata(num_rows=stop - start, size_bytes=8 * (stop - start), input_files=None, exec_stats=None)
            tasks.append(ReadTask(functools.partial(_id_blocks, start, stop, self.per_block), meta, schema=schema,
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def _id_blocks(start: int, stop: int, per_block: int) -> Iterator:
    import pyarrow as pa

    for first in range(start, stop, per_block):
        yield pa.table({"id": np.arange(first, min(stop, first + per_block), dtype=np.int64)})


def unit_key(unit: dict) -> str:
    """What a unit's random draws (shuffle within a shard, windows, crops, augmentation) are seeded by:
    its path inside the dataset, not its absolute URI, so a seeded run is a function of the data and not
    of where it lies (a temporary folder, another bucket): the golden-loss test depends on it."""
    uri = unit["uri"]
    return unit.get("rel_path") or f"{storage.basename(storage.dirname(uri))}/{storage.basename(uri)}"


def read_units(batch: dict[str, np.ndarray], units: Units, cfg: DataConfig, split: str, start_item: int, augment: bool,
               skip_rows: int = 0, skip: dict | None = None) -> dict:
    """The Ray Data task function: a few item ids -> their clips."""
    return UnitReader(units, cfg, split, start_item, augment, skip_rows, skip)(batch)


def decode_task_shape(cfg: DataConfig, cpus: int | None) -> tuple[float, int | None]:
    """(CPUs each decode task asks for, concurrent decode tasks) when ``cpus`` CPUs decode (None: as
    many CPUs as are free, and Ray Data sizes the pool). ``cfg.decode_tasks_per_cpu`` tasks share a CPU."""
    # Ray counts resources in units of 1e-4: round each task's share down, so n tasks fit n / ratio CPUs.
    per_task = math.floor(1e4 / cfg.decode_tasks_per_cpu) / 1e4
    return per_task, (max(1, math.floor(cpus * cfg.decode_tasks_per_cpu + 1e-9)) if cpus else None)


def clip_stream(
    units: Units, cfg: DataConfig, split: str, epochs: int = 1, start_item: int = 0, decode_cpus: int | None = None, augment: bool = True,
    skip_rows: int = 0, skip: dict | None = None,
):
    """A Ray Dataset of clips: ``epochs`` passes over ``units`` from item ``start_item`` on (less its first
    ``skip_rows`` clips), decoded on ``decode_cpus`` CPUs (default ``cfg.decode_workers``; 0/None: as
    many as are free). ``cfg.ordered`` keeps the train stream in item order (reproducible runs)."""
    import ray

    if not len(units):
        raise ConfigError(f"the {split} split has no usable videos; check the probe report or data.split")
    total = len(units) * epochs - start_item
    if total <= 0:
        raise ValueError(f"start_item {start_item} is past the end of {epochs} epoch(s) of {len(units)} units")
    blocks = math.ceil(total / cfg.files_per_task)
    cpus_per_task, size = decode_task_shape(cfg, decode_cpus or cfg.decode_workers or None)
    size = min(size, blocks) if size else None  # no more tasks than blocks (Ray Data warns otherwise)
    # One request for the id read and the decode, so Ray Data fuses them into a single task per
    # block: no separate read tasks taking CPU slots beside the decoders, no id blocks through the
    # object store. The memory= request lets the scheduler see the heap decoded video takes.
    remote = {"num_cpus": cpus_per_task, "memory": cfg.decode_memory_mb * 2**20}
    if cfg.decode_resource:
        remote["resources"] = {cfg.decode_resource: 0.01}
    # Lazy item ids, not materialised up front (from_items): a stream is epochs x units items,
    # hundreds of millions on a large bucket.
    ds = ray.data.read_datasource(
        StreamItems(total, cfg.files_per_task),
        override_num_blocks=blocks,
        concurrency=size,
        **remote,
    )
    # Tasks, not actors: Ray reuses worker processes between tasks (imports and caches stay warm)
    # and nothing has to start before the first clip; the pool size caps decode parallelism.
    # batch_size=None: one call per id block (files_per_task ids); a row-count batch would stop the fusion.
    ds = ds.map_batches(
        read_units,
        fn_kwargs={"units": units, "cfg": cfg, "split": split, "start_item": start_item, "augment": augment,
                   "skip_rows": skip_rows, "skip": skip},
        batch_size=None,
        batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=size),
        **remote,
    )
    if split != "train" or cfg.ordered:
        # Evaluation splits come out in one order every pass (the batch formatting threads
        # otherwise reorder batches): the same clips meet the same noise draws at every validation.
        # This dataset's own context; the train stream stays unordered for throughput. Ray Train
        # overwrites a dataset's execution options, so train/run.py `ingest_config` hands this on.
        ds.context.execution_options.preserve_order = True
    return ds


# --- feeding training -------------------------------------------------------------------------------


class ClipCollate(NumpyBatchCollateFn):
    """numpy batch -> torch tensors: video stays uint8 [B, T, H, W, C] (normalised on the worker),
    captions stay strings, and the batch says which epoch and stream item it reached."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        import torch

        with warnings.catch_warnings():
            # Ray hands out read-only arrays; the uint8 tensor is only ever read (normalising copies).
            warnings.simplefilter("ignore", UserWarning)
            video = torch.from_numpy(np.ascontiguousarray(batch["video"]))
        return {
            "video": video,
            "label": torch.from_numpy(np.asarray(batch["label"], dtype=np.int64)),
            "caption": [str(c) for c in batch["caption"]],
            "epoch": int(batch["epoch"].max()) if len(batch["epoch"]) else 0,
            "item": int(batch["item"].max()) if len(batch["item"]) else 0,
            "items": torch.from_numpy(np.asarray(batch["item"], dtype=np.int64)),  # each clip's stream item
            **{k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in ("latent", "caption_embedding", "caption_mask")
               if k in batch},
        }


def row_video(row: dict) -> np.ndarray:
    """A clip-stream row's uint8 [T, H, W, C]: bucketed rows hold bytes + shape, the others the array."""
    if "shape" in row:
        return np.frombuffer(row["video"], np.uint8).reshape(*(int(n) for n in row["shape"]), 3)
    return row["video"]


def reference_rows(rows: list[dict], cfg: DataConfig) -> list[dict]:
    """Rows as arrays of ``data.clip``'s shape, for what compares clips of one shape (evaluation, the motion
    classifier): a bucketed stream's rows of other sizes are left out, longer ones cut to the first frames."""
    if not cfg.bucket_shapes:
        return rows
    want = (cfg.clip.frames, cfg.clip.height, cfg.clip.width)
    out = []
    for r in rows:
        video = row_video(r)
        if video.shape[1:3] == want[1:] and video.shape[0] >= want[0]:
            out.append({**{k: v for k, v in r.items() if k != "shape"}, "video": video[: want[0]]})
    return out


def _bucket_batch(rows: list[dict], bucket: int) -> dict:
    """One-shape rows (bytes + shape) -> the batch ``ClipCollate`` makes, plus its ``bucket``."""
    import torch

    video = np.stack([row_video(r) for r in rows])
    items = np.asarray([r["item"] for r in rows], dtype=np.int64)
    return {
        "rows": [(int(r["item"]), int(r["row"])) for r in rows],  # each clip's (stream item, index in it)
        "video": torch.from_numpy(video),
        "label": torch.from_numpy(np.asarray([r["label"] for r in rows], dtype=np.int64)),
        "caption": [str(r["caption"]) for r in rows],
        "epoch": int(max(r["epoch"] for r in rows)),
        "item": int(items.max()),
        "items": torch.from_numpy(items),
        "bucket": bucket,
    }


def bucket_batches(shard, batch_size: int, cfg: DataConfig, drop_last: bool = True, shuffle: bool = True) -> Iterator[dict]:
    """A bucketed shard as batches of one shape each (``data/buckets.py``): a bucket's batch is handed out as
    soon as it has its batch size (``batch_size`` reference clips' worth of pixels); with ``drop_last``
    the partial batches left when the stream ends are dropped, else handed out last."""
    from vidgen_ray.data.buckets import Bucket, BucketBatcher, batch_sizes

    buckets = cfg.bucket_shapes
    batcher = BucketBatcher(batch_sizes(buckets, batch_size, Bucket(cfg.clip.frames, cfg.clip.height, cfg.clip.width)))
    for block in shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=cfg.prefetch_batches,
                                    local_shuffle_buffer_size=cfg.shuffle_buffer if shuffle else None,
                                    local_shuffle_seed=cfg.seed if shuffle else None):
        for i in range(len(block["bucket"])):
            row = {k: v[i] for k, v in block.items()}
            full = batcher.add(int(row["bucket"]), row)
            if full is not None:
                batch = _bucket_batch(full, int(row["bucket"]))
                # Read but not yet trained: what an exact resume must read again (train/loop.py).
                batch["pending"] = sorted((int(r["item"]), int(r["row"])) for rs in batcher.pending.values() for r in rs)
                yield batch
    if not drop_last:
        for bucket, rows in batcher.leftovers():
            yield _bucket_batch(rows, bucket)


def torch_batches(shard, batch_size: int, cfg: DataConfig, drop_last: bool = True, shuffle: bool = True) -> Iterator[dict]:
    """Iterate a Train worker's shard (``ray.train.get_dataset_shard``) as collated torch batches;
    ``shuffle`` applies the local shuffle buffer of ``cfg`` (validation reads in order). With
    ``data.buckets`` every batch holds clips of one bucket (``bucket_batches``)."""
    shuffle = shuffle and bool(cfg.shuffle_buffer)
    if shuffle and cfg.shuffle_buffer < 4 * batch_size:
        raise ValueError(f"data.shuffle_buffer={cfg.shuffle_buffer} must be far larger than 2 x batch ({batch_size}); ray#66085 hangs otherwise")
    if cfg.bucket_shapes:
        return bucket_batches(shard, batch_size, cfg, drop_last, shuffle)
    return shard.iter_torch_batches(
        batch_size=batch_size,
        prefetch_batches=cfg.prefetch_batches,
        local_shuffle_buffer_size=cfg.shuffle_buffer if shuffle else None,
        local_shuffle_seed=cfg.seed if shuffle else None,
        drop_last=drop_last,
        collate_fn=ClipCollate(),
    )


def configure_data_context() -> None:
    """Set before creating a Trainer (it captures the DataContext): unordered streaming (memory bounded by
    Ray Data's object-store budget, half the store by default), no per-op noise."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
