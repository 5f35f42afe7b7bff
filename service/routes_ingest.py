"""Device endpoints: event batches and heartbeats (device token, own device and hive only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from beeaudio.collector.auth import Principal, require_device, require_own_device
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.ingest import parse_batch
from beeaudio.collector.schemas import BatchIn, BatchOut, HeartbeatIn
from beeaudio.collector.store.devices import DeviceIdentity, record_heartbeat
from beeaudio.collector.store.ingest import store_batch
from beeaudio.core import wire

router = APIRouter(prefix=wire.API_PREFIX, tags=["devices"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown token"},
    403: {"description": "the token is not this device's"},
    413: {"description": "too many events or too large a body"},
}


def _device(principal: Principal) -> DeviceIdentity:
    assert principal.device_id is not None and principal.hive_id is not None
    return DeviceIdentity(device_id=principal.device_id, hive_id=principal.hive_id)


@router.post("/events", response_model=BatchOut, responses=_ERRORS)
async def post_events(
    batch: BatchIn,
    principal: Principal = Depends(require_device),
    context: AppContext = Depends(get_context),
) -> BatchOut:
    """Store a batch of classification events. Idempotent by (device, event_id): re-sent events are
    counted as duplicates. The answer comes only after the batch is durably committed."""
    device = _device(principal)
    now_ms = context.clock_ms()
    checked = parse_batch(
        body=batch.model_dump(by_alias=True),
        device=device,
        max_events=context.settings.max_batch_events,
        future_tolerance_ms=int(context.settings.future_tolerance_seconds * 1000),
        now_ms=now_ms,
    )
    result = await run_in_threadpool(
        store_batch,
        engine=context.engine,
        device=device,
        batch_id=checked.batch_id,
        batch=checked.events,
        defaults=context.defaults,
        bucket_seconds=context.settings.bucket_seconds,
        webhook_urls=context.webhook_urls,
        now_ms=now_ms,
    )
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
    reason = wire.unclean_reason(payload)
    if reason:
        raise HTTPException(422, reason)
    await run_in_threadpool(
        record_heartbeat,
        engine=context.engine,
        device=_device(principal),
        payload=payload,
        now_ms=context.clock_ms(),
    )
    return {"device_id": device_id, "received": True}
