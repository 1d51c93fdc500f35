"""Hyperparameter sweeps: sweep files are checked with errors that name the fix, and a real sweep
on the shared Ray instance (Optuna TPE + ASHA over real Train runs of two families) is interrupted,
resumed, stops a bad trial early, and leaves results, a plot and a best.yaml that trains.

The sweep needs Ray's state API (the dashboard) reachable from workers: run this file alone with
VIDGEN_TEST_DASHBOARD=1 until the session fixture starts the dashboard."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ray.tune import Callback

import tracker_files
from vidgen_ray.tune.space import SweepError, parse_param
from vidgen_ray.tune.sweep import load_sweep, sweep_from_dict, with_cli
from vidgen_ray.tune.trial import TrialTemplate, report_count

REPO = Path(__file__).resolve().parents[1]


def sweep_dict(**changes) -> dict:
    base = {
        "name": "t", "base": "dit-debug",
        "fixed": {"data.source": "/nowhere", "train.max_steps": 6, "train.val_every": 2, "train.checkpoint_every": 6},
        "space": {"train.optim.lr": {"loguniform": [1.0e-5, 1.0e-2]}},
    }
    base.update(changes)
    return base


def checked(**changes):
    """Parse and check a sweep against the experiment (no data needed)."""
    sweep = sweep_from_dict(sweep_dict(**changes))
    return sweep, TrialTemplate.from_sweep(sweep, "/tmp/sweeps/t", need_data=False)


# --- sweep files: validation --------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "tuning").glob("*.yaml")))
def test_shipped_sweeps_check_against_their_experiments(path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = with_cli(load_sweep(path), data="s3://bucket/videos")
    template = TrialTemplate.from_sweep(sweep, f"s3://bucket/sweeps/{sweep.name}", need_data=False)
    assert template.max_reports(sweep) > sweep.scheduler.grace_period
    assert len(template.params) >= 2 and sweep.num_trials >= 4


def test_shipped_cluster_sweeps_ask_for_gpus_and_search_what_matters(monkeypatch):
    monkeypatch.chdir(REPO)
    gan, dit = load_sweep("tuning/gan_sweep.yaml"), load_sweep("tuning/dit_sweep.yaml")
    for sweep in (gan, dit):
        assert sweep.resources.gpus_per_worker == 1 and sweep.resources.workers >= 4 and sweep.scheduler.kind == "asha"
    assert {"train.optim.lr", "train.optim.discriminator_lr_mult", "train.batch_size", "model.r1_gamma",
            "model.gen_channels"} <= set(gan.space)
    assert {"train.optim.lr", "train.schedule.warmup_steps", "train.optim.weight_decay", "model.depth", "model.hidden",
            "model.dropout", "train.batch_size", "train.max_steps"} <= set(dit.space)
    widths = next(p for p in gan.params if p.key == "model.gen_channels")
    assert widths.decode(widths.labels[0]) == (256, 128, 64, 32)  # a list choice reaches the model as a tuple


def test_unknown_space_key_names_the_field():
    with pytest.raises(SweepError, match=r"space.train.optim.lrr.*did you mean 'lr'"):
        checked(space={"train.optim.lrr": {"loguniform": [1.0e-5, 1.0e-3]}})
    with pytest.raises(SweepError, match=r"did you mean 'metric'"):
        sweep_from_dict(sweep_dict(metirc="val_loss"))


@pytest.mark.parametrize("spec,message", [
    ({"randint": [1, 4]}, "did you mean 'int'"),
    ({"loguniform": [0, 1.0e-3]}, "low > 0"),
    ({"uniform": [0.3, 0.1]}, "low < high"),
    ({"int": [1.5, 3]}, "whole numbers"),
    ({"choice": []}, "non-empty list"),
    ({"choice": [8, 8]}, "repeat"),
    (3.0e-4, "fixed"),
    ({"uniform": [0, 1], "int": [1, 2]}, "one distribution"),
])
def test_bad_distributions_are_rejected(spec, message):
    with pytest.raises(SweepError, match=message):
        parse_param("train.optim.lr", spec)


def test_bad_mode_metric_and_report_settings():
    with pytest.raises(SweepError, match=r"mode: 'minimize' is not one of \['min', 'max'\]"):
        sweep_from_dict(sweep_dict(mode="minimize"))
    with pytest.raises(SweepError, match="did you mean 'val_loss'"):
        sweep_from_dict(sweep_dict(metric="val_los"))
    no_val = {"data.source": "/x", "train.max_steps": 6}
    with pytest.raises(SweepError, match=r"set fixed: \{train.val_every"):
        checked(fixed=no_val)
    with pytest.raises(SweepError, match="multiple of train.val_every"):
        checked(fixed={**no_val, "train.val_every": 4, "train.checkpoint_every": 2})
    with pytest.raises(SweepError, match="ASHA could never stop one"):
        checked(fixed={**no_val, "train.val_every": 6, "train.checkpoint_every": 6})
    with pytest.raises(SweepError, match="both under fixed: and under space:"):
        checked(fixed={**no_val, "train.val_every": 2, "train.optim.lr": 1.0e-3})


def test_searched_values_must_build_valid_experiments_for_every_family():
    with pytest.raises(SweepError, match=r"space.model.dropout=1.5 does not build a valid experiment.*dropout"):
        checked(space={"model.dropout": {"uniform": [0.0, 1.5]}})
    with pytest.raises(SweepError, match=r"space.train.batch_size=2.5"):
        checked(space={"train.batch_size": {"choice": [2, 2.5]}})
    families = {"model.preset": {"choice": ["dit-debug", "gan-debug"]}, "train.optim.lr": {"loguniform": [1.0e-5, 1.0e-2]}}
    sweep, template = checked(space=families)
    assert {template.experiment({"model.preset": p}).model.family for p in ("dit-debug", "gan-debug")} == {"dit", "gan"}
    # model.depth exists for the transformer only: the error names the family that lacks it.
    with pytest.raises(SweepError, match=r"space.model.depth=2 with model.preset=gan-debug.*unknown config field"):
        checked(space={**families, "model.depth": {"int": [2, 4]}})


def test_points_and_cli_overrides():
    sweep = sweep_from_dict(sweep_dict(space={"train.optim.lr": {"loguniform": [1.0e-5, 1.0e-2]},
                                              "model.gen_channels": {"choice": [[64, 32, 16, 16], [32, 16, 8, 8]]}},
                                       base="gan-debug",
                                       points_to_evaluate=[{"train.optim.lr": 1.0e-3, "model.gen_channels": [32, 16, 8, 8]}]))
    assert sweep.encoded_points() == [{"train.optim.lr": 1.0e-3, "model.gen_channels": "32,16,8,8"}]
    with pytest.raises(SweepError, match="outside"):
        sweep_from_dict(sweep_dict(points_to_evaluate=[{"train.optim.lr": 0.5}]))
    pinned = with_cli(sweep, data="/data", storage="/runs", sets=["train.optim.lr=3e-4", "parallel.use_gpu=true"], trials=2)
    assert set(pinned.space) == {"model.gen_channels"} and pinned.num_trials == 2 and pinned.storage_path == "/runs"
    trial = TrialTemplate.from_sweep(pinned, "/runs/t", need_data=False).experiment({"model.gen_channels": "32,16,8,8"})
    assert trial.train.optim.lr == 3.0e-4 and trial.parallel.use_gpu and trial.data.source == "/data"
    assert trial.model.gen_channels == (32, 16, 8, 8)
    assert pinned.encoded_points() == [{"model.gen_channels": "32,16,8,8"}]


def test_report_count_matches_the_train_loop():
    # reports at every validation and checkpoint step, and once at the end (vidgen_ray/train/loop.py)
    assert report_count(6, 2, 6) == 3 and report_count(10, 4, 3) == 6 and report_count(5, 0, 100) == 1


def test_dry_run_prints_the_plan(capsys, monkeypatch):
    from vidgen_ray.tune.cli import main

    monkeypatch.chdir(REPO)
    assert main(["tuning/dit_sweep.yaml", "--data", "s3://b/v", "--set", "parallel.use_gpu=true", "--trials", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "5 trials" in out and "max_t 40 reports" in out and "model.depth: choice [8, 12, 16]" in out
    assert main(["tuning/dit_sweep.yaml", "--set", "train.optim.lrr=1", "--dry-run"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


# --- a real sweep: interrupted, resumed, ASHA, outputs, best.yaml trains -------------------------


class InterruptAfter(Callback):
    """Presses Ctrl-C once ``n`` trials have ended. The flag file keeps the copy that is restored
    with the experiment (Tune stores its callbacks) from doing it again."""

    def __init__(self, n: int, flag: str):
        self.n, self.flag, self.ended = n, flag, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.n and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os.kill(os.getpid(), signal.SIGINT)  # Tune's handler: save the state, stop, return


GOOD, BAD, GAN = ("dit-debug", 3.0e-3), ("dit-debug", 1.0e-6), ("gan-debug", 2.0e-4)


@pytest.fixture(scope="module")
def sweep_runs(ray_session, prepared_dir, tmp_path_factory):
    """Three trials one at a time: a good and a hopeless transformer, then a GAN (the family is a
    searched choice). Ctrl-C after the second; the rerun resumes and finishes the third."""
    from vidgen_ray.tune.run import run_sweep

    root = tmp_path_factory.mktemp("sweeps")
    sweep = sweep_from_dict({
        "name": "family-lr", "base": "dit-debug", "storage_path": str(root),
        "fixed": {"data.source": str(prepared_dir), "data.clip.fps": 8, "data.augment.temporal_shift": 0,
                  "train.max_steps": 6, "train.val_every": 2, "train.checkpoint_every": 6, "train.batch_size": 2,
                  "train.val_batches": 2, "train.num_samples": 1, "train.log_every": 1, "parallel.max_failures": 0},
        "space": {"model.preset": {"choice": ["dit-debug", "gan-debug"]}, "train.optim.lr": {"loguniform": [1.0e-6, 1.0e-2]}},
        "metric": "val_loss", "mode": "min", "secondary": [{"metric": "samples_per_s", "mode": "max"}],
        "points_to_evaluate": [{"model.preset": p, "train.optim.lr": lr} for p, lr in (GOOD, BAD, GAN)],
        "num_trials": 3, "max_concurrent": 1, "resources": {"workers": 1, "cpus_per_worker": 1},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    })
    first = run_sweep(sweep, callbacks=[InterruptAfter(2, str(root / "interrupted.flag"))])
    second = run_sweep(sweep)
    return sweep, first, second


@pytest.mark.ray
def test_interrupted_sweep_resumes_keeping_finished_trials(sweep_runs):
    sweep, first, second = sweep_runs
    assert not first.complete and second.complete and second.path == first.path
    done_first = {r["trial_id"]: r for r in first.rows if r["status"] != "unfinished"}
    assert len(done_first) == 2, first.rows  # interrupted right after the second trial ended
    for trial_id, row in done_first.items():  # kept as they were, not run again
        assert second.row(trial_id) == row
    assert len(second.rows) == 3 and all(r["status"] in ("completed", "stopped") for r in second.rows), second.rows


@pytest.mark.ray
def test_asha_stops_bad_trials_before_and_after_the_resume_and_the_family_choice_trains(sweep_runs):
    sweep, _, second = sweep_runs
    rows = {r["train.optim.lr"]: r for r in second.rows}
    good, bad, gan = (rows[lr] for lr in (GOOD[1], BAD[1], GAN[1]))
    assert good["status"] == "completed" and (good["iterations"], good["step"]) == (3, 6)
    # lr 1e-6 has barely moved after 2 steps: worse than the good trial at the first rung -> stopped.
    assert bad["status"] == "stopped" and bad["iterations"] < 3 and bad["step"] < 6, bad
    assert bad["val_loss"] > good["val_loss"]
    # The GAN ran after the resume, and ASHA still knew the transformers' first-rung values
    # (scheduler.py): its loss (a GAN's, on another scale) is compared with theirs and it is stopped at a
    # rung (the first or, since dit-debug predicts the data and its loss scale moved, the second).
    assert gan["model.preset"] == "gan-debug" and gan["status"] == "stopped" and gan["iterations"] in (1, 2), gan
    reported = [json.loads(line) for line in (Path(second.path) / f"trial_{gan['trial_id']}" / "result.json").read_text().splitlines()]
    assert "loss_generator" in reported[-1] and "loss_discriminator" in reported[-1]  # it trained as a GAN
    assert any(r["pareto"] for r in second.rows) and all(r["samples_per_s"] for r in second.rows if r["iterations"])


@pytest.mark.ray
def test_outputs_and_best_config_trains(sweep_runs, tmp_path):
    from vidgen_ray.config import load_experiment
    from vidgen_ray.train.run import train

    sweep, _, second = sweep_runs
    folder = Path(second.path)
    table = pq.read_table(folder / "results.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in table) == sorted(r["trial_id"] for r in second.rows)
    header = next(csv.reader(io.StringIO((folder / "results.csv").read_text())))
    assert header[:6] == ["trial_id", "status", "iterations", "step", "val_loss", "samples_per_s"] and "pareto" in header
    png = (folder / "metric.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    best = min((r for r in second.rows if r["val_loss"] is not None), key=lambda r: r["val_loss"])
    assert second.best == best
    text = (folder / "best.yaml").read_text()
    assert f"Best trial {best['trial_id']}" in text
    saved = yaml.safe_load(text)
    assert saved["model"]["name"] == best["model.preset"] and saved["train"]["optim"]["lr"] == pytest.approx(best["train.optim.lr"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] and summary["trials"] == 3
    # One TensorBoard run per trial, beside its checkpoints (ASHA-stopped trials included).
    for row in second.rows:
        events = tracker_files.tensorboard(folder / "trials" / f"trial_{row['trial_id']}" / "tensorboard")
        assert tracker_files.scalar_steps(events, "train/loss"), row["trial_id"]
    cfg = load_experiment(config_file=str(folder / "best.yaml"),
                          sets=[f"storage_path={tmp_path}", "name=best", "train.max_steps=2", "train.checkpoint_every=2"])
    assert cfg.model.name == best["model.preset"] and cfg.data.source == str(Path(sweep.fixed["data.source"]).resolve())
    result = train(cfg)
    assert result.checkpoint is not None and result.metrics["step"] == 2


@pytest.mark.ray
def test_resume_refuses_a_changed_sweep(sweep_runs):
    import dataclasses

    from vidgen_ray.tune.run import run_sweep

    sweep, _, _ = sweep_runs
    with pytest.raises(SweepError, match="num_trials"):
        run_sweep(dataclasses.replace(sweep, num_trials=5))
    with pytest.raises(SweepError, match="already exists"):
        run_sweep(sweep, resume="never")


@pytest.mark.ray
def test_sweep_lives_in_object_storage_and_reruns_from_there(ray_session, prepared_dir, s3_bucket):
    """The Tune experiment, the trials' Train runs and the outputs all go to s3://; rerunning the
    finished sweep restores it from there instead of starting again."""
    from vidgen_ray import storage
    from vidgen_ray.tune.run import run_sweep

    sweep = sweep_from_dict({
        "name": "s3-sweep", "base": "dit-debug", "storage_path": f"{s3_bucket}/sweeps",
        "fixed": {"data.source": str(prepared_dir), "train.max_steps": 2, "train.val_every": 1, "train.checkpoint_every": 2,
                  "train.batch_size": 2, "train.val_batches": 1, "train.num_samples": 1, "train.log_every": 1,
                  "parallel.max_failures": 0},
        "space": {"train.optim.lr": {"loguniform": [1.0e-4, 1.0e-2]}},
        "num_trials": 1, "max_concurrent": 1, "resources": {"workers": 1}, "scheduler": {"kind": "none"},
    })
    first = run_sweep(sweep)
    (row,) = first.rows
    assert first.complete and row["status"] == "completed" and row["checkpoint"].startswith(f"{s3_bucket}/sweeps/s3-sweep/trials/")
    for name in ("results.parquet", "best.yaml", "metric.png", "summary.json", "sweep.json"):
        assert storage.exists(f"{s3_bucket}/sweeps/s3-sweep/{name}"), name
    again = run_sweep(sweep)  # restored from s3: the same trial, nothing retrained
    assert again.rows == first.rows
