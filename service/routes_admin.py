"""Admin endpoints: hives, their state parameters, devices and device tokens (admin token)."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from beeaudio.collector.auth import Principal, new_device_token, require_admin, require_reader, token_digest
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.db import (
    devices,
    hive_state,
    hive_steps,
    hives,
    lock_clause,
    read_transaction,
    rollups,
    write_transaction,
)
from beeaudio.collector.hive_state import apply_step, new_state_row, recompute_steps
from beeaudio.collector.queries import hive_status
from beeaudio.collector.schemas import DeviceIn, DeviceOut, HiveIn, HiveStatus, ParamsIn
from beeaudio.collector.state import ParamsError, StateParams
from beeaudio.collector.timeutil import iso_ms
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError

router = APIRouter(prefix="/api/v1", tags=["admin"])


def create_hive(
    *, context: AppContext, name: str, hive_id: str | None, state_params: dict[str, Any] | None
) -> dict[str, Any]:
    """Insert a hive and its state row; raises HTTPException 409/422. Also used by the CLI."""
    overrides = dict(state_params or {})
    try:
        context.defaults.with_overrides(overrides)
    except ParamsError as exc:
        raise HTTPException(422, str(exc)) from exc
    hive_id = hive_id or f"hive-{secrets.token_hex(4)}"
    now_ms = context.clock_ms()
    try:
        with write_transaction(context.engine) as conn:
            conn.execute(
                sa.insert(hives).values(hive_id=hive_id, name=name, created_ms=now_ms, params=overrides)
            )
            conn.execute(sa.insert(hive_state).values(**new_state_row(hive_id=hive_id, now_ms=now_ms)))
    except IntegrityError as exc:
        raise HTTPException(409, f"hive {hive_id!r} already exists") from exc
    with read_transaction(context.engine) as conn:
        status = hive_status(conn, hive_id=hive_id, defaults=context.defaults, now_ms=now_ms)
    assert status is not None
    return status


def create_device(*, context: AppContext, hive_id: str, device_id: str | None) -> dict[str, str]:
    """Register a device and issue its token (returned here only; the database keeps its hash)."""
    device_id = device_id or f"dev-{secrets.token_hex(4)}"
    token = new_device_token()
    with write_transaction(context.engine) as conn:
        if conn.execute(sa.select(hives.c.hive_id).where(hives.c.hive_id == hive_id)).first() is None:
            raise HTTPException(404, f"hive {hive_id!r} does not exist")
        if conn.execute(sa.select(devices.c.device_id).where(devices.c.device_id == device_id)).first():
            raise HTTPException(409, f"device {device_id!r} already exists")
        conn.execute(
            sa.insert(devices).values(
                device_id=device_id,
                hive_id=hive_id,
                token_sha256=token_digest(token),
                created_ms=context.clock_ms(),
            )
        )
    return {"device_id": device_id, "hive_id": hive_id, "token": token}


def revoke_device(*, context: AppContext, device_id: str) -> dict[str, Any]:
    with write_transaction(context.engine) as conn:
        result = conn.execute(
            sa.update(devices)
            .where(devices.c.device_id == device_id)
            .values(token_sha256=None, revoked_ms=context.clock_ms())
        )
    if result.rowcount != 1:
        raise HTTPException(404, f"device {device_id!r} does not exist")
    return {"device_id": device_id, "revoked": True}


def list_devices(*, context: AppContext, hive_id: str | None) -> list[dict[str, Any]]:
    query = sa.select(devices).order_by(devices.c.device_id)
    if hive_id is not None:
        query = query.where(devices.c.hive_id == hive_id)
    with read_transaction(context.engine) as conn:
        rows = conn.execute(query).all()
    return [
        {
            "device_id": row.device_id,
            "hive_id": row.hive_id,
            "created_at": iso_ms(row.created_ms),
            "revoked_at": iso_ms(row.revoked_ms),
            "last_seen": iso_ms(row.last_seen_ms),
            "last_heartbeat": iso_ms(row.last_heartbeat_ms),
            "heartbeat": row.heartbeat,
        }
        for row in rows
    ]


@router.post("/hives", status_code=201, response_model=HiveStatus)
async def post_hive(
    body: HiveIn, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """Create a hive (``hive_id`` generated when null); 409 if it exists."""
    return await run_in_threadpool(
        create_hive, context=context, name=body.name, hive_id=body.hive_id, state_params=body.state_params
    )


@router.put("/hives/{hive_id}/params", response_model=HiveStatus)
async def put_params(
    hive_id: str,
    body: ParamsIn,
    _: Principal = Depends(require_admin),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Replace a hive's state-parameter overrides and re-derive its state history from the rollups."""
    try:
        params = context.defaults.with_overrides(body.state_params)
    except ParamsError as exc:
        raise HTTPException(422, str(exc)) from exc
    return await run_in_threadpool(
        _replace_params, context=context, hive_id=hive_id, overrides=dict(body.state_params), params=params
    )


def _replace_params(
    *, context: AppContext, hive_id: str, overrides: dict[str, Any], params: StateParams
) -> dict[str, Any]:
    now_ms = context.clock_ms()
    with write_transaction(context.engine) as conn:
        query = sa.select(hive_state).where(hive_state.c.hive_id == hive_id)
        if lock_clause(conn):
            query = query.with_for_update()
        current = conn.execute(query).first()
        if current is None:
            raise HTTPException(404, f"hive {hive_id!r} does not exist")
        conn.execute(sa.update(hives).where(hives.c.hive_id == hive_id).values(params=overrides))
        conn.execute(sa.delete(hive_steps).where(hive_steps.c.hive_id == hive_id))
        first, last = conn.execute(
            sa.select(sa.func.min(rollups.c.bucket_start), sa.func.max(rollups.c.bucket_start)).where(
                rollups.c.hive_id == hive_id
            )
        ).one()
        if first is not None:
            step = recompute_steps(
                conn, hive_id=hive_id, first_bucket=first, last_touched=last, params=params
            )
            if step is not None:
                values = apply_step(
                    conn,
                    hive_id=hive_id,
                    step=step,
                    previous_state=current.state,
                    params=params,
                    webhook_urls=context.webhook_urls,
                    now_ms=now_ms,
                )
                conn.execute(
                    sa.update(hive_state)
                    .where(hive_state.c.hive_id == hive_id)
                    .values(updated_ms=now_ms, **values)
                )
        status = hive_status(conn, hive_id=hive_id, defaults=context.defaults, now_ms=now_ms)
    assert status is not None
    return status


@router.post("/hives/{hive_id}/devices", status_code=201, response_model=DeviceOut)
async def post_device(
    hive_id: str,
    body: DeviceIn,
    _: Principal = Depends(require_admin),
    context: AppContext = Depends(get_context),
) -> dict[str, str]:
    """Register a device of a hive; the answer holds its token, shown this once."""
    return await run_in_threadpool(create_device, context=context, hive_id=hive_id, device_id=body.device_id)


@router.get("/hives/{hive_id}/devices")
async def get_devices(
    hive_id: str, _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> list[dict[str, Any]]:
    """The hive's devices with their last heartbeat (backlog, outbox depth, disk free ...)."""
    return await run_in_threadpool(list_devices, context=context, hive_id=hive_id)


@router.delete("/devices/{device_id}/token")
async def delete_device_token(
    device_id: str, _: Principal = Depends(require_admin), context: AppContext = Depends(get_context)
) -> dict[str, Any]:
    """Revoke a device's token: its next request gets 401. Its stored readings stay."""
    return await run_in_threadpool(revoke_device, context=context, device_id=device_id)
