"""Devices: registration with a token (kept only as its hash), revocation and rotation, the token lookup
behind auth, the device's hive, heartbeats (the latest, and a bounded history) and the listing with each
device's last heartbeat."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from beeaudio.collector.db import devices, heartbeats, hives, read_transaction, write_transaction
from beeaudio.collector.store.errors import Conflict, NotFound
from beeaudio.collector.store.queries import readable_json
from beeaudio.collector.timeutil import iso_ms
from beeaudio.collector.tokens import new_device_token, token_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    hive_id: str


@dataclass(frozen=True)
class NewDevice:
    """A registered device and its token: the only time the token is known to anyone but the device."""

    device_id: str
    hive_id: str
    token: str


@dataclass(frozen=True)
class TokenOwner:
    """The device a (not revoked) token digest belongs to."""

    device_id: str
    hive_id: str
    token_sha256: str


def create_device(*, engine: Engine, hive_id: str, device_id: str | None, now_ms: int) -> NewDevice:
    """Register a device of a hive (``device_id`` generated when None) and issue its token, of which only
    the digest is stored; :class:`NotFound` for an unknown hive, :class:`Conflict` for a device id in use."""
    device_id = device_id or f"dev-{secrets.token_hex(4)}"
    token = new_device_token()
    with write_transaction(engine) as conn:
        if conn.execute(sa.select(hives.c.hive_id).where(hives.c.hive_id == hive_id)).first() is None:
            raise NotFound(f"hive {hive_id!r} does not exist")
        if conn.execute(sa.select(devices.c.device_id).where(devices.c.device_id == device_id)).first():
            raise Conflict(f"device {device_id!r} already exists")
        conn.execute(
            sa.insert(devices).values(
                device_id=device_id, hive_id=hive_id, token_sha256=token_digest(token), created_ms=now_ms
            )
        )
    return NewDevice(device_id=device_id, hive_id=hive_id, token=token)


def revoke_device(*, engine: Engine, device_id: str, now_ms: int) -> None:
    """Forget the device's token digest (its readings stay); :class:`NotFound` for an unknown device."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            sa.update(devices)
            .where(devices.c.device_id == device_id)
            .values(token_sha256=None, revoked_ms=now_ms)
        )
    if result.rowcount != 1:
        raise NotFound(f"device {device_id!r} does not exist")


def token_owner(*, engine: Engine, token_sha256: str) -> TokenOwner | None:
    with read_transaction(engine) as conn:
        row = conn.execute(
            sa.select(devices.c.device_id, devices.c.hive_id, devices.c.token_sha256).where(
                devices.c.token_sha256 == token_sha256, devices.c.revoked_ms.is_(None)
            )
        ).first()
    if row is None:
        return None
    return TokenOwner(device_id=row.device_id, hive_id=row.hive_id, token_sha256=row.token_sha256)


def hive_of_device(*, engine: Engine, device_id: str) -> str:
    """The device's hive; :class:`NotFound` for an unknown device."""
    with read_transaction(engine) as conn:
        row = conn.execute(sa.select(devices.c.hive_id).where(devices.c.device_id == device_id)).first()
    if row is None:
        raise NotFound(f"device {device_id!r} does not exist")
    return row.hive_id


def record_heartbeat(
    *, engine: Engine, device: DeviceIdentity, payload: dict[str, Any], now_ms: int, keep: int
) -> None:
    """Keep the heartbeat as the device's latest and in the history, of which only the device's newest
    ``keep`` stay: a device (or a stolen token) sending heartbeats fast cannot fill the disk."""
    with write_transaction(engine) as conn:
        conn.execute(
            sa.insert(heartbeats).values(
                hive_id=device.hive_id, device_id=device.device_id, received_ms=now_ms, payload=payload
            )
        )
        conn.execute(
            sa.update(devices)
            .where(devices.c.device_id == device.device_id)
            .values(last_heartbeat_ms=now_ms, heartbeat=payload)
        )
        # The newest row that goes: everything of this device up to it. Rows are few per device (at most
        # keep + 1 after the first trim), so this reads a handful of index entries.
        cutoff = conn.execute(
            sa.select(heartbeats.c.id)
            .where(heartbeats.c.device_id == device.device_id)
            .order_by(heartbeats.c.id.desc())
            .offset(keep)
            .limit(1)
        ).scalar()
        if cutoff is not None:
            conn.execute(
                sa.delete(heartbeats).where(
                    heartbeats.c.device_id == device.device_id, heartbeats.c.id <= cutoff
                )
            )


def rotate_device_token(*, engine: Engine, device_id: str, now_ms: int) -> NewDevice:
    """Issue the device a new token: the old one stops working at once (a revoked device is admitted
    again with the new one). :class:`NotFound` for an unknown device."""
    token = new_device_token()
    with write_transaction(engine) as conn:
        hive_id = conn.execute(sa.select(devices.c.hive_id).where(devices.c.device_id == device_id)).scalar()
        if hive_id is None:
            raise NotFound(f"device {device_id!r} does not exist")
        conn.execute(
            sa.update(devices)
            .where(devices.c.device_id == device_id)
            .values(token_sha256=token_digest(token), revoked_ms=None)
        )
    log.info("device %s has a new token (rotated at %s)", device_id, iso_ms(now_ms))
    return NewDevice(device_id=device_id, hive_id=hive_id, token=token)


def list_devices(*, engine: Engine, hive_id: str | None) -> list[dict[str, Any]]:
    """Devices (of one hive, or all) with their last heartbeat; never their token."""
    query = sa.select(devices).order_by(devices.c.device_id)
    if hive_id is not None:
        query = query.where(devices.c.hive_id == hive_id)
    with read_transaction(engine) as conn:
        rows = conn.execute(query).all()
    return [
        {
            "device_id": row.device_id,
            "hive_id": row.hive_id,
            "created_at": iso_ms(row.created_ms),
            "revoked_at": iso_ms(row.revoked_ms),
            "last_seen": iso_ms(row.last_seen_ms),
            "last_heartbeat": iso_ms(row.last_heartbeat_ms),
            "heartbeat": None if row.heartbeat is None else readable_json(row.heartbeat, where="heartbeat"),
        }
        for row in rows
    ]
