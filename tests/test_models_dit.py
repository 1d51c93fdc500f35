"""Video transformer specifics: latent mode through an attached frozen VAE, classifier-free
guidance, condition dropout, the byte-level text encoder, rectified flow, bf16 and torch.compile.

    .venv/bin/pytest tests/test_models_dit.py -q
"""

from __future__ import annotations

import pytest
import torch

from vidgen_ray.models.base import Batch
from vidgen_ray.models.dit import DiTConfig
from vidgen_ray.models.flow_matching import euler_sample, noisy_input, sample_timesteps, shift_timesteps, velocity_target
from vidgen_ray.models.registry import build_model, get_preset
from vidgen_ray.models.text_encoder import BOS, BYTE_OFFSET, PAD, encode_captions


def dit(**overrides):
    torch.manual_seed(0)
    config = get_preset("dit-debug")
    for key, value in overrides.items():
        setattr(config, key, value)
    return build_model(config)


def perturbed(model):
    """Give the zero-initialised (adaLN-Zero) layers values so conditioning reaches the output."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def batch(n: int = 2) -> Batch:
    torch.manual_seed(1)
    return Batch(torch.rand(n, 3, 8, 32, 32) * 2 - 1, torch.arange(n), [f"clip {i}" for i in range(n)])


# --- latent mode --------------------------------------------------------------------------------


def latent_dit():
    return dit(latent_channels=4, latent_spatial_compression=4, patch=(1, 2, 2))


def test_latent_mode_trains_through_an_attached_frozen_vae():
    torch.manual_seed(2)
    vae = build_model(get_preset("vae-debug"))  # 4 latent channels, 4x spatial, no temporal
    model = latent_dit()
    model.attach_autoencoder(vae)
    assert model.config.model_shape.channels == 4 and model.net.grid == (8, 4, 4)
    model.train()
    assert not model.autoencoder.training
    out = model.losses("model", batch(), step=0)
    out.loss.backward()
    assert any(p.grad is not None for p in model.net.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.autoencoder.parameters())
    assert set(model.parts()) == {"model"}  # the codec is not a trained part
    video = model.sample(2, seed=0, steps=2)
    assert video.shape == (2, 8, 32, 32, 3) and video.abs().max() <= 1


def test_latent_mode_without_an_autoencoder_says_how_to_attach_one():
    model = latent_dit()
    with pytest.raises(RuntimeError, match=r"attach_autoencoder"):
        model.losses("model", batch(), step=0)


def test_attach_rejects_a_vae_with_other_latents():
    config = get_preset("vae-debug")
    config.z_channels = 8
    with pytest.raises(ValueError, match=r"latent_channels"):
        latent_dit().attach_autoencoder(build_model(config))
    with pytest.raises(ValueError, match=r"pixel space"):
        dit().attach_autoencoder(build_model(get_preset("vae-debug")))


# --- conditioning and guidance -----------------------------------------------------------------


def test_labels_and_captions_change_the_prediction():
    model = perturbed(dit())
    x, t = torch.randn(2, 3, 8, 32, 32), torch.full((2,), 0.5)
    ids = encode_captions(["a red ball", "a red ball"], 32)
    base = model.net(x, t, torch.tensor([1, 1]), ids)
    other_label = model.net(x, t, torch.tensor([2, 2]), ids)
    other_caption = model.net(x, t, torch.tensor([1, 1]), encode_captions(["a blue cube", "a blue cube"], 32))
    assert (base - other_label).abs().mean() > 1e-4
    assert (base - other_caption).abs().mean() > 1e-4


def test_guidance_zero_is_the_unconditional_model_and_guidance_changes_samples():
    model = perturbed(dit())
    labels, captions = torch.tensor([1, 2]), ["a", "b"]
    unguided = model.sample(2, seed=0, labels=labels, captions=captions, steps=3, guidance=1.0)
    guided = model.sample(2, seed=0, labels=labels, captions=captions, steps=3, guidance=4.0)
    assert (guided - unguided).abs().mean() > 1e-3
    # guidance 0 keeps only the unconditional branch: the null class and the empty caption.
    only_uncond = model.sample(2, seed=0, labels=labels, captions=captions, steps=3, guidance=0.0)
    null = torch.full((2,), model.config.num_classes)
    explicit_uncond = model.sample(2, seed=0, labels=null, captions=["", ""], steps=3, guidance=1.0)
    assert torch.allclose(only_uncond, explicit_uncond, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.999999])
def test_condition_dropout_swaps_in_the_null_class_and_empty_caption(dropout):
    model = dit(cond_dropout=dropout)
    seen = {}

    def record(module, args):
        seen["labels"], seen["ids"] = args[2], args[3]

    model.net.register_forward_pre_hook(record)
    data = batch()
    model.losses("model", data, step=0)
    if dropout == 0.0:
        assert torch.equal(seen["labels"], data.label)
        assert torch.equal(seen["ids"], encode_captions(data.caption, model.config.max_caption_bytes))
    else:
        assert (seen["labels"] == model.config.num_classes).all()
        assert (seen["ids"][:, 0] == BOS).all() and (seen["ids"][:, 1:] == PAD).all()


def test_missing_labels_or_captions_are_reported():
    model = dit()
    video = batch().video
    with pytest.raises(ValueError, match="model.num_classes=0"):
        model.losses("model", Batch(video, caption=["a", "b"]), step=0)
    with pytest.raises(ValueError, match="model.caption=false"):
        model.losses("model", Batch(video, label=torch.tensor([0, 1])), step=0)


def test_text_encoder_reads_utf8_bytes_and_pads_to_a_fixed_length():
    ids = encode_captions(["é", "", "abcdef"], 4)
    assert ids.tolist() == [
        [BOS, 0xC3 + BYTE_OFFSET, 0xA9 + BYTE_OFFSET, PAD],
        [BOS, PAD, PAD, PAD],
        [BOS, ord("a") + BYTE_OFFSET, ord("b") + BYTE_OFFSET, ord("c") + BYTE_OFFSET],  # cut
    ]


# --- rectified flow ----------------------------------------------------------------------------


def test_rectified_flow_path_and_euler_sampler():
    x0, noise = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(noisy_input(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(noisy_input(x0, noise, torch.ones(3)), noise)
    # With the exact velocity of a straight path, Euler lands on the data for any step count.
    for steps in (1, 4):
        out = euler_sample(lambda x, t: velocity_target(x0, noise), noise, steps)
        assert torch.allclose(out, x0, atol=1e-5)
        shifted = euler_sample(lambda x, t: velocity_target(x0, noise), noise, steps, shift=4.0)
        assert torch.allclose(shifted, x0, atol=1e-5)


def test_timestep_shift_moves_time_towards_noise_and_keeps_the_ends():
    t = torch.linspace(0, 1, 11)
    assert torch.equal(shift_timesteps(t, 1.0), t)
    shifted = shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.isclose(shifted[5], torch.tensor(0.75))  # 3 * 0.5 / (1 + 2 * 0.5)
    assert (shifted[1:-1] > t[1:-1]).all() and (shifted.diff() > 0).all()
    torch.manual_seed(0)
    plain = sample_timesteps(4096, "logit_normal", torch.device("cpu"))
    torch.manual_seed(0)
    moved = sample_timesteps(4096, "logit_normal", torch.device("cpu"), shift=4.0)
    assert torch.allclose(moved, shift_timesteps(plain, 4.0))
    assert 0.45 < plain.median() < 0.55 and moved.median() > 0.75


def test_shifted_model_samples_on_the_shifted_schedule():
    """Sampling visits the same shifted times that training drew from; the last step lands on t = 0."""
    model = dit(timestep_shift=3.0, num_classes=0, caption=False)
    seen: list[float] = []
    forward = model.net.forward

    def spy(x, t, *args):
        seen.append(float(t[0]))
        return forward(x, t, *args)

    model.net.forward = spy
    model.sample(1, seed=0, steps=4)
    expected = shift_timesteps(torch.linspace(1.0, 0.0, 5), 3.0)[:4]
    assert torch.allclose(torch.tensor(seen), expected)
    with pytest.raises(ValueError, match="timestep_shift"):
        DiTConfig(timestep_shift=0.0).validate()


def test_training_times_cover_the_steps_that_decide_the_samples_pixels():
    """A data-predicting sampler's last Euler step lands on the network's prediction at the last sampled t,
    so training must visit that t. dit-debug's earlier logit-normal draw, shifted 4x, put 0.3 % of training
    below t = 0.2 (its 32-step sampler's last two steps lie there), so the prediction that became the pixels
    was barely trained. The preset's own draw must put >= 2 % there."""
    cfg = get_preset("dit-debug")
    assert cfg.prediction == "data"
    times = shift_timesteps(torch.linspace(1.0, 0.0, cfg.sample_steps + 1), cfg.timestep_shift)
    deciding = float(times[-3])  # the last two steps start at or below this t
    torch.manual_seed(0)
    drawn = sample_timesteps(100_000, cfg.timestep_sampling, torch.device("cpu"), cfg.timestep_shift)
    assert float((drawn <= deciding).float().mean()) >= 0.02, (cfg.timestep_sampling, deciding)
    torch.manual_seed(0)
    before = sample_timesteps(100_000, "logit_normal", torch.device("cpu"), cfg.timestep_shift)
    assert float((before <= deciding).float().mean()) < 0.01  # the draw this test would have caught


def test_a_dump_saved_before_prediction_and_shift_existed_loads_as_the_model_it_was():
    from vidgen_ray.config import experiment_from_dict, load_experiment, to_dict

    saved = to_dict(load_experiment("dit-debug"))
    assert (saved["model"]["prediction"], saved["model"]["timestep_shift"]) == ("data", 4.0)
    assert experiment_from_dict(saved).model.timestep_shift == 4.0  # a current dump keeps its values
    for field in ("prediction", "timestep_shift"):
        del saved["model"][field]
    old = experiment_from_dict(saved).model  # every DiT was then unshifted and predicted the velocity
    assert (old.prediction, old.timestep_shift) == ("velocity", 1.0)


# --- numerics and compilation ------------------------------------------------------------------


def test_bf16_autocast_forward_is_finite_and_close_to_fp32():
    model = perturbed(dit())
    data = batch()
    x, t = data.video, torch.full((2,), 0.3)
    ids = encode_captions(data.caption, 32)
    reference = model.net(x, t, data.label, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.net(x, t, data.label, ids)
    assert torch.isfinite(low).all()
    relative = (low.float() - reference).norm() / reference.norm()
    assert relative < 0.05


def test_compiles_to_one_graph():
    torch._dynamo.reset()
    model = perturbed(dit())
    data = batch()
    x, t = data.video, torch.full((2,), 0.3)
    ids = encode_captions(data.caption, 32)
    compiled = torch.compile(model.net, fullgraph=True, backend="eager")  # fullgraph: a break raises
    assert torch.allclose(compiled(x, t, data.label, ids), model.net(x, t, data.label, ids), atol=1e-5)


def test_one_dit_runs_and_samples_at_other_clip_shapes():
    """Issue 21, item 3 (the model's part): sin-cos positions are computed per token grid, so one network
    takes any multiple of its patch; learned positions stay tied to the preset's grid."""
    from dataclasses import replace

    from vidgen_ray.models.registry import build_model, get_preset

    torch.manual_seed(0)
    model = build_model(get_preset("dit-debug")).eval()
    cfg = model.config
    same = model.sample(2, seed=3, steps=2)
    assert torch.equal(same, model.sample(2, seed=3, steps=2, frames=cfg.frames, height=cfg.height, width=cfg.width))
    wide = model.sample(2, seed=3, steps=2, frames=4, height=48, width=64)
    assert wide.shape == (2, 4, 48, 64, 3) and torch.isfinite(wide).all()
    # Positions of a grid are a function of the grid alone: the preset's grid is what training saw.
    net = model.net
    assert torch.equal(net.positions(net.grid, torch.device("cpu")), net.positions(tuple(net.grid), torch.device("cpu")))
    assert net.positions((2, 3, 4), torch.device("cpu")).shape == (1, 2, 12, cfg.hidden)
    with pytest.raises(ValueError, match="positive multiples of 1 x 4 x 4"):
        model.sample(1, seed=0, steps=1, height=30)
    learned = build_model(replace(get_preset("dit-debug"), pos_embed="learned")).eval()
    with pytest.raises(ValueError, match="learned positions exist for the grid"):
        learned.sample(1, seed=0, steps=1, width=64)
