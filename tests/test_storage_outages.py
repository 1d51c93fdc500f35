"""Object storage that goes away and comes back (issue 19): a SeaweedFS server of this module's own is
SIGKILLed in the middle of (a) a `data prepare` reading from and writing to s3://, (b) a training run
streaming its clips from s3:// and uploading its checkpoints there asynchronously, and (c) a Ray Serve
replica loading its checkpoint, then started again on the same data folder and ports a few
seconds later. Each must finish as if nothing happened, within the retry policy (VIDGEN_STORAGE_RETRY_S,
60 s by default); an outage longer than the policy must fail with a message naming the endpoint and
what was retried. Every test checks that the outage really fell inside the operation.

The URIs carry the endpoint (``?endpoint_override=``), so the shared Ray instance's workers, started with
the session server's AWS_* variables (same keys), reach this server instead.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from vidgen_ray import storage
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.prepare import load_prepared, prepare
from vidgen_ray.data.synth import generate

from conftest import tiny_experiment
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, kill_s3_server, restart_s3_server, start_s3_server, stop_s3_server

pytestmark = [pytest.mark.s3, pytest.mark.ray, pytest.mark.slow]

DOWN_S = 4.0  # long enough that every client sees refused connections, well inside the 60 s policy


class Outage:
    """Kill the server once ``when()`` is true (polled from a thread), keep it down ``down_s``, start it again."""

    def __init__(self, server, when: Callable[[], bool], down_s: float = DOWN_S, timeout_s: float = 300) -> None:
        self.server, self.when, self.down_s, self.timeout_s = server, when, down_s, timeout_s
        self.killed_at = self.back_at = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout_s
            while not self.when():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)
            kill_s3_server(self.server)
            self.killed_at = time.monotonic()
            time.sleep(self.down_s)
            restart_s3_server(self.server)
            self.back_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> Outage:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=120)
        if self.error is not None:
            raise self.error

    def check_inside(self, started: float, ended: float) -> None:
        assert self.killed_at is not None, "the server was never killed: the operation ended first"
        assert started < self.killed_at and self.back_at is not None and self.back_at < ended, (
            f"the outage ({self.killed_at - started:.1f} s to {self.back_at - started:.1f} s) was not inside the "
            f"operation (0 to {ended - started:.1f} s)")


def _exists(uri: str) -> bool:
    try:
        return storage.exists(uri)
    except storage.StorageError:
        return False


@pytest.fixture(scope="module")
def server():
    root = Path(tempfile.mkdtemp(prefix="vidgen-out-"))
    srv = start_s3_server(root)
    try:
        yield srv
    finally:
        stop_s3_server(srv)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bucket(server, monkeypatch) -> str:
    """A fresh bucket on the module's server, as a URI that names the endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    name = f"outage-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=name)
    port = server.endpoint.rsplit(":", 1)[1]
    return f"s3://{name}?endpoint_override=127.0.0.1:{port}&scheme=http"


def clip_config(source: str) -> DataConfig:
    """The session's prepared-clip geometry (conftest.prepared_dir), so tiny_experiment trains on it."""
    cfg = DataConfig(source=source, files_per_task=2)
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    cfg.clip.clips_per_video = 2
    cfg.split.train, cfg.split.val, cfg.split.test, cfg.split.salt = 0.7, 0.3, 0.0, "d"
    return cfg


def _shard_rows(out: str, cfg: DataConfig) -> dict[str, int]:
    units, _ = load_prepared(out, cfg)
    return {split: sum(s["rows"] for s in u.rows) for split, u in units.items()}


def test_prepare_rides_out_an_outage_and_accounts_for_every_file(ray_session, server, bucket: str):
    src = storage.join(bucket, "synth")
    generate(src, videos=10, seed=7)
    cfg = clip_config(src)
    calm = prepare(cfg, storage.join(bucket, "calm"))["summary"]

    out = storage.join(bucket, "stormy")
    started = time.monotonic()
    # Down once the probe's report is written: while the clips are decoded from and written to the store.
    with Outage(server, when=lambda: _exists(storage.join(out, "report.parquet"))) as outage:
        stormy = prepare(cfg, out)["summary"]
    ended = time.monotonic()
    outage.check_inside(started, ended)
    assert stormy == calm, (stormy, calm)
    assert _shard_rows(out, cfg) == _shard_rows(storage.join(bucket, "calm"), cfg)
    assert not [e for e in storage.list_files(out) if storage.TMP_MARKER in e.uri]


