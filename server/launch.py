"""Launching, creating and cancelling runs: the database row first (committed), then the request on `control`."""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from sqd.bus import CONTROL
from sqd.errors import BusError, ConfigError
from sqd.protocol import TERMINAL_STATUSES, CancelRequest, LaunchRequest, new_id
from sqd.server import live
from sqd.server.context import ServerContext
from sqd.server.schemas import PresetPublic, RunCreate, RunPublic
from sqd.server.store import runs_store
from sqd.server.sweeps import queue as sweep_queue
from sqd.wire import encode


def _presets() -> Any:
    """sqd.presets, imported on use: it belongs to the GAN zoo and imports no torch, but may be absent."""
    try:
        return importlib.import_module("sqd.presets")
    except ImportError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"presets are not available: {exc}") from exc


def list_presets() -> list[PresetPublic]:
    return [PresetPublic.model_validate(p, from_attributes=True) for p in _presets().list_presets()]


def config_errors(exc: ConfigError) -> list[dict[str, Any]]:
    """422 detail: the error's own list when it has one (each naming the field), else one entry."""
    errors = getattr(exc, "errors", None) or [{"loc": [], "msg": str(exc)}]
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", [])]
        where = ["body", *loc] if loc[:1] in (["preset"], ["overrides"]) else ["body", "overrides", *loc]
        out.append({"loc": where, "msg": e.get("msg", str(exc))})
    return out


def resolve(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    presets = _presets()
    names = [p.name for p in presets.list_presets()]
    if preset not in names:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [
            {"loc": ["body", "preset"], "msg": f"unknown preset {preset!r}; choose one of {', '.join(names)}"}])
    try:
        config = presets.resolve_config(preset, overrides)
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, config_errors(exc)) from exc
    dumped: dict[str, Any] = config.model_dump(mode="json")
    return dumped


def notify(ctx: ServerContext, run: RunPublic) -> None:
    """Tell live clients about a status change made here rather than by ingest (after the commit)."""
    live.publish(ctx.bus, ctx.live_key, [live.LiveEvent("run", run.id, run.model_dump())])


def _publish(ctx: ServerContext, event: LaunchRequest | CancelRequest) -> None:
    try:
        ctx.bus.publish(CONTROL, [event])
    except BusError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the bus is unavailable: {exc}") from exc


def create_external(ctx: ServerContext, session: Session, body: RunCreate) -> RunPublic:
    if body.id is not None and runs_store.run_exists(session, body.id):
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {body.id!r} already exists")
    run = runs_store.create_run(session, name=body.name, kind="external", status="running", config=body.config,
                                steps=body.steps, run_id=body.id, tags=body.tags, notes=body.notes,
                                started_at=body.started_at)
    session.commit()
    notify(ctx, run)
    return run


def launch(ctx: ServerContext, session: Session, body: RunCreate) -> RunPublic:
    """Validate preset + overrides (422 naming the field), store the queued run, then ask an agent to start it."""
    assert body.preset is not None
    if body.id is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["body", "id"], "msg": "a launched run gets its id from the server"}])
    config = resolve(body.preset, body.overrides)
    request = LaunchRequest(run_id=new_id(), preset=body.preset, overrides=body.overrides,
                            name=body.name or body.preset, steps=body.steps)
    try:
        encode(request)  # what the bus cannot carry (an int beyond 64 bits) is refused before a row exists
    except BusError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["body", "overrides"], "msg": f"cannot be sent to a trainer agent ({exc})"}],
                            ) from exc
    run = runs_store.create_run(session, name=request.name, kind="launched", status="queued", preset=body.preset,
                                config=config, steps=body.steps, run_id=request.run_id, tags=body.tags,
                                notes=body.notes)
    session.commit()  # the row exists before any agent can report on it
    try:
        _publish(ctx, request)
    except HTTPException as exc:
        runs_store.fail_run(session, run.id, f"launch request not sent: {exc.detail}")
        session.commit()
        raise
    notify(ctx, run)
    return run


def cancel(ctx: ServerContext, session: Session, run: RunPublic, reason: str) -> RunPublic:
    if run.kind == "launched" and run.status not in TERMINAL_STATUSES:
        _publish(ctx, CancelRequest(run_id=run.id, reason=reason))
    # a sweep's run still waiting behind its cap has no agent to confirm the cancel
    held = run.sweep_id is not None and sweep_queue.is_held(session, run.id)
    updated = runs_store.mark_cancelled(session, run.id, at_once=held)
    assert updated is not None
    session.commit()
    notify(ctx, updated)
    return updated
