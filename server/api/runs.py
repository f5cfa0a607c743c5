"""/runs: list (filter, sort, views), get, launch or create, edit, cancel, archive, delete / restore / erase, gc."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

from sqd.server import launch, lifecycle
from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, TokenDep
from sqd.server.schemas import (
    CancelBody,
    GcBody,
    GcResult,
    RunCreate,
    RunErased,
    RunFilter,
    RunPublic,
    RunsPublic,
    RunUpdate,
)
from sqd.server.store import runs_store
from sqd.server.store.filter_syntax import FilterError

router = APIRouter(prefix="/runs", tags=["runs"])

BAD_FILTER: dict[int | str, dict[str, Any]] = {422: {"description": (
    "a filter or sort that does not parse: `detail[0]` names the token and its position (`loc` = "
    '["query", "filter"] or ["query", "sort"])')}}


@router.get("", response_model=RunsPublic, dependencies=[ReadDep], responses=BAD_FILTER)
def list_runs(session: SessionDep, f: Annotated[RunFilter, Query()]) -> RunsPublic:
    """Runs, newest first (or by `sort`), in a `view` (default: neither archived nor deleted). Filter with the
    `filter` language (status, preset, tag, config values, last metric values), or by status (repeatable), preset,
    kind or a name/id substring `q`; all given conditions apply together."""
    try:
        return runs_store.list_runs(session, f)
    except FilterError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["query", exc.param], "msg": str(exc), "type": "filter_syntax", "token": exc.token,
            "position": exc.position}]) from exc


@router.post("", response_model=RunPublic, status_code=status.HTTP_202_ACCEPTED, dependencies=[TokenDep],
             responses={201: {"model": RunPublic, "description": "external run created"},
                        202: {"description": "launch accepted: run queued, request sent to the agents"},
                        422: {"description": "invalid preset or overrides; `loc` names the field"}})
def create_run(ctx: CtxDep, session: SessionDep, body: RunCreate, response: Response) -> RunPublic:
    """With `preset`: validate preset + overrides and launch it (202). Without: an external run (201) that a script
    feeds through POST /runs/{id}/metrics or the Monitor feeds through the bus."""
    if body.preset is None:
        response.status_code = status.HTTP_201_CREATED
        return launch.create_external(ctx, session, body)
    return launch.launch(ctx, session, body)


@router.get("/{run_id}", response_model=RunPublic, dependencies=[ReadDep])
def get_run(run: RunDep) -> RunPublic:
    return run


@router.post("/{run_id}/cancel", response_model=RunPublic, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[TokenDep])
def cancel_run(ctx: CtxDep, session: SessionDep, run: RunDep,
               body: Annotated[CancelBody | None, Body()] = None) -> RunPublic:
    """Ask the run's agent to stop it: the run reads `cancelling` until the agent reports it `cancelled` (an
    external run, which has no agent, is cancelled at once). Cancelling a finished run changes nothing."""
    return launch.cancel(ctx, session, run, (body or CancelBody()).reason)


@router.patch("/{run_id}", response_model=RunPublic, dependencies=[TokenDep],
              responses={409: {"description": "the run's final status stands, or its agent still owns it"}})
def update_run(ctx: CtxDep, session: SessionDep, run: RunDep, body: RunUpdate) -> RunPublic:
    """Rename, end (`status` finished / failed with an optional `error`), tag (the list replaces the old one),
    annotate (`notes`) or archive (`archived`) a run. Ending a run is for runs no agent owns (a script's or a
    Monitor's); a launched run is stopped with POST /runs/{id}/cancel."""
    return lifecycle.update(ctx, session, run, body)


@router.delete("/{run_id}", response_model=RunPublic | RunErased, dependencies=[TokenDep],
               responses={200: {"description": "soft delete: the run (with `deleted_at`); with hard=true: what was "
                                               "erased"},
                          409: {"description": "a launched run its agent still runs: cancel it first"}})
def delete_run(ctx: CtxDep, session: SessionDep, run: RunDep,
               hard: Annotated[bool, Query(description="erase the run and all its data now (cannot be undone)")]
               = False) -> RunPublic | RunErased:
    """Without `hard`: a soft delete — the run leaves every list but keeps its data, and POST /runs/{id}/restore
    brings it back until `gc` erases it. With `hard=true`: erase it now — points, rollups, series, evaluations,
    checkpoints, alerts and its files in the artifact store."""
    if hard:
        return lifecycle.erase(ctx, session, run)
    return lifecycle.set_deleted(ctx, session, run, True)


@router.post("/{run_id}/restore", response_model=RunPublic, dependencies=[TokenDep])
def restore_run(ctx: CtxDep, session: SessionDep, run: RunDep) -> RunPublic:
    """Undo a soft delete (a run that was never deleted is returned as it is)."""
    return lifecycle.set_deleted(ctx, session, run, False)


@router.post("/gc", response_model=GcResult, dependencies=[TokenDep])
def gc_runs(ctx: CtxDep, session: SessionDep, body: Annotated[GcBody | None, Body()] = None) -> GcResult:
    """Erase for good every soft-deleted run (deleted at least `older_than_s` seconds ago)."""
    return lifecycle.gc(ctx, session, (body or GcBody()).older_than_s)
