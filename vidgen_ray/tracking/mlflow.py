"""MLflow: metrics, sample videos, contact sheets and the config to ``MLFLOW_TRACKING_URI``.

Without ``MLFLOW_TRACKING_URI`` a local run logs to ``<run>/mlruns`` (MLflow's file store, which MLflow 3
keeps in maintenance mode: ``MLFLOW_ALLOW_FILE_STORE`` is set for it); a run on object storage then
needs a tracking server. One MLflow run per vidgen-ray run: a resumed run finds its
MLflow run again by the ``vidgen.run_id`` tag and continues it. The experiment is
``train.tracker_project``; a sweep's trials carry its name in the ``vidgen.group`` tag.

    pip install 'vidgen-ray[mlflow]'     # the client (mlflow-skinny); a server is `mlflow server`
    MLFLOW_TRACKING_URI=http://mlflow:5000 vidgen-ray train ... --set 'train.trackers=[tensorboard,mlflow]'

Metrics go through MLflow's asynchronous logging (``synchronous=False``): a slow server does not
hold a step. Artifacts (videos, images) are uploaded at sample steps, outside the steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vidgen_ray import storage
from vidgen_ray.tracking.base import Tracker, TrackerRun, tile
from vidgen_ray.tracking.wandb import run_id

RUN_TAG = "vidgen.run_id"


def tracking_uri(run: TrackerRun) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = storage.local_path(run.run_dir)
    if local is None:
        raise RuntimeError(f"MLflow has no local folder for a run in {run.run_dir}: set MLFLOW_TRACKING_URI to a "
                           f"tracking server (e.g. http://mlflow:5000)")
    # MLflow 3 refuses its file store unless asked: this default is that ask (a server is the better home).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return Path(local, "mlruns").resolve().as_uri()


class MlflowTracker(Tracker):
    def __init__(self, run: TrackerRun) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri(run))
        experiment = self.client.get_experiment_by_name(run.project)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(run.project)
            except Exception:  # noqa: BLE001 - another run created it first
                experiment_id = self.client.get_experiment_by_name(run.project).experiment_id
        else:
            experiment_id = experiment.experiment_id
        rid = run_id(run)
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{rid}'", max_results=1)
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {RUN_TAG: rid, "vidgen.job": run.job, **({"vidgen.group": run.group} if run.group else {})}
            self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        self.media = Path(tempfile.mkdtemp(prefix="vidgen-mlflow-"))
        self.pending: list = []
        if run.config:
            self.log_config(run.config)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self.pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))

    def _upload(self, name: str, data: bytes, artifact_path: str) -> None:
        path = self.media / name
        path.write_bytes(data)
        self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)
        path.unlink()

    def log_video(self, tag: str, videos: np.ndarray, step: int, fps: float) -> None:
        from vidgen_ray.media import encode_mp4

        self._upload(f"step_{step:09d}.mp4", encode_mp4(tile(videos), fps=fps), tag)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        from vidgen_ray.media import encode_png

        self._upload(f"step_{step:09d}.png", encode_png(image), tag)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.client.log_dict(self.run_id, dict(config), "config.yaml")

    def log_artifact(self, path: str) -> None:
        self.client.log_artifact(self.run_id, path)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for operation in pending:  # RunOperations of the asynchronous log_batch calls
            operation.wait()

    def finish(self, failed: bool = False) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
        shutil.rmtree(self.media, ignore_errors=True)
