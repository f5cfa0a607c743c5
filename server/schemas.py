"""Request and response shapes. Rows never leave the store layer; routes declare these as response models.

Every model derives from `Schema`, which writes NaN and ±inf as "NaN" / "Infinity" / "-Infinity" (the JSON
contract in DESIGN.md) and reads those strings back as floats.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sqd.protocol import Tags

RunKind = Literal["launched", "external"]
# Free-form JSON (a run's config, launch overrides, a generator spec) nests a few levels; far deeper trees are junk
# that the JSON encoders downstream refuse (pydantic's serialiser stops near 255 levels, msgpack at 512), and once
# stored they would break every listing that includes them.
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Levels of nested maps and lists (a scalar is 0); iterative, since the input may be deeper than the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list | tuple) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]

# `cancelling`: a cancel was requested and the agent has not confirmed it yet
ServerRunStatus = Literal["queued", "running", "cancelling", "finished", "failed", "cancelled"]


class Schema(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings", from_attributes=True)


class RunCreate(Schema):
    """`preset` set → launch it (202); no preset → an external run that a script or the Monitor feeds (201)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)
    preset: str | None = Field(None, min_length=1, max_length=100)
    overrides: JsonObject = {}
    steps: int | None = Field(None, ge=1, le=10**12)
    config: JsonObject = {}
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="client-chosen run id (external)")
    tags: Tags = []
    notes: str = Field("", max_length=10_000)
    started_at: float | None = Field(None, ge=0, allow_inf_nan=False,
                                     description="external runs: when it started (an importer's source time)")


class RunPublic(Schema):
    id: str
    name: str
    status: ServerRunStatus
    kind: RunKind
    preset: str | None = None
    config: dict[str, Any] = {}
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    host: str | None = None
    device: str | None = None
    agent: str | None = None
    pid: int | None = None
    steps: int | None = None
    last_step: int | None = None
    last_epoch: int | None = None
    error: str | None = None
    traceback: str | None = None
    tags: list[str] = []
    notes: str = ""
    archived_at: float | None = None
    deleted_at: float | None = Field(None, description="soft-deleted: hidden, recoverable until `gc`")
    sweep_id: str | None = None


class RunUpdate(Schema):
    """PATCH /runs/{id}: any of these; a field left out is left as it is."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200)
    status: Literal["finished", "failed"] | None = None
    error: str | None = Field(None, max_length=100_000, description="with status 'failed'")
    finished_at: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="with a status: when it ended (default: now)")
    tags: Tags | None = Field(None, description="the run's tags, replacing the old list")
    notes: str | None = Field(None, max_length=10_000)
    archived: bool | None = Field(None, description="true archives (hidden from the default list), false restores")

    @model_validator(mode="after")
    def _consistent(self) -> RunUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give any of name, status, error, finished_at, tags, notes, archived")
        if self.error is not None and self.status != "failed":
            raise ValueError("'error' goes with \"status\": \"failed\"")
        if self.finished_at is not None and self.status is None:
            raise ValueError("'finished_at' goes with a status")
        return self


class RunErased(Schema):
    id: str
    series: int = Field(description="metric series removed")
    points: int = Field(description="points removed")
    artifacts: int = Field(description="files removed from the artifact store (checkpoints, sample grids, logs)")
    artifacts_error: str | None = Field(None, description="the artifacts could not all be removed: why")


class GcBody(Schema):
    model_config = ConfigDict(extra="forbid")
    older_than_s: float = Field(0.0, ge=0, allow_inf_nan=False,
                                description="erase runs soft-deleted at least this long ago")


class GcResult(Schema):
    data: list[RunErased]
    count: int


class RunsPublic(Schema):
    data: list[RunPublic]
    count: int = Field(description="runs matching the filter, before limit/offset")


class RunFilter(Schema):
    status: list[ServerRunStatus] | None = Field(None, description="any of these statuses")
    q: str | None = Field(None, max_length=200, description="substring of the name or id")
    preset: str | None = Field(None, max_length=100)
    kind: RunKind | None = None
    filter: str | None = Field(None, max_length=4000, description=(
        "e.g. `config.lr >= 1e-3 and eval/fid < 50 and tag = baseline and status in (running, finished)`; "
        "syntax in docs/server.md"))
    sort: str | None = Field(None, max_length=500, description=(
        "comma-separated fields, '-' for descending, e.g. `eval/fid` or `-config.lr` (default: -created)"))
    view: Literal["active", "archived", "all", "deleted"] = Field(
        "active", description="active: neither archived nor deleted; all: active and archived; deleted: the trash")
    sweep: str | None = Field(None, max_length=64, description="only the runs of this sweep")
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=10**9)


class Health(Schema):
    status: Literal["ok", "degraded"]
    version: str
    database: dict[str, Any]
    bus: dict[str, Any]
    ingest: dict[str, Any]
    workers: dict[str, Any]


class EvaluationPublic(Schema):
    run_id: str
    event_id: str
    checkpoint_step: int
    epoch: int | None = None
    status: str
    metrics: dict[str, float] = {}
    n_samples: int = 0
    timings_s: dict[str, float] = {}
    checkpoint_uri: str | None = None
    grid_uri: str | None = None
    error: str | None = None
    worker: str | None = None
    created_at: float


class EvaluationsPublic(Schema):
    data: list[EvaluationPublic]
    count: int


class CheckpointPublic(Schema):
    run_id: str
    step: int
    epoch: int | None = None
    uri: str
    sha256: str
    size_bytes: int
    profile: str
    generator: dict[str, Any] = {}
    created_at: float


class CheckpointsPublic(Schema):
    data: list[CheckpointPublic]
    count: int


class AlertPublic(Schema):
    id: int
    event_id: str
    run_id: str
    rule: str
    step: int | None = None
    epoch: int | None = None
    signals: list[str] = []
    scores: dict[str, float] = {}
    explanation: str = ""
    severity: str
    created_at: float


class AlertsPublic(Schema):
    data: list[AlertPublic]
    count: int


class PresetPublic(Schema):
    name: str
    seed: str | int | None = None
    dataset: str | None = None
    description: str = ""
    family: str | None = None


class CancelBody(Schema):
    reason: str = Field("cancelled by user", max_length=500)


class PointIn(Schema):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=200)
    step: int = Field(ge=0, lt=2**62)
    value: float = Field(description='a number, or "NaN" / "Infinity" / "-Infinity"')
    wall_time: float | None = Field(None, allow_inf_nan=False,
                                    description="seconds since the epoch; default: when the server got it")
    epoch: int | None = Field(None, ge=0, le=2**31 - 1)


MAX_INGEST_POINTS = 100_000
Step = Annotated[int, Field(ge=0, lt=2**62)]
Epoch = Annotated[int, Field(ge=0, le=2**31 - 1)]
WallTime = Annotated[float, Field(allow_inf_nan=False)]


class SeriesIn(Schema):
    """One key's points as columns (every list as long as `step`)."""

    model_config = ConfigDict(extra="forbid")
    step: list[Step] = Field(min_length=1, max_length=MAX_INGEST_POINTS)
    value: list[float] = Field(description='numbers, or "NaN" / "Infinity" / "-Infinity"')
    epoch: list[Epoch | None] | None = None
    wall_time: list[WallTime] | None = Field(None, description="seconds since the epoch; default: arrival time")

    @model_validator(mode="after")
    def _same_lengths(self) -> SeriesIn:
        for name in ("value", "epoch", "wall_time"):
            column = getattr(self, name)
            if column is not None and len(column) != len(self.step):
                raise ValueError(f"'{name}' has {len(column)} entries but 'step' has {len(self.step)}")
        return self


