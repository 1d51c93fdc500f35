"""Precompute once, train many times: a prepared dataset's VAE latents and caption embeddings, written beside its
clip shards and keyed by everything they depend on, so a latent DiT stops re-encoding every clip at every step.

    vidgen-ray data prepare SRC OUT --encode runs/vae/checkpoint_000001000 --encode /models/t5-base
    python -c "from vidgen_ray.data.latents import describe; print(describe('OUT'))"

``--encode`` takes a trained VAE checkpoint (latents), a ``save_pretrained`` T5 / CLIP text-encoder folder
(caption embeddings; ``--text-encoder-tokens``), or a latent DiT checkpoint (its ``model.autoencoder`` and, if it
has one, its pretrained text encoder). Layout, one sidecar row per clip row of a shard, in the shard's order::

    OUT/latents/<key>/{train,val,test}/<shard>.parquet   latent: float32 bytes [C, T, H, W] (latent_shape)
    OUT/latents/<key>/_ENCODED.json                      what the key was made of, counts, seconds
    OUT/captions/<key>/{train,val,test}/<shard>.parquet  caption_embedding: float16 bytes [L, W]; caption_mask
    OUT/captions/<key>/_ENCODED.json

What is stored: the VAE encoder's posterior **mean** of each clip as the trainer normalises it (``data.normalize``
and the prepared set's channel statistics), times the VAE's own ``latent_scale`` (``Autoencoder(mode="encode")``,
what the latent DiT encodes live; the DiT's ``model.latent_scale`` is applied at training, so one cache serves any
scale). Train clips are stored with spare frames for temporal augmentation; the latents are of the first
``data.clip.frames``. Caption embeddings are the frozen encoder's last hidden state in float16.

Keys: latents hash the checkpoint's URI and the sha256 of its weights file, the normaliser and the clip spec;
captions hash the encoder folder's identity (config, weights, tokenizer) and the token count. Encoding again with
the same key reuses what is there (``reused`` in the summary); any other key writes a new folder, never mixing.

Augmentation, honestly: a latent was encoded from the clip as stored, un-augmented. A run reading the cache
applies horizontal flips to the latents (the width axis flipped: exact for an encoder that commutes with
flips, an approximation for a trained VAE, measured in ``tests/test_latent_cache.py``); every other
augmentation (temporal shift, speed, vertical flip, rotation, zoom, colour, noise) changes what would have been
encoded, so such a run does not use the cache (``data.latent_cache=auto`` says why and encodes live) or fails
(``require``). Buckets are not cached yet (auto: live encoding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidgen_ray import storage
from vidgen_ray.configs import ConfigError
from vidgen_ray.data.catalog import SPLITS
from vidgen_ray.runtime import get_logger

log = get_logger("data.latents")

LATENTS, CAPTIONS, ENCODED = "latents", "captions", "_ENCODED.json"
FORMAT = 1


# --- identities and keys -------------------------------------------------------------------------------


def checkpoint_sha(uri: str) -> str:
    """sha256 of a checkpoint's weights file (``model.pt``): the same path retrained is another encoder."""
    h = hashlib.sha256()
    h.update(storage.read_bytes(storage.join(uri, "model.pt")))
    return h.hexdigest()


