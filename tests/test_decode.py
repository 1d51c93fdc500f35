"""Clip decoding: timestamp-based frame-rate resampling, rotation, sizes, many clips per file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vidgen_ray.data.decode import decode_file, even_windows, geometry
from vidgen_ray.data.config import CleanRules
from vidgen_ray.data.probe import probe
from videos import read_counter, set_mp4_rotation, write_counter_video


def nearest_index(times: np.ndarray, target: float) -> set[int]:
    """Indices of the source frames nearest to ``target`` (two on an exact tie)."""
    d = np.abs(times - target)
    return set(np.flatnonzero(np.isclose(d, d.min(), atol=1e-6)).tolist())


@pytest.mark.parametrize("src_fps", [6.0, 12.5, 25.0, 30000 / 1001, 30.0, 60.0])
@pytest.mark.parametrize("target_fps", [8.0, 15.0])
def test_resampling_picks_the_nearest_source_frame(tmp_path: Path, src_fps: float, target_fps: float):
    n = int(src_fps * 4)
    path = write_counter_video(tmp_path / "c.mp4", src_fps, n)
    times = np.arange(n) / src_fps
    frames, start = 12, 0.37
    clip = decode_file(str(path), [start], frames=frames, fps=target_fps, height=48, width=64)[0]
    assert clip.shape == (frames, 48, 64, 3) and clip.dtype == np.uint8
    got = [read_counter(f) for f in clip]
    for k, g in enumerate(got):
        assert g in nearest_index(times, start + k / target_fps), (k, got)
    # Up-sampling repeats frames, down-sampling skips them: the count of distinct frames says which.
    assert len(set(got)) == min(frames, len({min(nearest_index(times, start + k / target_fps)) for k in range(frames)}))


def test_variable_frame_rate_uses_timestamps(tmp_path: Path):
    rng = np.random.default_rng(0)
    times = np.concatenate([[0.0], np.cumsum(rng.choice([0.033, 0.05, 0.1], size=79))])
    path = write_counter_video(tmp_path / "vfr.mp4", 25, len(times), times=times.tolist())
    info = probe(str(path), CleanRules(), 1.0)
    assert info["vfr"] and info["status"] == "kept"
    clip = decode_file(str(path), [0.5], frames=16, fps=10, height=48, width=64)[0]
    for k, f in enumerate(clip):
        assert read_counter(f) in nearest_index(times, 0.5 + k / 10)


def test_many_overlapping_windows_from_one_open(tmp_path: Path):
    path = write_counter_video(tmp_path / "c.mp4", 25.0, 100)
    starts = [2.0, 0.0, 0.5, 0.52, 3.9]  # unsorted, overlapping, and one running past the end
    clips = decode_file(str(path), starts, frames=8, fps=8, height=48, width=64)
    times = np.arange(100) / 25.0
    for s, clip in zip(starts, clips):
        got = [read_counter(f) for f in clip]
        for k, g in enumerate(got):
            expected = nearest_index(times, s + k / 8) if s + k / 8 <= times[-1] else {99}
            assert g in expected, (s, got)


def test_rotation_metadata_is_applied_clockwise(tmp_path: Path):
    """A display matrix of 'rotate 90 clockwise' (what phones write): the left half of the stored
    picture must end up on top, and the output is portrait."""
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 128, 64, "yuv420p"
        img = np.zeros((64, 128, 3), np.uint8)
        img[:, :64] = 255  # left half white
        for _ in range(20):
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode(None))
    set_mp4_rotation(path, 90)
    info = probe(str(path), CleanRules(min_side=32), 1.0)
    assert (info["width"], info["height"], info["rotation"]) == (64, 128, 270)
    clip = decode_file(str(path), [0.0], frames=2, fps=5, height=128, width=64)[0]
    top, bottom = clip[0, :60].mean(), clip[0, 68:].mean()
    assert top > 200 and bottom < 50, (top, bottom)


def test_real_rotated_clip_matches_the_rotated_raw_frame(shared_videos: Path):
    path = shared_videos / "decord_video_90.mov"  # 568x320 stored, display matrix -90 degrees
    with av.open(str(path)) as c:
        raw = next(c.decode(video=0)).to_ndarray(format="rgb24")
    clip = decode_file(str(path), [0.0], frames=1, fps=30, height=568, width=320)[0]
    expected = np.rot90(raw, k=-1)  # 90 degrees clockwise
    assert clip[0].shape == expected.shape == (568, 320, 3)
    assert np.abs(clip[0].astype(int) - expected.astype(int)).mean() < 1.0


@pytest.mark.parametrize("name", ["mb_rotate-buck-bunny.mp4", "moviepy_fire2.mp4", "mb_0.ts", "mmaction2_test.avi",
                                  "mb_trim-buck-bunny.webm", "intel_book.mkv", "tc_nasa_13013.mp4"])
def test_real_clips_decode_to_the_requested_shape(shared_videos: Path, name: str):
    path = str(shared_videos / name)
    info = probe(path, CleanRules(), 1.0)
    assert info["status"] == "kept", info
    starts = even_windows(info["duration"], 1.0, 3)
    clips = decode_file(path, starts, frames=8, fps=8, height=64, width=48, rotation=info["rotation"])
    assert len(clips) == 3
    for clip in clips:
        assert clip.shape == (8, 64, 48, 3) and clip.dtype == np.uint8
        assert clip.std() > 1.0  # real picture content, not a blank fill
    # Consecutive windows of a moving clip differ.
    assert not np.array_equal(clips[0], clips[-1])


def test_geometry_covers_then_crops():
    g = geometry(stored_w=1920, stored_h=1080, rotation=0, height=64, width=64)
    assert (g.scale_h, g.height, g.width) == (64, 64, 64) and g.scale_w == 114 and g.crop_x == 25
    # Upright is 1080 wide x 1920 tall; covering 32x64 (w x h) scales it to 36x64, so the *stored*
    # frame is scaled to 64x36 and the crop trims 4 columns of the upright picture.
    g = geometry(stored_w=1920, stored_h=1080, rotation=90, height=64, width=32)
    assert (g.scale_w, g.scale_h, g.crop_y, g.crop_x) == (64, 36, 0, 2)
