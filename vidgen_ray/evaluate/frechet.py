"""Fréchet distance between Gaussians fitted to features (FID, FVD) and the kernel inception distance.

    python -c "import numpy as np; from vidgen_ray.evaluate.frechet import frechet_distance; \
print(frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)))"     # 6.0

Protocol of pytorch-fid (and of StyleGAN-V's FVD and the TF reference, which agree with it to 1e-6
on the FVD cross-check): mean and *unbiased* covariance (``np.cov``, divide by N-1) in float64,

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))

with ``scipy.linalg.sqrtm`` (Schur method) on the product, a retry with 1e-6 added to both
diagonals when the square root is not finite (singular products: fewer samples than dimensions),
and a check that the imaginary parts that round-off leaves on the diagonal are negligible.
Note StyleGAN2/3's own FID divides the covariance by N; with 50k samples the difference is tiny, with
a few hundred it is not, so the unbiased one is used everywhere here, as in the reference values.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

SQRTM_FALLBACK_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3


def feature_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] features -> (mean [D], unbiased covariance [D, D]), float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D] to fit a Gaussian, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched moments: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * SQRTM_FALLBACK_EPS
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"sqrtm(sigma1 @ sigma2) has imaginary diagonal entries up to {worst:.3g}: the covariances "
                "are not positive semi-definite (NaN/inf features?) or far too few samples were used"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two [N, D] feature sets.

    With fewer samples than dimensions (the usual case for video evaluation: a few hundred clips,
    2048 Inception or 400 I3D features) the covariance product is rank-deficient: ``sqrtm`` then
    costs O(D^3) (30-60 s for D=2048 on a small CPU) and needs the 1e-6 fallback. The same trace is
    exact and cheap from the features: with centred X1 [n1, D] and X2 [n2, D],

        tr sqrtm(S1 S2) = || X1 X2^T ||_nuclear / sqrt((n1 - 1)(n2 - 1))

    since the non-zero eigenvalues of S1 S2 are those of M M^T for M = X1 X2^T / sqrt((n1-1)(n2-1)).
    ``frechet_distance`` (moments in, scipy's sqrtm) stays the reference; the tests check both agree.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    n1, n2, d = len(real), len(fake), real.shape[1] if real.ndim == 2 else 0
    if real.ndim != 2 or fake.ndim != 2 or n1 < 2 or n2 < 2 or fake.shape[1] != d:
        return frechet_distance(*feature_moments(real), *feature_moments(fake))
    if n1 * n2 * min(n1, n2) >= d**3:  # plenty of samples: the D x D route is the cheaper one
        return frechet_distance(*feature_moments(real), *feature_moments(fake))
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    x1, x2 = real - mu1, fake - mu2
    trace1 = float((x1 * x1).sum()) / (n1 - 1)
    trace2 = float((x2 * x2).sum()) / (n2 - 1)
    nuclear = float(np.linalg.svd(x1 @ x2.T, compute_uv=False).sum()) / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2.0 * nuclear)


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID (Bińkowski et al.): unbiased MMD^2 with the cubic kernel (x.y/d + 1)^3, averaged over subsets.

    Same estimator and defaults as StyleGAN3's ``kernel_inception_distance.py``; subsets are drawn
    without replacement from a seeded generator so the number is reproducible.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"KID wants two [N, D] feature sets with the same D, got {real.shape} and {fake.shape}")
    m = min(len(real), len(fake), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(real)} and {len(fake)}")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)
