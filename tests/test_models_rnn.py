"""Recurrent predictor specifics: the scheduled-sampling schedule, teacher forcing, and sampling
from context frames.

    .venv/bin/pytest tests/test_models_rnn.py -q
"""

from __future__ import annotations

import pytest
import torch

from vidgen_ray.models.base import Batch
from vidgen_ray.models.registry import build_model, get_preset


def predictor(name: str = "rnn-debug", **overrides):
    torch.manual_seed(0)
    config = get_preset(name)
    for key, value in overrides.items():
        setattr(config, key, value)
    return build_model(config)


def clips(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 8, 32, 32) * 2 - 1


def test_teacher_forcing_decays_linearly_to_its_floor():
    config = get_preset("rnn-debug")
    config.teacher_forcing_floor, config.teacher_forcing_decay_steps = 0.2, 100
    assert [config.teacher_forcing(s) for s in (0, 50, 100, 10_000)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    model = predictor(teacher_forcing_floor=0.2, teacher_forcing_decay_steps=100)
    assert model.losses("model", Batch(clips()), step=50).metrics["teacher_forcing"] == pytest.approx(0.6)


@pytest.mark.parametrize("name", ["rnn-debug", "gru-debug"])
def test_teacher_forcing_feeds_true_frames(name):
    model = predictor(name)
    video, context = clips(), model.config.context_frames
    forced = model.net(video, 8, context, teacher_forcing=1.0)
    free = model.net(video, 8, context, teacher_forcing=0.0)
    assert forced.shape == (2, 3, 7, 32, 32)
    # Up to the first future frame both runs saw only true frames; after that they diverge.
    assert torch.equal(forced[:, :, :context], free[:, :, :context])
    assert (forced[:, :, context:] - free[:, :, context:]).abs().mean() > 1e-4
    # Free running equals feeding only the context: the model's own predictions fill the rest.
    assert torch.allclose(free, model.net(video[:, :, :context], 8, context), atol=1e-6)


def test_sample_continues_the_context():
    model = predictor()
    context = clips()[:, :, :3]
    video = model.sample(2, seed=0, context=context, frames=6)
    assert video.shape == (2, 6, 32, 32, 3)
    assert torch.equal(video[:, :3], context.permute(0, 2, 3, 4, 1))


def test_sample_without_context_says_how_to_call_it():
    model = predictor()
    with pytest.raises(ValueError, match=r"context=video"):
        model.sample(2, seed=0)
    with pytest.raises(ValueError, match=r"context must be"):
        model.sample(2, seed=0, context=clips()[:, :, :8])  # nothing left to predict


def test_patchified_stem_predicts_full_resolution():
    model = predictor(stem_stride=4, hidden=(16,))
    out = model.losses("model", Batch(clips()), step=0)
    out.loss.backward()
    assert model.net.grid == (8, 8)
    assert model.sample(1, seed=0, context=clips(1)[:, :, :4]).shape == (1, 8, 32, 32, 3)
