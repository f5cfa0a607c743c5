"""Consistent JSON errors: every failure answers `{"detail": ...}`; a database outage is a 503, never a 500, and a
value the database refuses (PostgreSQL: NUL in text) is a 422.

Error bodies may echo what the client sent (FastAPI's 422 `input`), so they are rendered to survive any input:
lone UTF-16 surrogates are escaped (ASCII JSON), NaN and ±inf become the contract strings, objects JSON does not
know become their text, and an input nested too deep to encode is left out rather than turning a 422 into a 500.
Encoding stays in C (json.dumps), since a rejected 100,000-point body is echoed whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from sqd.errors import ArtifactError, ConfigError
from sqd.server.store.db import jsonable

log = logging.getLogger(__name__)


def render_json(content: Any) -> bytes:
    options: dict[str, Any] = {"ensure_ascii": True, "allow_nan": False, "separators": (",", ":"), "default": str}
    try:
        return json.dumps(content, **options).encode()
    except ValueError:  # a non-finite float somewhere: replace them (at Python speed, so only then)
        return json.dumps(jsonable(content), **options).encode()


class ErrorResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return render_json(content)


def error(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> ErrorResponse:
    return ErrorResponse({"detail": detail}, status_code=status, headers=headers)


def validation_body(errors: list[dict[str, Any]]) -> bytes:
    try:
        return render_json({"detail": errors})
    except RecursionError:  # an input too deep to echo: the errors without their inputs
        return render_json({"detail": [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in errors]})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return Response(validation_body(list(exc.errors())), status_code=422, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if not is_body_allowed_for_status_code(exc.status_code):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> ErrorResponse:
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return error(503, f"database unavailable: {exc.orig}")

    @app.exception_handler(DataError)
    async def value_refused(request: Request, exc: DataError) -> ErrorResponse:
        # the request carried a value the database cannot hold (PostgreSQL: NUL in text, an int beyond its column)
        return error(422, [{"loc": ["request"], "msg": f"the database cannot store a value sent: {exc.orig}"}])

    @app.exception_handler(ArtifactError)
    async def artifact_missing(request: Request, exc: ArtifactError) -> ErrorResponse:
        return error(404, str(exc))

    @app.exception_handler(ConfigError)
    async def bad_config(request: Request, exc: ConfigError) -> ErrorResponse:
        return error(422, getattr(exc, "errors", None) or [{"loc": ["body"], "msg": str(exc)}])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> ErrorResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")
