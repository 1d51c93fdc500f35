"""The catalog: every video file under a URI, joined with its labels and captions, assigned a split.

    python -c "from vidgen_ray.data.catalog import build_catalog; from vidgen_ray.data.config import DataConfig; \
print(build_catalog(DataConfig(source='../shared/videos')).summary())"

The split is a function of the *source video* only (a stable hash of ``source_id``: the manifest's
``source`` column when present, else the file's path), so every clip of one video, and every file
cut from one source, lands in one split.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vidgen_ray import storage
from vidgen_ray.configs import ConfigError
from vidgen_ray.data.config import DataConfig, SplitConfig
from vidgen_ray.runtime import get_logger

log = get_logger("data.catalog")

MANIFEST_NAMES = ("manifest.parquet", "manifest.csv", "manifest.jsonl")
SPLITS = ("train", "val", "test")


def split_of(source_id: str, split: SplitConfig) -> str:
    """Stable split assignment: the same ``source_id`` (and salt) always gives the same split."""
    digest = hashlib.sha1(f"{split.salt}\x00{source_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < split.train:
        return "train"
    if u < split.train + split.val:
        return "val"
    return "test"


def _read_manifest(uri: str) -> pa.Table:
    data = storage.read_bytes(uri)
    name = storage.basename(uri)  # a URI may end in a query (?endpoint_override=...)
    if name.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
    elif name.endswith(".csv"):
        table = pacsv.read_csv(io.BytesIO(data))
    elif name.endswith((".jsonl", ".json")):
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        table = pa.Table.from_pylist(rows)
    else:
        raise ConfigError(f"manifest {uri}: use .parquet, .csv or .jsonl (columns: path, label, caption)")
    if "path" not in table.column_names:
        raise ConfigError(f"manifest {uri} has no 'path' column (columns: {table.column_names}); add one")
    return table


def _relative(path: str, root_uri: str, root_path: str) -> str:
    """A manifest path (relative, absolute or a full URI) -> the path relative to the source root."""
    for root in (root_uri.rstrip("/"), root_path.rstrip("/")):
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
    if "://" in path:
        _, fs_path = storage.resolve(path)
        if fs_path.startswith(root_path.rstrip("/") + "/"):
            return fs_path[len(root_path.rstrip("/")) + 1 :]
    return posixpath.normpath(path)


@dataclass
class Catalog:
    rows: list[dict]  # uri, rel_path, size, label, caption, source_id, split
    label_names: list[str] = field(default_factory=list)
    manifest_uri: str | None = None
    manifest_unmatched: list[str] = field(default_factory=list)  # manifest paths with no file

    def summary(self) -> str:
        counts = {s: sum(r["split"] == s for r in self.rows) for s in SPLITS}
        text = f"{len(self.rows)} files listed ({', '.join(f'{k} {v}' for k, v in counts.items())})"
        if self.manifest_uri:
            text += f"; manifest {self.manifest_uri}"
        if self.manifest_unmatched:
            text += f"; {len(self.manifest_unmatched)} manifest rows name files that do not exist"
        return text


def build_catalog(cfg: DataConfig) -> Catalog:
    if not cfg.source:
        raise ConfigError("data.source is empty: set it to a folder or bucket of videos (e.g. --data s3://bucket/videos)")
    entries = storage.list_files(cfg.source, extensions=cfg.extensions, recursive=True)
    manifest_uri = cfg.manifest
    if manifest_uri is None:
        for name in MANIFEST_NAMES:
            candidate = storage.join(cfg.source, name)
            if storage.exists(candidate):
                manifest_uri = candidate
                break
    by_rel: dict[str, dict] = {}
    label_names: list[str] = []
    unmatched: list[str] = []
    _, root_path = storage.resolve(cfg.source)
    root_path = root_path.rstrip("/")
    rels = {e.path[len(root_path) + 1 :]: e for e in entries}
    if manifest_uri:
        table = _read_manifest(manifest_uri)
        cols = table.to_pydict()
        n = table.num_rows
        raw_labels = cols.get("label", [None] * n)
        if any(isinstance(v, str) for v in raw_labels):
            label_names = sorted({str(v) for v in raw_labels if v is not None})
            index = {name: i for i, name in enumerate(label_names)}
            labels = [index[str(v)] if v is not None else -1 for v in raw_labels]
        else:
            labels = [int(v) if v is not None else -1 for v in raw_labels]
            if "label_name" in cols:
                pairs = {int(l): str(nm) for l, nm in zip(labels, cols["label_name"]) if l >= 0}
                label_names = [pairs.get(i, str(i)) for i in range(max(pairs, default=-1) + 1)]
        captions = cols.get("caption", [""] * n)
        sources = cols.get("source", [None] * n)
        for i, path in enumerate(cols["path"]):
            rel = _relative(str(path), cfg.source, root_path)
            if rel not in rels:
                unmatched.append(str(path))
                continue
            by_rel[rel] = {"label": labels[i], "caption": captions[i] or "", "source_id": sources[i] or rel}
        if unmatched:
            log.warning("%d manifest rows name files not found under %s (first: %s)", len(unmatched), cfg.source, unmatched[0])
    elif cfg.labels_from_dirs:
        dirs = sorted({posixpath.dirname(rel) for rel in rels})
        label_names = dirs
        index = {d: i for i, d in enumerate(dirs)}
        by_rel = {rel: {"label": index[posixpath.dirname(rel)], "caption": "", "source_id": rel} for rel in rels}
    rows = []
    for rel, e in sorted(rels.items()):
        meta = by_rel.get(rel, {"label": -1, "caption": "", "source_id": rel})
        rows.append(
            {
                "uri": e.uri,
                "rel_path": rel,
                "size": e.size,
                "label": int(meta["label"]),
                "caption": str(meta["caption"]),
                "source_id": str(meta["source_id"]),
                "split": split_of(str(meta["source_id"]), cfg.split),
            }
        )
    catalog = Catalog(rows, label_names, manifest_uri, unmatched)
    log.info("catalog: %s", catalog.summary())
    return catalog
