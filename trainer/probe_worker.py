"""The thread that measures a CPU training step after `Monitor.step` has returned.

On a CPU there is no device to queue work on, so the snapshot copy, the angle sums and the gradient norms of a step
(~0.3 ms for the 135 k parameters of `sqd-nsgan-digits`) run in the training thread by default. With the worker,
`HostProbe` hands them to this one daemon thread instead: `Monitor.step` only notes what it must measure, and the
work runs while the training thread computes its next forward and backward pass, on another core.

Consistency, not locks: a job reads the parameters and gradients as they were at its `Monitor.step` because

* every optimizer step waits for the jobs before it (a global `torch.optim` step pre-hook, installed on first use;
  SQD's own ACGD calls `fence()` itself), and so does `load_state_dict` into a monitored network (`guard`): the
  usual things that change weights in place cannot overtake a job;
* anything else that writes them in place (a manual `p.data.mul_`, `zero_grad(set_to_none=False)`, a backward that
  accumulates into existing gradients) bumps the tensors' version counters, which the job compares with the
  versions noted at `Monitor.step`: a measurement that may have seen a later value is dropped (and the angle after
  it, whose snapshot it took), never reported wrong. Writes through `p.data` are not counted by PyTorch: a loop
  that makes them between `Monitor.step` and its next optimizer step calls `fence()` first.

It is opt-in (`SQD_TRAINER__MONITOR_THREAD=true`). Measured on a 2-core machine with one torch thread and a core
to spare (bench/monitor_overhead.py, 3 × 40 rounds each way), the training thread pays ~105 µs a step instead of
~345, but training is no faster (wall time per step +1.9–3.4 % over a plain loop, against +1.7–3.1 % measuring
in the training thread) and the process spends ~1.2 % more CPU: the worker reads weights and gradients that the
training core has in its caches, and the next optimizer step takes them back.

`fence()` is public for loops that change weights some other way. A job's exception is kept and raised in the
training thread by the next `Monitor` call, with the job's traceback chained.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

Job = Callable[[], None]


class ProbeWorker:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        if self._thread is None:  # the thread never ends (a job's error is kept); a forked child starts afresh
            self._thread = threading.Thread(target=self._run, name="sqd-probe", daemon=True)
            self._thread.start()
        with self._idle:
            self._pending += 1
        self._jobs.put(job)

    def wait(self) -> None:
        """Return once every submitted job has run."""
        if self._pending:  # unlocked read: the common case (nothing pending) costs one attribute load
            with self._idle:
                self._idle.wait_for(lambda: self._pending == 0)

    def fence(self) -> None:
        """`wait()`, then raise the first error a job raised since the last fence."""
        self.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the Monitor's measurement of a step failed: {error!r}") from error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                with torch.no_grad():  # grad mode is per thread
                    job()
            except BaseException as e:  # noqa: BLE001 — handed to the training thread by fence()
                self._error = self._error or e
            with self._idle:
                self._pending -= 1
                if not self._pending:
                    self._idle.notify_all()


_worker = ProbeWorker()
# a forked child (a DataLoader worker, say) has no probe thread: start it afresh there, with nothing pending
os.register_at_fork(after_in_child=_worker.__init__)
_hook: Any = None
_guarded: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def worker() -> ProbeWorker:
    """The process's probe worker, with the optimizer fence installed."""
    global _hook
    if _hook is None:
        # wait only: a failed measurement is the Monitor's to report, at its next call, not the optimizer's
        _hook = register_optimizer_step_pre_hook(lambda *_: _worker.wait())
    return _worker


def guard(nets: Iterable[nn.Module]) -> None:
    """Make `load_state_dict` into these networks wait for the jobs before it (once per network)."""
    for net in nets:
        if net not in _guarded:
            net.register_load_state_dict_pre_hook(lambda *_: _worker.wait())
            _guarded.add(net)


def fence() -> None:
    """Wait until the Monitor has measured every step it was given (call before changing weights in place
    other than through a `torch.optim` optimizer)."""
    _worker.wait()