class MetricsIn(Schema):
    """Either `points` (one object per point) or `series` (columns per key, the fast form)."""

    model_config = ConfigDict(extra="forbid")
    points: list[PointIn] | None = Field(None, min_length=1, max_length=MAX_INGEST_POINTS)
    series: dict[Annotated[str, Field(min_length=1, max_length=200)], SeriesIn] | None = Field(
        None, min_length=1, description='{key: {"step": [...], "value": [...], "epoch"?: [...], "wall_time"?: [...]}}')

    @model_validator(mode="after")
    def _one_form(self) -> MetricsIn:
        if (self.points is None) == (self.series is None):
            raise ValueError("send either 'points' (a list of {key, step, value}) or 'series' "
                             "({key: {step: [...], value: [...]}}), not both or neither")
        total = len(self.points or []) + sum(len(s.step) for s in (self.series or {}).values())
        if total > MAX_INGEST_POINTS:
            raise ValueError(f"'series' holds {total} points; at most {MAX_INGEST_POINTS} per request")
        return self

    def __len__(self) -> int:
        return len(self.points) if self.points is not None else sum(len(s.step) for s in (self.series or {}).values())


class IngestAck(Schema):
    received: int
    stored: int = Field(description="points new to the database; a repeated (key, step) is stored once")


class SeriesPublic(Schema):
    step: list[int] = Field(description="per bucket: the step of its last point")
    value: list[float] = Field(description="per bucket: the last value")
    min: list[float] = Field(description="per bucket: smallest non-NaN value (NaN if all are NaN)")
    max: list[float] = Field(description="per bucket: largest non-NaN value")
    count: list[int] = Field(description="per bucket: points in it")
    nan: list[int] = Field(description="per bucket: NaN points in it")
    bucket_width: int = Field(description="steps per bucket (1 = full resolution)")


class MetricsPublic(Schema):
    run_id: str
    series: dict[str, SeriesPublic]


class SeriesKey(Schema):
    key: str
    first_step: int | None = None
    last_step: int | None = None
    points: int


class SeriesKeysPublic(Schema):
    data: list[SeriesKey]
    count: int


class SamplePublic(Schema):
    step: int
    url: str
    status: str


class SamplesPublic(Schema):
    data: list[SamplePublic]
    count: int


class LogPublic(Schema):
    run_id: str
    lines: list[str]
    truncated: bool = Field(description="older lines exist beyond `tail`")
