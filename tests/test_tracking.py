"""Trackers write what their own tools read back: TensorBoard event files, offline W&B runs, on local
folders and on S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tracker_files
from vidgen_ray import storage
from vidgen_ray.tracking import TrackerRun, TrackerUnavailable, open_trackers, require, tile


def _videos(n: int = 3, t: int = 4, h: int = 8, w: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(n, t, h, w, 3), dtype=np.uint8)


def test_tile_lays_videos_out_in_a_grid_frame_by_frame():
    videos = _videos(n=5)
    grid = tile(videos, columns=2)
    assert grid.shape == (4, 3 * 8, 2 * 10, 3)
    assert np.array_equal(grid[2, 8:16, 10:20], videos[3, 2])  # row 1, column 1 = video 3
    assert not grid[:, 16:, 10:].any()  # the empty sixth cell is black


def test_tensorboard_events_hold_scalars_videos_images_and_the_config(tmp_path: Path):
    run = TrackerRun(name="r", run_dir=str(tmp_path / "run"), config={"model": {"name": "dit-debug"}, "train": {"lr": 0.01}})
    with open_trackers(["tensorboard"], run) as tracker:
        for step in (1, 2, 3):
            tracker.log_scalars({"train/loss": 1.0 / step, "perf/samples_per_s": 10.0 * step}, step)
        tracker.log_video("samples", _videos(), 3, fps=8)
        tracker.log_image("samples_grid", _videos()[0, 0], 3)
    acc = tracker_files.tensorboard(tmp_path / "run" / "tensorboard")
    assert tracker_files.scalar_steps(acc, "train/loss") == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    assert tracker_files.scalar_steps(acc, "perf/samples_per_s")[3] == pytest.approx(30.0)
    (video,) = acc.Images("samples")
    assert video.step == 3 and video.encoded_image_string[:6] == b"GIF89a"  # an animated GIF, as add_video writes
    assert (video.height, video.width) == (8, 30)  # three 8x10 clips side by side
    from PIL import Image
    import io

    assert Image.open(io.BytesIO(video.encoded_image_string)).n_frames == 4
    (grid,) = acc.Images("samples_grid")
    assert grid.encoded_image_string[:4] == b"\x89PNG"
    (text,) = acc.Tensors("config/text_summary")
    assert "dit-debug" in text.tensor_proto.string_val[0].decode()


def test_a_resumed_run_hides_what_the_failed_attempt_logged_after_its_checkpoint(tmp_path: Path):
    run_dir = str(tmp_path / "run")
    with open_trackers(["tensorboard"], TrackerRun(name="r", run_dir=run_dir)) as tracker:
        for step in range(1, 7):
            tracker.log_scalars({"train/loss": 1.0}, step)  # the attempt that died after step 6
    with open_trackers(["tensorboard"], TrackerRun(name="r", run_dir=run_dir, start_step=4)) as tracker:
        for step in range(5, 8):
            tracker.log_scalars({"train/loss": 2.0}, step)  # resumed from the step-4 checkpoint
    events = tracker_files.tensorboard(Path(run_dir) / "tensorboard").Scalars("train/loss")
    assert [(e.step, e.value) for e in events] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 2.0), (6, 2.0), (7, 2.0)]


def test_a_restart_before_the_first_checkpoint_replaces_the_failed_attempts_curve(tmp_path: Path):
    run_dir = str(tmp_path / "run")
    for value in (1.0, 2.0):  # the first attempt died at step 3 with no checkpoint; the second starts over
        with open_trackers(["tensorboard"], TrackerRun(name="r", run_dir=run_dir)) as tracker:
            for step in (1, 2, 3):
                tracker.log_scalars({"train/loss": value}, step)
    events = tracker_files.tensorboard(Path(run_dir) / "tensorboard").Scalars("train/loss")
    assert [(e.step, e.value) for e in events] == [(1, 2.0), (2, 2.0), (3, 2.0)]


def test_a_failing_tracker_is_logged_and_skipped(tmp_path: Path, caplog):
    from vidgen_ray.tracking import Tracker, Trackers

    class Broken(Tracker):
        def log_scalars(self, values, step):
            raise OSError("disk full")

    good = open_trackers(["tensorboard"], TrackerRun(name="r", run_dir=str(tmp_path / "run")))
    both = Trackers([Broken(), *good.trackers])
    both.log_scalars({"train/loss": 0.5}, 1)  # no exception: the run this watches goes on
    both.finish()
    events = tracker_files.tensorboard(tmp_path / "run" / "tensorboard")
    assert tracker_files.scalar_steps(events, "train/loss") == {1: 0.5}  # the healthy tracker still logged


@pytest.mark.s3
def test_tensorboard_on_object_storage_uploads_at_sync_and_finish(s3_bucket: str, tmp_path: Path, monkeypatch):
    run_dir = storage.join(s3_bucket, "tracked")
    tracker = open_trackers(["tensorboard"], TrackerRun(name="r", run_dir=run_dir))
    tracker.log_scalars({"train/loss": 0.5}, 1)
    tracker.sync()
    files = storage.list_files(storage.join(run_dir, "tensorboard"))
    assert len(files) == 1 and "tfevents" in files[0].uri
    writes: list[str] = []
    real_write = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data: (writes.append(uri), real_write(uri, data)))
    tracker.sync()
    assert writes == []  # nothing changed since the last upload: nothing goes up again
    tracker.log_scalars({"train/loss": 0.25}, 2)
    tracker.finish()
    assert len(writes) == 1  # the grown event file, once
    local = tmp_path / "events"
    local.mkdir()
    (entry,) = storage.list_files(storage.join(run_dir, "tensorboard"))
    (local / entry.uri.rsplit("/", 1)[-1]).write_bytes(storage.read_bytes(entry.uri))
    assert tracker_files.scalar_steps(tracker_files.tensorboard(local), "train/loss") == {1: 0.5, 2: 0.25}


def test_wandb_offline_run_holds_the_history_media_and_config(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key: offline, as on a machine never logged in
    run = TrackerRun(name="trial_1", run_dir=str(tmp_path / "run"), group="sweep-a", config={"train": {"lr": 0.01}})
    with open_trackers(["wandb"], run) as tracker:
        tracker.log_scalars({"train/loss": 0.5}, 1)
        tracker.log_scalars({"train/loss": 0.25, "val/loss": 0.3}, 2)
        tracker.log_video("samples", _videos(), 2, fps=8)
        tracker.log_image("samples_grid", _videos()[0, 0], 2)
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    rows = tracker_files.wandb_history(folder)
    losses = {row["_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert losses == {1: 0.5, 2: 0.25}
    media = {row["_step"]: row for row in rows if "samples/path" in row}
    assert media[2]["samples/_type"] == "video-file" and media[2]["samples/path"].endswith(".mp4")
    assert (folder / "files" / media[2]["samples/path"]).stat().st_size > 0
    assert any("samples_grid/path" in row for row in rows)
    assert tracker_files.wandb_config(folder)["train"] == {"lr": 0.01}
    (started,) = [r.run for r in tracker_files.wandb_records(folder) if r.WhichOneof("record_type") == "run"]
    assert (started.run_group, started.display_name) == ("sweep-a", "trial_1")  # a sweep's trials group together


def test_a_missing_tracker_package_names_the_extra_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrackerUnavailable, match=r"pip install 'vidgen-ray\[wandb\]'"):
        require(["tensorboard", "wandb"])
    require(["tensorboard"])
    with pytest.raises(ValueError, match="unknown tracker"):
        require(["tensorbored"])


@pytest.mark.ray
def test_an_evaluation_logs_its_report_at_the_checkpoints_step(ray_session, trained_checkpoints, prepared_dir: Path,
                                                              tmp_path: Path):
    from vidgen_ray.evaluate.checkpoint_eval import evaluate_checkpoint
    from vidgen_ray.evaluate.config import EvalConfig

    config = EvalConfig(metrics=("psnr", "flicker"), num_videos=4, batch_size=2, num_actors=1, grid_videos=2,
                        output_uri=str(tmp_path / "eval"))
    report = evaluate_checkpoint(trained_checkpoints["dit-debug"], config, data=str(prepared_dir), steps=2)
    events = tracker_files.tensorboard(tmp_path / "eval" / "tensorboard")
    assert tracker_files.scalar_steps(events, "eval/flicker") == pytest.approx({4: report.metrics["flicker"]})
    assert tracker_files.scalar_steps(events, "eval/latency_per_video_s_median")[4] > 0
    (grid,) = events.Images("eval/samples")
    assert grid.step == 4 and grid.encoded_image_string[:4] == b"\x89PNG"


def test_mlflow_run_on_a_real_server_holds_metrics_videos_images_and_config(mlflow_server: str, tmp_path: Path,
                                                                             monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run = TrackerRun(name="trial_7", run_dir=str(tmp_path / "run"), project="vidgen-test", group="sweep-b",
                     config={"train": {"lr": 0.01}})
    with open_trackers(["mlflow"], run) as tracker:
        for step in (1, 2, 3):
            tracker.log_scalars({"train/loss": 1.0 / step}, step)
        tracker.log_video("samples", _videos(), 3, fps=8)
        tracker.log_image("samples_grid", _videos()[0, 0], 3)
    client = MlflowClient(tracking_uri=mlflow_server)
    (found,) = client.search_runs([client.get_experiment_by_name("vidgen-test").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "trial_7"
    assert found.data.tags["vidgen.group"] == "sweep-b"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    videos = [a.path for a in client.list_artifacts(found.info.run_id, "samples")]
    assert videos == ["samples/step_000000003.mp4"]
    local = client.download_artifacts(found.info.run_id, videos[0], str(tmp_path))
    import av

    with av.open(local) as container:  # the artifact went through the server and decodes
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert [a.path for a in client.list_artifacts(found.info.run_id, "samples_grid")] == ["samples_grid/step_000000003.png"]
    config = client.download_artifacts(found.info.run_id, "config.yaml", str(tmp_path))
    assert "lr: 0.01" in Path(config).read_text()
    # A resumed run continues the same MLflow run.
    with open_trackers(["mlflow"], TrackerRun(name="trial_7", run_dir=str(tmp_path / "run"), project="vidgen-test",
                                             start_step=3)) as tracker:
        tracker.log_scalars({"train/loss": 0.2}, 4)
    (again,) = client.search_runs([client.get_experiment_by_name("vidgen-test").experiment_id])
    assert again.info.run_id == found.info.run_id
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train/loss")][-1] == 4


def test_mlflow_without_a_tracking_uri_logs_to_the_runs_own_mlruns_folder(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vidgen_ray.tracking.mlflow import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = TrackerRun(name="r", run_dir=str(tmp_path / "run"))
    with open_trackers(["mlflow"], run) as tracker:
        tracker.log_scalars({"val/loss": 0.5}, 2)
    assert tracking_uri(run) == (tmp_path / "run" / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=tracking_uri(run))
    (found,) = client.search_runs([client.get_experiment_by_name("vidgen-ray").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "val/loss")] == [(2, 0.5)]
    with pytest.raises(RuntimeError, match="MLFLOW_TRACKING_URI"):  # object storage: no local folder for it
        tracking_uri(TrackerRun(name="r", run_dir="s3://bucket/runs/r"))
