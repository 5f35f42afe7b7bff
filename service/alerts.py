"""Alerts: recorded in the same transaction as the state change, delivered to webhooks later.

Recording an alert also queues one row per configured webhook in ``webhook_deliveries`` (an outbox), so a
slow or dead webhook can never hold up ingest: :class:`WebhookWorker` delivers from the outbox in the
background with exponential backoff and gives up after ``webhook_max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from beeaudio.collector.db import alerts, webhook_deliveries, write_transaction
from beeaudio.collector.timeutil import iso_ms
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

SWARM_STARTED, SWARM_ENDED, HIVE_OFFLINE, HIVE_BACK = (
    "swarm_started",
    "swarm_ended",
    "hive_offline",
    "hive_back",
)
ALERT_KINDS = (SWARM_STARTED, SWARM_ENDED, HIVE_OFFLINE, HIVE_BACK)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def record_alert(
    conn: Connection,
    *,
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


def alert_json(row: Any) -> dict[str, Any]:
    return {
        "alert_id": row.alert_id,
        "hive_id": row.hive_id,
        "kind": row.kind,
        "at": iso_ms(row.at_ms),
        "created_at": iso_ms(row.created_ms),
        "details": row.details or {},
    }


@dataclass(frozen=True)
class WebhookPolicy:
    timeout_seconds: float = 5.0
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 600.0

    def delay_ms(self, *, attempts: int) -> int:
        """Exponential backoff after ``attempts`` failed tries: base, 2×base, 4×base ... capped."""
        return int(1000 * min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.backoff_max_seconds))


@dataclass(frozen=True)
class _Due:
    id: int
    url: str
    attempts: int
    payload: dict[str, Any]


class WebhookWorker:
    """Delivers due outbox rows. ``run_once`` is one pass (tests call it); ``run`` loops until cancelled."""

    def __init__(
        self,
        *,
        engine: Engine,
        policy: WebhookPolicy,
        clock_ms: Callable[[], int],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._clock_ms = clock_ms
        self._transport = transport

    def _claim_due(self, *, limit: int) -> list[_Due]:
        now = self._clock_ms()
        lease = now + int(1000 * (self._policy.timeout_seconds + 30))
        claimed: list[_Due] = []
        with write_transaction(self._engine) as conn:
            rows = conn.execute(
                sa.select(webhook_deliveries, alerts)
                .join(alerts, alerts.c.alert_id == webhook_deliveries.c.alert_id)
                .where(webhook_deliveries.c.status == PENDING, webhook_deliveries.c.next_attempt_ms <= now)
                .order_by(webhook_deliveries.c.next_attempt_ms)
                .limit(limit)
            ).all()
            for row in rows:
                # Lease the row by moving its next attempt: a second worker skips it (optimistic claim).
                result = conn.execute(
                    sa.update(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.id == row.id,
                        webhook_deliveries.c.next_attempt_ms == row.next_attempt_ms,
                        webhook_deliveries.c.status == PENDING,
                    )
                    .values(next_attempt_ms=lease)
                )
                if result.rowcount == 1:
                    claimed.append(
                        _Due(id=row.id, url=row.url, attempts=row.attempts, payload=alert_json(row))
                    )
        return claimed

    def _finish(self, *, due: _Due, error: str | None) -> None:
        now = self._clock_ms()
        attempts = due.attempts + 1
        if error is None:
            values: dict[str, Any] = {"status": DELIVERED, "attempts": attempts, "delivered_ms": now}
        elif attempts >= self._policy.max_attempts:
            values = {"status": FAILED, "attempts": attempts, "last_error": error[:1000]}
            log.warning("webhook %s gave up after %d attempts: %s", due.url, attempts, error)
        else:
            next_ms = now + self._policy.delay_ms(attempts=attempts)
            values = {"attempts": attempts, "last_error": error[:1000], "next_attempt_ms": next_ms}
        with write_transaction(self._engine) as conn:
            conn.execute(
                sa.update(webhook_deliveries).where(webhook_deliveries.c.id == due.id).values(**values)
            )

    async def run_once(self, *, limit: int = 20) -> int:
        """Try every due delivery once; returns how many were attempted."""
        due = await asyncio.to_thread(self._claim_due, limit=limit)
        if not due:
            return 0
        async with httpx.AsyncClient(
            timeout=self._policy.timeout_seconds, transport=self._transport
        ) as client:
            for item in due:
                error: str | None = None
                try:
                    response = await client.post(item.url, json=item.payload)
                    if response.status_code >= 300:
                        error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                await asyncio.to_thread(self._finish, due=item, error=error)
        return len(due)

    async def run(self, *, interval_seconds: float = 1.0) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep delivering after a transient database error
                log.exception("webhook delivery pass failed")
            await asyncio.sleep(interval_seconds)
