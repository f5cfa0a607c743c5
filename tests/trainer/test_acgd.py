"""ACGD (SPEC §6): our implementation against the authors' `cgds` package, and on the bilinear game
min_x max_y xᵀAy, where it converges while simultaneous gradient descent-ascent and Adam do not."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sqd.trainer.acgd import ACGD, conjugate_gradient

torch.set_num_threads(1)
A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [0.3, 0.0, 1.5]], dtype=torch.float64)
X0 = torch.tensor([1.0, -0.5, 0.8], dtype=torch.float64)
Y0 = torch.tensor([0.7, 1.2, -0.4], dtype=torch.float64)


def _players() -> tuple[nn.Parameter, nn.Parameter]:
    return nn.Parameter(X0.clone()), nn.Parameter(Y0.clone())


def _distance(x: torch.Tensor, y: torch.Tensor) -> float:
    return torch.cat([x, y]).norm().item()


def bilinear_acgd(steps: int) -> float:
    x, y = _players()
    opt = ACGD([y], [x], lr_max=0.1, lr_min=0.1)  # y maximizes, x minimizes
    for _ in range(steps):
        opt.step(x @ A @ y)
    return _distance(x.detach(), y.detach())


def bilinear_gda(steps: int, lr: float = 0.1) -> float:
    x, y = _players()
    for _ in range(steps):
        gx, gy = torch.autograd.grad(x @ A @ y, [x, y])
        with torch.no_grad():
            x -= lr * gx
            y += lr * gy
    return _distance(x.detach(), y.detach())


def bilinear_adam(steps: int, lr: float = 0.1) -> float:
    x, y = _players()
    ox, oy = torch.optim.Adam([x], lr), torch.optim.Adam([y], lr)
    for _ in range(steps):
        ox.zero_grad(), oy.zero_grad()
        (x @ A @ y).backward()
        y.grad.neg_()  # type: ignore[union-attr]  # y ascends
        ox.step(), oy.step()
    return _distance(x.detach(), y.detach())


def test_acgd_converges_on_the_bilinear_game_where_gda_and_adam_do_not() -> None:
    start = _distance(X0, Y0)
    assert bilinear_acgd(300) < 1e-4 * start
    assert bilinear_gda(300) > 100 * start  # spirals outwards
    assert bilinear_adam(300) > start  # drifts away, never settles


def test_conjugate_gradient_solves_spd_systems() -> None:
    M = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spd = M @ M.T + 20 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64)
    x, iters = conjugate_gradient(lambda v: spd @ v, b, None, tol=1e-24, atol=1e-30, max_iter=100)
    assert torch.allclose(spd @ x, b, atol=1e-9) and iters <= 20
    warm, warm_iters = conjugate_gradient(lambda v: spd @ v, b, x, tol=1e-20, atol=1e-30, max_iter=100)
    assert warm_iters == 0 and torch.equal(warm, x)


def _tiny_gan(seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    return G, D


@pytest.mark.parametrize("lr", [1e-2, 1e-1])
def test_matches_the_cgds_package(lr: float) -> None:
    CGDs = pytest.importorskip("CGDs")  # the authors' package (`pip install cgds`), our oracle
    G, D = _tiny_gan(0)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    real, z = torch.randn(16, 2) + 1, torch.randn(16, 2)
    ours = ACGD(D.parameters(), G.parameters(), lr_max=lr, lr_min=lr, eps=1e-5, beta=0.99, tol=1e-12, atol=1e-20)
    theirs = CGDs.ACGD(D2.parameters(), G2.parameters(), lr_max=lr, lr_min=lr, eps=1e-5, beta=0.99, tol=1e-12,
                       atol=1e-20)
    for _ in range(8):  # both sides get solved for (the solve alternates)
        ours.step(D(real).mean() - D(G(z)).mean())
        theirs.step(D2(real).mean() - D2(G2(z)).mean())
    # float32: the package solves CG in float32 whatever the parameters' dtype, so compare there (bit-exact today)
    for p, q in zip([*G.parameters(), *D.parameters()], [*G2.parameters(), *D2.parameters()], strict=True):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)


def test_state_dict_resumes_the_same_trajectory() -> None:
    G, D = _tiny_gan(1)
    real, z = torch.randn(16, 2), torch.randn(16, 2)
    opt = ACGD(D.parameters(), G.parameters(), lr_max=0.05, lr_min=0.05)
    for _ in range(3):
        opt.step(D(real).mean() - D(G(z)).mean())
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opt2 = ACGD(D2.parameters(), G2.parameters(), lr_max=1.0, lr_min=1.0)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step(D(real).mean() - D(G(z)).mean())
    opt2.step(D2(real).mean() - D2(G2(z)).mean())
    assert all(torch.equal(p, q) for p, q in zip(G.parameters(), G2.parameters(), strict=True))
