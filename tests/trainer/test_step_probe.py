"""The Monitor's per-step measurements (sqd.trainer.step_probe) on the CPU: the host path the CPU uses, and the
device path a GPU uses (forced onto the CPU, its CUDA graph replaced by a recording stand-in) against the float64
reference `weight_angle` and against each other."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sqd.trainer import step_program
from sqd.trainer.stability import weight_angle
from sqd.trainer.step_probe import DeviceProbe, HostProbe
from sqd.trainer.step_program import Replay

HERE = Path(__file__).parent


def nets(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    D = nn.Sequential(nn.Linear(8, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)).to(dtype)
    return G, D


class Graphs:
    """Stands in for CUDA graph capture: 'replays' the captured function; can be told to fail."""

    def __init__(self, fail: bool = False):
        self.fail, self.captures = fail, 0

    def __call__(self, fn: Callable[[], None], restore: Sequence[torch.Tensor], pool: Any) -> tuple[Replay, Any]:
        self.captures += 1
        saved = [t.clone() for t in restore]
        fn()  # the warm-up a real capture runs (Triton compiles here), then what it changed is put back
        for t, s in zip(restore, saved, strict=True):
            t.copy_(s)
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return fn, None


def train_step(G: nn.Module, D: nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
    dtype = next(G.parameters()).dtype
    loss = D(G(torch.randn(16, 8, dtype=dtype))).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def run(probe: HostProbe | DeviceProbe, G: nn.Module, D: nn.Module, steps: int = 4,
        extra: Callable[[int], dict[str, Any]] = lambda s: {}) -> tuple[dict[tuple[str, int], float], list[float],
                                                                       list[float]]:
    """Train, record every step, return the points and the reference angles and gradient norms of G."""
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], 1e-3)
    angles, norms = [], []
    for step in range(steps):
        before = [p.detach().clone() for p in G.parameters()]
        loss = train_step(G, D, opt)
        angles.append(weight_angle(before, list(G.parameters())))
        norms.append(math.sqrt(sum(float(p.grad.double().square().sum()) for p in G.parameters())))
        probe.step(step, 0, {"loss/G": loss, "lr/G": 1e-3, **extra(step)})
    return {(k, s): v for k, s, v, _, _ in probe.take().points()}, angles, norms


def device_probe(G: nn.Module, D: nn.Module, graphs: Graphs | None = None) -> DeviceProbe:
    return DeviceProbe({"G": G, "D": D}, 64, True, True, capture=graphs or Graphs(), triton=False)


@pytest.fixture(params=["copies", "host-norms"])
def grad_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The device path's two ways to the gradient norms: from copies of the gradients inside the program, or (too
    large to copy) launched by the host before it."""
    if request.param == "host-norms":
        monkeypatch.setattr(step_program, "GRAD_COPY_BYTES", 0)
    return str(request.param)


@pytest.mark.parametrize("kind", ["host", "device"])
def test_angles_norms_and_losses_equal_the_reference(kind: str, grad_path: str) -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 64, True, True) if kind == "host" else device_probe(G, D)
    points, angles, norms = run(probe, G, D)
    tol = 1e-12  # float64 sums on either path
    for step, (angle, norm) in enumerate(zip(angles, norms, strict=True)):
        assert points[("angle/G", step)] == pytest.approx(angle, rel=tol)
        assert points[("grad_norm/G", step)] == pytest.approx(norm, rel=1e-6)
        assert ("angle/D", step) in points and ("grad_norm/D", step) in points
        assert points[("lr/G", step)] == 1e-3
    assert points[("loss/G", 0)] > 0


