"""Improved precision and recall (Kynkäänniemi et al. 2019) on VGG-16 fc2 features, k = 3.

    python -c "import numpy as np; from vidgen_ray.evaluate.precision_recall import precision_recall_from_features; \
x = np.random.default_rng(0).normal(size=(200, 8)); print(precision_recall_from_features(x, x + 10))"   # (0.0, 0.0)

Each set's manifold is the union of balls around its samples, each ball reaching the sample's k-th
nearest neighbour in the same set (k = 3). Precision is the fraction of generated samples inside the
real manifold, recall the fraction of real samples inside the generated one. Distances are Euclidean
in float32 (StyleGAN3 additionally rounds the radii to float16; not done here).

Features: VGG-16 fc2 (the second 4096-d fully connected layer, after its ReLU, as Keras' ``fc2``),
from an ImageNet VGG-16 in torchvision's ``state_dict`` layout (``features.N.*``, ``classifier.N.*``;
torchvision's ``vgg16-397923af.pth``). torchvision is not needed: the layers are defined here. Input:
uint8 -> [0, 1] -> bilinear resize to 224 -> ImageNet mean/std, as torchvision's VGG expects. The
weights are not shipped in any registry package, so they come from a user path (``EvalConfig.vgg16_weights``).
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidgen_ray.evaluate.weights import WeightsError, read_user_file

NEIGHBOURHOOD_K = 3
VGG_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's configuration "D": conv widths, "M" = 2x2 max-pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_WEIGHTS_HELP = (
    "Precision/recall needs ImageNet VGG-16 weights in torchvision's state_dict layout, e.g. "
    "torchvision's vgg16-397923af.pth (download.pytorch.org/models/vgg16-397923af.pth, fetched once "
    "by hand; nothing is downloaded at run time): set EvalConfig.vgg16_weights / "
    "precision_recall(..., weights=PATH)."
)


class VGG16Features(nn.Module):
    """torchvision's VGG-16 up to fc2 + ReLU; attribute names match its state_dict so it loads as is."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16_LAYOUT:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        # Indices 0 and 3 as in torchvision (1 = ReLU, 2 = Dropout); fc3 (index 6) is not needed.
        self.classifier = nn.ModuleDict({"0": nn.Linear(512 * 7 * 7, 4096), "3": nn.Linear(4096, 4096)})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float [N, 3, 224, 224], ImageNet-normalised -> fc2 features [N, 4096]."""
        x = torch.flatten(self.avgpool(self.features(images)), 1)
        x = F.relu(self.classifier["0"](x))
        return F.relu(self.classifier["3"](x))


def read_vgg16_weights(path: str) -> bytes:
    return read_user_file(path, "Precision/recall", VGG_WEIGHTS_HELP, "EvalConfig.vgg16_weights")


def load_vgg16(path: str, device: str | torch.device = "cpu") -> VGG16Features:
    return vgg16_from_bytes(read_vgg16_weights(path), device, path)


def vgg16_from_bytes(data: bytes, device: str | torch.device = "cpu", path: str = "the VGG-16 file") -> VGG16Features:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict. {VGG_WEIGHTS_HELP}")
    return vgg16_from_state_dict(state, device, path)


def vgg16_from_state_dict(state: dict, device: str | torch.device = "cpu", path: str = "the VGG-16 file") -> VGG16Features:
    """Load torchvision-layout VGG-16 tensors (fc3 ignored); a clear error when the layout differs."""
    with torch.device("meta"):  # no random init of 138M parameters that are overwritten anyway
        model = VGG16Features()
    wanted = model.state_dict().keys()
    state = {k: v for k, v in state.items() if not k.startswith("classifier.6.")}  # fc3: unused
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise WeightsError(
            f"{path} is not a torchvision VGG-16 state_dict (missing {missing[:4]}, unexpected {unexpected[:4]}). "
            + VGG_WEIGHTS_HELP
        )
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False).to(device)


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, 224, 224], ImageNet-normalised."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(VGG_SIZE, VGG_SIZE), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def vgg16_features(model: VGG16Features, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 frames [N, H, W, 3] (or videos, flattened to frames) -> float32 fc2 features [N(*T), 4096]."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (4, 5):
        raise ValueError(f"VGG features want uint8 [N, H, W, 3] or [N, T, H, W, 3], got {frames.dtype} {frames.shape}")
    frames = frames.reshape(-1, *frames.shape[-3:])
    device = next(model.parameters()).device
    out = [
        model(preprocess(torch.tensor(frames[s : s + batch_size], device=device))).cpu().numpy()
        for s in range(0, len(frames), batch_size)
    ]
    return np.concatenate(out)


def _kth_neighbour_radii(manifold: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance from each sample to its k-th nearest other sample (index k: index 0 is itself)."""
    return torch.cat([torch.cdist(rows, manifold).kthvalue(k + 1, dim=1).values for rows in manifold.split(batch)])


def _inside_fraction(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int) -> float:
    inside = [(torch.cdist(rows, manifold) <= radii[None, :]).any(dim=1) for rows in probes.split(batch)]
    return float(torch.cat(inside).float().mean())


def precision_recall_from_features(
    real: np.ndarray, fake: np.ndarray, k: int = NEIGHBOURHOOD_K, batch: int = 1024
) -> tuple[float, float]:
    """(precision, recall) of fake features against real ones, both [N, D]."""
    real_t = torch.as_tensor(np.asarray(real, np.float32))
    fake_t = torch.as_tensor(np.asarray(fake, np.float32))
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"precision/recall wants two [N, D] feature sets, got {tuple(real_t.shape)} and {tuple(fake_t.shape)}")
    if min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _inside_fraction(real_t, _kth_neighbour_radii(real_t, k, batch), fake_t, batch)
    recall = _inside_fraction(fake_t, _kth_neighbour_radii(fake_t, k, batch), real_t, batch)
    return precision, recall


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    weights: str,
    k: int = NEIGHBOURHOOD_K,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(precision, recall) of uint8 images/videos (every frame a sample); ``weights`` = torchvision VGG-16 file."""
    model = load_vgg16(weights, device)
    return precision_recall_from_features(
        vgg16_features(model, real, batch_size), vgg16_features(model, fake, batch_size), k
    )
