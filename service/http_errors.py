"""How the collector's errors become HTTP answers, in one place: a store refusal is its status with
``{"detail": "<the message>"}``, a request that fails validation a 422 with the per-field ``errors`` too,
and a database or disk that cannot take the request now a 503 with ``Retry-After`` (nothing was stored:
the device keeps its readings and sends them again).

:func:`error_responses` documents the same answers in the OpenAPI schema, so the schema and the answers
cannot drift apart (schemathesis holds them to each other).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from beeaudio.collector.schemas import ErrorOut
from beeaudio.collector.store.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    StoreError,
    TooLarge,
    Unavailable,
)
from beeaudio.core.wire import MAX_JSON_DEPTH

log = logging.getLogger(__name__)

#: The status of each kind of store refusal (checked in order; a subclass answers as its base).
STORE_STATUSES: tuple[tuple[type[StoreError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (Forbidden, 403),
    (TooLarge, 413),
    (Unavailable, 503),
)
#: A store error of a kind not listed above is a refusal all the same, not a server error.
DEFAULT_STATUS = 400
#: Seconds a client should wait before it tries again after a 503 (a full disk, a busy database).
RETRY_AFTER_SECONDS = 30
#: Disk-full errors of the file system (the data folder, an SQLite file).
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

#: What each documented refusal means, for the OpenAPI schema.
_MEANING = {
    401: "missing, unknown or revoked token",
    403: "the token may not do this",
    404: "no such hive, device or model",
    408: "the body did not arrive in time",
    409: "it exists already",
    410: "the model's file is missing from the data folder",
    413: "body, batch or upload over the limit",
    422: "the request breaks the contract; `detail` names the field",
    503: "the database or the disk cannot take it now; nothing was stored, retry after `Retry-After` s",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these refusals, plus the two every route can give (422: a parameter
    the screen refuses; 503: the database or the disk), as :func:`install_error_handlers` answers them."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 422, 503}):
        entry: dict[str, Any] = {"model": ErrorOut, "description": _MEANING[status]}
        if status == 503:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        out[status] = entry
    return out


def status_of(exc: StoreError) -> int:
    return next((status for kind, status in STORE_STATUSES if isinstance(exc, kind)), DEFAULT_STATUS)


def unavailable_response(detail: str, *, retry_after: int | None = RETRY_AFTER_SECONDS) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return JSONResponse(status_code=503, content={"detail": detail}, headers=headers)


def database_unavailable(exc: Exception) -> JSONResponse:
    """The answer to a database that failed on the request (full, read-only, locked, unreachable)."""
    text = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    why = text[0][:200] if text else type(exc).__name__
    log.error("database unavailable, answering 503: %s", why)
    return unavailable_response(f"the database cannot take this now ({why}); nothing was stored, retry later")


def disk_full(exc: OSError) -> bool:
    return exc.errno in _DISK_FULL


def _unparsable(exc: StarletteHTTPException) -> str:
    cause = exc.__cause__
    if isinstance(cause, RecursionError):  # the JSON parser ran out of stack on the nesting
        return f"body: nested deeper than {MAX_JSON_DEPTH} levels (too deep to parse)"
    if isinstance(cause, UnicodeDecodeError):
        return f"body: not UTF-8 text ({cause.reason} at byte {cause.start})"
    if cause is not None:
        return f"body: cannot be parsed ({type(cause).__name__})"
    return f"body: cannot be parsed ({exc.detail})"


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        msg = str(error.get("msg", "invalid"))
        # A screened body's message names the field itself ("body.name contains a NUL character").
        parts.append(msg if msg.startswith(where) else f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


def _clean_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The raw errors may hold the offending input (bytes, NaN ...) which JSON cannot always carry.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()[:50]
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on an app (the app factory calls this)."""

    @app.exception_handler(StoreError)
    async def _on_store_error(_request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, Unavailable):
            return unavailable_response(str(exc), retry_after=exc.retry_after)
        return JSONResponse(status_code=status_of(exc), content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": _validation_detail(exc), "errors": _clean_errors(exc)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_exception(_request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400:
            # Only FastAPI's and Starlette's body parsers answer 400 here ("There was an error parsing the
            # body", a malformed multipart form): a body that cannot be read is a 422 like a body that
            # breaks the contract, and says why.
            return JSONResponse(status_code=422, content={"detail": _unparsable(exc)})
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)

    # Errors of the database, not of the request: the disk is full, the file read-only, the server
    # unreachable or busy beyond the timeout. The request may well succeed later: 503 + Retry-After.
    @app.exception_handler(sa_exc.OperationalError)
    async def _on_operational(_request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        return database_unavailable(exc)

    @app.exception_handler(sa_exc.InterfaceError)
    async def _on_interface(_request: Request, exc: sa_exc.InterfaceError) -> JSONResponse:
        return database_unavailable(exc)

    @app.exception_handler(sa_exc.TimeoutError)
    async def _on_pool_timeout(_request: Request, exc: sa_exc.TimeoutError) -> JSONResponse:
        return database_unavailable(exc)

    @app.exception_handler(OSError)
    async def _on_os_error(_request: Request, exc: OSError) -> JSONResponse:
        if disk_full(exc):
            log.error("disk full or read-only, answering 503: %s", exc)
            return unavailable_response(f"the collector's disk cannot take this now ({exc.strerror})")
        raise exc
