"""Video VAE specifics: latent shapes for each compression, reconstruction sampling, and the
perceptual loss from user-supplied VGG-16 weights in torchvision's layout.

    .venv/bin/pytest tests/test_models_vae.py -q
"""

from __future__ import annotations

import pytest
import torch

from vidgen_ray.models.base import Batch
from vidgen_ray.models.perceptual import VGG16Features, load_vgg16_features
from vidgen_ray.models.registry import build_model, get_preset


def vae(**overrides):
    torch.manual_seed(0)
    config = get_preset("vae-debug")
    for key, value in overrides.items():
        setattr(config, key, value)
    return build_model(config)


def clips(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 8, 32, 32) * 2 - 1


@pytest.mark.parametrize("spatial, temporal", [(4, 1), (4, 4), (8, 1), (8, 4)])
def test_latent_shape_follows_the_compression(spatial, temporal):
    hidden = (8, 8, 8) if spatial == 4 else (8, 8, 8, 8)
    model = vae(spatial_compression=spatial, temporal_compression=temporal, hidden=hidden, z_channels=6)
    latents = model.net(clips(), mode="encode")
    assert latents.shape == (2, 6, 8 // temporal, 32 // spatial, 32 // spatial)
    assert model.net(latents, mode="decode").shape == (2, 3, 8, 32, 32)
    recon, mean, logvar = model.net(clips())
    assert recon.shape == (2, 3, 8, 32, 32) and mean.shape == logvar.shape == latents.shape


def test_hidden_must_match_the_compression():
    with pytest.raises(ValueError, match=r"hidden .* needs 4 entries .*model\.hidden"):
        vae(spatial_compression=8)


def test_sample_reconstructs_given_clips():
    model = vae(latent_scale=0.5)
    video = clips()
    recon = model.sample(2, seed=0, video=video)
    assert recon.shape == (2, 8, 32, 32, 3)
    assert torch.equal(recon, model.sample(2, seed=3, video=video))  # the posterior mean: no noise
    expected = model.net(model.net(video, mode="encode"), mode="decode").clamp(-1, 1)
    assert torch.allclose(recon, expected.permute(0, 2, 3, 4, 1), atol=1e-6)


def _torchvision_style_vgg16_file(path) -> None:
    """A VGG-16 state dict with torchvision's keys (features + classifier), random weights."""
    torch.manual_seed(3)
    state = {k: torch.randn_like(v) * 0.05 for k, v in VGG16Features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 8)  # extra keys (torchvision has them) are ignored
    state["classifier.0.bias"] = torch.zeros(2)
    torch.save(state, path)


def test_perceptual_loss_uses_user_supplied_vgg16_weights(tmp_path):
    weights = tmp_path / "vgg16.pth"
    _torchvision_style_vgg16_file(weights)
    features = load_vgg16_features(weights)
    assert torch.equal(features.features[0].weight, torch.load(weights)["features.0.weight"])

    model = vae(perceptual_weight=1.0, perceptual_weights=str(weights), perceptual_frames=1)
    video = clips()
    images = video[:, :, 0]
    assert model.perceptual(images, images).item() == pytest.approx(0.0, abs=1e-6)
    assert model.perceptual(images, images.flip(-1)).item() > 0

    out = model.losses("model", Batch(video), step=0)
    assert out.metrics["perceptual"] > 0
    m = {k: float(v) for k, v in out.metrics.items()}  # detached tensors: the trainer reads them at log_every
    assert m["loss"] == pytest.approx(m["recon"] + model.config.kl_weight * m["kl"] + m["perceptual"], rel=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in model.net.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.perceptual.parameters())
    model.train()
    assert not model.perceptual.training  # frozen, whatever the trainer sets


def test_perceptual_weight_without_weights_names_the_field():
    with pytest.raises(ValueError, match=r"model\.perceptual_weights"):
        vae(perceptual_weight=0.5)


def test_missing_or_wrong_weights_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.perceptual_weights"):
        vae(perceptual_weight=0.5, perceptual_weights=str(tmp_path / "absent.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="features.N.weight"):
        vae(perceptual_weight=0.5, perceptual_weights=str(wrong))
