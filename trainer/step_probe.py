"""What `Monitor.step` measures: the weight angle and gradient norm of each network, and the values it is given.

`make_probe` picks one of two implementations by the device of the first network's parameters:

* `HostProbe` (CPU): one compiled pass per parameter forms its angle sums, its new snapshot and its gradient's
  squared norm (sqd.trainer.host_sums) — there is no device to wait for. The row keeps the pass's per-network sums
  as they came (metric_buffer.HostSums) and the flush turns them into angles and norms: the step's caches are cold,
  and that decoding was ~15 % of its time. With
  `background=True` (`SQD_TRAINER__MONITOR_THREAD=true`) the training thread only notes the step's values,
  gradients and version counters, and the passes run in the probe worker thread (sqd.trainer.probe_worker, which
  also says why they still see the step's weights).
* `DeviceProbe` (GPU): the host copies the step's loss / metric tensors and its gradients into static slots (two
  launches; no tensor per parameter for Python to handle), then one CUDA graph replay does the rest
  (sqd.trainer.step_program): gradient norms, snapshot copy, block sums, the metric-buffer row. Nothing
  synchronises. Networks over step_program.GRAD_COPY_BYTES get no gradient copies: their norms are launched from
  here, as they were before the copies. Loss tensors may live anywhere and have any float dtype;
  Python numbers and CPU tensors go to the host side of the row.

A probe is bound to the parameters it was built on. `moved()` tells when they changed: storage moved (`.to()`,
`p.data = …`, a dtype change: a data_ptr fingerprint, every step, ~1 µs), a parameter was registered on any module
(a global registration hook), or — with `relist=True`, which walks the modules, at each flush — the networks hold
other parameter objects. The Monitor then flushes and builds a new probe with `continues=False`: the first step
and epoch after it report no angle rather than a wrong one (a device change moves the metric buffer with it).
Failure modes: a loss that is a tensor of several values → ValueError naming the key; networks without
trainable floating-point parameters → ValueError.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from sqd.trainer import probe_worker, step_kernels, step_program
from sqd.trainer.metric_buffer import Field, HostSums, MetricBuffer, Value, Window, angle, norm, plain
from sqd.trainer.stability import trainable_parameters
from sqd.trainer.step_program import Capture, GraphRunner, StepProgram, capture_cuda_graph, grad_norms
from sqd.trainer.weight_sums import WeightSnapshots, angle_from_sums, fingerprint

if TYPE_CHECKING:
    from sqd.trainer.host_sums import HostSnapshots

GRAPH_BLOCK = 4096  # snapshot values per Triton program on a GPU

_registrations = [0]  # bumped by the hook below: some module got a new parameter somewhere in the process
_hook_installed = False


def _install_registration_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        def bump(module: nn.Module, name: str, param: Any) -> None:
            _registrations[0] += 1

        nn.modules.module.register_module_parameter_registration_hook(bump)
        _hook_installed = True


class _Probe:
    """Parameters, snapshots and move detection shared by both implementations."""

    def __init__(self, nets: Mapping[str, nn.Module], capacity: int, grad_norms: bool, continues: bool):
        """`continues`: the weights as they are now continue the run's previous snapshot (False after a move: the
        first step and epoch report no angle)."""
        _install_registration_hook()
        self.nets, self.grad_norms = dict(nets), grad_norms
        self.names = tuple(self.nets)
        self.groups = [trainable_parameters(net) for net in self.nets.values()]
        self.params = [p for g in self.groups for p in g]
        self.registrations = _registrations[0]
        self.narrow = any(p.dtype not in (torch.float32, torch.float64) for p in self.params)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.steps, self.epochs = self._snapshots(), self._snapshots(epochs=True)
        with torch.no_grad():
            self.steps.snapshot()
            self.epochs.snapshot()
        self.angle_valid = self.epoch_valid = continues
        self.buffer = MetricBuffer(self.device, capacity)

    def _snapshots(self, epochs: bool = False) -> HostSnapshots | WeightSnapshots:
        raise NotImplementedError

    def moved(self, relist: bool = False) -> bool:
        """Whether the parameters moved since the snapshots (a cheap check each step); `relist`: also whether the
        networks now hold other parameter objects (a walk over the modules, at each flush)."""
        if fingerprint(self.params) != self.steps.fingerprint:
            return True
        if relist or _registrations[0] != self.registrations:
            self.registrations = _registrations[0]
            now = [id(p) for net in self.nets.values() for p in trainable_parameters(net)]
            return now != list(map(id, self.params))
        return False

    def wait(self) -> None:
        """Return once every step given to `step` is in the buffer (raises a failed measurement)."""

    def full(self) -> bool:
        """Whether the buffer holds (or is about to hold) a flush's worth of rows."""
        return self.buffer.full()

    def take(self) -> Window:
        """The buffered rows, as `MetricBuffer.take`, once every step is measured."""
        self.wait()
        return self.buffer.take()


