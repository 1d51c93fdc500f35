"""Errors a user can act on: one message and exit 2 from the CLI and jobs/*.py, no traceback (unless
--debug / VIDGEN_DEBUG=1), also when the error was raised inside a Ray Train worker; bugs keep theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vidgen_ray import cli
from vidgen_ray.configs import ConfigError
from vidgen_ray.errors import UserError, find_user_error
from vidgen_ray.storage import BucketNotFoundError

REPO = Path(__file__).resolve().parents[1]


def test_a_user_error_is_found_inside_ray_trains_wrappers():
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    inner = ConfigError("data.clip does not match the prepared clips")
    wrapped = WorkerGroupError("training failed", {1: UserExceptionWithTraceback(RuntimeError("other"), "tb"),
                                                  0: UserExceptionWithTraceback(inner, "Traceback ...")})
    assert find_user_error(wrapped) is inner
    assert find_user_error(ControllerError(wrapped)) is inner
    try:
        try:
            raise BucketNotFoundError("s3://nope: the bucket does not exist")
        except BucketNotFoundError as exc:
            raise RuntimeError("while listing") from exc
    except RuntimeError as outer:
        assert isinstance(find_user_error(outer), UserError)
    assert find_user_error(WorkerGroupError("boom", {0: UserExceptionWithTraceback(KeyError("x"), "tb")})) is None


def test_the_cli_prints_one_message_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("VIDGEN_DEBUG", raising=False)
    assert cli.main(["train", "--preset", "gan-debug", "--set", "train.optim.lr=fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: ") and "lr" in err and "Traceback" not in err
    assert cli.main(["train", "--preset", "gan-debgu", "--dry-run"]) == 2
    assert "gan-debug" in capsys.readouterr().err  # the suggestion
    with pytest.raises(ConfigError):
        cli.main(["train", "--preset", "gan-debug", "--set", "train.optim.lr=fast", "--debug"])
    monkeypatch.setenv("VIDGEN_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli.main(["train", "--preset", "gan-debug", "--set", "train.optim.lr=fast"])


def test_a_job_entrypoint_exits_2_without_a_traceback():
    proc = subprocess.run([sys.executable, "jobs/train.py", "--preset", "gan-debug", "--set", "parallel.num_workers=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "num_workers" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.ray
def test_a_mismatched_clip_spec_and_a_missing_folder_are_user_errors(ray_session, prepared_dir: Path, tmp_path: Path, capsys):
    # prepared_dir holds 8 x 32 x 32 clips at 8 fps; ask for 10 fps.
    code = cli.main(["train", "--preset", "gan-debug", "--data", str(prepared_dir), "--storage", str(tmp_path),
                     "--set", "data.clip.fps=10"])
    err = capsys.readouterr().err
    assert code == 2 and "prepare the data again" in err and "Traceback" not in err, err
    code = cli.main(["data", "probe", str(tmp_path / "no-such-folder")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-folder" in err and "Traceback" not in err, err


def test_a_connected_driver_tells_its_workers_their_cluster_without_clashing_with_the_job(monkeypatch):
    import json

    from vidgen_ray.runtime import _connected_runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("RAY_DATA_DISABLE_PROGRESS_BARS", raising=False)
    env = _connected_runtime_env("10.0.0.5:6379")["env_vars"]
    assert env == {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_ADDRESS": "10.0.0.5:6379"}
    assert "RAY_ADDRESS" not in _connected_runtime_env("ray://head:10001").get("env_vars", {})
    # Inside `ray job submit --runtime-env jobs/runtime_env.yaml`: Ray refuses a key set twice, so the
    # job's own keys are left to it.
    job = {"runtime_env": {"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _connected_runtime_env("10.0.0.5:6379") == {"env_vars": {"RAY_ADDRESS": "10.0.0.5:6379"}}
