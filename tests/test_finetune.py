"""``train.init_from``: a Ray Train run that starts from a trained checkpoint and adds a control branch and an
image condition to it (Ray tier: the session's trained dit-debug checkpoint).

    pytest tests/test_finetune.py -q
"""

from __future__ import annotations

import io

import pytest
import torch
from conftest import tiny_experiment

from vidgen_ray.checkpoints import load_for_inference

pytestmark = pytest.mark.ray


def _weights(checkpoint: str) -> dict:
    with open(f"{checkpoint}/model.pt", "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=False)["weights"]["model"]


def test_a_run_fine_tunes_a_trained_dit_with_control_and_an_image(ray_session, prepared_dir, trained_checkpoints, tmp_path):
    from vidgen_ray.train.run import train

    base = trained_checkpoints["dit-debug"]
    sets = ["model.prediction=velocity", "model.control=true", "model.image_condition=true", "parallel.num_workers=1",
            "parallel.strategy=none", "train.max_steps=2", "train.checkpoint_every=2", "train.optim.lr=1e-5",
            "train.schedule.warmup_steps=0"]
    tuned = train(tiny_experiment("dit-debug", prepared_dir, str(tmp_path), "tuned", *sets, f"train.init_from={base}"))
    fresh = train(tiny_experiment("dit-debug", prepared_dir, str(tmp_path), "fresh", *sets))
    start, after, scratch = _weights(base), _weights(tuned.checkpoint.path), _weights(fresh.checkpoint.path)
    key = "blocks.1.attn.qkv.weight"
    assert 0 < (after[key] - start[key]).abs().max() < 1e-3 < (scratch[key] - start[key]).abs().max()  # trained a bit
    # the new modules: image channels of the patch embedding near zero, control copies of the trained blocks
    assert after["patch_embed.weight"][:, 3:].abs().max() < 1e-3
    assert (after["control.blocks.0.attn.qkv.weight"] - start["blocks.0.attn.qkv.weight"]).abs().max() < 1e-3
    model, experiment, _ = load_for_inference(tuned.checkpoint.path)
    assert experiment.train.init_from == base and model.conditioning().image and model.conditioning().sketch