def _not_one_value(key: str, value: torch.Tensor) -> None:
    raise ValueError(f"Monitor.step: {key!r} is a tensor of {value.numel()} values; pass one number (e.g. its "
                     f".mean())")


def _versions(tensors: Sequence[torch.Tensor]) -> list[int]:
    return [t._version for t in tensors]


def _present_versions(tensors: Sequence[torch.Tensor | None] | None) -> list[int]:
    return [t._version for t in tensors if t is not None] if tensors else []


class HostProbe(_Probe):
    steps: HostSnapshots
    epochs: HostSnapshots

    def __init__(self, nets: Mapping[str, nn.Module], capacity: int, grad_norms: bool, continues: bool,
                 background: bool = False):
        super().__init__(nets, capacity, grad_norms, continues)
        self.worker = probe_worker.worker() if background else None
        if self.worker is not None:
            probe_worker.guard(self.nets.values())
        # steps handed to the worker / measured by it (each written by one thread only)
        self.submitted = self.measured = 0

    def _snapshots(self, epochs: bool = False) -> HostSnapshots:
        from sqd.trainer.host_sums import HostSnapshots  # numba: the CPU path only

        return HostSnapshots(self.groups, self.names)

    def wait(self) -> None:
        if self.worker is not None:
            self.worker.fence()

    def full(self) -> bool:
        return len(self.buffer) + self.submitted - self.measured >= self.buffer.capacity

    def step(self, step: int, epoch: int | None, values: Mapping[str, Value | None]) -> None:
        wall = time.time()
        given: dict[str, float] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    _not_one_value(key, value)
                given[key] = value.item()
            elif value is not None:
                given[key] = float(value)
        grads = [p.grad for p in self.params] if self.grad_norms else None
        if self.worker is None:
            self._measure(step, epoch, wall, given, grads, None, None)
            return
        self.worker.fence()  # at most one step in flight, and a failed one is reported here
        self.submitted += 1
        self.worker.submit(partial(self._measure, step, epoch, wall, given, grads, _versions(self.params),
                                   _present_versions(grads)))

    def _measure(self, step: int, epoch: int | None, wall: float, given: dict[str, float],
                 grads: list[torch.Tensor | None] | None, weights_at: list[int] | None,
                 grads_at: list[int] | None) -> None:
        """The step's row (in the worker thread when there is one); `grads`: each parameter's gradient at `step`;
        `weights_at` / `grads_at`: the tensors' versions then — a measurement that may have read a later value is
        left out."""
        had, sums = self.steps.passes(grads)
        intact = weights_at is None or _versions(self.params) == weights_at
        angles = had and self.angle_valid and intact
        self.angle_valid = intact  # a snapshot taken after a change is no start for the next angle either
        grad_norms = grads_at is None or _present_versions(grads) == grads_at
        self.buffer.add_host(step, epoch, given, wall, HostSums(self.names, sums, angles, grad_norms))
        self.measured += 1

    def end_epoch(self, step: int, epoch: int) -> None:
        self.wait()
        angles, _ = self.epochs.sums()
        if angles is not None and self.epoch_valid:
            self.buffer.add(step, epoch, {f"angle_epoch/{n}": angle_from_sums(*s)
                                          for n, s in zip(self.names, angles, strict=True)})
        self.epoch_valid = True


