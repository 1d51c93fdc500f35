"""The motion classifier behind class_accuracy: it learns the synthetic motion classes from real clips
(and so can tell them apart in generated ones), round-trips through storage, and the per-class contact
sheet; plus the DiT's data prediction and the per-family token counts telemetry reports.

    .venv/bin/pytest tests/test_eval_classifier.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidgen_ray.data.synth import SIZES, SynthSpec, render
from vidgen_ray.evaluate.classifier import ClassifierConfig, accuracy, load_classifier, predict, save_classifier, train_classifier
from vidgen_ray.evaluate.report import class_sheet


def motion_set(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic clips (16 frames, area-resized to size x size) with their class, in class order 0,1,2,3,..."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        h, w = SIZES[rng.integers(len(SIZES))]
        frames, _ = render(SynthSpec(i, i % 4, 10.0, h, w, 16, int(rng.integers(2**31))))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        s = min(h, w)
        x = x[:, :, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        videos.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.stack(videos), np.arange(n) % 4


@pytest.fixture(scope="module")
def trained():
    videos, labels = motion_set(160, 0)
    held_videos, held_labels = motion_set(32, 1)
    cfg = ClassifierConfig(num_classes=4, epochs=6, min_steps=300, channels=(16, 32), label_names=("a", "b", "c", "d"))
    return train_classifier(videos, labels, cfg, heldout=(held_videos, held_labels)), (held_videos, held_labels)


def test_classifier_learns_the_motion_classes(trained):
    result, (videos, labels) = trained
    assert result.heldout_accuracy >= 0.9, result.history
    # class_accuracy scores against the class asked for: clips of another class than asked score low.
    assert accuracy(result.model, videos, (labels + 1) % 4) <= 0.1


def test_classifier_round_trips_and_resizes_other_sizes(trained, tmp_path):
    result, (videos, labels) = trained
    path = save_classifier(result, str(tmp_path / "cls"))
    loaded = load_classifier(str(tmp_path / "cls"))
    assert path.endswith("classifier.pt") and loaded.heldout_accuracy == result.heldout_accuracy
    np.testing.assert_array_equal(predict(loaded.model, videos), predict(result.model, videos))
    # Clips rendered at 48x48 with 20 frames are brought to the 16x32x32 the classifier was trained at.
    big, big_labels = motion_set(16, 1, size=48)
    big = np.concatenate([big, big[:, -4:]], axis=1)
    assert accuracy(loaded.model, big, big_labels) >= 0.75
    with pytest.raises(ValueError, match="16-frame"):
        predict(loaded.model, videos[:, :8])
    with pytest.raises(FileNotFoundError, match="vidgen-ray classifier"):
        load_classifier(str(tmp_path / "missing"))


def test_class_sheet_has_a_labelled_block_per_class():
    real = np.zeros((8, 16, 32, 32, 3), np.uint8)
    fake = np.full((8, 16, 32, 32, 3), 200, np.uint8)
    labels = np.arange(8) % 4
    sheet = class_sheet(real, labels, fake, labels, ["a", "b", "c", "d"], per_class=2, frames=6, scale=3)
    # 4 classes x (2 real + 2 generated) rows of 96 px, 3 gaps of 4 px; a 150 px label column + 6 frames.
    assert sheet.shape == (4 * 4 * 96 + 3 * 4, 150 + 6 * 96, 3)
    assert sheet[: 2 * 96, 150:].max() == 0 and sheet[2 * 96 : 4 * 96, 150:].min() == 200  # real rows, then generated


def test_dit_data_prediction_turns_into_the_velocity_and_samples_land_on_it():
    from vidgen_ray.models.registry import build_model, get_preset

    cfg = get_preset("dit-debug")
    assert cfg.prediction == "data"  # pixel-space debug preset: 48 values per token (see registry)
    model = build_model(cfg)
    x0, noise = torch.rand(2, 3, 8, 32, 32) * 2 - 1, torch.randn(2, 3, 8, 32, 32)
    t = torch.tensor([0.3, 0.8])
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
    # A perfect data prediction gives exactly the velocity target noise - x0.
    torch.testing.assert_close(model.velocity(x0, x_t, t), noise - x0, rtol=1e-4, atol=1e-4)
    # Training floors t (bounded loss weight); sampling does not, so its last Euler step lands on the prediction.
    small = torch.tensor([0.01, 0.01])
    assert not torch.allclose(model.velocity(x0, x_t, small), model.velocity(x0, x_t, small, min_t=1e-4))
    step = x_t + (0.0 - 0.01) * model.velocity(x0, x_t, small, min_t=1e-4)
    torch.testing.assert_close(step, x0, rtol=1e-4, atol=1e-4)


def test_tokens_per_sample_mean_tokens_for_the_transformer_and_pixels_for_conv_nets():
    from vidgen_ray.models.registry import build_model, get_preset

    dit = build_model(get_preset("dit-debug"))
    assert dit.tokens_per_sample() == 8 * 8 * 8  # 8 frames of 32x32 in 1x4x4 patches
    vae = build_model(get_preset("vae-debug"))
    assert vae.tokens_per_sample() == 8 * 32 * 32
