"""Read endpoints: hives and their state, history, raw events, alerts (read or admin token); health."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from beeaudio import __version__
from beeaudio.collector.auth import Principal, require_reader
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.http_errors import error_responses
from beeaudio.collector.migrate import current_revision
from beeaudio.collector.schemas import AlertOut, EventPageOut, HealthOut, HistoryOut, HiveStatus
from beeaudio.collector.store.alerts import alert_list
from beeaudio.collector.store.queries import all_statuses, event_page, history, hive_status, parse_cursor
from beeaudio.collector.timeutil import iso_ms, to_ms
from beeaudio.core.wire import API_PREFIX, EARLIEST_WINDOW, EventError, parse_utc

router = APIRouter(prefix=API_PREFIX, tags=["read"])

#: Times asked for must be in the years readings can have (the contract's earliest window on).
EARLIEST = EARLIEST_WINDOW
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
#: At most this many history buckets per request.
MAX_HISTORY_BUCKETS = 10_000
DEFAULT_HISTORY_SECONDS = 24 * 3600


def _time_param(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        moment = parse_utc(value)
    except (EventError, OverflowError) as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc
    if not EARLIEST <= moment <= LATEST:
        raise HTTPException(422, f"{name}: {value!r} is outside the years {EARLIEST.year}..{LATEST.year - 1}")
    return to_ms(moment)


_READ_ERRORS = error_responses(401, 403, 404, 422)


@router.get("/hives", response_model=list[HiveStatus], responses=error_responses(401, 403))
async def get_hives(
    _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> list[dict[str, Any]]:
    """Every hive with its current state."""
    return await run_in_threadpool(
        all_statuses, engine=context.engine, defaults=context.defaults, now_ms=context.clock_ms()
    )


async def _status(context: AppContext, hive_id: str) -> dict[str, Any]:
    return await run_in_threadpool(
        hive_status,
        engine=context.engine,
        hive_id=hive_id,
        defaults=context.defaults,
        now_ms=context.clock_ms(),
    )


@router.get("/hives/{hive_id}", response_model=HiveStatus, responses=_READ_ERRORS)
async def get_hive(
    hive_id: str, _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    return await _status(context, hive_id)


@router.get("/hives/{hive_id}/status", response_model=HiveStatus, responses=_READ_ERRORS)
async def get_status(
    hive_id: str, _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """The hive's state: one stored row, plus ``offline`` decided now from when data last arrived. An
    ``unknown`` hive says why (``reason``, ``reason_text``); ``window`` counts its recent readings by kind."""
    return await _status(context, hive_id)


@router.get("/hives/{hive_id}/history", response_model=HistoryOut, responses=_READ_ERRORS)
async def get_history(
    hive_id: str,
    from_: str | None = Query(default=None, alias="from", description="ISO 8601; default: 24 h before `to`"),
    to: str | None = Query(default=None, description="ISO 8601; default: now"),
    bucket: int | None = Query(default=None, ge=1, le=366 * 86400, description="seconds per bucket"),
    _: Principal = Depends(require_reader),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Per-bucket label counts, mean probabilities and mean swarm score, aggregated from the rollups.

    ``bucket`` is rounded up to a multiple of the rollup width (``BEEAUDIO_BUCKET_SECONDS``); by default
    it is chosen so that the range gives at most ~500 buckets."""
    base = context.settings.bucket_seconds
    end_ms = _time_param("to", to)
    if end_ms is None:
        end_ms = context.clock_ms()
    start_ms = _time_param("from", from_)
    if start_ms is None:
        start_ms = end_ms - DEFAULT_HISTORY_SECONDS * 1000
    if start_ms >= end_ms:
        raise HTTPException(422, "from must be before to")
    span_s = math.ceil((end_ms - start_ms) / 1000)
    width = bucket if bucket is not None else max(math.ceil(span_s / 500), base)
    width = math.ceil(width / base) * base
    if span_s / width > MAX_HISTORY_BUCKETS:
        raise HTTPException(422, f"{span_s / width:.0f} buckets asked for; at most {MAX_HISTORY_BUCKETS}")
    # Align to the bucket grid so a bucket's start is the same whatever range is asked for.
    start_s = (start_ms // 1000) // width * width
    end_s = math.ceil(end_ms / 1000 / width) * width

    buckets = await run_in_threadpool(
        history, engine=context.engine, hive_id=hive_id, start_s=start_s, end_s=end_s, bucket_seconds=width
    )
    return {
        "hive_id": hive_id,
        "bucket_seconds": width,
        "start": iso_ms(start_s * 1000),
        "end": iso_ms(end_s * 1000),
        "buckets": buckets,
    }


# exclude_unset: a v1 event keeps its v1 shape (no quality, novelty), an event without extra has none.
@router.get(
    "/hives/{hive_id}/events",
    response_model=EventPageOut,
    response_model_exclude_unset=True,
    responses=_READ_ERRORS,
)
async def get_events(
    hive_id: str,
    limit: int = Query(default=100, ge=1, le=1000),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    _: Principal = Depends(require_reader),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Raw events, newest window first, paginated with ``next_cursor``."""
    position = None
    if cursor is not None:
        position = parse_cursor(cursor)
        if position is None:
            raise HTTPException(422, f"cursor: {cursor!r} is not one this collector handed out")

    page = await run_in_threadpool(
        event_page, engine=context.engine, hive_id=hive_id, limit=limit, cursor=position
    )
    return {"hive_id": hive_id, "events": page.events, "next_cursor": page.next_cursor}


@router.get("/alerts", response_model=list[AlertOut], responses=error_responses(401, 403, 422))
async def get_alerts(
    hive_id: str | None = None,
    since: str | None = Query(default=None, description="ISO 8601; alerts at or after it, oldest first"),
    limit: int = Query(default=100, ge=1, le=1000),
    _: Principal = Depends(require_reader),
    context: AppContext = Depends(get_context),
) -> list[dict[str, Any]]:
    """Alerts (swarm_started, swarm_ended, hive_offline, hive_back, microphone_silent, microphone_back);
    without ``since``, the latest ones."""
    since_ms = _time_param("since", since)
    return await run_in_threadpool(
        alert_list, engine=context.engine, hive_id=hive_id, since_ms=since_ms, limit=limit
    )


@router.get(
    "/health",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "database unreachable"}, **error_responses(422)},
)
async def get_health(context: AppContext = Depends(get_context)) -> Any:
    """Liveness and database reachability (no auth)."""

    def _check() -> str | None:
        return current_revision(engine=context.engine)

    try:
        revision = await run_in_threadpool(_check)
    except Exception as exc:  # any database failure is reported, not raised
        return JSONResponse(
            status_code=503,
            content={"status": "error", "db": f"error: {type(exc).__name__}", "version": __version__},
        )
    return {"status": "ok", "db": "ok", "version": __version__, "schema_revision": revision}
