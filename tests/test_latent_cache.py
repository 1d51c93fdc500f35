"""Precompute once, train many times (data/latents.py): VAE latents and caption embeddings written beside a
prepared dataset's shards, keyed, reused, and a latent DiT trained from them matching one encoding live
(Ray tier: the shared local instance; the prepared set of conftest).

    pytest tests/test_latent_cache.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_experiment
from text_encoders import write_tiny_encoder

from vidgen_ray.checkpoints import read_meta
from vidgen_ray.cli import main as cli_main
from vidgen_ray.config import load_experiment, to_dict
from vidgen_ray.configs import ConfigError
from vidgen_ray.data import latents
from vidgen_ray.data.normalize import Normalizer
from vidgen_ray.models.registry import build_model

pytestmark = pytest.mark.ray

LATENT_DIT = ["model.latent_channels=4", "model.latent_spatial_compression=4", "model.patch=1,2,2",
              "model.caption=false", "model.num_classes=0", "model.frames=8"]


def _save(directory: Path, model, experiment) -> str:
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps({"experiment": to_dict(experiment), "state": {"step": 1}}))
    weights = {name: part.state_dict() for name, part in model.parts().items()}
    torch.save({"weights": weights, "ema": None, "ema_part": model.sampling_part}, directory / "model.pt")
    return str(directory)


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> str:
    """A VAE checkpoint (random weights, moved off initialisation): what --encode reads."""
    experiment = load_experiment("vae-debug", sets=["model.frames=8"])
    torch.manual_seed(0)
    model = build_model(experiment.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return _save(tmp_path_factory.mktemp("vae") / "checkpoint_000000001", model, experiment)


@pytest.fixture(scope="module")
def encoded(ray_session, prepared_dir, vae) -> dict:
    return latents.encode_prepared(str(prepared_dir), latents.resolve_encoders([vae]), Normalizer())


def test_latents_are_the_vae_s_encoding_of_each_stored_clip_and_are_reused(ray_session, prepared_dir, vae, encoded):
    summary = encoded["latents"]
    assert not summary["reused"] and summary["clips"]["train"] > 0 and summary["shapes"]["latent"] == [4, 8, 8, 8]
    assert summary["inputs"]["checkpoint"] == vae and len(summary["inputs"]["sha256"]) == 64
    # one shard, checked against the VAE run here on the stored clips (first data.clip.frames frames)
    from vidgen_ray.checkpoints import load_for_inference
    from vidgen_ray.data.latents import _clips, _shards, read_sidecar
    import pyarrow.parquet as pq

    shard = _shards(str(prepared_dir), "train")[0]
    side = read_sidecar(summary["root"], "train", shard)
    clips = _clips(pq.read_table(shard), 8)
    model, _, _ = load_for_inference(vae)
    with torch.no_grad():
        live = model.net(Normalizer()(torch.from_numpy(clips.copy())), mode="encode").numpy()
    assert len(side["latent"]) == len(clips)
    assert np.allclose(np.stack(side["latent"]), live, atol=1e-5)
    # the same key again: reused, nothing re-encoded; another normaliser: another folder
    again = latents.encode_prepared(str(prepared_dir), latents.resolve_encoders([vae]), Normalizer())
    assert again["latents"]["reused"] and again["latents"]["root"] == summary["root"]
    other = latents.latent_key(summary["inputs"]["sha256"], Normalizer("zero_one"), summary["inputs"]["clip"])[0]
    assert other != summary["key"] and latents.find(str(prepared_dir), latents.LATENTS, other) is None
    # found by its key while the dataset holds the shards it was encoded from, stale once it does not
    assert latents.find(str(prepared_dir), latents.LATENTS, summary["key"]) == summary["root"]
    shards = latents.current_shards(str(prepared_dir))
    shards["train"][next(iter(shards["train"]))] += 1
    assert latents.find(str(prepared_dir), latents.LATENTS, summary["key"], shards) is None


def _losses(result) -> list[float]:
    return [v for _, v in read_meta(result.checkpoint.path)["state"]["history"]]


@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_the_reader_hands_out_each_clip_with_its_latent_flipped_alike(prepared_dir, encoded, hflip):
    from vidgen_ray.data.config import DataConfig
    from vidgen_ray.data.latents import _clips, _shards, read_sidecar
    from vidgen_ray.data.pipeline import UnitReader
    from vidgen_ray.data.prepare import load_prepared
    import pyarrow.parquet as pq

    cfg = DataConfig(source=str(prepared_dir))
    cfg.clip.frames, cfg.clip.fps, cfg.clip.height, cfg.clip.width = 8, 8.0, 32, 32
    cfg.augment.temporal_shift, cfg.augment.hflip = 0, hflip
    units, _ = load_prepared(str(prepared_dir), cfg)
    train = units["train"]
    train.latents = encoded["latents"]["root"]
    out = UnitReader(train, cfg, "train", 0)({"id": np.arange(len(train))})
    stored = {}
    for shard in _shards(str(prepared_dir), "train"):
        table = pq.read_table(shard)
        for key, clip, z in zip(zip(table.column("source_id").to_pylist(), table.column("clip_index").to_pylist()),
                                _clips(table, 8), read_sidecar(train.latents, "train", shard)["latent"]):
            stored[key] = (clip, z)
    assert len(out["video"]) == len(stored) == len(out["latent"])
    for source, index, video, z in zip(out["source_id"], out["clip_index"], out["video"], out["latent"]):
        clip, latent = stored[(source, index)]
        if hflip:  # the clip and its latent, both mirrored along the width
            clip, latent = clip[:, :, ::-1], latent[..., ::-1]
        assert np.array_equal(video, clip) and np.array_equal(z, latent)


def test_without_flips_the_cached_run_reproduces_the_live_one(ray_session, prepared_dir, vae, encoded, tmp_path):
    from vidgen_ray.train.run import train

    runs = []
    for name, cache in (("live", "live"), ("cached", "require")):
        cfg = tiny_experiment("dit-debug", prepared_dir, str(tmp_path), name, *LATENT_DIT, f"model.autoencoder={vae}",
                              "parallel.num_workers=1", "parallel.strategy=none", "data.ordered=true",
                              "data.augment.hflip=0", "train.max_steps=6", "train.num_samples=0",
                              f"data.latent_cache={cache}")
        runs.append(_losses(train(cfg)))
    assert runs[1] == pytest.approx(runs[0], rel=1e-4, abs=1e-6), runs


def test_require_names_what_stops_the_cache(ray_session, prepared_dir, vae, encoded, tmp_path):
    from vidgen_ray.train.run import build_trainer

    for extra, message in ((["data.augment.zoom_p=0.5"], "zoom_p"),
                           (["data.normalize=zero_one"], "has no latents")):
        cfg = tiny_experiment("dit-debug", prepared_dir, str(tmp_path), "x", *LATENT_DIT, f"model.autoencoder={vae}",
                              "data.latent_cache=require", *extra)
        with pytest.raises(ConfigError, match=message):
            build_trainer(cfg)


def test_caption_embeddings_are_cached_and_feed_a_pretrained_encoder_dit(ray_session, prepared_dir, tmp_path):
    from vidgen_ray.train.run import train

    folder = write_tiny_encoder(tmp_path / "t5", "t5")
    code = cli_main(["data", "encode", str(prepared_dir), "--encode", str(folder), "--text-encoder-tokens", "8"])
    assert code == 0
    (summary,) = latents.describe(str(prepared_dir))["captions"]
    assert summary["shapes"] == {"caption_embedding": [8, 32], "caption_mask": [8]}
    sets = ["model.text_encoder=t5", f"model.text_encoder_path={folder}", "model.max_caption_tokens=8",
            "model.num_classes=0", "model.frames=8", "parallel.num_workers=1", "parallel.strategy=none",
            "data.ordered=true", "train.max_steps=3", "train.num_samples=0"]
    live = _losses(train(tiny_experiment("dit-debug", prepared_dir, str(tmp_path), "live", *sets, "data.latent_cache=live")))
    cached = _losses(train(tiny_experiment("dit-debug", prepared_dir, str(tmp_path), "cached", *sets,
                                           "data.latent_cache=require")))
    assert cached == pytest.approx(live, rel=1e-3), (live, cached)  # float16 embeddings: close, not equal
