"""Device endpoints: event batches and heartbeats (device token, own device and hive only)."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from beeaudio.collector.auth import Principal, require_device, require_own_device
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.db import devices, heartbeats, write_transaction
from beeaudio.collector.ingest import DeviceIdentity, IngestError, parse_batch, store_batch
from beeaudio.collector.schemas import BatchIn, BatchOut, HeartbeatIn
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

router = APIRouter(prefix="/api/v1", tags=["devices"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown token"},
    403: {"description": "the token is not this device's"},
    413: {"description": "too many events or too large a body"},
}


def clean_json(value: Any) -> bool:
    """True when a JSON value can be stored by every database (no NUL, no NaN/Infinity)."""
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(clean_json(k) and clean_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(clean_json(v) for v in value)
    return True


@router.post("/events", response_model=BatchOut, responses=_ERRORS)
async def post_events(
    batch: BatchIn,
    principal: Principal = Depends(require_device),
    context: AppContext = Depends(get_context),
) -> BatchOut:
    """Store a batch of classification events. Idempotent by (device, event_id): re-sent events are
    counted as duplicates. The answer comes only after the batch is durably committed."""
    assert principal.device_id is not None and principal.hive_id is not None
    device = DeviceIdentity(device_id=principal.device_id, hive_id=principal.hive_id)
    body = batch.model_dump(by_alias=True)
    if not clean_json(body):
        raise HTTPException(422, "strings must not contain NUL and numbers must be finite")
    now_ms = context.clock_ms()
    try:
        batch_id, parsed = parse_batch(
            body=body,
            device=device,
            max_events=context.settings.max_batch_events,
            future_tolerance_ms=int(context.settings.future_tolerance_seconds * 1000),
            now_ms=now_ms,
        )
        result = await run_in_threadpool(
            store_batch,
            engine=context.engine,
            device=device,
            batch_id=batch_id,
            batch=parsed,
            defaults=context.defaults,
            bucket_seconds=context.settings.bucket_seconds,
            webhook_urls=context.webhook_urls,
            now_ms=now_ms,
        )
    except IngestError as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    return BatchOut(batch_id=result.batch_id, accepted=result.accepted, duplicates=result.duplicates)


@router.post("/devices/{device_id}/heartbeat", responses=_ERRORS)
async def post_heartbeat(
    device_id: str,
    heartbeat: HeartbeatIn,
    principal: Principal = Depends(require_device),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Device health: backlog, outbox depth, dropped readings, model, disk free, uptime, stage timings."""
    require_own_device(principal=principal, device_id=device_id)
    payload = heartbeat.model_dump(by_alias=True)
    if not clean_json(payload):
        raise HTTPException(422, "strings must not contain NUL and numbers must be finite")
    now_ms = context.clock_ms()

    def _store() -> None:
        with write_transaction(context.engine) as conn:
            conn.execute(
                sa.insert(heartbeats).values(
                    hive_id=principal.hive_id, device_id=device_id, received_ms=now_ms, payload=payload
                )
            )
            conn.execute(
                sa.update(devices)
                .where(devices.c.device_id == device_id)
                .values(last_heartbeat_ms=now_ms, heartbeat=payload)
            )

    await run_in_threadpool(_store)
    return {"device_id": device_id, "received": True}
