"""Fréchet distance, KID, Inception Score and precision/recall against closed forms and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from vidgen_ray.evaluate import feature_moments, frechet_distance, frechet_distance_from_features, kernel_inception_distance
from vidgen_ray.evaluate.inception import class_probabilities, inception_score_from_probs
from vidgen_ray.evaluate.precision_recall import precision_recall_from_features


def random_spd(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def frechet_via_symmetric_root(mu1, s1, mu2, s2) -> float:
    """Independent route (tf-gan's): tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), all symmetric."""
    root = scipy.linalg.sqrtm(s1).real
    inner = np.linalg.eigvalsh(root @ s2 @ root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_frechet_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0, abs=1e-12)


def test_frechet_matches_scipy_on_synthetic_gaussians():
    rng = np.random.default_rng(1)
    for d in (8, 64, 200):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_via_symmetric_root(mu1, s1, mu2, s2), abs=1e-6)


def test_frechet_of_identical_feature_sets_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(500, 32))
    assert abs(frechet_distance_from_features(feats, feats)) < 1e-6
    shifted = [frechet_distance_from_features(feats, feats + s) for s in (0.1, 0.5, 1.0)]
    # A pure mean shift of every coordinate by s adds exactly d * s^2.
    np.testing.assert_allclose(shifted, [32 * s**2 for s in (0.1, 0.5, 1.0)], atol=1e-6)


def test_frechet_survives_fewer_samples_than_dimensions():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 50)), rng.normal(size=(10, 50))
    value = frechet_distance_from_features(a, b)
    assert np.isfinite(value) and value > 0


def test_feature_moments_use_the_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = feature_moments(x)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))  # divides by N - 1
    assert sigma[0, 0] == pytest.approx(4.0)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = kernel_inception_distance(real, fake, num_subsets=20, max_subset_size=200)
    moved = [kernel_inception_distance(real, fake + s, num_subsets=20, max_subset_size=200) for s in (0.3, 1.0)]
    assert abs(same) < 0.01 < moved[0] < moved[1]


def test_kid_matches_the_unbiased_mmd_formula_on_one_full_subset():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 0.5
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3
    m = 30
    mmd = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    # With subsets as large as the sets, every subset is a permutation of the whole set.
    assert kernel_inception_distance(y, x, num_subsets=3, max_subset_size=30) == pytest.approx(mmd, rel=1e-9)


def test_inception_score_closed_forms():
    uniform = np.full((100, 1008), 1 / 1008)
    assert inception_score_from_probs(uniform)[0] == pytest.approx(1.0)
    # Confident predictions spread evenly over 8 classes within every split: IS = 8.
    confident = np.zeros((80, 1008))
    confident[np.arange(80), np.arange(80) % 8] = 1.0
    mean, std = inception_score_from_probs(confident, num_splits=10)
    assert mean == pytest.approx(8.0) and std == pytest.approx(0.0, abs=1e-9)


def test_class_probabilities_use_no_bias_and_sum_to_one():
    rng = np.random.default_rng(6)
    feats, w = rng.normal(size=(5, 2048)), rng.normal(size=(1008, 2048)) * 0.01
    probs = class_probabilities(feats, w)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    logits = feats @ w.T
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), rtol=1e-9)


def test_precision_recall_closed_forms():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(300, 8))
    assert precision_recall_from_features(real, real) == (1.0, 1.0)
    assert precision_recall_from_features(real, real + 100.0) == (0.0, 0.0)
    # Generated samples covering only half of a 2-D real distribution: all precise, recall about 1/2
    # (a little more: the k-NN balls of samples near the cut reach across it).
    plane = rng.normal(size=(1000, 2))
    precision, recall = precision_recall_from_features(plane, plane[plane[:, 0] > 0])
    assert precision == 1.0 and 0.5 <= recall < 0.6


@pytest.mark.parametrize("n,d", [(40, 256), (150, 400), (300, 16)])
def test_feature_route_matches_the_sqrtm_reference(n: int, d: int):
    """The nuclear-norm route used with fewer samples than dimensions equals scipy's sqrtm route."""
    from vidgen_ray.evaluate.frechet import feature_moments, frechet_distance, frechet_distance_from_features

    rng = np.random.default_rng(n + d)
    real = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.1
    fake = rng.normal(size=(n + 7, d)) * 1.3 + 0.2
    fast = frechet_distance_from_features(real, fake)
    reference = frechet_distance(*feature_moments(real), *feature_moments(fake))
    assert fast == pytest.approx(reference, rel=1e-6)
