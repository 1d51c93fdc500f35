"""The tracker interface: what training, Tune trials and evaluation log, in one small class.

    tracker = open_trackers(["tensorboard", "wandb"], TrackerRun(...))   # start
    tracker.log_scalars({"train/loss": 0.4}, step)                        # numbers
    tracker.log_video("samples", videos_uint8, step, fps=8)               # [N, T, H, W, 3]
    tracker.log_image("samples_grid", image_uint8, step)                  # [H, W, 3]
    tracker.log_config(config_dict); tracker.log_artifact(path)
    tracker.flush()    # on disk now (at every report: a stopped Tune trial is killed, not closed)
    tracker.sync()     # flush; an object-store run uploads what changed (at every checkpoint)
    tracker.finish()

No callbacks: the caller says what to log, when. Scalars are handed to the backend's own writer
thread (TensorBoard's and W&B's are asynchronous); videos are encoded on the calling rank at sample
steps, and uploads happen at checkpoints, both outside the steps. A failing tracker is logged and
skipped, never the end of a training run.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vidgen_ray import storage
from vidgen_ray.runtime import get_logger

log = get_logger("tracking")

# tracker name -> (module that must be importable, the pip extra that installs it)
REQUIREMENTS = {
    "tensorboard": ("tensorboard", "vidgen-ray"),  # a core dependency
    "wandb": ("wandb", "vidgen-ray[wandb]"),
    "mlflow": ("mlflow", "vidgen-ray[mlflow]"),
}
TRACKERS = tuple(REQUIREMENTS)


class TrackerUnavailable(RuntimeError):
    """A tracker was asked for whose package is not installed (raised before any worker starts)."""


def check_names(names: tuple[str, ...] | list[str], where: str = "train.trackers") -> None:
    unknown = [n for n in names if n not in REQUIREMENTS]
    if unknown:
        raise ValueError(f"{where}: unknown tracker(s) {unknown}; choose from {list(TRACKERS)} or [] for none")
    if len(set(names)) != len(names):
        raise ValueError(f"{where} lists a tracker twice: {list(names)}")


def require(names: tuple[str, ...] | list[str], where: str = "train.trackers") -> None:
    """Fail with the pip command to run when a chosen tracker's package is missing. Called on the
    driver, so the error comes in seconds instead of from every worker after it starts."""
    check_names(names, where)
    for name in names:
        module, extra = REQUIREMENTS[name]
        if importlib.util.find_spec(module) is None:
            raise TrackerUnavailable(f"{where} includes {name!r}, but the {module} package is not installed: "
                                     f"pip install '{extra}' (or drop it: --set {where}=[])")


@dataclass
class TrackerRun:
    """Who is logging: one training run, one Tune trial, or one evaluation."""

    name: str  # the run's name (a Tune trial: trial_<id>)
    run_dir: str  # the run's folder in its storage (local path or s3:// ...); files go under it
    project: str = "vidgen-ray"
    group: str | None = None  # runs that belong together: a sweep's trials
    config: dict = field(default_factory=dict)
    start_step: int = 0  # a resumed run starts here; TensorBoard drops what an earlier attempt logged after it
    job: str = "train"  # train | eval


class Tracker:
    """A tracker that logs nothing: the base every backend overrides, and what ranks != 0 get."""

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        pass

    def log_video(self, tag: str, videos: np.ndarray, step: int, fps: float) -> None:
        pass

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(failed=exc_type is not None)


class Trackers(Tracker):
    """Several trackers as one. An exception in one (a full disk, an object store that is away) is
    logged and that call skipped: tracking never ends the run it watches."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def _each(self, method: str, *args, **kwargs) -> None:
        for tracker in self.trackers:
            try:
                getattr(tracker, method)(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("%s.%s failed: %s: %s", type(tracker).__name__, method, type(exc).__name__, exc)

    def log_scalars(self, values, step):
        self._each("log_scalars", {k: float(v) for k, v in values.items() if _is_number(v)}, step)

    def log_video(self, tag, videos, step, fps):
        self._each("log_video", tag, videos, step, fps)

    def log_image(self, tag, image, step):
        self._each("log_image", tag, image, step)

    def log_config(self, config):
        self._each("log_config", config)

    def log_artifact(self, path):
        self._each("log_artifact", path)

    def flush(self):
        self._each("flush")

    def sync(self):
        self._each("sync")

    def finish(self, failed: bool = False):
        self._each("finish", failed=failed)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def open_trackers(names: tuple[str, ...] | list[str], run: TrackerRun) -> Tracker:
    """Start every named tracker for ``run`` (an empty list gives the no-op tracker)."""
    require(names)
    trackers: list[Tracker] = []
    for name in names:
        try:
            if name == "tensorboard":
                from vidgen_ray.tracking.tensorboard import TensorBoardTracker

                trackers.append(TensorBoardTracker(run))
            elif name == "wandb":
                from vidgen_ray.tracking.wandb import WandbTracker

                trackers.append(WandbTracker(run))
            elif name == "mlflow":
                from vidgen_ray.tracking.mlflow import MlflowTracker

                trackers.append(MlflowTracker(run))
        except Exception as exc:  # noqa: BLE001 - a tracker that cannot start is skipped, the run goes on
            log.warning("tracker %s could not start for %s, continuing without it: %s: %s", name, run.run_dir,
                        type(exc).__name__, exc)
    return Trackers(trackers)


class LocalFolder:
    """Where a backend writes its files: the run's own folder when it is local; otherwise a temporary
    folder that ``upload()`` copies to the object store (the files that changed since the last upload,
    whole: event and run files only grow, and each attempt of a run writes files of its own names)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        local = storage.local_path(uri)
        self.staged = local is None
        self.path = Path(tempfile.mkdtemp(prefix="vidgen-tracker-")) if self.staged else Path(local)
        self.path.mkdir(parents=True, exist_ok=True)
        self._uploaded: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime_ns) when it went up

    def upload(self) -> None:
        if not self.staged:
            return
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            try:
                stat = file.stat()
                if self._uploaded.get(file) == (stat.st_size, stat.st_mtime_ns):
                    continue
                data = file.read_bytes()
            except FileNotFoundError:  # a backend's temporary file, gone between listing and reading
                continue
            storage.write_bytes(storage.join(self.uri, file.relative_to(self.path).as_posix()), data)
            self._uploaded[file] = (stat.st_size, stat.st_mtime_ns)

    def close(self) -> None:
        try:
            self.upload()
        finally:
            if self.staged:
                shutil.rmtree(self.path, ignore_errors=True)


def tile(videos: np.ndarray, columns: int = 4) -> np.ndarray:
    """uint8 [N, T, H, W, C] -> one video [T, rows*H, columns*W, C] (empty cells black), as
    TensorBoard's own ``add_video`` tiles a batch."""
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"tile wants [N, T, H, W, C], got shape {videos.shape}")
    n, t, h, w, c = videos.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, t, h, w, c), videos.dtype)
    padded[:n] = videos
    return padded.reshape(rows, columns, t, h, w, c).transpose(2, 0, 3, 1, 4, 5).reshape(t, rows * h, columns * w, c)
