"""Conditioning signals computed from a clip the same way in training and in sampling: the first frame
(image-to-video) and an edge map (sketch / control video), plus reading a user's image into the clips' form.

    python -c "import torch; from vidgen_ray.models.conditioning import sobel_edges; \
print(sobel_edges(torch.rand(1, 3, 4, 16, 16) * 2 - 1).shape)"

Tensors follow ``models/base.py``: clips float [B, C, T, H, W] in [-1, 1].

* ``first_frame_condition``: the image at frame 0, zeros after it, and a mask channel that is 1 where a frame
  is given (CogVideoX / Wan image-to-video: the condition is concatenated to the noisy input's channels, so
  the network sees the clean picture at every noise level). A dropped condition is all zeros, mask included:
  the "no image" input that classifier-free guidance on the image contrasts with.
* ``sobel_edges``: gradient magnitude of each frame's luma (3x3 Sobel), scaled to [-1, 1]: a sketch is a
  picture of edges, so a user's drawing and the edges of a training clip are the same kind of input.
* ``read_image``: PNG / JPEG bytes -> float [C, H, W] in [-1, 1], scaled to cover H x W and centre-cropped,
  the geometry ``data/decode.py`` gives clips (its ``geometry``), so an image is what a clip's frame would be.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_IMAGE_BYTES = 8 << 20  # the default bound on an uploaded image (Serve's limits may lower it)
MAX_IMAGE_PIXELS = 4096 * 4096


def first_frame_condition(first: torch.Tensor, frames: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``first`` float [B, C, H, W] -> [B, C + 1, frames, H, W]: the picture at frame 0, zeros after, and
    the mask channel; rows where ``keep`` (bool [B]) is False are all zeros (no image)."""
    b, c, h, w = first.shape
    cond = first.new_zeros(b, c + 1, frames, h, w)
    cond[:, :c, 0] = first
    cond[:, c, 0] = 1.0
    if keep is not None:
        cond = cond * keep.to(cond.device, cond.dtype).view(b, 1, 1, 1, 1)
    return cond


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
# The largest gradient magnitude a [-1, 1] luma image can have (a step from -1 to 1 under both kernels).
_SOBEL_MAX = float(torch.hypot(torch.tensor(8.0), torch.tensor(8.0)))


def sobel_edges(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] in [-1, 1] -> [B, 1, T, H, W] in [-1, 1]: each frame's luma gradient magnitude
    (-1: flat, rising with the edge's strength). Edges are on the border too (replicate padding)."""
    b, c, t, h, w = video.shape
    x = video.float()
    if c == 3:  # ITU-R BT.601 luma
        x = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    else:
        x = x.mean(dim=1)
    frames = F.pad(x.reshape(b * t, 1, h, w), (1, 1, 1, 1), mode="replicate")
    kx = _SOBEL_X.to(frames.device)
    kernels = torch.stack([kx, kx.t()])[:, None]  # [2, 1, 3, 3]
    gx, gy = F.conv2d(frames, kernels).unbind(1)
    magnitude = torch.hypot(gx, gy) / _SOBEL_MAX  # an input, never differentiated: no epsilon needed
    # Edge strengths in natural clips are small; a square root spreads them over the range.
    edges = magnitude.clamp(0, 1).sqrt() * 2 - 1
    return edges.view(b, t, h, w)[:, None].to(video.dtype)


def read_image(data: bytes, height: int, width: int, channels: int = 3, max_bytes: int = MAX_IMAGE_BYTES,
               max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """PNG / JPEG bytes -> float [channels, height, width] in [-1, 1] (cover + centre crop, as clips).
    Raises ValueError naming the limit for an image too large or bytes that are not an image."""
    import cv2

    from vidgen_ray.data.decode import geometry

    if len(data) > max_bytes:
        raise ValueError(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    header = _image_size(data)  # read before decoding: a small file can declare a huge picture
    if header is None:
        raise ValueError("the image could not be decoded: send PNG or JPEG bytes (no PNG or JPEG header found)")
    if header[0] * header[1] > max_pixels:
        raise ValueError(f"the image is {header[0]}x{header[1]} pixels; the limit is {max_pixels} pixels")
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if picture is None:
        raise ValueError("the image could not be decoded: send PNG or JPEG bytes")
    if picture.shape[0] * picture.shape[1] > max_pixels:
        raise ValueError(f"the image is {picture.shape[1]}x{picture.shape[0]} pixels; the limit is {max_pixels} pixels")
    rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    g = geometry(rgb.shape[1], rgb.shape[0], 0, height, width)
    scaled = cv2.resize(rgb, (g.scale_w, g.scale_h), interpolation=cv2.INTER_AREA)
    crop = scaled[g.crop_y : g.crop_y + height, g.crop_x : g.crop_x + width]
    image = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 127.5 - 1
    if channels == 1:
        image = image.mean(dim=0, keepdim=True)
    elif channels != 3:
        raise ValueError(f"images condition 1- or 3-channel models, not {channels}")
    return image


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # SOFn markers


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, so a decompression bomb is refused before
    its pixels are allocated; None for anything else (other formats OpenCV would decode are refused)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):  # walk the marker segments to the frame header
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_FRAMES:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None
