"""Estimators behind the evaluation metrics (SPEC §1, seed 000): pure NumPy / torch, float64, validated inputs.

* `js_entropy(counts)`: James–Stein shrinkage entropy in nats (Hausser & Strimmer 2009; seed 003 Algorithm 1 with
  the R package `entropy`'s clipping of λ to [0, 1]); `js_shrinkage(counts)` exposes λ and the shrunk
  probabilities.
* `plugin_entropy(counts)`, `reverse_kl(counts)`: the maximum-likelihood entropy and KL(p̂ ‖ uniform), the
  StackedMNIST "reverse KL" of seed 000.
* `frechet_distance(mu1, sigma1, mu2, sigma2)`: FID's Fréchet distance between two Gaussians, with
  tr (Σ₁Σ₂)^{1/2} from eigenvalues instead of a matrix square root.
* `RunningMoments`: mean and covariance (1/(N−1), as pytorch-fid) of features streamed in batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike


def _counts(counts: ArrayLike, what: str) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{what}: counts must be a non-empty 1-d array (one entry per mode), got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.number) or np.issubdtype(c.dtype, np.complexfloating):
        raise ValueError(f"{what}: counts must be numbers, got dtype {c.dtype}")
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{what}: counts must be finite and >= 0")
    if c.sum() <= 0:
        raise ValueError(f"{what}: counts are all zero (no samples)")
    return c


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


@dataclass(frozen=True)
class Shrinkage:
    """James–Stein shrinkage towards the uniform target: λ, the shrunk probabilities and their entropy (nats)."""

    lam: float
    probs: np.ndarray
    entropy: float


def js_shrinkage(counts: ArrayLike) -> Shrinkage:
    """Shrink the frequencies c_j/n towards 1/m (m = len(counts), zero-count modes included).

    λ = (1 − Σ p̂²) / ((n − 1) Σ (1/m − p̂)²), clipped to [0, 1]; λ = 1 when n ≤ 1 or the denominator is 0."""
    c = _counts(counts, "js_entropy")
    n, m = c.sum(), c.size
    p_hat = c / n
    target = 1.0 / m
    denom = (n - 1.0) * float(((target - p_hat) ** 2).sum())
    lam = 1.0 if n <= 1 or denom == 0 else min(1.0, max(0.0, (1.0 - float((p_hat ** 2).sum())) / denom))
    probs = lam * target + (1.0 - lam) * p_hat
    return Shrinkage(lam, probs, _entropy(probs))


def js_entropy(counts: ArrayLike) -> float:
    """James–Stein entropy of mode counts, in nats (at most ln m)."""
    return js_shrinkage(counts).entropy


def plugin_entropy(counts: ArrayLike) -> float:
    """Maximum-likelihood ("plug-in") entropy of mode counts, in nats."""
    c = _counts(counts, "plugin_entropy")
    return _entropy(c / c.sum())


def reverse_kl(counts: ArrayLike) -> float:
    """KL(p̂ ‖ uniform over the m modes) in nats: Σ p̂ ln(m p̂) (seed 000's StackedMNIST reverse KL)."""
    c = _counts(counts, "reverse_kl")
    p = c / c.sum()
    nz = p[p > 0]
    return float((nz * np.log(nz * c.size)).sum())


def diversity_metrics(counts: ArrayLike) -> dict[str, float]:
    """The mode-count metrics every profile reports: eval/diversity (James–Stein), eval/diversity_plugin,
    eval/js_lambda and eval/modes_covered."""
    js = js_shrinkage(counts)
    return {"eval/diversity": js.entropy, "eval/diversity_plugin": plugin_entropy(counts), "eval/js_lambda": js.lam,
            "eval/modes_covered": float(np.count_nonzero(np.asarray(counts)))}


def _as_float64(x: ArrayLike | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def _check_gaussian(mu: torch.Tensor, sigma: torch.Tensor, which: str) -> None:
    if mu.ndim != 1:
        raise ValueError(f"frechet_distance: mu{which} must be a vector, got shape {tuple(mu.shape)}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"frechet_distance: sigma{which} must be {d}×{d} to match mu{which}, got "
                         f"{tuple(sigma.shape)}")
    if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
        raise ValueError(f"frechet_distance: mu{which} / sigma{which} contain NaN or inf")


def sqrtm_psd(sigma: ArrayLike | torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a covariance matrix (negative round-off eigenvalues clipped to 0), float64."""
    s = _as_float64(sigma, sigma.device if isinstance(sigma, torch.Tensor) else torch.device("cpu"))
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: ArrayLike | torch.Tensor, sigma1: ArrayLike | torch.Tensor,
                     mu2: ArrayLike | torch.Tensor, sigma2: ArrayLike | torch.Tensor,
                     sqrt_sigma1: torch.Tensor | None = None) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^{1/2}, in float64, on the device of the first tensor given.

    Σ₁Σ₂ = A(AΣ₂) with A = Σ₁^{1/2} has the eigenvalues of the symmetric PSD matrix AΣ₂A, so the trace term is
    Σ √λᵢ over `eigvalsh(AΣ₂A)` (negatives from round-off clipped): two symmetric eigen-solves instead of
    scipy's Schur-based sqrtm, equal to it within 1e-6 relative. Pass `sqrt_sigma1` (from `sqrtm_psd`) when Σ₁ is
    a fixed reference, to skip one of them."""
    device = next((x.device for x in (mu1, sigma1, mu2, sigma2) if isinstance(x, torch.Tensor)), torch.device("cpu"))
    m1, s1, m2, s2 = (_as_float64(x, device) for x in (mu1, sigma1, mu2, sigma2))
    _check_gaussian(m1, s1, "1")
    _check_gaussian(m2, s2, "2")
    if m1.shape != m2.shape:
        raise ValueError(f"frechet_distance: the two Gaussians have dimensions {m1.shape[0]} and {m2.shape[0]}")
    a = sqrtm_psd(s1) if sqrt_sigma1 is None else _as_float64(sqrt_sigma1, device)
    middle = a @ s2 @ a
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    diff = m1 - m2
    value = float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * eig.sqrt().sum())
    return max(value, 0.0) if math.isfinite(value) else value


def gaussian_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (1/(N−1), as pytorch-fid) of an N×d feature matrix, float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"gaussian_stats: need an N×d feature matrix with N >= 2, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("gaussian_stats: features contain NaN or inf")
    return x.mean(0), np.cov(x, rowvar=False, ddof=1)


class RunningMoments:
    """Streaming mean and covariance of feature batches (Chan et al.'s pairwise update, float64, on the batches'
    device): no feature matrix is kept, and no catastrophic cancellation from raw second moments."""

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        self.dim, self.n = dim, 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"RunningMoments: expected N×{self.dim} features, got {tuple(features.shape)}")
        x = features.detach().to(device=self.mean.device, dtype=torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mean_b = x.mean(0)
        xc = x - mean_b
        delta = mean_b - self.mean
        total = self.n + nb
        self.m2 += xc.T @ xc + torch.outer(delta, delta) * (self.n * nb / total)
        self.mean += delta * (nb / total)
        self.n = total

    def covariance(self) -> torch.Tensor:
        if self.n < 2:
            raise ValueError(f"RunningMoments: a covariance needs at least 2 samples, got {self.n}")
        return self.m2 / (self.n - 1)
