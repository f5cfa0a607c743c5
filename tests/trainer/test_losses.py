"""Loss values on hand-computed logits (SPEC §2), and D penalties on linear / quadratic critics whose input
gradients are known in closed form (SPEC §3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sqd.trainer.losses import LOSSES
from sqd.trainer.regularizers import DBatch, PenaltyWeights, penalty

torch.set_num_threads(1)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def sp(t: float) -> float:
    return math.log1p(math.exp(t))


# (name, L_D, L_G) for REAL = (2, −1), FAKE = (0.5, −3), written out per sample then averaged.
EXPECTED = [
    ("nsgan", (sp(-2) + sp(0.5) + sp(1) + sp(-3)) / 2, (sp(-0.5) + sp(3)) / 2),
    ("lsgan", ((2 - 1) ** 2 + 0.5**2 + (-1 - 1) ** 2 + 9) / 2, ((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2),
    ("hinge", (0 + 1.5 + 2 + 0) / 2, (-0.5 + 3) / 2),
    ("wgan", (0.5 - 2 + (-3) - (-1)) / 2, (-0.5 + 3) / 2),
    ("softhinge", (sp(-1) + sp(1.5) + sp(2) + sp(-2)) / 2, (-0.5 + 3) / 2),
    ("rpgan", (sp(0.5 - 2) + sp(-3 + 1)) / 2, (sp(2 - 0.5) + sp(-1 + 3)) / 2),
    ("ogan", (sp(-2) + sp(0.5) + sp(1) + sp(-3)) / 2, -(sp(0.5) + sp(-3)) / 2),
]


@pytest.mark.parametrize(("name", "l_d", "l_g"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_loss_values(name: str, l_d: float, l_g: float) -> None:
    loss = LOSSES[name]
    assert loss.d(REAL, FAKE).item() == pytest.approx(l_d, rel=1e-6)
    assert loss.g(REAL, FAKE).item() == pytest.approx(l_g, rel=1e-6)


def test_zero_sum_games_are_minus_the_d_loss() -> None:
    for name in ("wgan", "ogan"):
        loss = LOSSES[name]
        assert loss.game is not None
        assert loss.game(REAL, FAKE).item() == pytest.approx(-loss.d(REAL, FAKE).item(), rel=1e-6)
    assert {n for n, loss in LOSSES.items() if loss.game is not None} == {"wgan", "ogan"}


def test_nsgan_generator_does_not_saturate() -> None:
    # Where D confidently rejects the fakes (logit −10), the NS loss still gives G a gradient; the minimax does not.
    fake = torch.full((4,), -10.0, requires_grad=True)
    (ns,) = torch.autograd.grad(LOSSES["nsgan"].g(fake, fake), fake)
    (mm,) = torch.autograd.grad(LOSSES["ogan"].g(fake, fake), fake)
    assert ns.abs().min() > 0.2 and mm.abs().max() < 1e-4


# ---- penalties --------------------------------------------------------------------------------------------------
class Linear(nn.Module):
    """D(x) = ⟨w, x⟩: ∇ₓD = w everywhere, ‖∇ₓD‖ = ‖w‖."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


class Quadratic(nn.Module):
    """D(x) = ½ a ‖x‖²: ∇ₓD = a x, ‖∇ₓD‖² = a² ‖x‖²."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


def _batch(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> DBatch:
    real, fake = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    return DBatch(D, real, fake, D(real), D(fake))


W = torch.tensor([3.0, 0.0, 4.0, 0.0])  # ‖w‖ = 5
REAL_X = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(1))
FAKE_X = torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(2))
WEIGHTS = PenaltyWeights(lam=10.0, gamma=0.2, dragan_c=0.25)


@pytest.mark.parametrize(("name", "expected"), [
    ("gp", 10 * (5 - 1) ** 2), ("dragan", 10 * (5 - 1) ** 2), ("zero_gp", 10 * 25), ("lp", 10 * (5 - 1) ** 2),
    ("r1", 0.1 * 25), ("r2", 0.1 * 25), ("r1r2", 0.2 * 25),
])
def test_penalties_on_a_linear_critic(name: str, expected: float) -> None:
    assert penalty([name], _batch(Linear(W), REAL_X, FAKE_X), WEIGHTS).item() == pytest.approx(expected, rel=1e-5)


def test_lp_is_one_sided() -> None:
    small = Linear(W / 10)  # ‖w‖ = 0.5 < 1: LP is 0, GP is λ(0.5 − 1)²
    b = _batch(small, REAL_X, FAKE_X)
    assert penalty(["lp"], b, WEIGHTS).item() == 0.0
    assert penalty(["gp"], b, WEIGHTS).item() == pytest.approx(10 * 0.25, rel=1e-5)


def test_r1_r2_on_a_quadratic_critic() -> None:
    a = 1.5
    b = _batch(Quadratic(a), REAL_X, FAKE_X)
    r1 = 0.1 * a**2 * REAL_X.flatten(1).pow(2).sum(1).mean().item()
    r2 = 0.1 * a**2 * FAKE_X.flatten(1).pow(2).sum(1).mean().item()
    assert penalty(["r1"], b, WEIGHTS).item() == pytest.approx(r1, rel=1e-5)
    assert penalty(["r2"], b, WEIGHTS).item() == pytest.approx(r2, rel=1e-5)
    assert penalty(["r1", "r2"], b, WEIGHTS).item() == pytest.approx(r1 + r2, rel=1e-5)


def test_gp_samples_between_real_and_fake() -> None:
    # On D = ½a‖x‖² the GP sees ‖∇D(x̂)‖ = a‖x̂‖: with real = fake every x̂ equals that point.
    torch.manual_seed(0)
    x = REAL_X
    expected = 10 * ((1.5 * x.flatten(1).norm(dim=1) - 1) ** 2).mean().item()
    assert penalty(["gp"], _batch(Quadratic(1.5), x, x), WEIGHTS).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["gp", "dragan", "zero_gp", "lp", "r1", "r2"])
def test_penalties_are_trained_through(name: str) -> None:
    # Double backprop: the penalty's gradient w.r.t. D's weights is the analytic one.
    D = Linear(W)
    value = penalty([name], _batch(D, REAL_X, FAKE_X), WEIGHTS)
    (grad,) = torch.autograd.grad(value, D.w)
    norm = 5.0
    analytic = {"gp": 10 * 2 * (norm - 1) * W / norm, "dragan": 10 * 2 * (norm - 1) * W / norm,
                "lp": 10 * 2 * (norm - 1) * W / norm, "zero_gp": 10 * 2 * W, "r1": 0.1 * 2 * W, "r2": 0.1 * 2 * W}
    assert torch.allclose(grad, analytic[name], rtol=1e-5)


def test_structural_regularizers_add_no_penalty() -> None:
    assert penalty(["sn", "l2", "gran_d"], _batch(Linear(W), REAL_X, FAKE_X), WEIGHTS) is None
