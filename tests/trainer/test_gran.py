"""GraN (SPEC §4): on a random LeakyReLU network, ‖∇ₓh‖ = K·u²/(u² + ε) at random inputs, → K as ε → 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sqd.trainer.gran import GradNormalized

torch.set_num_threads(1)


def random_leaky_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.LeakyReLU(0.2), nn.Linear(32, 32), nn.LeakyReLU(0.2),
                         nn.Linear(32, 1), nn.Flatten(0)).double()


def _grad_norms(h: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(h(x).sum(), x)
    return g.flatten(1).norm(dim=1)


@pytest.mark.parametrize(("eps", "k"), [(0.1, 1.0), (0.5, 0.83), (1e-3, 2.0)])
def test_gradient_norm_matches_the_closed_form(eps: float, k: float) -> None:
    f = random_leaky_net(0)
    x = torch.randn(64, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = _grad_norms(f, x)
    got = _grad_norms(GradNormalized(f, eps, k), x)
    assert torch.allclose(got, k * u**2 / (u**2 + eps), atol=1e-4)


def test_gradient_norm_tends_to_k_as_eps_vanishes() -> None:
    f = random_leaky_net(3)
    x = torch.randn(32, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    gaps = [(_grad_norms(GradNormalized(f, eps, 0.83), x) - 0.83).abs().max().item()
            for eps in (1e-1, 1e-3, 1e-6, 1e-9)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-4


def test_value_is_f_times_u_over_u2_plus_eps() -> None:
    f = random_leaky_net(5)
    x = torch.randn(16, 3, 2, 2, dtype=torch.float64)
    u = _grad_norms(f, x)
    assert torch.allclose(GradNormalized(f, 0.1, 2.0)(x), 2.0 * f(x) * u / (u**2 + 0.1))


def test_gradients_reach_d_and_g_through_u() -> None:
    # create_graph=True: the D update sees ∂h/∂θ through u, and a fake's gradient flows back into G.
    f = random_leaky_net(6)
    G = nn.Linear(4, 12).double()
    h = GradNormalized(f, 0.1, 1.0)
    fake = G(torch.randn(8, 4, dtype=torch.float64)).view(8, 3, 2, 2)
    h(fake).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*f.parameters(), *G.parameters()])