def latent_key(sha: str, normalizer, clip: dict) -> tuple[str, dict]:
    """(key, what it hashes) of a VAE cache: the weights' sha256 (not the path, which a relative or moved
    checkpoint spells otherwise), the normaliser, the clip spec."""
    inputs = {"format": FORMAT, "sha256": sha, "normalizer": dataclasses.asdict(normalizer),
              "clip": {k: clip[k] for k in ("frames", "height", "width", "fps")}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def caption_key(kind: str, identity: str, max_tokens: int) -> tuple[str, dict]:
    inputs = {"format": FORMAT, "kind": kind, "identity": identity, "max_tokens": max_tokens}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def normalizer_for_prepared(prepared: str, mode: str):
    """The normaliser a run with ``data.normalize=mode`` builds for this prepared dataset (train/run.normalizer_for):
    mean_std takes the marker's channel statistics."""
    from vidgen_ray.data.normalize import Normalizer
    from vidgen_ray.data.prepare import MARKER

    if mode != "mean_std":
        return Normalizer(mode)
    marker = json.loads(storage.read_text(storage.join(prepared, MARKER)))
    if marker.get("mean") is None:
        raise ConfigError(f"{prepared} has no channel statistics (an empty train split?): mean_std cannot be encoded")
    return Normalizer("mean_std", tuple(marker["mean"]), tuple(marker["std"]))


def augment_blocks_cache(augment) -> str | None:
    """Why a run's augmentation cannot train on cached latents, or None (off, or horizontal flips only)."""
    if not augment.enabled:
        return None
    used = [name for name in ("vflip", "rotate_p", "zoom_p", "jitter_p", "speed_p", "noise_p") if getattr(augment, name) > 0]
    if augment.temporal_shift:
        used.append("temporal_shift")
    if used:
        return (f"data.augment.{', '.join(used)} change the pixels a latent was encoded from (the cache holds "
                "un-augmented clips; only horizontal flips are applied to latents): set them to 0")
    return None


# --- what --encode names -------------------------------------------------------------------------------


@dataclasses.dataclass
class Encoders:
    vae: str | None = None  # a VAE checkpoint URI
    text_kind: str | None = None  # t5 / clip
    text_path: str | None = None
    text_tokens: int = 64


def resolve_encoders(names: list[str], text_tokens: int = 64) -> Encoders:
    """``--encode`` values -> what to run: VAE checkpoints, text-encoder folders, latent DiT checkpoints."""
    from vidgen_ray.checkpoints import read_meta

    out = Encoders(text_tokens=text_tokens)
    for name in names:
        if storage.exists(storage.join(name, "meta.json")):
            model = read_meta(name)["experiment"]["model"]
            if model.get("family") == "vae":
                out.vae = name
            elif model.get("family") == "dit" and (model.get("autoencoder") or model.get("text_encoder", "byte") != "byte"):
                out.vae = model.get("autoencoder") or out.vae
                if model.get("text_encoder", "byte") != "byte":
                    out.text_kind, out.text_path = model["text_encoder"], model["text_encoder_path"]
                    out.text_tokens = int(model.get("max_caption_tokens", text_tokens))
            else:
                raise ConfigError(f"--encode {name}: a {model.get('family')} checkpoint has nothing to precompute; give a "
                                  "VAE checkpoint, a latent DiT checkpoint or a T5 / CLIP text-encoder folder")
        elif storage.exists(storage.join(name, "config.json")):
            config = json.loads(storage.read_text(storage.join(name, "config.json")))
            kind = config.get("model_type", "")
            kind = "t5" if kind.startswith(("t5", "mt5", "umt5")) else "clip" if kind.startswith("clip") else None
            if kind is None:
                raise ConfigError(f"--encode {name}: model_type {config.get('model_type')!r} is neither T5 nor CLIP")
            out.text_kind, out.text_path = kind, name
        else:
            raise ConfigError(f"--encode {name}: neither a checkpoint (meta.json) nor a text-encoder folder (config.json)")
    return out


# --- writing -------------------------------------------------------------------------------------------


def _shards(prepared: str, split: str) -> list[str]:
    root = storage.join(prepared, split)
    if not storage.exists(root):
        return []
    return sorted(e.uri for e in storage.list_files(root, extensions=(".parquet",)))


def _sidecar(root: str, split: str, shard: str) -> str:
    return storage.join(root, split, storage.basename(shard))


def _clips(table: pa.Table, frames: int) -> np.ndarray:
    """uint8 [N, frames, H, W, 3] of a shard's rows (train rows hold spare frames: the first ``frames`` are kept)."""
    out = []
    for video, t, h, w in zip(*(table.column(c).to_pylist() for c in ("video", "frames", "height", "width"))):
        out.append(np.frombuffer(video, np.uint8).reshape(t, h, w, 3)[:frames])
    return np.stack(out) if out else np.zeros((0, frames, 1, 1, 3), np.uint8)


def _encode_latent_shard(shard: str, target: str, vae_uri: str, normalizer, frames: int, batch: int, threads: int) -> int:
    import torch

    from vidgen_ray.checkpoints import load_for_inference

    torch.set_num_threads(threads)
    vae, _, _ = _cached_model(vae_uri, load_for_inference)
    codec = getattr(vae, "net", vae)
    with storage.open_input(shard) as f:
        table = pq.read_table(f, columns=["video", "frames", "height", "width"])
    clips = _clips(table, frames)
    latents = []
    with torch.no_grad():
        for i in range(0, len(clips), batch):
            video = normalizer(torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])))
            latents.append(codec(video, mode="encode").float().numpy())
    z = np.concatenate(latents) if latents else np.zeros((0,), np.float32)
    shape = list(z.shape[1:]) if len(z) else []
    out = pa.table({"latent": [row.tobytes() for row in z], "latent_shape": [shape] * len(z)})
    _write_table(target, out)
    return len(z), {"latent": shape}