def test_training_streams_and_checkpoints_through_an_outage(ray_session, server, bucket: str):
    from vidgen_ray.checkpoints import latest_checkpoint, load_for_inference, registered_checkpoint
    from vidgen_ray.train.run import train

    src = storage.join(bucket, "synth")
    generate(src, videos=10, seed=7)
    data = storage.join(bucket, "clips")
    prepare(clip_config(src), data)
    runs = storage.join(bucket, "runs")
    run_dir = storage.join(runs, "gan")
    cfg = tiny_experiment("gan-debug", data, runs, "gan", "parallel.num_workers=1", "train.max_steps=8",
                          "train.checkpoint_every=2", "train.num_samples=0", "train.val_every=0")

    def first_checkpoint_uploaded() -> bool:
        try:
            return any(re.search(r"/checkpoint_\d+/", e.uri) for e in storage.list_files(run_dir))
        except storage.StorageError:
            return False

    started = time.monotonic()
    with Outage(server, when=first_checkpoint_uploaded) as outage:
        result = train(cfg)
    ended = time.monotonic()
    outage.check_inside(started, ended)
    # The two newest checkpoints (train.keep_last=2; 2 and 4 deleted after their successors registered),
    # each once; the last one registered with Ray Train and loadable from the store.
    steps = sorted({int(m.group(1)) for e in storage.list_files(run_dir) if (m := re.search(r"/checkpoint_(\d+)/", e.uri))})
    assert steps == [6, 8], steps
    last = latest_checkpoint(run_dir)
    assert registered_checkpoint(run_dir) == last and result.checkpoint is not None
    model, experiment, meta = load_for_inference(last)
    assert meta["state"]["step"] == 8 and experiment.model.name == "gan-debug"


def test_a_serve_replica_waits_for_its_checkpoint_and_a_long_outage_names_the_endpoint(server, bucket: str,
                                                                                       trained_checkpoints, monkeypatch):
    import requests
    from ray import serve

    from vidgen_ray.serve.app import build_app
    from vidgen_ray.serve.bench import ensure_serve
    from vidgen_ray.serve.config import ServeConfig
    from vidgen_ray.serve.engine import Engine

    local = Path(trained_checkpoints["gan-debug"])
    remote = storage.join(bucket, "serve", "checkpoint")
    for name in ("meta.json", "model.pt"):
        storage.write_bytes(storage.join(remote, name), (local / name).read_bytes())

    # The replica starts while the server is down: its constructor's checkpoint load waits it out.
    # (serve.run straight away: vidgen's own run() checks the checkpoint from the driver first.)
    port, started_serve = ensure_serve()
    config = ServeConfig(checkpoint=remote, app_name="outage", route_prefix="/outage")
    try:
        started = time.monotonic()
        with Outage(server, when=lambda: True) as outage:
            time.sleep(0.5)
            serve.run(build_app(config.validate()), name=config.app_name, route_prefix=config.route_prefix)
        ended = time.monotonic()
        outage.check_inside(started - 1, ended)
        assert ended - started >= DOWN_S  # the replica came up after the server, not before
        health = requests.get(f"http://127.0.0.1:{port}/outage/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    finally:
        serve.delete(config.app_name)
        if started_serve:
            serve.shutdown()

    # An outage longer than the policy: a clear failure in about the policy's time, naming the endpoint.
    monkeypatch.setenv("VIDGEN_STORAGE_RETRY_S", "3")
    kill_s3_server(server)
    try:
        t0 = time.monotonic()
        with pytest.raises(storage.StorageError) as info:
            Engine(ServeConfig(checkpoint=remote))
        seconds = time.monotonic() - t0
    finally:
        restart_s3_server(server)
    message = str(info.value)
    port = server.endpoint.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in message and "gave up after" in message and "VIDGEN_STORAGE_RETRY_S=3" in message, message
    assert seconds < 30, f"a 3 s policy took {seconds:.0f} s to give up"
