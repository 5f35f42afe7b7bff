"""Webhook delivery: a background worker POSTs every alert to every configured URL from the outbox
(:mod:`beeaudio.collector.store.alerts`), with exponential backoff, and gives up after
``webhook_max_attempts``. Ingest never waits for it; delivery is at-least-once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Engine

from beeaudio.collector.metrics import Metrics
from beeaudio.collector.store.alerts import Delivery, claim_due, mark_delivered, mark_failed, retry_later

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookPolicy:
    timeout_seconds: float = 5.0
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 600.0

    def delay_ms(self, *, attempts: int) -> int:
        """Exponential backoff after ``attempts`` failed tries: base, 2×base, 4×base ... capped."""
        return int(1000 * min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.backoff_max_seconds))


class WebhookWorker:
    """Delivers due outbox rows. ``run_once`` is one pass (tests call it); ``run`` loops until cancelled."""

    def __init__(
        self,
        *,
        engine: Engine,
        policy: WebhookPolicy,
        clock_ms: Callable[[], int],
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._clock_ms = clock_ms
        self._transport = transport
        self._metrics = metrics

    def _claim_due(self, *, limit: int) -> list[Delivery]:
        now = self._clock_ms()
        # Longer than one attempt can take, so a crashed worker's rows come back and live ones do not.
        lease = now + int(1000 * (self._policy.timeout_seconds + 30))
        return claim_due(engine=self._engine, now_ms=now, lease_until_ms=lease, limit=limit)

    def _finish(self, *, due: Delivery, error: str | None) -> None:
        now = self._clock_ms()
        attempts = due.attempts + 1
        if error is None:
            outcome = "delivered"
            mark_delivered(engine=self._engine, delivery_id=due.id, attempts=attempts, now_ms=now)
        elif attempts >= self._policy.max_attempts:
            outcome = "failed"
            mark_failed(engine=self._engine, delivery_id=due.id, attempts=attempts, error=error)
            log.warning("webhook %s gave up after %d attempts: %s", due.url, attempts, error)
        else:
            outcome = "retry"
            retry_later(
                engine=self._engine,
                delivery_id=due.id,
                attempts=attempts,
                error=error,
                next_attempt_ms=now + self._policy.delay_ms(attempts=attempts),
            )
        if self._metrics is not None:
            self._metrics.webhook_attempts.labels(outcome=outcome).inc()

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
