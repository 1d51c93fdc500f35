"""Video GAN specifics: loss formulas, the lazy R1 penalty, class conditioning, the optional
per-frame discriminator, and the generator step leaving the discriminator trainable.

    .venv/bin/pytest tests/test_models_gan.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from vidgen_ray.models.base import Batch
from vidgen_ray.models.gan import discriminator_loss, generator_loss
from vidgen_ray.models.registry import build_model, get_preset


def gan(**overrides):
    torch.manual_seed(0)
    config = get_preset("gan-debug")
    for key, value in overrides.items():
        setattr(config, key, value)
    return build_model(config)


def clips(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 8, 32, 32) * 2 - 1


def test_loss_formulas():
    zero = torch.zeros(4)
    assert discriminator_loss("hinge", zero, zero).item() == pytest.approx(2.0)
    assert discriminator_loss("non_saturating", zero, zero).item() == pytest.approx(2 * math.log(2))
    # Confident, correct discriminator: hinge is exactly 0, non-saturating close to 0.
    assert discriminator_loss("hinge", torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0
    assert discriminator_loss("non_saturating", torch.full((4,), 9.0), torch.full((4,), -9.0)).item() < 1e-3
    assert generator_loss("hinge", torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert generator_loss("non_saturating", zero).item() == pytest.approx(math.log(2))


def test_r1_penalty_is_added_on_its_interval_only():
    model = gan(r1_gamma=2.0, r1_interval=4)
    model.discriminator.eval()  # freeze the spectral-norm power iteration so calls are comparable
    batch = Batch(clips())

    def d_loss(step: int, gamma: float):
        model.config.r1_gamma = gamma
        torch.manual_seed(5)
        return model.losses("discriminator", batch, step)

    with_r1, without = d_loss(4, 2.0), d_loss(4, 0.0)
    assert with_r1.metrics["r1"] > 0
    # Lazy regularisation: gamma / 2 * |grad|^2, scaled by the interval.
    expected = without.loss.item() + 2.0 / 2 * float(with_r1.metrics["r1"]) * 4
    assert with_r1.loss.item() == pytest.approx(expected, rel=1e-4)
    assert "r1" not in d_loss(5, 2.0).metrics
    # The penalty backpropagates (double backward through the discriminator).
    model.zero_grad(set_to_none=True)
    d_loss(8, 2.0).loss.backward()
    grads = [p.grad for p in model.discriminator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_class_labels_condition_the_generator():
    model = gan(num_classes=3)
    with torch.no_grad():  # the class embedding enters through conditional norms: make it matter
        for p in model.generator.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a = model.sample(2, seed=0, labels=torch.tensor([0, 0]))
    b = model.sample(2, seed=0, labels=torch.tensor([1, 1]))
    assert (a - b).abs().mean() > 1e-3
    assert model.sample(2, seed=0).shape == a.shape  # labels drawn from the seed when not given
    out = model.losses("discriminator", Batch(clips(), label=torch.tensor([0, 2])), step=1)
    assert math.isfinite(out.loss.item())
    with pytest.raises(ValueError, match="num_classes"):
        model.losses("generator", Batch(clips()), step=1)


def test_video_only_discriminator():
    both, video_only = gan(), gan(image_discriminator=False)
    assert video_only.discriminator.image is None
    assert video_only.discriminator_flops() < both.discriminator_flops()
    logits, frame_logits = video_only.discriminator(clips(), None)
    assert logits.shape == (2,) and frame_logits is None
    _, frame_logits = both.discriminator(clips(), None)
    assert frame_logits.shape == (2 * both.config.image_disc_frames,)


def test_discriminator_is_frozen_from_a_generator_step_to_the_next_discriminator_step():
    model = gan()
    model.losses("generator", Batch(clips()), step=0).loss.backward()
    assert not any(p.requires_grad for p in model.discriminator.parameters())
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())
    model.losses("discriminator", Batch(clips()), step=1).loss.backward()
    assert all(p.requires_grad and p.grad is not None for p in model.discriminator.parameters())


def test_factorised_and_full_3d_convolutions_both_build():
    factorised, full = gan(conv="factorised"), gan(conv="3d")
    assert factorised.flops_per_sample() < full.flops_per_sample()
    assert full.sample(1, seed=0).shape == factorised.sample(1, seed=0).shape


def test_trains_and_samples_in_bfloat16():
    model = gan().to(torch.bfloat16)
    for part in model.parts():
        out = model.losses(part, Batch(clips(1).bfloat16()), step=1)
        out.loss.backward()
        assert torch.isfinite(out.loss)
    assert all(p.grad.dtype == torch.bfloat16 for p in model.discriminator.parameters())
    video = model.sample(2, seed=0)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
