"""Admin endpoints: hives, their state parameters, devices and device tokens (admin token)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from beeaudio.collector.auth import Principal, require_admin, require_reader
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.http_errors import error_responses
from beeaudio.collector.schemas import (
    DeviceIn,
    DeviceOut,
    DeviceStatusOut,
    HiveIn,
    HiveStatus,
    ParamsIn,
    RevokedOut,
)
from beeaudio.collector.store import devices, hives
from beeaudio.core.wire import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["admin"])


@router.post(
    "/hives", status_code=201, response_model=HiveStatus, responses=error_responses(401, 403, 409, 413, 422)
)
async def post_hive(
    body: HiveIn, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """Create a hive (``hive_id`` generated when null); 409 if it exists."""
    return await run_in_threadpool(
        hives.create_hive,
        engine=context.engine,
        defaults=context.defaults,
        name=body.name,
        hive_id=body.hive_id,
        overrides=body.state_params,
        now_ms=context.clock_ms(),
    )


@router.put(
    "/hives/{hive_id}/params", response_model=HiveStatus, responses=error_responses(401, 403, 404, 413, 422)
)
async def put_params(
    hive_id: str,
    body: ParamsIn,
    _: Principal = Depends(require_admin),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Replace a hive's state-parameter overrides and re-derive its state history from the rollups."""
    return await run_in_threadpool(
        hives.replace_params,
        engine=context.engine,
        defaults=context.defaults,
        hive_id=hive_id,
        overrides=body.state_params,
        webhook_urls=context.webhook_urls,
        now_ms=context.clock_ms(),
    )


@router.post(
    "/hives/{hive_id}/devices",
    status_code=201,
    response_model=DeviceOut,
    responses=error_responses(401, 403, 404, 409, 413, 422),
)
async def post_device(
    hive_id: str,
    body: DeviceIn,
    _: Principal = Depends(require_admin),
    context: AppContext = Depends(get_context),
) -> dict[str, str]:
    """Register a device of a hive; the answer holds its token, shown this once."""
    device = await run_in_threadpool(
        devices.create_device,
        engine=context.engine,
        hive_id=hive_id,
        device_id=body.device_id,
        now_ms=context.clock_ms(),
    )
    return asdict(device)


@router.get(
    "/hives/{hive_id}/devices", response_model=list[DeviceStatusOut], responses=error_responses(401, 403, 422)
)
async def get_devices(
    hive_id: str, _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> list[dict[str, Any]]:
    """The hive's devices with their last heartbeat (backlog, outbox depth, disk free ...)."""
    return await run_in_threadpool(devices.list_devices, engine=context.engine, hive_id=hive_id)


@router.delete(
    "/devices/{device_id}/token", response_model=RevokedOut, responses=error_responses(401, 403, 404, 422)
)
async def delete_device_token(
    device_id: str, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """Revoke a device's token: its next request gets 401. Its stored readings stay."""
    await run_in_threadpool(
        devices.revoke_device, engine=context.engine, device_id=device_id, now_ms=context.clock_ms()
    )
    return {"device_id": device_id, "revoked": True}


@router.post(
    "/devices/{device_id}/token",
    response_model=DeviceOut,
    responses=error_responses(401, 403, 404, 413, 422),
)
async def post_device_token(
    device_id: str, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, str]:
    """Rotate a device's token: the answer holds the new one, shown this once; the old one gets 401 from
    now on. A revoked device is admitted again with it."""
    device = await run_in_threadpool(
        devices.rotate_device_token, engine=context.engine, device_id=device_id, now_ms=context.clock_ms()
    )
    return asdict(device)
