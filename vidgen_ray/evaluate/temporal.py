"""Temporal consistency of a video without learned weights: flicker and flow-compensated warping error.

    python -c "import numpy as np; from vidgen_ray.evaluate.temporal import temporal_flicker; \
print(temporal_flicker(np.zeros((8, 32, 32, 3), np.uint8)))"      # 1.0: a still video does not flicker

* ``temporal_flicker``: VBench's temporal-flickering score, the mean absolute difference of
  consecutive uint8 frames (``cv2.absdiff``, averaged over pixels, channels and frame pairs), mapped
  to ``(255 - mean) / 255``: 1 for a still video, lower for more change between frames. VBench feeds
  static-scene videos, so there it measures flicker; on moving content it also falls with speed.
* ``warping_error``: how much of the change between frames is *not* explained by motion. For each
  pair, OpenCV's Farneback optical flow is computed from frame t+1 back to frame t, frame t is warped
  onto t+1 with ``cv2.remap`` (bilinear), and the mean absolute difference to frame t+1 is taken over
  the pixels whose source lies inside frame t (content entering the view has no source), in [0, 1]
  units (divided by 255). Lower is more consistent; a correctly tracked translation scores near 0
  while flicker, popping and texture boiling do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_INTENSITY = 255.0


@dataclass(frozen=True)
class FarnebackParams:
    """``cv2.calcOpticalFlowFarneback`` settings (OpenCV's documented example values, 4 pyramid levels)."""

    pyr_scale: float = 0.5
    levels: int = 4  # handles motions up to ~2**levels * winsize / 2 px per frame
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"temporal metrics want a uint8 video [T, H, W, 1|3], got {video.dtype} {video.shape}")
    if len(video) < 2:
        raise ValueError(f"temporal metrics need at least 2 frames, got {len(video)}")
    return video


def frame_differences(video: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each pair of consecutive uint8 frames, [T-1], in 0..255."""
    video = _check_video(video)
    return np.array([cv2.absdiff(a, b).mean() for a, b in zip(video[:-1], video[1:])], dtype=np.float64)


def temporal_flicker(video: np.ndarray) -> float:
    """VBench temporal-flickering score in [0, 1] (1 = no change between consecutive frames)."""
    return float((MAX_INTENSITY - frame_differences(video).mean()) / MAX_INTENSITY)


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame[..., 0] if frame.shape[-1] == 1 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def backward_flow(previous: np.ndarray, current: np.ndarray, params: FarnebackParams = FarnebackParams()) -> np.ndarray:
    """Flow [H, W, 2] (dx, dy) such that ``current[y, x] ~ previous[y + dy, x + dx]``."""
    return cv2.calcOpticalFlowFarneback(
        _gray(current), _gray(previous), None,
        params.pyr_scale, params.levels, params.winsize, params.iterations, params.poly_n, params.poly_sigma, 0,
    )


def warp_previous(previous: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``previous`` warped onto the next frame's grid, and the mask of pixels whose source is inside."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(previous, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped.reshape(previous.shape), inside


def warping_errors(video: np.ndarray, params: FarnebackParams = FarnebackParams()) -> np.ndarray:
    """Flow-compensated mean absolute error of each consecutive pair, [T-1], in [0, 1]."""
    video = _check_video(video)
    errors = []
    for previous, current in zip(video[:-1], video[1:]):
        warped, inside = warp_previous(previous, backward_flow(previous, current, params))
        diff = np.abs(warped.astype(np.float32) - current.astype(np.float32)).mean(axis=-1)
        errors.append(diff[inside].mean() / MAX_INTENSITY if inside.any() else np.nan)
    return np.array(errors, dtype=np.float64)


def warping_error(video: np.ndarray, params: FarnebackParams = FarnebackParams()) -> float:
    """Mean flow-compensated warping error of a video, in [0, 1] (0 = every change explained by motion)."""
    return float(np.nanmean(warping_errors(video, params)))
