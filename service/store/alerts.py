"""Alerts and their webhook outbox: recorded in the transaction of the state change, read by the API,
claimed and settled by the webhook worker (:mod:`beeaudio.collector.webhooks`).

Recording an alert also queues one ``webhook_deliveries`` row per configured URL, so a slow or dead webhook
can never hold up ingest: the worker delivers from the outbox later.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import (
    alerts,
    lock_clause,
    read_transaction,
    webhook_deliveries,
    write_transaction,
)
from beeaudio.collector.timeutil import iso_ms

log = logging.getLogger(__name__)

SWARM_STARTED, SWARM_ENDED, HIVE_OFFLINE, HIVE_BACK = (
    "swarm_started",
    "swarm_ended",
    "hive_offline",
    "hive_back",
)
#: The hive's recent windows are mostly without signal (a dead or unplugged microphone), and its end.
MICROPHONE_SILENT, MICROPHONE_BACK = "microphone_silent", "microphone_back"
ALERT_KINDS = (SWARM_STARTED, SWARM_ENDED, HIVE_OFFLINE, HIVE_BACK, MICROPHONE_SILENT, MICROPHONE_BACK)

#: States of a webhook delivery.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: How much of a delivery's last error is kept.
MAX_ERROR = 1000


def record_alert(
    *,
    conn: Connection,
    hive_id: str,
    kind: str,
    at_ms: int,
    details: dict[str, Any],
    webhook_urls: list[str],
    now_ms: int,
) -> str:
    """Store an alert and queue its webhook deliveries in the caller's transaction; returns the id."""
    alert_id = uuid.uuid4().hex
    conn.execute(
        sa.insert(alerts).values(
            alert_id=alert_id, hive_id=hive_id, kind=kind, at_ms=at_ms, created_ms=now_ms, details=details
        )
    )
    if webhook_urls:
        conn.execute(
            sa.insert(webhook_deliveries),
            [
                {
                    "alert_id": alert_id,
                    "url": url,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_ms": now_ms,
                    "last_error": None,
                    "delivered_ms": None,
                }
                for url in webhook_urls
            ],
        )
    log.info("alert %s for hive %s at %s", kind, hive_id, iso_ms(at_ms))
    return alert_id


def last_alert_ms(*, conn: Connection, hive_id: str, kinds: tuple[str, ...]) -> int | None:
    """When the hive's latest alert of one of ``kinds`` is dated, or None."""
    return conn.execute(
        sa.select(sa.func.max(alerts.c.at_ms)).where(alerts.c.hive_id == hive_id, alerts.c.kind.in_(kinds))
    ).scalar()


def last_swarm_alert_ms(*, conn: Connection, hive_id: str) -> int | None:
    """When the hive's latest ``swarm_started`` / ``swarm_ended`` is dated, or None."""
    return last_alert_ms(conn=conn, hive_id=hive_id, kinds=(SWARM_STARTED, SWARM_ENDED))


def alert_json(row: Any) -> dict[str, Any]:
    return {
        "alert_id": row.alert_id,
        "hive_id": row.hive_id,
        "kind": row.kind,
        "at": iso_ms(row.at_ms),
        "created_at": iso_ms(row.created_ms),
        "details": row.details or {},
    }


def alert_list(
    *, engine: Engine, hive_id: str | None, since_ms: int | None, limit: int
) -> list[dict[str, Any]]:
    """Alerts at or after ``since``, or without ``since`` the latest ``limit``; oldest first either way."""
    query = sa.select(alerts)
    if hive_id is not None:
        query = query.where(alerts.c.hive_id == hive_id)
    with read_transaction(engine) as conn:
        if since_ms is not None:
            query = query.where(alerts.c.at_ms >= since_ms).order_by(alerts.c.at_ms, alerts.c.created_ms)
            rows = conn.execute(query.limit(limit)).all()
        else:
            query = query.order_by(alerts.c.at_ms.desc(), alerts.c.created_ms.desc())
            rows = list(reversed(conn.execute(query.limit(limit)).all()))
    return [alert_json(row) for row in rows]


# -- the outbox ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One claimed outbox row: where to send which alert, and how often it was tried already."""

    id: int
    url: str
    attempts: int
    payload: dict[str, Any]


def claim_due(*, engine: Engine, now_ms: int, lease_until_ms: int, limit: int) -> list[Delivery]:
    """The deliveries due at ``now_ms``, each leased until ``lease_until_ms`` so no other worker takes it."""
    claimed: list[Delivery] = []
    with write_transaction(engine) as conn:
        query = (
            sa.select(webhook_deliveries, alerts)
            .join(alerts, alerts.c.alert_id == webhook_deliveries.c.alert_id)
            .where(webhook_deliveries.c.status == PENDING, webhook_deliveries.c.next_attempt_ms <= now_ms)
            .order_by(webhook_deliveries.c.next_attempt_ms)
            .limit(limit)
        )
        if lock_clause(conn):
            # Replicas claim at the same moment: each skips the rows another is claiming rather than
            # queueing behind it, so they deliver disjoint shares (SQLite serialises writers instead).
            query = query.with_for_update(of=webhook_deliveries, skip_locked=True)
        rows = conn.execute(query).all()
        for row in rows:
            # Lease the row by moving its next attempt: a second worker skips it (optimistic claim).
            result = conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == row.id,
                    webhook_deliveries.c.next_attempt_ms == row.next_attempt_ms,
                    webhook_deliveries.c.status == PENDING,
                )
                .values(next_attempt_ms=lease_until_ms)
            )
            if result.rowcount == 1:
                claimed.append(
                    Delivery(id=row.id, url=row.url, attempts=row.attempts, payload=alert_json(row))
                )
    return claimed


def _settle(*, engine: Engine, delivery_id: int, values: dict[str, Any]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
        )


def mark_delivered(*, engine: Engine, delivery_id: int, attempts: int, now_ms: int) -> None:
    _settle(
        engine=engine,
        delivery_id=delivery_id,
        values={"status": DELIVERED, "attempts": attempts, "delivered_ms": now_ms},
    )


def mark_failed(*, engine: Engine, delivery_id: int, attempts: int, error: str) -> None:
    """Given up: kept with its last error for whoever looks into it."""
    _settle(
        engine=engine,
        delivery_id=delivery_id,
        values={"status": FAILED, "attempts": attempts, "last_error": error[:MAX_ERROR]},
    )


def retry_later(*, engine: Engine, delivery_id: int, attempts: int, error: str, next_attempt_ms: int) -> None:
    _settle(
        engine=engine,
        delivery_id=delivery_id,
        values={"attempts": attempts, "last_error": error[:MAX_ERROR], "next_attempt_ms": next_attempt_ms},
    )
