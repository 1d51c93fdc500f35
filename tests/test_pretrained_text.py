"""Pretrained T5 / CLIP caption encoders read from a folder (tiny random ones written by ``save_pretrained``
here; nothing downloaded): the DiT trains and samples with them frozen, cached and outside its checkpoint.

    pytest tests/test_pretrained_text.py -q
"""

from __future__ import annotations

import pytest
import torch
from text_encoders import write_tiny_encoder

from vidgen_ray import storage
from vidgen_ray.models.base import Batch
from vidgen_ray.models.pretrained_text import PretrainedTextEncoder, folder_identity
from vidgen_ray.models.registry import build_model, describe, get_preset


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_encoders")
    return {kind: str(write_tiny_encoder(root / kind, kind)) for kind in ("t5", "clip")}


def _dit(kind: str, path: str):
    cfg = get_preset("dit-debug")
    cfg.text_encoder, cfg.text_encoder_path, cfg.max_caption_tokens, cfg.num_classes = kind, path, 8, 0
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_a_dit_trains_and_samples_on_a_frozen_pretrained_encoder(encoders, kind):
    model = _dit(kind, encoders[kind])
    encoder = model.text_encoder
    assert encoder.width == 32 and not any(k.startswith("text_encoder") for k in model.state_dict())
    trained = {id(p) for p in model.net.parameters()}
    clips = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    out = model.losses("model", Batch(clips, caption=["a red ball moves left", "a blue square"]), 0)
    out.loss.backward()
    assert model.net.text.proj.weight.grad is not None  # the projection trains ...
    encoder._load(torch.device("cpu"))
    frozen = list(encoder._model.parameters())
    assert all(not p.requires_grad and p.grad is None and id(p) not in trained for p in frozen)  # ... the encoder not
    # embeddings are computed once per caption (the empty caption of a dropped condition included)
    calls = encoder.calls
    model.losses("model", Batch(clips, caption=["a red ball moves left", "a blue square"]), 1)
    assert encoder.calls == calls
    with torch.no_grad():  # give the zero-initialised layers weights, so the caption can change the output
        for p in model.net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    red = model.sample(1, seed=0, steps=2, captions=["a red ball"])
    blue = model.sample(1, seed=0, steps=2, captions=["a blue ball"])
    assert red.shape == (1, 8, 32, 32, 3) and (red - blue).abs().max() > 1e-4
    assert torch.equal(red, model.sample(1, seed=0, steps=2, captions=["a red ball"]))
    # FLOPs and parameters are computed without loading the weights (the meta device)
    info = describe(model.config)
    assert info.params == sum(p.numel() for p in model.net.parameters())


def test_identity_follows_the_weights_and_tokenizer(encoders, tmp_path):
    other = write_tiny_encoder(tmp_path / "other", "t5", seed=1)
    same = write_tiny_encoder(tmp_path / "same", "t5", seed=0)
    assert folder_identity(same) == PretrainedTextEncoder("t5", encoders["t5"], 8).identity
    assert folder_identity(other) != folder_identity(same)  # same sizes, other weights: another encoder
    before = folder_identity(same)
    (same / "config.json").write_text((same / "config.json").read_text().replace('"num_layers": 2', '"num_layers": 3'))
    assert folder_identity(same) != before  # so is another config


def test_clip_refuses_more_tokens_than_it_has_positions(encoders):
    with pytest.raises(ValueError, match="more than this CLIP encoder's 64 positions"):
        PretrainedTextEncoder("clip", encoders["clip"], 65)


def test_configs_name_the_missing_piece():
    cfg = get_preset("dit-debug")
    cfg.text_encoder = "t5"
    with pytest.raises(ValueError, match="needs model.text_encoder_path"):
        cfg.validate()
    cfg.caption = False
    cfg.text_encoder_path = "/x"
    with pytest.raises(ValueError, match="model.caption is false"):
        cfg.validate()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PretrainedTextEncoder("t5", "/nonexistent/folder", 8)


@pytest.mark.s3
def test_an_encoder_on_object_storage_is_copied_once_and_loads(encoders, s3_bucket, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("VIDGEN_RAY_CACHE", str(tmp_path / "cache"))
    prefix = storage.join(s3_bucket, "encoders", "clip")
    for f in Path(encoders["clip"]).iterdir():
        storage.write_bytes(storage.join(prefix, f.name), f.read_bytes())
    remote = PretrainedTextEncoder("clip", prefix, 8)
    local = PretrainedTextEncoder("clip", encoders["clip"], 8)
    assert remote.identity == local.identity
    a, ma = remote.encode(["a dog jumps"], "cpu")
    b, mb = local.encode(["a dog jumps"], "cpu")
    assert torch.equal(a, b) and torch.equal(ma, mb)