def test_device_and_host_paths_agree_and_graphs_are_captured_once_per_parity() -> None:
    graphs = Graphs()
    results = []
    for kind in ("host", "device"):
        G, D = nets()
        probe = HostProbe({"G": G, "D": D}, 64, True, True) if kind == "host" else device_probe(G, D, graphs)
        torch.manual_seed(1)  # the same batches
        results.append(run(probe, G, D, steps=6)[0])
    host, device = results
    assert host.keys() == device.keys()
    for key in host:
        assert device[key] == pytest.approx(host[key], rel=1e-6), key
    assert graphs.captures == 2  # one graph per snapshot row, replayed from then on


def test_missing_new_and_float64_inputs_keep_their_columns() -> None:
    G, D = nets()
    graphs = Graphs()
    probe = device_probe(G, D, graphs)

    def extra(step: int) -> dict[str, Any]:
        out: dict[str, Any] = {"note": 2.5}
        if step % 2:
            out["loss/D_penalty"] = torch.tensor(0.125 * step)
        if step == 3:
            out["precise"] = torch.tensor(1 + 1e-12, dtype=torch.float64)
        return out

    points, _, _ = run(probe, G, D, steps=5, extra=extra)
    assert [s for k, s in points if k == "loss/D_penalty"] == [1, 3]
    assert points[("loss/D_penalty", 3)] == 0.375
    assert points[("precise", 3)] == 1 + 1e-12  # float64 slots once a float64 value shows up
    assert all(points[("note", s)] == 2.5 for s in range(5))
    assert graphs.captures > 2  # new layouts were captured again


def test_bf16_losses_and_bf16_parameters(grad_path: str) -> None:
    G, D = nets(dtype=torch.bfloat16)
    probe = device_probe(G, D)

    def bf16_loss(step: int) -> dict[str, Any]:
        return {"loss/bf16": torch.tensor(0.3, dtype=torch.bfloat16)}

    points, angles, norms = run(probe, G, D, steps=3, extra=bf16_loss)
    for step, (angle, norm) in enumerate(zip(angles, norms, strict=True)):
        assert points[("angle/G", step)] == pytest.approx(angle, rel=1e-9)  # bf16 weights are exact in the snapshots
        assert points[("grad_norm/G", step)] == pytest.approx(norm, rel=1e-5)  # summed in float32
    assert points[("loss/bf16", 0)] == pytest.approx(0.3, rel=1e-2)
    host = HostProbe({"G": G, "D": D}, 64, True, True)
    hp, angles, _ = run(host, G, D, steps=2, extra=bf16_loss)
    assert hp[("angle/G", 1)] == pytest.approx(angles[1], rel=1e-6)


def test_failed_capture_falls_back_to_eager_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    G, D = nets()
    graphs = Graphs(fail=True)
    probe = device_probe(G, D, graphs)
    with caplog.at_level(logging.WARNING, logger="sqd.trainer.step_program"):
        points, angles, _ = run(probe, G, D, steps=4, extra=lambda s: {f"new{s}": torch.tensor(float(s))})
    warnings = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(warnings) == 1 and "operation not permitted" in warnings[0].getMessage()
    assert graphs.captures == 1 and not probe.graphed
    for step, angle in enumerate(angles):
        assert points[("angle/G", step)] == pytest.approx(angle, rel=1e-12)
        assert points[(f"new{step}", step)] == float(step)


def test_no_tensors_and_no_gradient_norms() -> None:
    G, D = nets()
    probe = DeviceProbe({"G": G, "D": D}, 8, False, True, capture=Graphs(), triton=False)
    with torch.no_grad():
        G[0].weight.add_(0.01)
    probe.step(0, None, {"lr": 1e-3})
    points = {k: v for k, _, v, _, _ in probe.take().points()}
    assert points["lr"] == 1e-3 and points["angle/G"] > 0 and points["angle/D"] == 0.0
    assert not any(k.startswith("grad_norm") for k in points)