def _encode_caption_shard(shard: str, target: str, kind: str, path: str, tokens: int, threads: int) -> int:
    import torch

    from vidgen_ray.models.pretrained_text import PretrainedTextEncoder

    torch.set_num_threads(threads)
    encoder, _, _ = _cached_model((kind, path, tokens), lambda key: (PretrainedTextEncoder(*key), None, None))
    with storage.open_input(shard) as f:
        captions = [str(c or "") for c in pq.read_table(f, columns=["caption"]).column("caption").to_pylist()]
    emb, mask = encoder.encode(captions, "cpu") if captions else (torch.zeros(0, 1, 1), torch.zeros(0, 1, dtype=torch.bool))
    e16 = emb.to(torch.float16).numpy()
    out = pa.table({"caption_embedding": [row.tobytes() for row in e16], "caption_shape": [list(e16.shape[1:])] * len(e16),
                    "caption_mask": [row.tobytes() for row in mask.numpy().astype(np.uint8)]})
    _write_table(target, out)
    shape = list(e16.shape[1:])
    return len(e16), {"caption_embedding": shape, "caption_mask": shape[:1]}


_MODELS: dict = {}


def _cached_model(key, load):
    """One model per worker process and key: Ray reuses worker processes between tasks."""
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load(key)
    return _MODELS[key]


