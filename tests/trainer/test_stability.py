"""weight_angle and the per-step AngleTracker against a 50-digit reference (SPEC §1)."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from torch import nn

from sqd.trainer.stability import AngleTracker, trainable_parameters, weight_angle


def reference_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """2·atan2(‖â − b̂‖, ‖â + b̂‖) in 50-digit arithmetic on the stored float32 values."""
    with mpmath.workdps(50):
        av = [mpmath.mpf(float(v)) for v in a.tolist()]
        bv = [mpmath.mpf(float(v)) for v in b.tolist()]
        na = mpmath.sqrt(mpmath.fsum(v * v for v in av))
        nb = mpmath.sqrt(mpmath.fsum(v * v for v in bv))
        diff = mpmath.sqrt(mpmath.fsum((x / na - y / nb) ** 2 for x, y in zip(av, bv, strict=True)))
        summ = mpmath.sqrt(mpmath.fsum((x / na + y / nb) ** 2 for x, y in zip(av, bv, strict=True)))
        return float(2 * mpmath.atan2(diff, summ))


def rotated(a: torch.Tensor, theta: float, scale: float = 1.0) -> torch.Tensor:
    """a turned by ~theta in a random plane (and scaled), stored in float32 like real weights."""
    a64 = a.double()
    u = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u -= (u @ a64) / (a64 @ a64) * a64
    u *= a64.norm() / u.norm()
    return ((a64 * math.cos(theta) + u * math.sin(theta)) * scale).float()


@pytest.mark.parametrize("theta", [1e-6, 1e-4, 0.3])
@pytest.mark.parametrize("scale", [1.0, 1.001])
def test_weight_angle_within_one_percent_of_the_reference(theta: float, scale: float) -> None:
    a = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    b = rotated(a, theta, scale)
    ref = reference_angle(a, b)
    assert ref == pytest.approx(theta, rel=0.2)  # float32 storage moves the angle a little; the reference knows
    assert weight_angle(a, b) == pytest.approx(ref, rel=0.01)


def test_float32_arccos_cannot_do_this() -> None:
    """Why the stable form exists: arccos of a float32 cosine reads 1e-6 rad as 0 or ~5e-4."""
    a = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    b = rotated(a, 1e-6)
    naive = float(torch.arccos(torch.clamp((a @ b) / (a.norm() * b.norm()), -1, 1)))
    assert abs(naive - reference_angle(a, b)) > 0.5 * reference_angle(a, b)


def test_exact_at_zero_and_right_angle() -> None:
    a = torch.randn(1000)
    assert weight_angle(a, a.clone()) == 0.0
    assert weight_angle(torch.tensor([3.0, 0.0]), torch.tensor([0.0, 5.0])) == math.pi / 2
    assert weight_angle(torch.tensor([1.0, 1.0]), torch.tensor([-2.0, 2.0])) == math.pi / 2


def test_modules_lists_and_bad_input() -> None:
    net = nn.Linear(3, 2)
    assert weight_angle(net, [p.detach().clone() for p in net.parameters()]) == 0.0
    with pytest.raises(ValueError, match="6 and 5 elements"):
        weight_angle(torch.ones(6), torch.ones(5))
    assert math.isnan(weight_angle(torch.zeros(3), torch.ones(3)))


def test_only_trainable_float_parameters_count() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    net[2].weight.requires_grad_(False)
    params = trainable_parameters(net)
    assert sum(p.numel() for p in params) == 12 + 4 + 8 + 1  # BN running stats and the frozen weight excluded


@pytest.mark.parametrize("theta", [1e-7, 1e-6, 1e-3, 1.0, 3.0])
@pytest.mark.parametrize("scale", [1.0, 1.001, 1.01])  # radial change up to 10⁵× the tangential one at 1e-7 rad
@pytest.mark.parametrize("host_math", [True, False], ids=["floats", "device-tensors"])
def test_tracker_matches_the_reference(theta: float, scale: float, host_math: bool) -> None:
    a = torch.randn(2000, generator=torch.Generator().manual_seed(2))
    b = rotated(a, theta, scale)
    p = nn.Parameter(a.clone())
    tracker = AngleTracker([p], host_math=host_math)
    assert tracker.update() is None  # no previous snapshot yet
    with torch.no_grad():
        p.copy_(b)
    got = tracker.update()
    if host_math:
        assert isinstance(got, float)
    else:  # what a GPU gets: a device scalar, nothing copied to the host
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(reference_angle(a, b), rel=1e-5)
    assert float(tracker.update()) == 0.0  # unchanged since


def test_tracker_over_several_tensors_equals_weight_angle() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    before = [p.detach().clone() for p in net.parameters()]
    tracker = AngleTracker(trainable_parameters(net))
    tracker.snapshot()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    net(torch.randn(2, 3, 8, 8)).square().mean().backward()
    opt.step()
    assert float(tracker.update()) == pytest.approx(weight_angle(before, list(net.parameters())), rel=1e-6)


def test_tracker_refuses_an_empty_network() -> None:
    with pytest.raises(ValueError, match="no trainable"):
        AngleTracker([])
