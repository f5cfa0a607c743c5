"""/sweeps: create (validate everything, store, release the first runs), list, get, cancel, results (+ export),
and the series and alerts of all a sweep's runs at once."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status

from sqd.server.api.deps import CtxDep, ReadDep, SessionDep, TokenDep
from sqd.server.sweeps import results, store
from sqd.server.sweeps.builtin import BUILTIN
from sqd.server.sweeps.schemas import (
    BuiltinSweep,
    SweepAlerts,
    SweepCancel,
    SweepCreate,
    SweepPublic,
    SweepResults,
    SweepSeries,
    SweepsPublic,
    SweepSummary,
)

SweepT = TypeVar("SweepT", SweepPublic, SweepSummary)

router = APIRouter(prefix="/sweeps", tags=["sweeps"])
DEFAULT_SERIES_KEYS = ("angle/G", "angle/D", "eval/quality", "eval/diversity")


SweepId = Annotated[str, Path(min_length=1, max_length=64, description="sweep id")]


def _found(sweep: SweepT | None, sweep_id: str) -> SweepT:
    if sweep is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"sweep {sweep_id!r} not found")
    return sweep


def get_sweep(sweep_id: SweepId, session: SessionDep) -> SweepPublic:
    return _found(store.get(session, sweep_id), sweep_id)


def get_summary(sweep_id: SweepId, session: SessionDep) -> SweepSummary:
    return _found(store.summary(session, sweep_id), sweep_id)


SweepDep = Annotated[SweepPublic, Depends(get_sweep)]
SummaryDep = Annotated[SweepSummary, Depends(get_summary)]  # without the runs, for routes that read them otherwise


@router.post("", response_model=SweepPublic, status_code=status.HTTP_201_CREATED, dependencies=[TokenDep],
             responses={422: {"description": "an invalid preset, key or value (`loc` names the grid key and the "
                                             "value's index), or more than 200 runs without `confirm`; nothing is "
                                             "stored or queued"}})
def create_sweep(ctx: CtxDep, session: SessionDep, body: SweepCreate) -> SweepPublic:
    """Validate every value of every list, store the sweep and its runs (all "queued"), and hand the first
    `max_concurrent` to the agents; the rest are released as runs end."""
    return store.create(ctx, session, body)


@router.get("", response_model=SweepsPublic, dependencies=[ReadDep])
def list_sweeps(session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> SweepsPublic:
    """Sweeps, newest first, with their runs counted per status."""
    return store.list_sweeps(session, limit, offset)


@router.get("/builtin", response_model=list[BuiltinSweep], dependencies=[ReadDep])
def builtin_sweeps() -> list[BuiltinSweep]:
    """Ready-made sweeps (e.g. "SQD grid (seed 003)"): each with the POST /sweeps body that launches it."""
    return BUILTIN


@router.get("/{sweep_id}", response_model=SweepPublic, dependencies=[ReadDep])
def get_sweep_route(sweep: SweepDep) -> SweepPublic:
    """The sweep with all its runs (run objects, plus each run's configuration, seed and whether it was released
    to the agents)."""
    return sweep


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[TokenDep])
def cancel_sweep(ctx: CtxDep, session: SessionDep, sweep: SummaryDep,
                 body: Annotated[SweepCancel | None, Body()] = None) -> SweepPublic:
    """Stop releasing runs; runs that never reached an agent are cancelled at once, running ones are cancelled
    by their agents (they read `cancelling` until then). Cancelling a finished sweep changes nothing."""
    store.cancel(ctx, sweep.id, (body or SweepCancel()).reason)
    return get_sweep(sweep.id, session)


@router.get("/{sweep_id}/results", response_model=SweepResults, dependencies=[ReadDep],
            responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
def sweep_results(session: SessionDep, sweep: SummaryDep,
                  format: Literal["json", "csv"] | None = None) -> SweepResults | Response:
    """One row per run: configuration values, seed, status, final and best Q / D / FID / modes covered, the
    turning-point epoch, alerts, time. `format=csv|json` answers a download."""
    res = results.results(session, sweep.id, sweep.dimensions)
    if format is None:
        return res
    body = results.to_csv(res) if format == "csv" else results.to_json(res)
    return Response(body, media_type="text/csv" if format == "csv" else "application/json", headers={
        "Content-Disposition": f'attachment; filename="sweep-{sweep.id}.{format}"'})


@router.get("/{sweep_id}/metrics", response_model=SweepSeries, dependencies=[ReadDep])
def sweep_metrics(session: SessionDep, sweep: SummaryDep,
                  keys: Annotated[str | None, Query(max_length=2000, description="comma-separated; default: "
                                                    "angle/G, angle/D, eval/quality, eval/diversity")] = None,
                  max_points: Annotated[int, Query(ge=1, le=10_000)] = 200) -> SweepSeries:
    """Every run's series at once, downsampled as GET /runs/{id}/metrics does."""
    wanted = [k for k in (p.strip() for p in (keys or "").split(",")) if k] or list(DEFAULT_SERIES_KEYS)
    return results.sweep_series(session, sweep.id, store.run_ids(session, sweep.id), wanted, max_points)


@router.get("/{sweep_id}/alerts", response_model=SweepAlerts, dependencies=[ReadDep])
def sweep_alerts(session: SessionDep, sweep: SummaryDep,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 2000) -> SweepAlerts:
    """The alerts of all the sweep's runs, newest first."""
    return results.sweep_alerts(session, sweep.id, limit)
