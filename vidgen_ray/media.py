"""Writing videos and images: MP4 (H.264 via PyAV) and PNG contact sheets, as bytes.

Bytes, not paths, so the caller decides where they go (``storage.write_bytes`` to a local folder or
an object store) and nothing here knows about URIs.

    python -c "import numpy as np; from vidgen_ray.media import encode_mp4; \
print(len(encode_mp4(np.zeros((8, 32, 32, 3), np.uint8), fps=8)))"
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np


def encode_mp4(
    frames: np.ndarray,
    fps: float = 8.0,
    codec: str = "libx264",
    crf: int = 20,
    pix_fmt: str = "yuv420p",
) -> bytes:
    """uint8 frames [T, H, W, 3] -> an MP4 file as bytes.

    H.264 with yuv420p needs even sizes: odd sizes are padded by one edge pixel (not cropped, so
    no content is lost) and the result still plays everywhere.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"encode_mp4 wants uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            # mbtree off: with it x264 encoded the same frames to different bytes from run to run (the
            # output followed the heap's state; measured on a synthetic zooming texture), so seeded
            # runs on generated data did not reproduce across sessions.
            stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def contact_sheet(videos: np.ndarray, max_frames: int = 8) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> one uint8 image [N*H, min(T, max_frames)*W, 3]: a row per video."""
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"contact_sheet wants [N, T, H, W, C], got shape {videos.shape}")
    n, t, h, w, c = videos.shape
    idx = np.linspace(0, t - 1, num=min(t, max_frames)).round().astype(int)
    picked = videos[:, idx]  # [N, k, H, W, C]
    return picked.transpose(0, 2, 1, 3, 4).reshape(n * h, len(idx) * w, c)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (via PyAV's png encoder, so no extra imaging dependency)."""
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"encode_png wants uint8 [H, W, 3], got {image.dtype} {image.shape}")
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = codec.encode(frame) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def side_by_side(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Two uint8 [N, T, H, W, C] batches -> one [N, T, H, 2W, C] batch (real left, generated right)."""
    n = min(len(real), len(fake))
    t = min(real.shape[1], fake.shape[1])
    if real.shape[2:] != fake.shape[2:]:
        raise ValueError(f"side_by_side needs equal frame sizes, got {real.shape} and {fake.shape}")
    return np.concatenate([real[:n, :t], fake[:n, :t]], axis=3)
