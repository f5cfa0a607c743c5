"""The event protocol: versioned pydantic models that every role sends and receives.

Every event carries `schema_version`, `event_id`, `run_id` and the producer's timestamp `ts`; handlers are
idempotent on `event_id` or on a natural key ((run, key, step) for metric points, (run, checkpoint step) for
evaluations). Metric points travel column-wise (`MetricBatch`) because a million small objects a second is what
the bus must carry; `MetricBatch.from_points` / `.points()` give the row view, `.columns()` the numpy view that the
wire format and the store use.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1
RunStatus = Literal["queued", "running", "finished", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"finished", "failed", "cancelled"})
# A run's tag is a label (`baseline`, `lr-sweep`, `paper:fig3`): no commas (lists of tags are comma-separated on
# the command line and in URLs) and no control characters.
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                       pattern=r"^[^\x00-\x1f\x7f,]+$")]
MAX_TAGS = 50
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(lambda tags: list(dict.fromkeys(tags)))]
TAGS_ADAPTER: TypeAdapter[list[str]] = TypeAdapter(Tags)


def new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str  # each concrete event narrows this to its Literal discriminator
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    run_id: str = Field(min_length=1, max_length=64)
    ts: float = Field(default_factory=time.time, description="producer's wall clock, seconds since the epoch")


def wall_ms(wall_time: float) -> float:
    """A wall time to the millisecond, as the Monitor sends points: the server stores such times in ~0.4 bytes a
    point instead of ~2 (time.time()'s sub-millisecond jitter), and nobody reads a step's time closer than that."""
    return round(wall_time, 3)


class Point(NamedTuple):
    key: str
    step: int
    value: float
    epoch: int | None
    wall_time: float


COLUMN_NAMES = ("key_index", "step", "value", "epoch", "wall_time")
NO_EPOCH = -(2**63)  # "no epoch" in MetricColumns.epoch (epochs that can be stored are never negative)


@dataclass(frozen=True)
class MetricColumns:
    """A MetricBatch's columns as numpy arrays, one entry per point."""

    key_index: np.ndarray  # int64
    step: np.ndarray  # int64
    value: np.ndarray  # float64
    epoch: np.ndarray  # int64, NO_EPOCH = none
    wall_time: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.key_index)

    def epochs(self) -> list[int | None]:
        out: list[int | None] = self.epoch.tolist()
        if len(out) and self.epoch.min() == NO_EPOCH:
            for i in np.flatnonzero(self.epoch == NO_EPOCH).tolist():
                out[i] = None
        return out


def column_problem(n_keys: int, lengths: dict[str, int], key_range: tuple[int, int] | None,
                   min_step: int | None) -> str | None:
    """What is wrong with a batch's columns (lengths, key_index range, negative steps), or None. Shared by the
    model's validator (lists) and the wire decoder (arrays), so both say the same thing."""
    n = lengths["key_index"]
    for name in COLUMN_NAMES[1:]:
        if lengths[name] != n:
            return f"column '{name}' has {lengths[name]} entries, key_index has {n}"
    if key_range is not None and (key_range[0] < 0 or key_range[1] >= n_keys):
        return f"key_index must lie in [0, {n_keys}) (there are {n_keys} keys)"
    if min_step is not None and min_step < 0:
        return "step must be >= 0"
    return None


class MetricBatch(Event):
    """Many points of one run. `key_index[i]` indexes `keys`; every column has one entry per point."""

    type: Literal["metrics"] = "metrics"
    keys: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)
    key_index: list[int] = Field(min_length=1)
    step: list[int]
    value: list[float]
    epoch: list[int | None]
    wall_time: list[float]
    _columns: MetricColumns | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _columns_agree(self) -> MetricBatch:
        n = len(self.key_index)
        problem = column_problem(len(self.keys), {name: len(getattr(self, name)) for name in COLUMN_NAMES},
                                 (min(self.key_index), max(self.key_index)) if n else None,
                                 min(self.step) if n else None)
        if problem is not None:
            raise ValueError(problem)
        return self

    def columns(self) -> MetricColumns:
        """The columns as arrays, built once (a batch decoded from the bus arrives with them). Raises
        OverflowError for a step or epoch beyond 64 bits."""
        if self._columns is None:
            epoch = self.epoch if None not in self.epoch else [NO_EPOCH if e is None else e for e in self.epoch]
            self._columns = MetricColumns(np.asarray(self.key_index, np.int64), np.asarray(self.step, np.int64),
                                          np.asarray(self.value, np.float64), np.asarray(epoch, np.int64),
                                          np.asarray(self.wall_time, np.float64))
        return self._columns

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> MetricBatch:
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._columns = None  # the cached arrays may no longer match the lists
        return copy

    @classmethod
    def from_points(cls, run_id: str, points: Iterable[tuple[str, int, float, int | None, float]],
                    **fields: Any) -> MetricBatch:
        """Build a batch from (key, step, value, epoch, wall_time) rows."""
        index: dict[str, int] = {}
        key_index: list[int] = []
        steps: list[int] = []
        values: list[float] = []
        epochs: list[int | None] = []
        walls: list[float] = []
        for key, step, value, epoch, wall in points:
            key_index.append(index.setdefault(key, len(index)))
            steps.append(int(step))
            values.append(float(value))
            epochs.append(None if epoch is None else int(epoch))
            walls.append(float(wall))
        return cls(run_id=run_id, keys=list(index), key_index=key_index, step=steps, value=values,
                   epoch=epochs, wall_time=walls, **fields)

    def points(self) -> Iterator[Point]:
        keys = self.keys
        for i, s, v, e, w in zip(self.key_index, self.step, self.value, self.epoch, self.wall_time, strict=True):
            yield Point(keys[i], s, v, e, w)

    def __len__(self) -> int:
        return len(self.key_index)


