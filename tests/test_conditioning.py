"""Image-to-video, sketch control and fine-tuning from a checkpoint (unit tier: no Ray, CPU, seconds).

    pytest tests/test_conditioning.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidgen_ray.checkpoints import initialise_from
from vidgen_ray.config import load_experiment, to_dict
from vidgen_ray.media import encode_png
from vidgen_ray.models.base import Batch
from vidgen_ray.models.conditioning import first_frame_condition, read_image, sobel_edges
from vidgen_ray.models.registry import build_model, get_preset


def _dit(**overrides):
    cfg = get_preset("dit-debug")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return build_model(cfg)


def _clips(n: int = 2, frames: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, frames, 32, 32, generator=g) * 2 - 1


def _jitter(module: torch.nn.Module, seed: int = 1) -> None:
    """Move every weight off its initialisation (zero-initialised layers included): a 'trained' model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


# --- the signals ----------------------------------------------------------------------------------


def test_first_frame_condition_holds_the_picture_and_a_mask_and_drops_to_zeros():
    first = torch.rand(3, 3, 4, 4) * 2 - 1
    cond = first_frame_condition(first, 5, keep=torch.tensor([True, False, True]))
    assert cond.shape == (3, 4, 5, 4, 4)
    assert torch.equal(cond[0, :3, 0], first[0]) and torch.all(cond[0, 3, 0] == 1)
    assert torch.all(cond[0, :, 1:] == 0)  # nothing after the first frame
    assert torch.all(cond[1] == 0)  # dropped: the "no image" input, mask included


def test_sobel_edges_are_minus_one_on_flat_frames_and_high_on_an_edge():
    flat = torch.full((1, 3, 2, 8, 8), 0.3)
    assert torch.allclose(sobel_edges(flat), torch.tensor(-1.0), atol=1e-4)
    step = torch.full((1, 3, 1, 8, 8), -1.0)
    step[..., 4:] = 1.0  # a vertical edge between columns 3 and 4
    edges = sobel_edges(step)[0, 0, 0]
    assert edges[:, 3:5].min() > 0.5 and edges[:, :2].max() < -0.99 and edges[:, 6:].max() < -0.99
    # a picture and the same picture as a clip give the same map: train and sample compute it alike
    assert torch.equal(sobel_edges(step.expand(-1, -1, 3, -1, -1))[:, :, 1], sobel_edges(step)[:, :, 0])


def test_read_image_covers_and_centre_crops_like_the_clips():
    picture = np.zeros((40, 80, 3), np.uint8)
    picture[:, :20] = 255  # a white band on the left quarter: cropped away by a centre crop to 1:1
    picture[:, 30:50, 0] = 200  # a red band in the middle: kept
    image = read_image(encode_png(picture), 20, 20)
    assert image.shape == (3, 20, 20) and image.min() >= -1 and image.max() <= 1
    assert image[:, :, 0].max() < -0.9  # no white: the left quarter was cropped
    red = image[0, :, 10]
    assert red.min() > 0.5 and image[1, :, 10].max() < -0.9


def test_read_image_refuses_what_it_cannot_or_must_not_decode():
    with pytest.raises(ValueError, match="could not be decoded"):
        read_image(b"not an image at all", 8, 8)
    png = encode_png(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="bytes; the limit"):
        read_image(png, 8, 8, max_bytes=10)
    with pytest.raises(ValueError, match="pixels; the limit"):
        read_image(png, 8, 8, max_pixels=64 * 63)
    import cv2

    # JPEG's size is read from its frame header before decoding, as PNG's; other formats are refused
    jpeg = cv2.imencode(".jpg", np.zeros((40, 70, 3), np.uint8))[1].tobytes()
    assert read_image(jpeg, 8, 8).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="70x40 pixels; the limit"):
        read_image(jpeg, 8, 8, max_pixels=70 * 40 - 1)
    with pytest.raises(ValueError, match="no PNG or JPEG header"):
        read_image(cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), 8, 8)


# --- the DiT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent", [False, True])
def test_image_conditioned_dit_trains_and_samples_from_an_image_or_from_noise(latent):
    overrides = {"image_condition": True, "caption": False, "num_classes": 4}
    if latent:
        overrides |= {"latent_channels": 4, "latent_spatial_compression": 4, "patch": (1, 2, 2)}
    model = _dit(**overrides)
    if latent:
        vae_cfg = get_preset("vae-debug")
        vae_cfg.z_channels, vae_cfg.spatial_compression, vae_cfg.temporal_compression = 4, 4, 1
        model.attach_autoencoder(build_model(vae_cfg))
    _jitter(model.net)  # off adaLN-Zero's start, where the output ignores the input
    clips, labels = _clips(), torch.tensor([0, 3])
    out = model.losses("model", Batch(clips, labels), 0)
    out.loss.backward()
    assert model.net.patch_embed.weight.grad[:, -1].abs().sum() > 0  # the mask channel is read
    cond = model.sample_conditioning(Batch(clips, labels), 2)
    assert torch.equal(cond["image"], clips[:, :, 0])
    with_image = model.sample(2, seed=0, steps=2, **cond)
    again = model.sample(2, seed=0, steps=2, **cond)
    other = model.sample(2, seed=0, steps=2, labels=labels, image=_clips(seed=5)[:, :, 0])
    guided = model.sample(2, seed=0, steps=2, image_guidance=3.0, **cond)
    no_image = model.sample(2, seed=0, steps=2, labels=labels)
    assert with_image.shape == (2, 8, 32, 32, 3)
    assert torch.equal(with_image, again)
    for different in (other, guided, no_image):
        assert (different - with_image).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"image must be \[2, 3, 32, 32\]"):
        model.sample(2, seed=0, steps=1, labels=labels, image=torch.zeros(2, 3, 16, 16))


