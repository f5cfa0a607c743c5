"""James–Stein entropy, plug-in entropy, reverse KL and the Fréchet distance (SPEC §1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from sqd.worker.estimators import (
    RunningMoments,
    diversity_metrics,
    frechet_distance,
    gaussian_stats,
    js_entropy,
    js_shrinkage,
    plugin_entropy,
    reverse_kl,
    sqrtm_psd,
)

SPEC_COUNTS = (4, 2, 3, 0, 2, 4, 0, 0, 2, 1, 1)


def test_spec_vector() -> None:
    r = js_shrinkage(SPEC_COUNTS)
    assert r.lam == pytest.approx(187 / 244, abs=1e-12)
    assert r.lam == pytest.approx(0.766393, abs=1e-6)
    assert r.entropy == pytest.approx(2.379603, abs=1e-6)
    assert js_entropy(SPEC_COUNTS) == r.entropy
    assert r.probs.sum() == pytest.approx(1.0)
    assert np.all(r.probs > 0)  # shrinkage gives the zero-count modes mass


def test_matches_the_r_package_formula_written_out() -> None:
    # freqs.shrink: lambda = (1 - sum(u^2)) / ((n - 1) * sum((target - u)^2)), u = counts / n
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 7, size=50)
    n, u, t = counts.sum(), counts / counts.sum(), 1 / 50
    lam = min(1.0, max(0.0, (1 - (u**2).sum()) / ((n - 1) * ((t - u) ** 2).sum())))
    p = lam * t + (1 - lam) * u
    assert js_shrinkage(counts).lam == pytest.approx(lam)
    assert js_entropy(counts) == pytest.approx(-(p * np.log(p)).sum())


def test_uniform_counts_give_ln_m() -> None:
    for m in (2, 10, 1000):
        assert js_entropy([7] * m) == pytest.approx(math.log(m))
        assert plugin_entropy([7] * m) == pytest.approx(math.log(m))
        assert reverse_kl([7] * m) == pytest.approx(0.0, abs=1e-12)


def test_lambda_is_clipped_to_one() -> None:
    # Few samples spread thinly: the unclipped λ exceeds 1, so the estimate is the uniform target itself.
    counts = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    u = np.array(counts) / 2
    raw = (1 - (u**2).sum()) / (1 * ((0.1 - u) ** 2).sum())
    assert raw > 1
    r = js_shrinkage(counts)
    assert r.lam == 1.0
    assert r.entropy == pytest.approx(math.log(10))


def test_all_mass_in_one_mode() -> None:
    counts = [0] * 999 + [2000]
    r = js_shrinkage(counts)
    # Σ p̂² = 1 makes the numerator 0: no shrinkage, the collapse is reported as zero entropy.
    assert r.lam == 0.0
    assert r.entropy == pytest.approx(0.0, abs=1e-12)
    assert plugin_entropy(counts) == pytest.approx(0.0, abs=1e-12)
    assert reverse_kl(counts) == pytest.approx(math.log(1000))


def test_single_sample_shrinks_fully() -> None:
    r = js_shrinkage([0, 1, 0, 0])
    assert r.lam == 1.0
    assert r.entropy == pytest.approx(math.log(4))
    assert plugin_entropy([0, 1, 0, 0]) == 0.0


def test_zero_count_modes_count_in_m() -> None:
    assert js_entropy([5, 5]) == pytest.approx(math.log(2))
    assert js_entropy([5, 5, 0, 0]) > math.log(2)  # two empty modes pull the estimate towards ln 4
    assert plugin_entropy([5, 5, 0, 0]) == pytest.approx(math.log(2))
    assert reverse_kl([5, 5, 0, 0]) == pytest.approx(math.log(4) - math.log(2))


@pytest.mark.parametrize(("counts", "message"), [
    ([1, -1, 3], "counts must be finite and >= 0"),
    ([0, 0, 0], "counts are all zero"),
    ([], "counts must be a non-empty 1-d array"),
    ([1.0, float("nan")], "counts must be finite and >= 0"),
    ([1.0, float("inf")], "counts must be finite and >= 0"),
    ([[1, 2], [3, 4]], "counts must be a non-empty 1-d array (one entry per mode), got shape (2, 2)"),
    (["a", "b"], "counts must be numbers"),
])
def test_bad_counts_are_named(counts: list, message: str) -> None:
    for fn, name in ((js_entropy, "js_entropy"), (js_shrinkage, "js_entropy"), (plugin_entropy, "plugin_entropy"),
                     (reverse_kl, "reverse_kl")):
        with pytest.raises(ValueError) as info:
            fn(counts)
        assert str(info.value).startswith(f"{name}: ")
        assert message in str(info.value)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, 3 * d))
    return a @ a.T / (3 * d) + 1e-3 * np.eye(d)


def _scipy_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The pytorch-fid route: scipy.linalg.sqrtm of Σ₁Σ₂."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


@pytest.mark.parametrize("d", [2, 16, 64, 192])
def test_frechet_matches_scipy_sqrtm(d: int) -> None:
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.1
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    with threadpool_limits(1):  # scipy's sqrtm crawls when BLAS threads fight other jobs for 2 cores
        ours, ref = frechet_distance(mu1, s1, mu2, s2), _scipy_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)


def test_frechet_of_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(3)
    mu, s = rng.normal(size=32), _random_spd(rng, 32)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, s, mu, s) >= 0.0


def test_frechet_with_a_precomputed_reference_root() -> None:
    rng = np.random.default_rng(4)
    mu1, mu2, s1, s2 = rng.normal(size=8), rng.normal(size=8), _random_spd(rng, 8), _random_spd(rng, 8)
    root = sqrtm_psd(s1)
    assert (root @ root).numpy() == pytest.approx(s1, abs=1e-10)
    assert frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=root) == pytest.approx(frechet_distance(mu1, s1, mu2, s2))


def test_running_moments_match_the_batch_statistics() -> None:
    rng = np.random.default_rng(6)
    f = rng.normal(size=(1000, 12)) * 3 + 100  # a large mean: raw second moments would lose digits
    moments = RunningMoments(12)
    for chunk in np.array_split(f, 7):
        moments.update(torch.from_numpy(chunk))
    mu, sigma = gaussian_stats(f)
    assert moments.n == 1000
    assert moments.mean.numpy() == pytest.approx(mu, rel=1e-12)
    assert moments.covariance().numpy() == pytest.approx(sigma, rel=1e-9)
    with pytest.raises(ValueError, match="expected N×12 features"):
        moments.update(torch.zeros(3, 5))


def test_frechet_of_shifted_means_is_the_squared_distance() -> None:
    s = np.eye(4)
    assert frechet_distance(np.zeros(4), s, np.full(4, 2.0), s) == pytest.approx(16.0)


def test_frechet_of_singular_covariances() -> None:
    # rank-deficient Σ (fewer samples than dimensions) gives eigenvalues ≈ 0 or slightly negative: clipped
    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(10, 40)), rng.normal(size=(10, 40))
    (mu1, s1), (mu2, s2) = gaussian_stats(f1), gaussian_stats(f2)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(value) and value > 0


def test_gaussian_stats_uses_n_minus_one() -> None:
    f = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = gaussian_stats(f)
    assert mu == pytest.approx([2.0, 4.0])
    assert sigma[0, 0] == pytest.approx(4.0)  # Σ(x − 2)² = 8 over N − 1 = 2
    assert sigma == pytest.approx(np.cov(f, rowvar=False, ddof=1))


@pytest.mark.parametrize(("args", "message"), [
    ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "the two Gaussians have dimensions 3 and 4"),
    ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), "sigma1 must be 3×3 to match mu1, got (2, 2)"),
    ((np.zeros(3), np.eye(3), np.zeros(3), np.ones(3)), "sigma2 must be 3×3 to match mu2"),
    ((np.full(3, np.inf), np.eye(3), np.zeros(3), np.eye(3)), "mu1 / sigma1 contain NaN or inf"),
    ((np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan)), "mu2 / sigma2 contain NaN or inf"),
    ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), "mu1 must be a vector"),
])
def test_bad_frechet_inputs_are_named(args: tuple, message: str) -> None:
    with pytest.raises(ValueError) as info:
        frechet_distance(*args)
    assert message in str(info.value)


def test_bad_features_are_named() -> None:
    with pytest.raises(ValueError, match=r"gaussian_stats: need an N×d feature matrix with N >= 2, got shape \(1, 5\)"):
        gaussian_stats(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="gaussian_stats: features contain NaN or inf"):
        gaussian_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        gaussian_stats(np.zeros(5))


def test_diversity_metrics_bundle() -> None:
    m = diversity_metrics(SPEC_COUNTS)
    assert m == {"eval/diversity": pytest.approx(2.379603, abs=1e-6),
                 "eval/diversity_plugin": plugin_entropy(SPEC_COUNTS),
                 "eval/js_lambda": pytest.approx(187 / 244), "eval/modes_covered": 8.0}
