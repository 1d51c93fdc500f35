"""gs:// and abfs:// end to end, as s3:// is elsewhere: a synthetic clip set streamed through `data prepare`
from and to the store, and a training run that checkpoints there and is loaded back from the URI. Against
real local endpoints (the GCS emulator, Azurite: tests/gcs_server.py, tests/azure_server.py), reached
through the standard variables (STORAGE_EMULATOR_HOST, AZURE_STORAGE_CONNECTION_STRING) that the shared
Ray instance's workers were started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidgen_ray import storage
from vidgen_ray.data.config import DataConfig
from vidgen_ray.data.prepare import load_prepared, prepare
from vidgen_ray.data.synth import generate

from conftest import tiny_experiment

pytestmark = pytest.mark.ray

STORES = [pytest.param("gcs_bucket", marks=pytest.mark.gcs, id="gs"),
          pytest.param("azure_container", marks=pytest.mark.azure, id="abfs")]


@pytest.fixture(params=STORES)
def bucket(request) -> str:
    return request.getfixturevalue(request.param)


def test_prepare_streams_a_clip_set_from_and_to_the_store(ray_session, bucket: str):
    src, out = storage.join(bucket, "synth"), storage.join(bucket, "prepared")
    generate(src, videos=8, seed=5)
    cfg = DataConfig(source=src, files_per_task=2)
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    marker = prepare(cfg, out)
    # Every file accounted for: 8 good videos kept, the 5 broken kinds dropped with their reasons.
    assert marker["summary"]["listed"] == 13 and marker["summary"]["kept"] == 8, marker["summary"]
    assert storage.exists(storage.join(out, "prepared.json")) and storage.exists(storage.join(out, "report.parquet"))
    units, _ = load_prepared(out, cfg)
    assert sum(s["rows"] for split in units.values() for s in split.rows) == 8
    # Nothing half-written is left behind by the atomic writes.
    assert not [e for e in storage.list_files(bucket) if storage.TMP_MARKER in e.uri]


def test_a_run_checkpoints_to_the_store_and_loads_back_from_it(ray_session, prepared_dir: Path, bucket: str):
    from vidgen_ray.checkpoints import latest_checkpoint, load_for_inference
    from vidgen_ray.train.run import train

    runs = storage.join(bucket, "runs")
    cfg = tiny_experiment("gan-debug", prepared_dir, runs, "gan", "parallel.num_workers=1", "train.max_steps=2",
                          "train.checkpoint_every=2", "train.num_samples=0", "train.val_batches=1")
    result = train(cfg)
    ckpt = latest_checkpoint(storage.join(runs, "gan"))
    assert ckpt is not None and ckpt.startswith(bucket) and result.checkpoint is not None
    names = {e.uri.rsplit("/", 1)[-1] for e in storage.list_files(ckpt)}
    assert {"meta.json", "model.pt"} <= names, names
    model, experiment, meta = load_for_inference(ckpt)  # straight from the store
    assert meta["state"]["step"] == 2 and experiment.model.name == "gan-debug"
    assert tuple(model.sample(1, seed=0).shape) == (1, 8, 32, 32, 3)
