"""How the collector's errors become HTTP answers, in one place: a store refusal is its status with
``{"detail": "<the message>"}``, a request that fails validation a 422 with the per-field ``errors`` too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from beeaudio.collector.store.errors import Conflict, Forbidden, Invalid, NotFound, StoreError, TooLarge

#: The status of each kind of store refusal (checked in order; a subclass answers as its base).
STORE_STATUSES: tuple[tuple[type[StoreError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (Forbidden, 403),
    (TooLarge, 413),
)
#: A store error of a kind not listed above is a refusal all the same, not a server error.
DEFAULT_STATUS = 400


def status_of(exc: StoreError) -> int:
    return next((status for kind, status in STORE_STATUSES if isinstance(exc, kind)), DEFAULT_STATUS)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
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
        return JSONResponse(status_code=status_of(exc), content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": _validation_detail(exc), "errors": _clean_errors(exc)}
        )