@dataclass(frozen=True)
class PackedMetrics:
    """A MetricBatch as the ingest consumer takes it off the bus: the validated header and the numpy columns, with
    no Python object per point (a million of those a second cost more than storing the points). `.batch()` gives
    the model."""

    run_id: str
    keys: list[str]
    event_id: str
    ts: float
    cols: MetricColumns
    type: Literal["metrics"] = "metrics"

    def columns(self) -> MetricColumns:
        return self.cols

    def __len__(self) -> int:
        return len(self.cols)

    def batch(self) -> MetricBatch:
        c = self.cols
        batch = MetricBatch.model_construct(run_id=self.run_id, keys=self.keys, event_id=self.event_id, ts=self.ts,
                                            key_index=c.key_index.tolist(), step=c.step.tolist(),
                                            value=c.value.tolist(), epoch=c.epochs(), wall_time=c.wall_time.tolist())
        batch._columns = c
        return batch


class RunStarted(Event):
    type: Literal["run_started"] = "run_started"
    name: str = ""
    preset: str | None = None
    config: dict[str, Any] = {}
    host: str = ""
    pid: int | None = None
    device: str = "cpu"
    agent: str | None = None
    tags: Tags = []


class RunFinished(Event):
    type: Literal["run_finished"] = "run_finished"
    status: Literal["finished", "failed", "cancelled"]
    error: str | None = None
    traceback: str | None = None
    step: int | None = None
    epoch: int | None = None


class CheckpointReady(Event):
    """A checkpoint is in the artifact store; it carries everything a worker needs to rebuild G."""

    type: Literal["checkpoint"] = "checkpoint"
    step: int = Field(ge=0)
    epoch: int | None = None
    uri: str = Field(min_length=1, description="artifact key, relative to the artifact store")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    profile: str = Field("digits", description="evaluation profile: digits | faces | none")
    generator: dict[str, Any] = Field(description="{'arch': name, 'kwargs': {...}, 'z_dim': int} for rebuilding G")
    config: dict[str, Any] = {}


EvaluationStatus = Literal["ok", "failed", "skipped"]


class EvaluationResult(Event):
    type: Literal["evaluation"] = "evaluation"
    checkpoint_step: int = Field(ge=0)
    epoch: int | None = None
    checkpoint_uri: str | None = None
    status: EvaluationStatus
    metrics: dict[str, float] = {}
    n_samples: int = 0
    timings_s: dict[str, float] = {}
    grid_uri: str | None = None
    error: str | None = None
    worker: str | None = None


class LaunchRequest(Event):
    type: Literal["launch"] = "launch"
    preset: str = Field(min_length=1)
    overrides: dict[str, Any] = {}
    name: str = ""
    steps: int | None = Field(None, ge=1)


class CancelRequest(Event):
    type: Literal["cancel"] = "cancel"
    reason: str = "cancelled by user"


class AlertRaised(Event):
    type: Literal["alert"] = "alert"
    rule: str = Field(min_length=1)
    step: int | None = None
    epoch: int | None = None
    signals: list[str] = []
    scores: dict[str, float] = {}
    explanation: str = ""
    severity: Literal["info", "warning", "critical"] = "warning"


AnyEvent = Annotated[
    MetricBatch | RunStarted | RunFinished | CheckpointReady | EvaluationResult | LaunchRequest | CancelRequest
    | AlertRaised,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
EVENT_TYPES: tuple[str, ...] = (
    "metrics", "run_started", "run_finished", "checkpoint", "evaluation", "launch", "cancel", "alert",
)
