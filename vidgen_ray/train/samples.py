"""Sample videos during training: MP4 per sample plus a contact-sheet PNG, in the run's storage.

    <storage_path>/<name>/samples/step_000000200/sample_00.mp4 ... grid.png

Every rank runs ``sample`` (sharded models need all ranks in the forward pass); rank 0 writes.
"""

from __future__ import annotations

import contextlib

import torch

from vidgen_ray import storage
from vidgen_ray.media import contact_sheet, encode_mp4, encode_png
from vidgen_ray.models.base import Batch, VideoModel, to_uint8


def samples_dir(storage_path: str, name: str, step: int) -> str:
    return storage.join(storage_path, name, "samples", f"step_{step:09d}")


def due(cfg, step: int, final: bool) -> bool:
    """Whether samples are written at ``step``: every ``train.sample_every`` steps and at the end. The
    same answer on every rank (sampling a sharded model is collective)."""
    every = cfg.train.sample_every
    return (final or bool(every and step % every == 0)) and cfg.train.num_samples > 0


def write_samples(model: VideoModel, ema, cfg, step: int, final: bool, rank: int, batch: Batch | None = None):
    """The samples' uint8 frames [N, T, H, W, 3] on rank 0 (for the trackers), once written; else None."""
    if not due(cfg, step, final):
        return None
    n = cfg.train.num_samples
    cond: dict = {}
    if batch is not None:  # condition on real labels / captions / context frames
        n = min(n, batch.size)
        cond = model.sample_conditioning(batch, n)
    model.eval()
    with torch.no_grad(), (ema.applied() if ema is not None else contextlib.nullcontext()):
        video = model.sample(n, seed=cfg.train.seed, **cond)
    model.train()
    if rank != 0:
        return None
    frames = to_uint8(video).cpu().numpy()  # [n, T, H, W, C]
    out = samples_dir(cfg.storage_path, cfg.name, step)
    for i, clip in enumerate(frames):
        storage.write_bytes(storage.join(out, f"sample_{i:02d}.mp4"), encode_mp4(clip, fps=cfg.data.clip.fps))
    storage.write_bytes(storage.join(out, "grid.png"), encode_png(contact_sheet(frames)))
    return frames
