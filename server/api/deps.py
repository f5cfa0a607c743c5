"""Request-scoped plumbing as `Annotated` aliases, so route signatures read like documentation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from sqd.server.auth import reads_are_open, token_is_valid
from sqd.server.context import ServerContext
from sqd.server.schemas import RunPublic
from sqd.server.store import runs_store

bearer = HTTPBearer(auto_error=False, description="a token from `sqd token create`, or SQD_TOKEN")


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[ServerContext, Depends(get_ctx)]


def get_session(ctx: CtxDep) -> Iterator[Session]:
    """A session that commits when the route returns; an exception rolls it back (on close). Services that must
    commit before publishing to the bus commit themselves."""
    with ctx.sessions() as session:
        yield session
        session.commit()


SessionDep = Annotated[Session, Depends(get_session)]


def _check(ctx: ServerContext, secret: str | None) -> None:
    if secret is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    with ctx.sessions() as session:  # its own short session: a long SSE stream must not hold a connection
        valid = token_is_valid(session, ctx.settings, secret)
    if not valid:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})


def require_token(ctx: CtxDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Writes: a bearer token in the Authorization header, always."""
    _check(ctx, None if credentials is None else credentials.credentials)


def require_read(ctx: CtxDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                 access_token: Annotated[str | None, Query(max_length=200,
                                                           description="token for EventSource / <img>")] = None,
                 ) -> None:
    """Reads: open when the server is bound to localhost (configurable), else a token (header or ?access_token=)."""
    if reads_are_open(ctx.settings):
        return
    _check(ctx, credentials.credentials if credentials is not None else access_token)


TokenDep = Depends(require_token)
ReadDep = Depends(require_read)

RunId = Annotated[str, Path(min_length=1, max_length=64, description="run id")]


def get_run(run_id: RunId, session: SessionDep) -> RunPublic:
    run = runs_store.get_run(session, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} not found")
    return run


RunDep = Annotated[RunPublic, Depends(get_run)]
