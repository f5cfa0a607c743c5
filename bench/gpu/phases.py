"""Where the host time of `Monitor.step` goes: timing wrappers around its phases, for the benches (the GPU
bench's monitor section, `bench/monitor_overhead.py --phases`). The issue's own advice is to profile before
changing anything; a session with a GPU gets this breakdown in the same run as the figures.

Each phase is a function or method the step calls through its module or class, so patching the attribute times
every call; a wrapper costs ~1 µs, so the breakdown is read beside the unwrapped figures, not instead of them.
The CPU path's phases (sqd.trainer.host_sums) are timed only where numba is installed (not on the GPU machine).
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

# (label, module, attribute path): called as module.attr or Class.method by the step
PHASES = (
    ("mon.step", "sqd.trainer.monitor", "Monitor.step"),
    ("moved", "sqd.trainer.step_probe", "_Probe.moved"),
    ("probe.step (device)", "sqd.trainer.step_probe", "DeviceProbe.step"),
    ("input keys", "sqd.trainer.step_probe", "DeviceProbe._inputs"),
    ("gradient norms on the host side (no gradient copies)", "sqd.trainer.step_probe", "grad_norms"),
    ("values and gradients into the slots", "sqd.trainer.step_program", "StepProgram.load"),
    ("graph replay / eager program", "sqd.trainer.step_program", "GraphRunner.run"),
    ("row (device)", "sqd.trainer.metric_buffer", "MetricBuffer.add_written"),
    ("probe.step (CPU)", "sqd.trainer.step_probe", "HostProbe.step"),
    ("passes", "sqd.trainer.host_sums", "HostSnapshots.passes"),
    ("gradient addresses", "sqd.trainer.host_sums", "_grad_addresses"),
    ("compiled pass", "sqd.trainer.host_sums", "_passes"),
    ("row (CPU)", "sqd.trainer.metric_buffer", "MetricBuffer.add_host"),
    ("recorded (flush check)", "sqd.trainer.monitor", "Monitor._recorded"),
    ("flush", "sqd.trainer.monitor", "Monitor.flush"),
)


def _timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)

    return wrapper


@contextmanager
def phase_times() -> Iterator[dict[str, list[float]]]:
    """Seconds of each call of each phase while inside, by label (phases of modules that do not import here —
    numba missing — are left out)."""
    times: dict[str, list[float]] = {}
    with ExitStack() as stack:
        for label, module_name, path in PHASES:
            try:
                owner: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            *outer, attr = path.split(".")
            for name in outer:
                owner = getattr(owner, name)
            into = times.setdefault(label, [])
            stack.enter_context(mock.patch.object(owner, attr, _timed(getattr(owner, attr), into)))
        yield times


def describe(times: dict[str, list[float]], steps: int) -> str:
    """One line: per phase that ran (in the order of PHASES: each inside the one before it that encloses it),
    its median µs per call and, where not one, its calls per step."""
    parts = []
    for label, xs in times.items():
        if xs:
            per_step = f" × {len(xs) / steps:.2g}/step" if len(xs) != steps else ""
            parts.append(f"{label} {1e6 * statistics.median(xs):.0f} µs{per_step}")
    return "; ".join(parts)


def monitored_phases(trainer: Any, mon: Any, step: int, steps: int) -> tuple[str, int]:
    """`steps` training steps from `step`, each recorded by `mon.step` as the benches do, under the wrappers: the
    `describe` line and the next step."""
    with phase_times() as times:
        for _ in range(steps):
            r = trainer.step(step)
            mon.step(step, epoch=0, losses={"D": r.loss_d, "G": r.loss_g}, lr=trainer.lr, metrics=r.metrics)
            step += 1
    return describe(times, steps), step
