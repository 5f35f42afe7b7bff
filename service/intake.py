"""One path for a batch of events, whichever way it came (HTTP ``POST /events`` or an MQTT publish):
checked against the wire contract, stored under the hive's lock within the retention horizon, counted
in the metrics; and, when the batch left a long re-evaluation of the hive's steps unfinished, the call
that finishes it after the answer (each transport schedules it its own way). One path for a heartbeat
too (:func:`take_heartbeat`)."""

from __future__ import annotations

from typing import Any

from beeaudio.collector.context import AppContext
from beeaudio.collector.ingest import parse_batch
from beeaudio.collector.retention import horizon_ms
from beeaudio.collector.schemas import HeartbeatIn
from beeaudio.collector.store.devices import DeviceIdentity, record_heartbeat
from beeaudio.collector.store.errors import Invalid
from beeaudio.collector.store.hive_state import finish_recomputes
from beeaudio.collector.store.ingest import IngestResult, store_batch
from beeaudio.core import wire


def take_batch(
    *, context: AppContext, device: DeviceIdentity, body: dict[str, Any], now_ms: int
) -> IngestResult:
    """Check, store and count one batch from ``device``; raises the store's errors (nothing stored)."""
    settings = context.settings
    checked = parse_batch(
        body=body,
        device=device,
        max_events=settings.max_batch_events,
        future_tolerance_ms=int(settings.future_tolerance_seconds * 1000),
        now_ms=now_ms,
    )
    result = store_batch(
        engine=context.engine,
        device=device,
        batch_id=checked.batch_id,
        batch=checked.events,
        defaults=context.defaults,
        bucket_seconds=settings.bucket_seconds,
        webhook_urls=context.webhook_urls,
        now_ms=now_ms,
        keep_after_ms=horizon_ms(retention_days=settings.retention_days, now_ms=now_ms),
    )
    context.metrics.observe_batch(
        size=len(checked.events),
        accepted=result.accepted,
        duplicates=result.duplicates,
        expired=result.expired,
    )
    return result


def finish_walk(*, context: AppContext, hive_id: str, now_ms: int) -> None:
    """The rest of a hive's unfinished re-evaluation (``IngestResult.unfinished``), in transactions of its
    own, so neither the device that sent the batch nor other hives wait for it."""
    finish_recomputes(
        engine=context.engine,
        defaults=context.defaults,
        webhook_urls=context.webhook_urls,
        now_ms=now_ms,
        hive_id=hive_id,
    )


def take_heartbeat(
    *, context: AppContext, device: DeviceIdentity, heartbeat: HeartbeatIn, now_ms: int
) -> None:
    """Screen and store one heartbeat from ``device`` (validated by :class:`HeartbeatIn`): :class:`Invalid`
    for what no database can store (a NUL, a lone surrogate); the database's own errors pass through."""
    payload = heartbeat.model_dump(by_alias=True)
    reason = wire.unclean_reason(payload)
    if reason:
        raise Invalid(reason)
    record_heartbeat(
        engine=context.engine,
        device=device,
        payload=payload,
        now_ms=now_ms,
        keep=context.settings.heartbeat_history,
    )