class DeviceProbe(_Probe):
    def __init__(self, nets: Mapping[str, nn.Module], capacity: int, grad_norms: bool, continues: bool,
                 capture: Capture | None = capture_cuda_graph, triton: bool | None = None):
        super().__init__(nets, capacity, grad_norms, continues)
        self.input_keys: list[str] = []
        self.input_dtype = torch.float32
        self.runner = GraphRunner(capture, step_kernels.triton_available(self.device) if triton is None else triton)
        self._zero = torch.zeros((), device=self.device)
        size = sum(p.numel() * p.element_size() for p in self.params)
        # the program takes the gradient norms from copies of the gradients (step_program), up to a size
        self.grad_copies = [torch.empty_like(p) for p in self.params] \
            if grad_norms and size <= step_program.GRAD_COPY_BYTES else None
        ends = list(itertools.accumulate(len(g) for g in self.groups))
        self.net_ranges = list(zip([0, *ends[:-1]], ends, strict=True))  # each network's slice of self.params
        self._new_program()

    def _snapshots(self, epochs: bool = False) -> WeightSnapshots:
        return WeightSnapshots(self.groups, self.names) if epochs else \
            WeightSnapshots(self.groups, self.names, block=GRAPH_BLOCK)

    @property
    def graphed(self) -> bool:
        return self.runner.graphed

    def _new_program(self) -> None:
        """(Re)lay the slots and columns the program writes; its graphs are captured again when next needed."""
        buf = self.buffer
        self.angle_fields = tuple(Field(f"angle/{n}", buf.columns(f"angle/{n}", 3), angle) for n in self.names)
        self.input_fields = {k: Field(k, buf.columns(k), plain) for k in self.input_keys}
        self.grad_fields = [Field(f"grad_norm/{n}", buf.columns(f"grad_norm/{n}", len(g)), norm)
                            for n, g in zip(self.names, self.groups, strict=True)] if self.grad_norms else []
        input_cols = [f.columns[0] for f in self.input_fields.values()] + [c for f in self.grad_fields
                                                                          for c in f.columns]
        self.program = StepProgram(self.steps, buf, [c for f in self.angle_fields for c in f.columns], input_cols,
                                   self.input_dtype, self.grad_copies, self.narrow)
        self.runner.reset()
        self._fields: dict[tuple[Any, ...], tuple[Field, ...]] = {}

    @torch.no_grad()
    def step(self, step: int, epoch: int | None, values: Mapping[str, Value | None]) -> None:
        host: dict[str, float] = {}
        tensors: dict[str, torch.Tensor] = {}
        for key, value in values.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                host[key] = float(value)
            elif value.numel() != 1:
                _not_one_value(key, value)
            elif value.device == self.device:
                tensors[key] = value.reshape(()) if value.dim() else value
            elif value.device.type == "cpu":  # a host value already: no device round trip
                host[key] = value.item()
            else:
                tensors[key] = value.reshape(()).to(self.device, non_blocking=True)
        inputs = self._inputs(tensors)
        grads_present: tuple[bool, ...] = ()
        grads: list[torch.Tensor | None] | None = None
        if self.grad_norms:
            grads = [p.grad for p in self.params]
            grads_present = tuple(any(g is not None for g in grads[lo:hi]) for lo, hi in self.net_ranges)
            if self.grad_copies is None:  # too large to copy: the norms from here (a zero for a missing gradient)
                present = [g for g in grads if g is not None]
                norms = iter(grad_norms(present, self.narrow) if present else [])
                inputs += [next(norms) if g is not None else self._zero for g in grads]
        if self.program.generation != self.buffer.generation:  # the metric table grew: write into the new one
            self._new_program()
        self.program.load(inputs, grads)
        parity = self.steps.latest ^ 1
        self.runner.run(self.program, parity)
        self.steps.latest = parity
        self.buffer.add_written(step, epoch, self._row_fields(tuple(tensors), grads_present), host)
        self.angle_valid = True

    def _inputs(self, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The step's tensors in slot order: a missing key gets a zero (not reported), a new one a new layout."""
        wide = self.input_dtype != torch.float64 and any(t.dtype == torch.float64 for t in tensors.values())
        new = [k for k in tensors if k not in self.input_fields]
        if new or wide:
            self.input_keys += new
            self.input_dtype = torch.float64 if wide else self.input_dtype
            self._new_program()
        if list(tensors) == self.input_keys:
            return list(tensors.values())
        return [tensors.get(k, self._zero) for k in self.input_keys]

    def _row_fields(self, keys: tuple[str, ...], grads_present: tuple[bool, ...]) -> tuple[Field, ...]:
        sig = (keys, grads_present, self.angle_valid)
        fields = self._fields.get(sig)
        if fields is None:
            fields = (self.angle_fields if self.angle_valid else ()) + tuple(self.input_fields[k] for k in keys) \
                + tuple(f for f, had in zip(self.grad_fields, grads_present, strict=False) if had)
            self._fields[sig] = fields
        return fields

    @torch.no_grad()
    def end_epoch(self, step: int, epoch: int) -> None:
        sums = self.epochs.device_sums()
        if sums is not None and self.epoch_valid:
            fields = tuple(Field(f"angle_epoch/{n}", self.buffer.columns(f"angle_epoch/{n}", 3), angle)
                           for n in self.names)
            self.buffer.add_device(step, epoch, fields, sums.flatten(), {})
        self.epoch_valid = True


def make_probe(nets: Mapping[str, nn.Module], capacity: int, grad_norms: bool, continues: bool = True,
               graphs: bool = True, background: bool = False) -> HostProbe | DeviceProbe:
    """The probe for where the networks live: CPU → HostProbe (measuring in the probe worker thread if
    `background`); a GPU → DeviceProbe, with CUDA graphs unless `graphs=False`."""
    first = next((p for net in nets.values() for p in trainable_parameters(net)), None)
    if first is None:
        raise ValueError("Monitor: the networks have no trainable floating-point parameters to take angles of")
    if first.device.type == "cpu":
        return HostProbe(nets, capacity, grad_norms, continues, background)
    capture = capture_cuda_graph if graphs and first.device.type == "cuda" else None
    return DeviceProbe(nets, capacity, grad_norms, continues, capture=capture)
