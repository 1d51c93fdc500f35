"""Rectified flow (flow matching with straight paths; Liu et al. 2022, Lipman et al. 2022, SD3).

    python -c "import torch; from vidgen_ray.models.flow_matching import euler_sample; \
print(euler_sample(lambda x, t: torch.ones_like(x), torch.ones(1, 2), steps=4))"   # -> zeros

Convention: t = 0 is data, t = 1 is noise. x_t = (1 - t) x0 + t noise; the network predicts the
velocity dx_t/dt = noise - x0; sampling integrates from t = 1 down to t = 0 with Euler steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

TimestepSampling = Literal["logit_normal", "uniform"]


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift, t -> s t / (1 + (s - 1) t): s > 1 moves time towards the noise end.
    Noise of a given level destroys less of a signal the more (and the more redundant) values carry it;
    16 near-identical frames keep an object visible at t where one image is noise, so the layout is
    decided at higher t than the unshifted schedule trains and samples."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, kind: TimestepSampling, device: torch.device, shift: float = 1.0) -> torch.Tensor:
    """t in (0, 1), float32 [n]. Logit-normal (SD3) puts more weight on the middle of the path,
    where the velocity is hardest to predict; ``shift`` then moves it (``shift_timesteps``)."""
    if kind == "logit_normal":
        t = torch.sigmoid(torch.randn(n, device=device))
    else:
        t = torch.rand(n, device=device)
    return shift_timesteps(t, shift)


def noisy_input(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, steps: int, shift: float = 1.0
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 (``noise``) to t = 0 in ``steps`` steps, equal in
    the unshifted time (``shift`` > 1 spends more of them near the noise end, as training did)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = noise
    times = shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, device=noise.device), shift)
    for i in range(steps):
        t = times[i].expand(x.shape[0])
        x = x + (times[i + 1] - times[i]).to(x.dtype) * velocity(x, t)
    return x
