"""Labelled real clips of one split, decoded like validation clips, in memory: what the motion
classifier trains and is scored on, and what the learning benchmark compares generated videos with.

    python -c "from vidgen_ray.data.config import DataConfig; from vidgen_ray.evaluate.labelled import labelled_clips; \
print(labelled_clips(DataConfig(source='./outputs/demo/clips'), 'test').videos.shape)"
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np

from vidgen_ray import storage
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.pipeline import clip_stream, reference_rows
from vidgen_ray.data.prepare import MARKER, is_prepared, training_units


@dataclass
class LabelledClips:
    videos: np.ndarray  # uint8 [N, T, H, W, C]
    labels: np.ndarray  # int64 [N]
    source_ids: np.ndarray  # object [N]: the video each clip came from
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabelledClips:
        return LabelledClips(self.videos[index], self.labels[index], self.source_ids[index], self.label_names)

    def one_per_video(self) -> LabelledClips:
        """The first clip of each source video (in source order): sets built from these share no video."""
        _, first = np.unique(self.source_ids, return_index=True)
        return self.subset(np.sort(first))


def adopt_prepared_spec(cfg: DataConfig) -> DataConfig:
    """A copy of ``cfg`` whose clip spec is the prepared dataset's own (a prepared source holds one spec)."""
    cfg = copy.deepcopy(cfg)
    if is_prepared(cfg.source):
        clip = json.loads(storage.read_text(storage.join(cfg.source, MARKER)))["clip"]
        cfg.clip.frames, cfg.clip.height, cfg.clip.width, cfg.clip.fps = clip["frames"], clip["height"], clip["width"], clip["fps"]
    return cfg


def labelled_clips(cfg: DataConfig, split: str, limit: int | None = None, missing_ok: bool = False) -> LabelledClips:
    """Every clip (or the first ``limit``) of ``split``, in a stable order, without augmentation."""
    units, meta = training_units(cfg)
    names = list(meta.get("label_names") or units[split].label_names or [])
    if not len(units[split]):
        if missing_ok:
            spec = cfg.clip
            return LabelledClips(np.zeros((0, spec.frames, spec.height, spec.width, 3), np.uint8), np.zeros(0, np.int64),
                                 np.zeros(0, object), names)
        raise ValueError(f"the {split} split of {cfg.source} is empty; check the probe report or data.split")
    ds = clip_stream(units[split], cfg, "val")  # "val" mode: even windows, no augmentation, in order
    rows = reference_rows(ds.take(limit) if limit else ds.take_all(), cfg)  # bucketed: data.clip's shape only
    return LabelledClips(
        np.stack([r["video"] for r in rows]),
        np.array([int(r["label"]) for r in rows], dtype=np.int64),
        np.array([str(r["source_id"]) for r in rows], dtype=object),
        names,
    )