def test_guidance_on_the_image_alone_keeps_the_class_in_both_terms():
    model = _dit(image_condition=True, caption=False, num_classes=4)
    calls = []
    forward = model.net.forward

    def spy(x, t, labels=None, caption=None, image=None, control=None, caption_mask=None):
        calls.append((labels.clone(), image[:, -1, 0].flatten(1).amax(1)))  # the mask: 1 where an image is given
        return forward(x, t, labels, caption, image, control, caption_mask)

    model.net.forward = spy
    labels, image = torch.tensor([1, 2]), _clips()[:, :, 0]
    model.sample(2, seed=0, steps=1, labels=labels, image=image, guidance=1.0, image_guidance=2.0)
    (used, given), = calls
    assert used.tolist() == [1, 2, 1, 2] and given.tolist() == [1, 1, 0, 0]  # v(class, image), v(class, no image)
    calls.clear()
    model.sample(2, seed=0, steps=1, labels=labels, image=image, guidance=3.0, image_guidance=2.0)
    (used, given), = calls
    assert used.tolist() == [1, 2, 4, 4, 4, 4] and given.tolist() == [1, 1, 1, 1, 0, 0]  # all, image, nothing


def test_a_model_without_the_condition_refuses_it():
    model = _dit(caption=False)
    with pytest.raises(ValueError, match="not image-conditioned"):
        model.sample(1, seed=0, steps=1, image=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="no control branch"):
        model.sample(1, seed=0, steps=1, sketch=torch.zeros(3, 32, 32))


def test_control_branch_starts_as_the_identity_and_learns():
    model = _dit(control=True, caption=False, num_classes=0)
    _jitter(model.net)  # a trained model whose control branch is then set up the ControlNet way
    model.net.control.reset(model.net.blocks)
    sketch = _clips(1)[:, :, 0]
    plain = model.sample(1, seed=3, steps=3)
    controlled = model.sample(1, seed=3, steps=3, sketch=sketch)
    assert torch.equal(plain, controlled)  # zero projections: no effect until trained
    # one optimiser step on the control branch alone makes the sketch matter
    opt = torch.optim.SGD(model.net.control.parameters(), lr=0.5)
    for step in range(3):
        loss = model.losses("model", Batch(_clips(2, seed=step)), step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model.sample(1, seed=3, steps=3, sketch=sketch) - model.sample(1, seed=3, steps=3)).abs().max() > 1e-4
    # a sketch video and a sketch picture are both accepted; a wrong shape is refused with the expected one
    assert model.sample(1, seed=3, steps=1, sketch=_clips(1)).shape == (1, 8, 32, 32, 3)
    with pytest.raises(ValueError, match=r"sketch must be \[1, 1 or 3, 8, 32, 32\]"):
        model.sample(1, seed=3, steps=1, sketch=torch.zeros(1, 3, 4, 32, 32))


def _save_checkpoint(tmp_path, model, experiment) -> str:
    """The checkpoint format readers see (checkpoints.py): meta.json + model.pt."""
    directory = tmp_path / "checkpoint_000000010"
    directory.mkdir()
    (directory / "meta.json").write_text(json.dumps({"experiment": to_dict(experiment), "state": {"step": 10}}))
    weights = {name: part.state_dict() for name, part in model.parts().items()}
    torch.save({"weights": weights, "ema": None, "ema_part": model.sampling_part}, directory / "model.pt")
    return str(directory)


