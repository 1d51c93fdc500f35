"""Perceptual loss from VGG-16 features whose weights the user supplies (nothing is downloaded).

    python -c "import torch; from vidgen_ray.models.perceptual import VGG16Features; \
print(sorted(VGG16Features().state_dict())[:4])"

The layers are built here in torchvision's layout, so ``features.N.weight`` / ``features.N.bias``
keys match torchvision's ``vgg16`` state dict: point ``model.perceptual_weights`` at torchvision's
``vgg16-397923af.pth`` (or any state dict with those keys; a full VGG-16 state dict is fine, the
classifier keys are ignored). The distance is LPIPS without its learned linear heads: unit-normalise
each tapped activation over channels, squared difference, spatial mean, summed over taps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision's VGG-16 ("D") configuration; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in ``features``
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` (same indices and state-dict keys), returning the LPIPS taps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] in [-1, 1] -> the five tapped activations."""
        x = ((images + 1) / 2 - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features[: _TAPS[-1] + 1]):
            x = layer(x)
            if index in _TAPS:
                taps.append(x)
        return taps


def load_vgg16_features(path: str | Path, field: str = "model.perceptual_weights") -> VGG16Features:
    """VGG16Features with weights from ``path``; clear errors name the config ``field`` to fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{field}={str(path)!r} does not exist; point it at a VGG-16 state dict in torchvision's "
            "layout (e.g. vgg16-397923af.pth)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = VGG16Features()
    wanted = set(net.state_dict())
    state = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(wanted - set(state))
    if missing:
        raise ValueError(
            f"{field}={str(path)!r} lacks VGG-16 feature weights {missing[:4]}...; it must hold "
            "torchvision vgg16 keys 'features.N.weight' / 'features.N.bias'"
        )
    net.load_state_dict(state)
    return net


class PerceptualLoss(nn.Module):
    """Frozen VGG-16 feature distance between two image batches in [-1, 1] (LPIPS, no heads)."""

    def __init__(self, features: VGG16Features) -> None:
        super().__init__()
        self.net = features.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always frozen: no dropout, no BN, whatever the trainer says

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        both = self.net(torch.cat([prediction, target]))
        total = prediction.new_zeros((), dtype=torch.float32)
        for taps in both:
            p, t = taps.float().chunk(2)
            p = p / (p.norm(dim=1, keepdim=True) + 1e-10)
            t = t / (t.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (p - t).square().sum(dim=1).mean()
        return total
