"""Per-step metric values kept on the training device until a flush, then copied to the host without waiting.

A row is a step's values. On a GPU they stay device scalars in a preallocated (rows × columns) float64 tensor:
either written by the Monitor's step program itself (`add_written`: the program keeps the row index in the
device tensor `counter`, so a CUDA graph can replay it) or stacked and copied in by `add` (one `index_copy_`).
A field may span several columns and is decoded on the host: an angle is stored as its three sums
(sqd.trainer.weight_sums), a gradient norm as the norms of its tensors. `take()` starts one asynchronous
device → pinned-host copy for the whole window and returns a `Window` whose `points()` waits for that copy —
called from the Monitor's sender thread, so the training thread never synchronises with the GPU. On a CPU every
value is a Python float in the row's `host` dict: there is nothing to wait for.

Failure modes: none at run time beyond torch's own; a window's decoding of NaN/inf gives NaN/inf points (the
sender thread reports them as non-finite).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sqd.protocol import wall_ms
from sqd.trainer.weight_sums import angle_from_sums

Value = torch.Tensor | float | int
PointRow = tuple[str, int, float, int | None, float]
Decoder = Callable[[Sequence[float]], float]


def plain(values: Sequence[float]) -> float:
    return values[0]


def angle(values: Sequence[float]) -> float:
    return angle_from_sums(values[0], values[1], values[2])


def norm(values: Sequence[float]) -> float:
    """L2 norm of all tensors from the L2 norms of each."""
    return math.sqrt(math.fsum(v * v for v in values))


@dataclass(frozen=True)
class Field:
    key: str
    columns: tuple[int, ...]
    decode: Decoder = plain


@dataclass(slots=True)
class HostSums:
    """A CPU step's per-network sums (sqd.trainer.host_sums), decoded into `angle/*` and `grad_norm/*` points at the
    flush, in the sender thread: right after a training step every Python operation runs on cold caches (~10× its
    usual time), so the step keeps the array as the compiled pass returned it (not frozen: a frozen dataclass's
    `__init__` costs ~3× as much)."""

    names: tuple[str, ...]
    sums: np.ndarray  # (networks, 5): S_bb, S_ee, S_be, ‖grad‖², gradients present
    angles: bool  # whether the angle sums hold (not a first step, nor one whose weights changed under it)
    grad_norms: bool  # whether the gradient sums hold

    def points(self) -> Iterator[tuple[str, float]]:
        rows = self.sums.tolist()
        if self.angles:
            for name, (bb, ee, be, _, _) in zip(self.names, rows, strict=True):
                yield f"angle/{name}", angle_from_sums(bb, ee, be)
        if self.grad_norms:
            for name, (_, _, _, gg, present) in zip(self.names, rows, strict=True):
                if present:
                    yield f"grad_norm/{name}", math.sqrt(gg)


@dataclass
class _Row:
    step: int
    epoch: int | None
    wall_time: float
    device_row: int | None  # the row of the device table this step filled (None: host values only)
    fields: tuple[Field, ...]
    host: dict[str, float] = field(default_factory=dict)  # plain Python numbers, no device round trip
    sums: HostSums | None = None


@dataclass
class Window:
    """The rows of one flush; `points()` yields (key, step, value, epoch, wall_time)."""

    rows: list[_Row]
    values: torch.Tensor | None
    ready: torch.cuda.Event | None = None

    def points(self) -> Iterator[PointRow]:
        if self.ready is not None:
            self.ready.synchronize()
        table = self.values.tolist() if self.values is not None else []
        for row in self.rows:
            wall = wall_ms(row.wall_time)
            if row.device_row is not None:
                line = table[row.device_row]
                for f in row.fields:
                    yield f.key, row.step, f.decode([line[c] for c in f.columns]), row.epoch, wall
            if row.sums is not None:
                for key, value in row.sums.points():
                    yield key, row.step, value, row.epoch, wall
            for key, value in row.host.items():
                yield key, row.step, value, row.epoch, wall


class MetricBuffer:
    def __init__(self, device: torch.device, capacity: int, columns: int = 32):
        self.device = device
        self.capacity = capacity
        self.values = torch.zeros(capacity, columns, dtype=torch.float64, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)  # next device row, kept by the device
        self.generation = 0  # bumped when `values` is replaced (a wider table): captured programs must re-capture
        self.keys: list[str] = []
        self._columns: dict[str, tuple[int, ...]] = {}
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.rows: list[_Row] = []
        self.device_rows = 0
        # On a CPU there is no device to wait for: reading a scalar costs less than writing it into the buffer.
        self.on_device = device.type != "cpu"

    def __len__(self) -> int:
        return len(self.rows)

    def full(self) -> bool:
        return len(self.rows) >= self.capacity

    def columns(self, key: str, width: int = 1) -> tuple[int, ...]:
        """The device columns of `key` (assigned on first use; the table widens when it runs out)."""
        cols = self._columns.get(key)
        if cols is None:
            start = sum(len(c) for c in self._columns.values())
            cols = self._columns[key] = tuple(range(start, start + width))
            self.keys.append(key)
            if start + width > self.values.shape[1]:  # rare: a device-side copy into a wider table
                wider = torch.zeros(self.capacity, 2 * (start + width), dtype=torch.float64, device=self.device)
                wider[:, :self.values.shape[1]] = self.values
                self.values = wider
                self.generation += 1
        return cols

    def _index(self, columns: tuple[int, ...]) -> torch.Tensor:
        # The index tensor is built once per column set: building it each step would be a blocking host→device copy.
        if columns not in self._index_cache:
            self._index_cache[columns] = torch.tensor(columns, dtype=torch.long, device=self.device)
        return self._index_cache[columns]

    def add(self, step: int, epoch: int | None, values: Mapping[str, Value | None],
            wall_time: float | None = None) -> None:
        """One row: tensors stay on the device (no sync), Python numbers (and CPU tensors) go to the host side;
        `wall_time`: when the step was taken (default: now)."""
        host: dict[str, float] = {}
        tensors: list[torch.Tensor] = []
        fields: list[Field] = []
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor) and self.on_device:
                fields.append(Field(key, self.columns(key)))
                tensors.append(value.detach().reshape(()).to(self.device, torch.float64, non_blocking=True))
            else:
                host[key] = value.item() if isinstance(value, torch.Tensor) else float(value)
        if tensors:
            self.add_device(step, epoch, tuple(fields), torch.stack(tensors), host, wall_time)
        else:
            self.add_host(step, epoch, host, time.time() if wall_time is None else wall_time)

    def add_host(self, step: int, epoch: int | None, host: dict[str, float], wall_time: float,
                 sums: HostSums | None = None) -> None:
        """A row of Python floats (and the CPU probe's sums): no device value to look at again."""
        self.rows.append(_Row(step, epoch, wall_time, None, (), host, sums))

    def add_device(self, step: int, epoch: int | None, fields: tuple[Field, ...], flat: torch.Tensor,
                   host: dict[str, float], wall_time: float | None = None) -> None:
        """A row whose device values are `flat`, in the order of the fields' columns."""
        columns = tuple(c for f in fields for c in f.columns)
        self.values[self.device_rows].index_copy_(0, self._index(columns), flat.to(torch.float64))
        self.device_rows += 1
        self.counter.fill_(self.device_rows)
        self.rows.append(_Row(step, epoch, time.time() if wall_time is None else wall_time, self.device_rows - 1,
                              fields, host))

    def add_written(self, step: int, epoch: int | None, fields: tuple[Field, ...], host: dict[str, float]) -> None:
        """A row the step program has written itself at the device's `counter`."""
        self.rows.append(_Row(step, epoch, time.time(), self.device_rows, fields, host))
        self.device_rows += 1

    def take(self) -> Window:
        """Start the copy of the filled rows to the host and reset; the returned window owns the copy."""
        n = self.device_rows
        window = Window(self.rows, None)
        self.rows, self.device_rows = [], 0
        if not n:
            return window
        if self.device.type == "cuda":
            host = torch.empty((n, self.values.shape[1]), dtype=torch.float64, pin_memory=True)
            host.copy_(self.values[:n], non_blocking=True)
            window.ready = torch.cuda.Event()
            window.ready.record()
            window.values = host
        else:
            window.values = self.values[:n].clone()
        self.counter.zero_()
        return window