def _write_table(uri: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(uri, buf.getvalue())


def _run_shards(fn, jobs: list[tuple], threads: int) -> list[tuple[int, dict]]:
    """Run ``fn`` over shards as Ray tasks (each encoder loaded once per worker process)."""
    import ray

    remote = ray.remote(num_cpus=threads)(fn)
    return ray.get([remote.remote(*job) for job in jobs])


def encode_prepared(prepared: str, encoders: Encoders, normalizer=None, batch: int = 16, threads: int = 1) -> dict:
    """Write (or reuse) the caches ``encoders`` name for the prepared dataset at ``prepared``. ``normalizer``:
    the trainer's (default: from ``data.normalize``'s default and the marker's statistics is the caller's job;
    None means minus_one_one). Returns {"latents": summary, "captions": summary} for what was asked."""
    from vidgen_ray.data.normalize import Normalizer
    from vidgen_ray.data.prepare import MARKER

    if not storage.exists(storage.join(prepared, MARKER)):
        raise ConfigError(f"{prepared} is not a prepared dataset (no {MARKER}): run vidgen-ray data prepare first")
    marker = json.loads(storage.read_text(storage.join(prepared, MARKER)))
    if marker.get("buckets"):
        raise ConfigError(f"{prepared} holds bucketed clips of several shapes; the latent cache handles one clip shape")
    normalizer = normalizer or Normalizer()
    frames = int(marker["clip"]["frames"])
    out: dict = {}
    if encoders.vae:
        key, inputs = latent_key(checkpoint_sha(encoders.vae), normalizer, marker["clip"])
        inputs["checkpoint"] = encoders.vae  # recorded, not hashed
        root = storage.join(prepared, LATENTS, key)
        out["latents"] = _encode_all(root, key, inputs, prepared, threads, lambda shard, target: (
            _encode_latent_shard, (shard, target, encoders.vae, normalizer, frames, batch, threads)))
    if encoders.text_kind:
        from vidgen_ray.models.pretrained_text import PretrainedTextEncoder

        identity = PretrainedTextEncoder(encoders.text_kind, encoders.text_path, encoders.text_tokens).identity
        key, inputs = caption_key(encoders.text_kind, identity, encoders.text_tokens)
        inputs["path"] = encoders.text_path  # recorded, not hashed: the same encoder elsewhere is the same key
        root = storage.join(prepared, CAPTIONS, key)
        out["captions"] = _encode_all(root, key, inputs, prepared, threads, lambda shard, target: (
            _encode_caption_shard, (shard, target, encoders.text_kind, encoders.text_path, encoders.text_tokens, threads)))
    return out


def _encode_all(root: str, key: str, inputs: dict, prepared: str, threads: int, job) -> dict:
    marker_uri = storage.join(root, ENCODED)
    if storage.exists(marker_uri):
        summary = json.loads(storage.read_text(marker_uri))
        if summary.get("shards") == current_shards(prepared):
            log.info("reusing %s (key %s)", root, key)
            return {**summary, "reused": True}
        log.info("%s was encoded from other shards (the dataset was prepared again): encoding anew", root)
    t0 = time.perf_counter()
    counts, shapes, rows = {}, {}, {}
    for split in SPLITS:
        shards = _shards(prepared, split)
        jobs = [job(shard, _sidecar(root, split, shard)) for shard in shards]
        done = _run_shards(jobs[0][0], [args for _, args in jobs], threads) if jobs else []
        counts[split] = int(sum(n for n, _ in done))
        shapes.update(next((shape for n, shape in done if n), {}))
        rows[split] = {storage.basename(shard): int(n) for shard, (n, _) in zip(shards, done)}
    summary = {"key": key, "inputs": inputs, "clips": counts, "shapes": shapes, "shards": rows,
               "seconds": round(time.perf_counter() - t0, 2), "root": root}
    storage.write_text(marker_uri, json.dumps(summary, indent=2))  # last: a half-written cache has no marker
    log.info("encoded %s clips into %s in %.1fs", counts, root, summary["seconds"])
    return {**summary, "reused": False}


# --- reading -------------------------------------------------------------------------------------------


class CacheMismatch(RuntimeError):
    """A cache does not hold the rows of the shard it sits beside: the reader stops rather than skip the shard."""


def current_shards(prepared: str) -> dict[str, dict[str, int]]:
    """{split: {shard file name: rows}} of a prepared dataset, what a cache must have been encoded from."""
    out = {}
    for split in SPLITS:
        out[split] = {}
        for shard in _shards(prepared, split):
            with storage.open_input(shard) as f:
                out[split][storage.basename(shard)] = pq.ParquetFile(f).metadata.num_rows
    return out


def find(prepared: str, kind: str, key: str, shards: dict | None = None) -> str | None:
    """The cache folder for ``key`` under a prepared dataset, when complete (its marker written) and encoded
    from the shards the dataset holds now (preparing again into the same folder makes it stale); ``shards``:
    those ({split: {name: rows}}) when the caller has them, else read."""
    root = storage.join(prepared, kind, key)
    marker = storage.join(root, ENCODED)
    if not storage.exists(marker):
        return None
    if json.loads(storage.read_text(marker)).get("shards") != (shards or current_shards(prepared)):
        log.warning("%s is stale: encoded from other shards than %s holds now; encode it again", root, prepared)
        return None
    return root


def column_shapes(root: str) -> dict[str, list[int]]:
    """Per-clip shapes of a cache's columns (what an empty block's columns are given)."""
    return json.loads(storage.read_text(storage.join(root, ENCODED)))["shapes"]


def read_sidecar(root: str, split: str, shard: str) -> dict[str, list]:
    """A shard's cached columns, one entry per clip row, as numpy arrays: latent [C, T, H, W] float32, or
    caption_embedding [L, W] float32 and caption_mask [L] bool."""
    with storage.open_input(_sidecar(root, split, shard)) as f:
        table = pq.read_table(f)
    out: dict[str, list] = {}
    if "latent" in table.column_names:
        out["latent"] = [np.frombuffer(b, np.float32).reshape(s) for b, s in
                         zip(table.column("latent").to_pylist(), table.column("latent_shape").to_pylist())]
    if "caption_embedding" in table.column_names:
        out["caption_embedding"] = [np.frombuffer(b, np.float16).reshape(s).astype(np.float32) for b, s in
                                    zip(table.column("caption_embedding").to_pylist(), table.column("caption_shape").to_pylist())]
        out["caption_mask"] = [np.frombuffer(b, np.uint8).astype(bool) for b in table.column("caption_mask").to_pylist()]
    return out


def describe(prepared: str) -> dict:
    """Every complete cache under a prepared dataset: {"latents": [summary...], "captions": [...]}."""
    out: dict = {LATENTS: [], CAPTIONS: []}
    for kind in (LATENTS, CAPTIONS):
        root = storage.join(prepared, kind)
        if not storage.exists(root):
            continue
        for entry in storage.list_files(root):
            if storage.basename(entry.uri) == ENCODED:
                out[kind].append(json.loads(storage.read_text(entry.uri)))
    return out
