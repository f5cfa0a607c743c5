"""Request and response shapes of /sweeps (the run shapes live in server/schemas.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from sqd.server.schemas import AlertPublic, JsonObject, RunPublic, Schema, SeriesPublic, json_depth
from sqd.server.sweeps.plan import SweepSpec

PresetName = Annotated[str, Field(min_length=1, max_length=100)]
SweepStatus = Literal["queued", "running", "cancelling", "finished", "cancelled"]


def _shallow_grid(value: dict[str, list[Any]]) -> dict[str, list[Any]]:
    if json_depth(value) > 32:
        raise ValueError("nested deeper than 32 levels")
    return value


class SweepCreate(Schema):
    """`preset` (or `presets`) × `grid` (override key → values, a cartesian product) × `configs` (explicit override
    sets) × `seeds`; `overrides` apply to every run. More than 200 runs (SQD_SWEEPS__CONFIRM_ABOVE) need
    `"confirm": true`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=120, description="default: the preset(s) swept")
    preset: PresetName | None = None
    presets: list[PresetName] = Field([], max_length=100, description="several presets at once")
    grid: Annotated[dict[str, Annotated[list[Any], Field(max_length=1000)]],
                    AfterValidator(_shallow_grid)] = Field({}, max_length=50)
    configs: list[JsonObject] = Field([], max_length=1000, description="explicit override sets")
    overrides: JsonObject = {}
    seeds: int = Field(1, ge=1, le=1000, description="runs per configuration (train.seed = base, base+1, …)")
    steps: int | None = Field(None, ge=1, le=10**12, description="generator steps of every run")
    max_concurrent: int | None = Field(None, ge=1, le=10_000,
                                       description="runs handed to the agents at once (default: server setting)")
    confirm: bool = False

    def spec(self) -> SweepSpec:
        presets = ([self.preset] if self.preset else []) + [p for p in self.presets if p != self.preset]
        return SweepSpec(presets=presets, grid=dict(self.grid), configs=[dict(c) for c in self.configs],
                         overrides=dict(self.overrides), seeds=self.seeds, steps=self.steps)


class SweepRunPublic(RunPublic):
    config_index: int
    label: str
    params: dict[str, Any] = {}
    seed: int
    released: bool = Field(description="handed to the agents (false: waiting behind the concurrency cap)")


class SweepSummary(Schema):
    id: str
    name: str
    status: SweepStatus
    max_concurrent: int
    spec: dict[str, Any]
    dimensions: list[str]
    n_runs: int
    counts: dict[str, int] = Field(description="runs per status")
    created_at: float
    updated_at: float
    cancelled_at: float | None = None


class SweepPublic(SweepSummary):
    runs: list[SweepRunPublic]


class SweepsPublic(Schema):
    data: list[SweepSummary]
    count: int


class ResultRow(Schema):
    run_id: str
    name: str
    config_index: int
    label: str
    params: dict[str, Any]
    seed: int
    status: str
    error: str | None = None
    final_quality: float | None = None
    best_quality: float | None = None
    final_diversity: float | None = None
    best_diversity: float | None = None
    final_fid: float | None = None
    best_fid: float | None = None
    final_modes: float | None = None
    best_modes: float | None = None
    turning_epoch: int | None = None
    turning_step: int | None = None
    alerts: int = 0
    evaluations: int = 0
    last_step: int | None = None
    steps: int | None = None
    duration_s: float | None = None


class SweepResults(Schema):
    sweep_id: str
    dimensions: list[str]
    data: list[ResultRow]
    count: int


class SweepSeries(Schema):
    sweep_id: str
    runs: dict[str, dict[str, SeriesPublic]] = Field(description="run id → key → downsampled series")


class SweepAlerts(Schema):
    data: list[AlertPublic]
    count: int


class BuiltinSweep(Schema):
    id: str
    title: str
    description: str
    request: dict[str, Any] = Field(description="a POST /sweeps body")


class SweepCancel(Schema):
    reason: str = Field("sweep cancelled by user", max_length=500)