def test_failing_triton_kernels_are_captured_as_torch_ops_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    G, D = nets()
    graphs = Graphs()
    probe = DeviceProbe({"G": G, "D": D}, 64, True, True, capture=graphs, triton=True)  # no GPU: Triton fails
    with caplog.at_level(logging.WARNING, logger="sqd.trainer.step_program"):
        points, angles, _ = run(probe, G, D, steps=3)
    assert [r.getMessage()[:36] for r in caplog.records] == ["Monitor: the Triton kernels failed ("]
    assert probe.graphed and not probe.runner.triton and graphs.captures == 3  # Triton, then torch ops, parity 2
    for step, angle in enumerate(angles):
        assert points[("angle/G", step)] == pytest.approx(angle, rel=1e-12)


def test_failing_triton_kernels_give_way_to_torch_ops_without_graphs_too(caplog: pytest.LogCaptureFixture) -> None:
    """Eager mode (no CUDA graphs): a Triton kernel that does not compile must not fail training either."""
    G, D = nets()
    probe = DeviceProbe({"G": G, "D": D}, 64, True, True, capture=None, triton=True)  # no GPU: Triton fails
    with caplog.at_level(logging.WARNING, logger="sqd.trainer.step_program"):
        points, angles, _ = run(probe, G, D, steps=3)
    assert [r.getMessage()[:36] for r in caplog.records] == ["Monitor: the Triton kernels failed ("]
    assert not probe.graphed and not probe.runner.triton
    for step, angle in enumerate(angles):
        assert points[("angle/G", step)] == pytest.approx(angle, rel=1e-12)


def test_a_vector_instead_of_a_number_names_the_key() -> None:
    G, D = nets()
    for probe in (device_probe(G, D), HostProbe({"G": G, "D": D}, 8, True, True)):
        with pytest.raises(ValueError, match="'loss/G' is a tensor of 3 values"):
            probe.step(0, 0, {"loss/G": torch.ones(3)})


def test_missing_gradients_are_left_out(grad_path: str) -> None:
    G, D = nets()
    for probe in (HostProbe({"G": G, "D": D}, 8, True, True), device_probe(G, D)):
        assert isinstance(probe, HostProbe) or (probe.grad_copies is not None) == (grad_path == "copies")
        D(G(torch.randn(4, 8))).mean().backward()
        for p in G.parameters():
            p.grad = None
        D[0].weight.grad = None
        probe.step(0, None, {})
        points = {k: v for k, _, v, _, _ in probe.take().points()}
        assert "grad_norm/G" not in points
        rest = [p for p in D.parameters() if p.grad is not None]
        assert points["grad_norm/D"] == pytest.approx(math.sqrt(sum(float(p.grad.square().sum()) for p in rest)),
                                                      rel=1e-6)
        for p in D.parameters():
            p.grad = None


@pytest.mark.parametrize("kind", ["host", "device"])
def test_moves_are_detected(kind: str) -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 8, True, True) if kind == "host" else device_probe(G, D)
    assert not probe.moved()
    with torch.no_grad():
        G[0].weight.mul_(1.01)  # in place: the same storage, a real change the next angle reports
    assert not probe.moved()
    G.load_state_dict({k: v.clone() for k, v in G.state_dict().items()})  # copies into the same storage
    assert not probe.moved()
    G[0].weight.data = G[0].weight.data.clone()  # p.data swap: new storage
    assert probe.moved()
    probe = HostProbe({"G": G, "D": D}, 8, True, True) if kind == "host" else device_probe(G, D)
    G.to(torch.float64)  # dtype change: new storage for every parameter
    assert probe.moved()
    probe = HostProbe({"G": G, "D": D}, 8, True, True) if kind == "host" else device_probe(G, D)
    G[3].bias = nn.Parameter(torch.zeros(8, dtype=torch.float64))  # a new parameter object, registered
    assert probe.moved()


def test_triton_kernels_equal_the_torch_ops() -> None:
    """The Triton kernels run in Triton's CPU interpreter (compiled, they need a GPU)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, str(HERE / "triton_interpret_check.py")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
