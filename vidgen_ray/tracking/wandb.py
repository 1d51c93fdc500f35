"""Weights & Biases: online with ``WANDB_API_KEY`` (or a ``wandb login``), offline otherwise.

Offline runs land in ``<run>/wandb/offline-run-*`` (uploaded there from a staging folder when the run
lives on object storage); ``wandb sync <that folder>`` sends one later. ``WANDB_MODE`` set by the user
wins. A resumed run keeps one W&B run id (derived from the run's folder), so its curves continue
online; W&B keeps the first value logged at a step, so after a restart from a checkpoint the steps an
earlier attempt logged past it keep that attempt's values (TensorBoard replaces them).

    pip install 'vidgen-ray[wandb]'
    vidgen-ray train --preset dit-debug --data ... --set 'train.trackers=[tensorboard,wandb]'
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vidgen_ray.tracking.base import LocalFolder, Tracker, TrackerRun, tile

def run_id(run: TrackerRun) -> str:
    """Stable across restarts and resumes of one run; different for every run and trial."""
    return hashlib.sha1(f"{run.job}:{run.run_dir}".encode()).hexdigest()[:16]


def mode() -> str:
    """The user's WANDB_MODE; else online when an API key is at hand (the environment, or the netrc
    entry that ``wandb login`` writes); else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return "offline"


class WandbTracker(Tracker):
    def __init__(self, run: TrackerRun) -> None:
        import wandb

        self.wandb = wandb
        # W&B writes <dir>/wandb/<run folder>: the run's folder (or its staging copy) is that dir.
        self.folder = LocalFolder(run.run_dir)
        self.media = Path(tempfile.mkdtemp(prefix="vidgen-wandb-media-"))
        self.run = wandb.init(
            project=run.project, name=run.name, group=run.group, job_type=run.job, id=run_id(run), resume="allow",
            dir=str(self.folder.path), config=dict(run.config),
            mode=mode(), settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_video(self, tag: str, videos: np.ndarray, step: int, fps: float) -> None:
        from vidgen_ray.media import encode_mp4

        # From a file: wandb.Video encodes numpy arrays through moviepy, which is not a dependency.
        path = self.media / f"{tag.replace('/', '_')}_{step:09d}.mp4"
        path.write_bytes(encode_mp4(tile(videos), fps=fps))
        self.run.log({tag: self.wandb.Video(str(path), format="mp4")}, step=step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Image(np.ascontiguousarray(image))}, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_artifact(self, path: str) -> None:
        name = Path(path).name
        artifact = self.wandb.Artifact(name.replace(".", "-"), type="file")
        artifact.add_file(path, name=name)
        self.run.log_artifact(artifact)

    def sync(self) -> None:
        self.folder.upload()

    def finish(self, failed: bool = False) -> None:
        import shutil

        self.run.finish(exit_code=1 if failed else 0)
        shutil.rmtree(self.media, ignore_errors=True)
        self.folder.close()
