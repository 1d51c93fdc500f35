"""Serve and ``vidgen-ray sample`` take an image (image-to-video) and a sketch (control) where the model does:
checked and decoded like the other request fields, 4xx with the reason otherwise (no Ray: the engine the
replicas run, and the CLI on a checkpoint written to disk).

    pytest tests/test_serve_inputs.py -q
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch

from vidgen_ray.cli import main as cli_main
from vidgen_ray.config import load_experiment, to_dict
from vidgen_ray.media import encode_png
from vidgen_ray.models.registry import build_model
from vidgen_ray.serve.config import RequestLimits, ServeConfig
from vidgen_ray.serve.engine import Engine
from vidgen_ray.serve.schema import GenerateRequest, RequestError

DIT = ["model.image_condition=true", "model.control=true", "model.caption=false", "model.num_classes=4",
       "model.sample_steps=2", "model.frames=8"]
GAN = ["model.image_condition=true", "model.num_classes=4"]


def _model(preset: str, sets: list[str]):
    experiment = load_experiment(preset, sets=sets)
    torch.manual_seed(0)
    model = build_model(experiment.model).eval()
    with torch.no_grad():  # off the zero initialisation, so inputs change the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, experiment


def _engine(preset: str, sets: list[str], **config) -> Engine:
    model, experiment = _model(preset, sets)
    return Engine(ServeConfig(checkpoint="in-memory", loader=lambda uri, ema, device: (model, experiment, {}), **config))


@pytest.fixture(scope="module")
def dit():
    return _engine("dit-debug", DIT)


@pytest.fixture(scope="module")
def gan():
    return _engine("gan-debug", GAN)


def _png(h: int = 48, w: int = 64, seed: int = 0) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _video(out) -> np.ndarray:
    assert out.error is None, out.error
    return np.load(io.BytesIO(out.body))


def test_the_card_says_which_pictures_a_model_takes(dit, gan):
    assert (dit.card.image, dit.card.sketch, dit.card.default_image_guidance) == (True, True, 1.0)
    assert (gan.card.image, gan.card.sketch, gan.card.default_image_guidance) == (True, False, None)


def test_a_gan_clip_starts_with_the_uploaded_picture(gan):
    picture = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    job = gan.validate(GenerateRequest(image=_b64(encode_png(picture)), seed=3, format="npy"))
    video = _video(gan.run([job])[0])
    assert video.shape == (8, 32, 32, 3)
    assert np.array_equal(video[0], picture)  # a 32x32 picture is the 32x32 clip's first frame, exactly
    plain = _video(gan.run([gan.validate(GenerateRequest(seed=3, format="npy"))])[0])
    assert not np.array_equal(plain[0], picture)


def test_a_dit_samples_from_an_image_and_a_sketch_and_groups_them(dit):
    image, sketch = _b64(_png(seed=2)), _b64(_png(seed=3))
    jobs = [dit.validate(GenerateRequest.model_validate({"image": image, "class": 1, "seed": 4, "format": "npy"})),
            dit.validate(GenerateRequest(image=image, sketch=sketch, seed=4, image_guidance=2.0, format="npy")),
            dit.validate(GenerateRequest(seed=4, format="npy"))]
    assert jobs[0].image.shape == (3, 32, 32) and jobs[0].image_guidance == 1.0 and jobs[1].image_guidance == 2.0
    videos = [_video(out) for out in dit.run(jobs)]
    assert all(v.shape == (8, 32, 32, 3) for v in videos)
    assert not np.array_equal(videos[0], videos[2]) and not np.array_equal(videos[1], videos[0])
    # a request's video is its own sample call's: the same request again gives the same video
    assert np.array_equal(_video(dit.run([jobs[0]])[0]), videos[0])
    assert len({job.options for job in jobs}) == 3  # with and without pictures never share a fused call


def test_fused_requests_with_pictures_share_one_call():
    engine = _engine("dit-debug", DIT, sampling="fused", max_batch_size=4)
    jobs = [engine.validate(GenerateRequest(image=_b64(_png(seed=s)), seed=s, format="npy")) for s in range(3)]
    assert len({job.options for job in jobs}) == 1
    outs = engine.run(jobs)
    assert all(out.headers["x-vidgen-fused-size"] == "3" for out in outs)
    assert len({_video(out).tobytes() for out in outs}) == 3


@pytest.mark.parametrize("fields, status, message", [
    ({"image": "not base64!"}, 422, "is not base64"),
    ({"image": _b64(b"GIF89a not a png")}, 422, "could not be decoded"),
    ({"image": _b64(encode_png(np.zeros((70, 70, 3), np.uint8)))}, 413, "pixels; the limit"),
    ({"image": _b64(b"x" * 5000)}, 413, "bytes; the limit"),
])
def test_bad_pictures_are_refused_with_the_reason(fields, status, message):
    engine = _engine("gan-debug", GAN, limits=RequestLimits(max_image_bytes=4096, max_image_pixels=64 * 64))
    with pytest.raises(RequestError) as err:
        engine.validate(GenerateRequest(**fields, format="npy"))
    assert err.value.status == status and message in err.value.message


def test_pictures_a_model_does_not_take_are_a_422(gan):
    plain = _engine("dit-debug", ["model.sample_steps=2", "model.frames=8"])
    for engine, fields, message in [
        (plain, {"image": _b64(_png())}, "takes no 'image'"),
        (gan, {"sketch": _b64(_png())}, "takes no 'sketch'"),
        (gan, {"image_guidance": 2.0}, "no sampling option 'image_guidance'"),
    ]:
        with pytest.raises(RequestError, match=message):
            engine.validate(GenerateRequest(**fields, format="npy"))
    # the body limit grows by the pictures a model takes, so an image fits where it is accepted
    limits = RequestLimits()
    assert limits.body_limit(0) == limits.max_body_bytes < limits.body_limit(2)


def test_the_sample_command_takes_an_image_and_a_sketch(tmp_path, capsys):
    model, experiment = _model("dit-debug", DIT)
    checkpoint = tmp_path / "checkpoint_000000001"
    checkpoint.mkdir()
    (checkpoint / "meta.json").write_text(json.dumps({"experiment": to_dict(experiment), "state": {"step": 1}}))
    torch.save({"weights": {"model": model.net.state_dict()}, "ema": None, "ema_part": "model"}, checkpoint / "model.pt")
    (tmp_path / "first.png").write_bytes(_png(seed=5))
    (tmp_path / "sketch.png").write_bytes(_png(seed=6))
    out = tmp_path / "v.npy"
    code = cli_main(["sample", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "first.png"),
                     "--sketch", str(tmp_path / "sketch.png"), "--seed", "1", "--out", str(out), "--device", "cpu"])
    assert code == 0 and np.load(out).shape == (8, 32, 32, 3)
    code = cli_main(["sample", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "missing.png"),
                     "--out", str(out), "--device", "cpu"])
    assert code == 2 and "is not a file" in capsys.readouterr().err
