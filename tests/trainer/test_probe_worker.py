"""The CPU Monitor measures a step in its worker thread (sqd.trainer.probe_worker): the same rows as measuring in
the training thread, and a measurement that could have seen a later value is left out rather than reported wrong."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
from test_step_probe import nets, run, train_step

from sqd.trainer import probe_worker
from sqd.trainer.stability import weight_angle
from sqd.trainer.step_probe import HostProbe


class Delay:
    """Makes a probe's measurements wait (in the worker) until `release` is set; `done` is set once one ran."""

    def __init__(self, probe: HostProbe) -> None:
        self.release, self.done, passes = threading.Event(), threading.Event(), probe.steps.passes

        def later(*args: Any) -> Any:
            self.release.wait(10)
            out = passes(*args)
            self.done.set()
            return out

        probe.steps.passes = later  # type: ignore[method-assign]


def points_of(probe: HostProbe) -> dict[tuple[str, int], float]:
    return {(k, s): v for k, s, v, _, _ in probe.take().points()}


def test_background_rows_equal_the_training_thread_rows() -> None:
    results = []
    for background in (True, False):
        G, D = nets()
        torch.manual_seed(3)
        results.append(run(HostProbe({"G": G, "D": D}, 64, True, True, background=background), G, D, steps=8))
    (bg, angles, norms), (fg, _, _) = results
    assert bg == fg  # bit for bit: the same sums of the same snapshots
    for step, angle in enumerate(angles):
        assert bg[("angle/G", step)] == pytest.approx(angle, rel=1e-6)
        assert bg[("grad_norm/G", step)] == pytest.approx(norms[step], rel=1e-6)


def test_wall_time_is_the_steps_not_the_workers() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 8, True, True, background=True)
    delay = Delay(probe)
    probe.step(0, 0, {"x": 1.0})
    stepped = time.time()
    time.sleep(0.3)
    delay.release.set()  # the row is made from here on
    walls = {k: w for k, _, _, _, w in probe.take().points()}
    assert walls["x"] <= stepped * 1000 + 1  # milliseconds (rounded), as the Monitor sends them


def test_an_in_place_change_before_the_measurement_drops_that_angle_and_the_next() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 64, True, True, background=True)
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], 1e-3)
    angles = []
    for step in range(5):
        before = [p.detach().clone() for p in G.parameters()]
        loss = train_step(G, D, opt)
        angles.append(weight_angle(before, list(G.parameters())))
        if step == 2:
            delay = Delay(probe)
            probe.step(step, 0, {"loss/G": loss})
            with torch.no_grad():  # not through an optimizer: nothing fences it
                G[0].weight.mul_(1.5)
            delay.release.set()
        else:
            probe.step(step, 0, {"loss/G": loss})
    points = points_of(probe)
    assert sorted(s for k, s in points if k == "angle/G") == [0, 1, 4]  # not 2 (its snapshot is a later one), nor 3
    assert points[("angle/G", 4)] == pytest.approx(angles[4], rel=1e-6)
    assert ("loss/G", 2) in points and ("grad_norm/G", 2) in points  # the rest of the step's row stays


def test_gradients_zeroed_in_place_before_the_measurement_drop_the_norms() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 8, True, True, background=True)
    D(G(torch.randn(4, 8))).mean().backward()
    delay = Delay(probe)
    probe.step(0, 0, {})
    for p in [*G.parameters(), *D.parameters()]:
        p.grad.zero_()  # zero_grad(set_to_none=False)
    delay.release.set()
    points = points_of(probe)
    assert not any(k.startswith("grad_norm/") for k, _ in points)
    probe.step(1, 0, {})
    assert points_of(probe)[("grad_norm/G", 1)] == 0.0


def test_an_optimizer_step_waits_for_the_measurement() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 64, True, True, background=True)
    opt = torch.optim.SGD(G.parameters(), 0.1)
    D(G(torch.randn(4, 8))).mean().backward()
    probe.step(0, 0, {})
    delay = Delay(probe)
    probe.step(1, 0, {})  # measured only once released
    threading.Timer(0.3, delay.release.set).start()
    before = [p.detach().clone() for p in G.parameters()]
    opt.step()  # the fence: runs only once step 1 is measured
    assert delay.done.is_set()
    probe.step(2, 0, {})
    points = points_of(probe)
    assert points[("angle/G", 0)] == points[("angle/G", 1)] == 0.0  # nothing changed up to step 1
    assert points[("angle/G", 2)] == pytest.approx(weight_angle(before, list(G.parameters())), rel=1e-6)


def test_a_failed_measurement_is_raised_in_the_training_thread_once() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 8, False, True, background=True)

    def fail(*_: Any) -> None:
        raise ArithmeticError("boom")

    probe_worker.worker().submit(fail)
    with pytest.raises(RuntimeError, match="measurement of a step failed: ArithmeticError") as info:
        probe.step(0, 0, {"x": 1.0})
    assert isinstance(info.value.__cause__, ArithmeticError)
    probe.step(1, 0, {"x": 2.0})  # reported once; measuring goes on
    assert points_of(probe)[("x", 1)] == 2.0


def test_load_state_dict_into_a_monitored_network_waits_for_the_measurement() -> None:
    G, D = nets()
    probe = HostProbe({"G": G, "D": D}, 64, False, True, background=True)
    probe.step(0, 0, {})
    probe.wait()  # an in-place change outside an optimizer must wait for the step before it (fence())
    start = [p.detach().clone() for p in G.parameters()]
    with torch.no_grad():
        G[0].weight.add_(0.01)
    delay = Delay(probe)
    probe.step(1, 0, {})
    threading.Timer(0.3, delay.release.set).start()
    G.load_state_dict({k: v * 2 for k, v in G.state_dict().items()})  # in place, right after the step
    assert delay.done.is_set()
    probe.step(2, 0, {})
    points = points_of(probe)
    assert points[("angle/G", 1)] == pytest.approx(weight_angle(start, list(G.parameters())), rel=1e-6)
    assert points[("angle/G", 2)] == pytest.approx(0, abs=1e-6)  # every weight doubled: no turn at all
