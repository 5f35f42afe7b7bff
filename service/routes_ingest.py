"""Device endpoints: event batches and heartbeats (device token, own device and hive only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends
from fastapi.concurrency import run_in_threadpool

from beeaudio.collector.auth import Principal, require_device, require_own_device
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.http_errors import error_responses
from beeaudio.collector.intake import finish_walk, take_batch, take_heartbeat
from beeaudio.collector.schemas import BatchIn, BatchOut, HeartbeatIn, HeartbeatOut
from beeaudio.collector.store.devices import DeviceIdentity
from beeaudio.core import wire

router = APIRouter(prefix=wire.API_PREFIX, tags=["devices"])

_ERRORS = error_responses(401, 403, 404, 408, 413, 422)


def _device(principal: Principal) -> DeviceIdentity:
    assert principal.device_id is not None and principal.hive_id is not None
    return DeviceIdentity(device_id=principal.device_id, hive_id=principal.hive_id)


@router.post("/events", response_model=BatchOut, responses=_ERRORS)
async def post_events(
    batch: BatchIn,
    background: BackgroundTasks,
    principal: Principal = Depends(require_device),
    context: AppContext = Depends(get_context),
) -> BatchOut:
    """Store a batch of classification events. Idempotent by (device, event_id): re-sent events are
    counted as duplicates. The answer comes only after the batch is durably committed; a 4xx means
    nothing of the batch was stored, a 503 (with ``Retry-After``) that it may be sent again later."""
    device = _device(principal)
    now_ms = context.clock_ms()
    result = await run_in_threadpool(
        take_batch, context=context, device=device, body=batch.model_dump(by_alias=True), now_ms=now_ms
    )
    if result.unfinished:
        background.add_task(finish_walk, context=context, hive_id=device.hive_id, now_ms=now_ms)
    return BatchOut(batch_id=result.batch_id, accepted=result.accepted, duplicates=result.duplicates)


@router.post("/devices/{device_id}/heartbeat", response_model=HeartbeatOut, responses=_ERRORS)
async def post_heartbeat(
    device_id: str,
    heartbeat: HeartbeatIn,
    principal: Principal = Depends(require_device),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Device health: backlog, outbox depth, dropped readings, model, disk free, uptime, stage timings. At
    most ``BEEAUDIO_MAX_HEARTBEAT_BYTES`` (413 above); the latest is kept with the device, and the last
    ``BEEAUDIO_HEARTBEAT_HISTORY`` of them in the history."""
    require_own_device(principal=principal, device_id=device_id)
    await run_in_threadpool(
        take_heartbeat,
        context=context,
        device=_device(principal),
        heartbeat=heartbeat,
        now_ms=context.clock_ms(),
    )
    return {"device_id": device_id, "received": True}
