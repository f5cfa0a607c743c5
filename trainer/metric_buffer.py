"""Per-step metric values kept on the training device until a flush, then copied to the host without waiting.

A training step only writes device scalars into a preallocated (rows × columns) float64 tensor; `take()` starts one
asynchronous device → pinned-host copy for the whole window and returns a `Window` whose `points()` waits for that
copy — called from the Monitor's sender thread, so the training thread never synchronises with the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch

Value = torch.Tensor | float | int
PointRow = tuple[str, int, float, int | None, float]


@dataclass
class _Row:
    step: int
    epoch: int | None
    wall_time: float
    columns: tuple[int, ...]  # device columns written in this row
    host: dict[str, float] = field(default_factory=dict)  # plain Python numbers, no device round trip


@dataclass
class Window:
    """The rows of one flush; `points()` yields (key, step, value, epoch, wall_time)."""

    rows: list[_Row]
    keys: list[str]  # column index → key
    values: torch.Tensor | None
    ready: torch.cuda.Event | None = None

    def points(self) -> Iterator[PointRow]:
        if self.ready is not None:
            self.ready.synchronize()
        table = self.values.tolist() if self.values is not None else []
        for i, row in enumerate(self.rows):
            for col in row.columns:
                yield self.keys[col], row.step, table[i][col], row.epoch, row.wall_time
            for key, value in row.host.items():
                yield key, row.step, value, row.epoch, row.wall_time


class MetricBuffer:
    def __init__(self, device: torch.device, capacity: int, columns: int = 16):
        self.device = device
        self.capacity = capacity
        self.values = torch.zeros(capacity, columns, dtype=torch.float64, device=device)
        self.keys: list[str] = []
        self._column: dict[str, int] = {}
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.rows: list[_Row] = []
        # On a CPU there is no device to wait for: reading a scalar costs less than writing it into the buffer.
        self.on_device = device.type != "cpu"

    def __len__(self) -> int:
        return len(self.rows)

    def full(self) -> bool:
        return len(self.rows) >= self.capacity

    def _col(self, key: str) -> int:
        if key not in self._column:
            self._column[key] = len(self.keys)
            self.keys.append(key)
            if len(self.keys) > self.values.shape[1]:  # a new metric appeared: widen (rare, device-side copy)
                wider = torch.zeros(self.capacity, 2 * self.values.shape[1], dtype=torch.float64, device=self.device)
                wider[:, :self.values.shape[1]] = self.values
                self.values = wider
        return self._column[key]

    def _index(self, columns: tuple[int, ...]) -> torch.Tensor:
        # The index tensor is built once per column set: building it each step would be a blocking host→device copy.
        if columns not in self._index_cache:
            self._index_cache[columns] = torch.tensor(columns, dtype=torch.long, device=self.device)
        return self._index_cache[columns]

    def add(self, step: int, epoch: int | None, values: Mapping[str, Value | None]) -> None:
        """One row: tensors stay on the device (no sync), Python numbers (and CPU tensors) go to the host side."""
        row = _Row(step, epoch, time.time(), ())
        tensors: list[torch.Tensor] = []
        columns: list[int] = []
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor) and self.on_device:
                columns.append(self._col(key))
                tensors.append(value.detach().reshape(()).to(self.device, torch.float64, non_blocking=True))
            else:
                row.host[key] = value.item() if isinstance(value, torch.Tensor) else float(value)
        if tensors:
            row.columns = tuple(columns)
            self.values[len(self.rows)].index_copy_(0, self._index(row.columns), torch.stack(tensors))
        self.rows.append(row)

    def take(self) -> Window:
        """Start the copy of the filled rows to the host and reset; the returned window owns the copy."""
        n = len(self.rows)
        window = Window(self.rows, list(self.keys), None)
        self.rows = []
        if not any(r.columns for r in window.rows):
            return window
        if self.device.type == "cuda":
            host = torch.empty((n, self.values.shape[1]), dtype=torch.float64, pin_memory=True)
            host.copy_(self.values[:n], non_blocking=True)
            window.ready = torch.cuda.Event()
            window.ready.record()
            window.values = host
        else:
            window.values = self.values[:n].clone()
        return window
