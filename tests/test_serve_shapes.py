"""A DiT trained on buckets samples at each of them: Serve's request checks pick the trained shape a request's
height / width / frames ask for, and refuse (422) any other (no Ray: the engine the replicas run)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from vidgen_ray.config import load_experiment
from vidgen_ray.models.registry import build_model
from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.engine import Engine
from vidgen_ray.serve.schema import GenerateRequest, RequestError


@pytest.fixture(scope="module")
def engine():
    experiment = load_experiment("dit-debug", sets=["data.buckets=[16x24x32,8x24x32,8x32x32]", "model.sample_steps=2"])
    model = build_model(experiment.model).eval()
    return Engine(ServeConfig(checkpoint="in-memory", loader=lambda uri, ema, device: (model, experiment, {})))


def _job(engine, **fields):
    return engine.validate(GenerateRequest(**fields, format="npy"))


def test_the_card_lists_the_trained_shapes_the_models_own_first(engine):
    m = engine.card
    assert m.shapes[0] == [m.frames, m.height, m.width]
    assert sorted(map(tuple, m.shapes[1:])) == sorted({(16, 24, 32), (8, 24, 32), (8, 32, 32)} - {(m.frames, m.height, m.width)})


def test_a_request_samples_at_the_bucket_it_names(engine):
    card = engine.card
    assert _job(engine).shape == (card.frames, card.height, card.width)  # no size: the model's own
    longest = _job(engine, height=24, width=32)
    assert longest.shape == (16, 24, 32) and longest.frames == 16
    short = _job(engine, height=24, width=32, frames=6)
    assert short.shape == (8, 24, 32) and short.frames == 6  # the fewest frames that hold 6
    (out,) = engine.run([longest])
    video = np.load(io.BytesIO(out.body))
    assert video.shape == (16, 24, 32, 3) and video.dtype == np.uint8
    (out,) = engine.run([short])
    assert np.load(io.BytesIO(out.body)).shape == (6, 24, 32, 3)


def test_a_size_or_length_outside_the_buckets_is_a_422(engine):
    with pytest.raises(RequestError, match="not trained at 48x48") as err:
        _job(engine, height=48, width=48)
    assert err.value.status == 422 and "16x24x32" in err.value.message
    with pytest.raises(RequestError, match=r"'frames' 17 must be in 1..16"):
        _job(engine, height=24, width=32, frames=17)
