"""/runs: list, get, launch or create, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from sqd.server import launch
from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, TokenDep
from sqd.server.schemas import CancelBody, RunCreate, RunFilter, RunPublic, RunsPublic
from sqd.server.store import runs_store

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", response_model=RunsPublic, dependencies=[ReadDep])
def list_runs(session: SessionDep, f: Annotated[RunFilter, Query()]) -> RunsPublic:
    """Runs, newest first; filter by status (repeatable), preset, kind or a name/id substring `q`."""
    return runs_store.list_runs(session, f)


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
