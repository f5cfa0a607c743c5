"""The Monitor's GPU path on a real GPU (skipped without one; the integrator runs these on the GPU machine):
CUDA-graph angles equal the eager ones and the float64 reference, gradient norms read inside the graph from the
copies the host makes each step (new gradient tensors every step), parameters that move are captured again, bf16
parameters and autocast losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sqd.trainer.stability import weight_angle
from sqd.trainer.step_probe import DeviceProbe, make_probe

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")]


def nets(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(16, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 16))
    D = nn.Sequential(nn.Linear(16, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))
    return G.to("cuda", dtype), D.to("cuda", dtype)


def train(probe: DeviceProbe, G: nn.Module, D: nn.Module, steps: int, start: int = 0,
          autocast: bool = False) -> list[float]:
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], 1e-3)
    dtype = next(G.parameters()).dtype
    angles = []
    for step in range(start, start + steps):
        before = [p.detach().clone() for p in G.parameters()]
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            loss = D(G(torch.randn(64, 16, device="cuda", dtype=dtype))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        angles.append(weight_angle(before, list(G.parameters())))
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):  # the Monitor may be called inside autocast
            probe.step(step, 0, {"loss/G": loss, "lr": 1e-3})
    return angles


def angles_of(probe: DeviceProbe) -> dict[int, float]:
    return {s: v for k, s, v, _, _ in probe.take().points() if k == "angle/G"}


@pytest.mark.parametrize("triton", [True, False], ids=["triton", "torch-ops"])
def test_graph_angles_equal_eager_and_the_reference(triton: bool) -> None:
    G, D = nets()
    graphed = make_probe({"G": G, "D": D}, 64, True)
    assert isinstance(graphed, DeviceProbe)
    graphed.runner.triton = triton
    reference = train(graphed, G, D, steps=8)
    assert graphed.graphed and graphed.runner.captures == 2, graphed.runner.failed
    got = angles_of(graphed)
    for step, angle in enumerate(reference):
        assert got[step] == pytest.approx(angle, rel=1e-9)
    eager = DeviceProbe({"G": G, "D": D}, 64, True, True, capture=None, triton=triton)
    reference = train(eager, G, D, steps=3, start=8)
    got = angles_of(eager)
    for step, angle in enumerate(reference, start=8):
        assert got[step] == pytest.approx(angle, rel=1e-9)


def test_graph_gradient_norms_follow_new_gradient_tensors() -> None:
    G, D = nets()
    probe = make_probe({"G": G, "D": D}, 64, True)
    assert isinstance(probe, DeviceProbe) and probe.grad_copies is not None
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], 1e-3)
    norms = []
    for step in range(6):
        loss = D(G(torch.randn(64, 16, device="cuda"))).square().mean()
        opt.zero_grad(set_to_none=True)  # new gradient tensors every step
        loss.backward()
        if step == 4:
            D[0].weight.grad = None  # a missing gradient counts 0, as on the host path
        norms.append((torch.cat([p.grad.double().flatten() for p in G.parameters()]).norm().item(),
                      torch.cat([p.grad.double().flatten() for p in D.parameters() if p.grad is not None])
                      .norm().item()))
        opt.step()
        probe.step(step, 0, {"loss/G": loss})
    assert probe.graphed and probe.runner.captures == 2, probe.runner.failed
    points = {(k, s): v for k, s, v, _, _ in probe.take().points()}
    for step, (g, d) in enumerate(norms):
        assert points[("grad_norm/G", step)] == pytest.approx(g, rel=1e-5)
        assert points[("grad_norm/D", step)] == pytest.approx(d, rel=1e-5)


def test_moving_parameters_is_captured_again() -> None:
    G, D = nets()
    probe = make_probe({"G": G, "D": D}, 64, True)
    assert isinstance(probe, DeviceProbe)
    train(probe, G, D, steps=3)
    assert not probe.moved()
    G.to("cpu").to("cuda")  # new storage for every parameter
    assert probe.moved()
    fresh = make_probe({"G": G, "D": D}, 64, True, continues=False)
    assert isinstance(fresh, DeviceProbe)
    reference = train(fresh, G, D, steps=4, start=3)
    got = angles_of(fresh)
    assert 3 not in got  # just moved: no angle rather than a wrong one
    for step, angle in enumerate(reference[1:], start=4):
        assert got[step] == pytest.approx(angle, rel=1e-9)
    assert fresh.runner.captures == 2


def test_bf16_parameters_and_autocast_losses() -> None:
    for dtype, autocast in ((torch.bfloat16, False), (torch.float32, True)):
        G, D = nets(dtype)
        probe = make_probe({"G": G, "D": D}, 64, True)
        assert isinstance(probe, DeviceProbe)
        reference = train(probe, G, D, steps=5, autocast=autocast)
        points = {(k, s): v for k, s, v, _, _ in probe.take().points()}
        for step, angle in enumerate(reference):
            assert points[("angle/G", step)] == pytest.approx(angle, rel=1e-6)
            assert points[("loss/G", step)] > 0 and points[("grad_norm/G", step)] > 0
        assert probe.graphed, probe.runner.failed