def test_fine_tuning_with_control_and_an_image_leaves_the_trained_model_s_samples_unchanged(tmp_path):
    base_cfg = load_experiment("dit-debug", sets=["model.caption=false", "model.num_classes=4"])
    torch.manual_seed(0)
    base = build_model(base_cfg.model)
    _jitter(base.net)
    uri = _save_checkpoint(tmp_path, base, base_cfg)
    tuned_cfg = load_experiment("dit-debug", sets=["model.caption=false", "model.num_classes=4", "model.control=true",
                                                   "model.image_condition=true", f"train.init_from={uri}"])
    tuned = build_model(tuned_cfg.model)
    missing = initialise_from(tuned, tuned_cfg.train.init_from)
    assert missing and all(k.startswith("model.control.") for k in missing)
    assert torch.equal(tuned.net.control.blocks[0].attn.qkv.weight, base.net.blocks[0].attn.qkv.weight)  # copies
    clips, labels = _clips(), torch.tensor([1, 2])
    before = base.sample(2, seed=4, steps=3, labels=labels)
    after = tuned.sample(2, seed=4, steps=3, labels=labels, image=clips[:, :, 0], sketch=clips)
    assert torch.allclose(before, after, atol=1e-5)
    # another family's checkpoint, or a module the new config lacks, is refused by name
    with pytest.raises(ValueError, match="holds a dit model; this run trains a gan"):
        initialise_from(build_model(get_preset("gan-debug")), uri)
    small = load_experiment("dit-debug", sets=["model.caption=false", "model.num_classes=4", "model.depth=2"])
    with pytest.raises(ValueError, match="does not exist in"):
        initialise_from(build_model(small.model), uri)


# --- the GAN ------------------------------------------------------------------------------------


def test_image_conditioned_gan_starts_its_clips_with_the_given_frame():
    cfg = get_preset("gan-debug")
    cfg.image_condition, cfg.num_classes = True, 4
    torch.manual_seed(0)
    model = build_model(cfg)
    clips, labels = _clips(), torch.tensor([1, 2])
    for part in ("discriminator", "generator"):
        model.losses(part, Batch(clips, labels), 0).loss.backward()
    assert model.generator.image.convs[0].weight.grad.abs().sum() > 0
    video = model.sample(2, seed=0, **model.sample_conditioning(Batch(clips, labels), 2))
    assert torch.equal(video[:, 0].permute(0, 3, 1, 2), clips[:, :, 0])
    later = model.sample(2, seed=0, labels=labels, image=_clips(seed=9)[:, :, 0])
    assert (later[:, 1:] - video[:, 1:]).abs().max() > 1e-4  # the rest of the clip depends on the picture
    free = model.sample(2, seed=0, labels=labels)  # no image: a clip from noise, first frame generated
    assert free.shape == (2, 8, 32, 32, 3) and (free[:, 0] - video[:, 0]).abs().max() > 1e-3
    assert model.conditioning().image and not model.conditioning().sketch


def test_evaluation_conditions_an_image_model_on_each_real_clip_s_first_frame():
    from vidgen_ray.data.normalize import Normalizer
    from vidgen_ray.evaluate.checkpoint_eval import generated

    cfg = get_preset("gan-i2v-debug")
    cfg.num_classes = 4
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    rows = [{"video": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), "label": i % 4, "caption": ""} for i in range(5)]
    videos = np.concatenate(list(generated(model, None, rows, batch_size=2, seed=0, normalizer=Normalizer())))
    assert np.array_equal(videos[:, 0], np.stack([r["video"][0] for r in rows]))


# --- learning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_image_conditioned_dit_learns_to_start_from_the_given_frame():
    """The looser bound of issue 22's target (the learning benchmark's dit-i2v curve holds the 25 dB one): a
    plain loop on the synthetic motion clips, rendered in memory, lifts frame 0's PSNR against held-out first
    frames far above the untrained model's (9-10 dB: it ignores the picture)."""
    from vidgen_ray.data.synth import SynthSpec, render
    from vidgen_ray.evaluate.pixel import psnr
    from vidgen_ray.models.base import to_uint8

    def clips(first: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        videos = [render(SynthSpec(i, i % 4, 8.0, 32, 32, 8, 1000 + i))[0] for i in range(first, first + n)]
        x = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        return x, torch.arange(first, first + n) % 4

    torch.set_num_threads(2)
    train_x, train_y = clips(0, 96)
    held_x, held_y = clips(96, 16)
    model = _dit(image_condition=True, caption=False, num_classes=4)
    opt = torch.optim.AdamW(model.net.parameters(), lr=3e-3, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(0)

    def first_frame_psnr() -> float:
        video = to_uint8(model.sample(16, seed=1, labels=held_y, image=held_x[:, :, 0], steps=16)).numpy()
        real = to_uint8(held_x.permute(0, 2, 3, 4, 1)).numpy()
        return float(np.mean([psnr(r[:1], f[:1]) for r, f in zip(real, video)]))

    before = first_frame_psnr()
    for step in range(100):  # 9.0 -> 19.2 dB at 80 steps, 20.3 at 120, 20.7 at 240 when written
        idx = torch.randint(len(train_x), (16,), generator=g)
        loss = model.losses("model", Batch(train_x[idx], train_y[idx]), step).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        opt.step()
    after = first_frame_psnr()
    assert before < 12 and after > 15 and after > before + 5, (before, after)


def test_picture_conditioned_runs_need_pictures_in_minus_one_one():
    from vidgen_ray.configs import ConfigError

    for preset in ("dit-i2v-debug", "dit-control-debug", "gan-i2v-debug"):
        with pytest.raises((ConfigError, ValueError), match="data.normalize=minus_one_one"):
            load_experiment(preset, sets=["data.normalize=zero_one"])
