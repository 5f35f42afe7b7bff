"""Ingest, the write: store a checked batch idempotently, update rollups and the hive state — in one
transaction, so a batch is either wholly stored (and durably committed before the 2xx) or not at all."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import (
    devices,
    events,
    hive_state,
    hives,
    insert_for,
    lock_clause,
    rollup_labels,
    rollups,
    write_transaction,
)
from beeaudio.collector.state import (
    KIND_EVIDENCE,
    KIND_NO_SIGNAL,
    KIND_POOR_SIGNAL,
    KIND_UNFAMILIAR,
    StateParams,
    hive_params,
    window_kind,
)
from beeaudio.collector.store.alerts import HIVE_BACK, record_alert
from beeaudio.collector.store.devices import DeviceIdentity
from beeaudio.collector.store.errors import NotFound
from beeaudio.collector.store.hive_state import (
    RULES_VERSION,
    rederive,
    until_for,
    walk_outcome,
    walk_steps,
)
from beeaudio.collector.timeutil import to_ms
from beeaudio.core.wire import ClassificationEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    accepted: int
    duplicates: int
    #: The re-evaluation of the hive's steps is not finished: it goes on in transactions of its own
    #: (:func:`beeaudio.collector.store.hive_state.finish_recomputes`), after the batch is committed.
    unfinished: bool = False
    #: Events older than the retention horizon, not stored (counted in ``duplicates`` too).
    expired: int = 0


def _bucket(moment: datetime, *, bucket_seconds: int) -> int:
    seconds = to_ms(moment) // 1000
    return seconds - seconds % bucket_seconds


def store_batch(
    *,
    engine: Engine,
    device: DeviceIdentity,
    batch_id: str,
    batch: list[ClassificationEvent],
    defaults: StateParams,
    bucket_seconds: int,
    webhook_urls: list[str],
    now_ms: int,
    keep_after_ms: int | None = None,
) -> IngestResult:
    """Insert the new events (ignoring ones already stored), fold them into rollups, move the state;
    :class:`NotFound` if the device's hive does not exist. Events whose window starts before
    ``keep_after_ms`` (the retention horizon, :func:`beeaudio.collector.retention.horizon_ms`) are not
    stored: whether one was stored before its week was pruned cannot be known, so storing it could count
    it twice."""
    unique: dict[str, ClassificationEvent] = {}
    expired: set[str] = set()
    for event in batch:
        if keep_after_ms is not None and to_ms(event.window_start) < keep_after_ms:
            expired.add(event.event_id)
            continue
        unique.setdefault(event.event_id, event)
    with write_transaction(engine) as conn:
        insert = insert_for(conn)
        state_query = sa.select(hive_state, hives.c.params).join(
            hives, hives.c.hive_id == hive_state.c.hive_id
        )
        state_query = state_query.where(hive_state.c.hive_id == device.hive_id)
        if lock_clause(conn):
            # One writer per hive at a time: rollups and steps of a hive change only under this lock.
            state_query = state_query.with_for_update(of=hive_state)
        current = conn.execute(state_query).first()
        if current is None:
            raise NotFound(f"hive {device.hive_id!r} does not exist")
        inserted: set[str] = set()
        if unique:
            rows = [
                {
                    "hive_id": device.hive_id,
                    "device_id": device.device_id,
                    "event_id": e.event_id,
                    "model_name": e.model_name,
                    "model_version": e.model_version,
                    "window_start_ms": to_ms(e.window_start),
                    "window_seconds": e.window_seconds,
                    "label": e.label,
                    "swarm_score": e.swarm_score,
                    "level_dbfs": e.level_dbfs,
                    "source_format": e.source_format,
                    "probabilities": e.probabilities,
                    "extra": e.extra or None,
                    "received_ms": now_ms,
                    "quality": e.quality,
                    "novelty": e.novelty,
                    "novelty_threshold": e.novelty_threshold,
                }
                for e in unique.values()
            ]
            # Under the hive lock no other transaction can insert this device's events, so the ids that
            # are not stored yet are exactly the ones this insert adds. (A RETURNING over a multi-row
            # insert would say the same, but costs PostgreSQL drivers far more per batch.)
            stored = set(
                conn.execute(
                    sa.select(events.c.event_id).where(
                        events.c.device_id == device.device_id, events.c.event_id.in_(list(unique))
                    )
                ).scalars()
            )
            rows = [row for row in rows if row["event_id"] not in stored]
            if rows:
                stmt = insert(events).on_conflict_do_nothing(
                    index_elements=[events.c.device_id, events.c.event_id, events.c.window_start_ms]
                )
                conn.execute(stmt, rows)
            inserted = {row["event_id"] for row in rows}
        new_events = [e for e in unique.values() if e.event_id in inserted]
        params = hive_params(defaults=defaults, overrides=current.params)
        values: dict[str, Any] = {"last_seen_ms": now_ms, "updated_ms": now_ms}
        unfinished = False
        if new_events:
            touched = _fold_rollups(
                conn=conn, device=device, new_events=new_events, bucket_seconds=bucket_seconds
            )
            latest = max(new_events, key=lambda e: e.window_start)
            latest_ms = to_ms(latest.window_start)
            if current.last_event_ms is None or latest_ms >= current.last_event_ms:
                values["last_event_ms"] = latest_ms
                values["model_version"] = latest.model_version
            if current.rules_version != RULES_VERSION:
                # Steps derived with older rules cannot be continued: derive them all again, once.
                values.update(
                    rederive(
                        conn=conn,
                        hive_id=device.hive_id,
                        current=current,
                        params=params,
                        webhook_urls=webhook_urls,
                        now_ms=now_ms,
                    )
                )
                unfinished = values["recompute_from"] is not None
            else:
                walk = walk_steps(
                    conn=conn,
                    hive_id=device.hive_id,
                    current=current,
                    first_bucket=min(touched),
                    until=until_for(last_touched=max(touched), params=params),
                    params=params,
                )
                unfinished = walk.resume_at is not None
                values.update(
                    walk_outcome(
                        conn=conn,
                        hive_id=device.hive_id,
                        walk=walk,
                        current=current,
                        params=params,
                        webhook_urls=webhook_urls,
                        now_ms=now_ms,
                    )
                )
        if current.offline_alerted:
            values["offline_alerted"] = False
            record_alert(
                conn=conn,
                hive_id=device.hive_id,
                kind=HIVE_BACK,
                at_ms=now_ms,
                details={"device_id": device.device_id, "silent_since_ms": current.last_seen_ms},
                webhook_urls=webhook_urls,
                now_ms=now_ms,
            )
        conn.execute(sa.update(hive_state).where(hive_state.c.hive_id == device.hive_id).values(**values))
        conn.execute(
            sa.update(devices).where(devices.c.device_id == device.device_id).values(last_seen_ms=now_ms)
        )
    result = IngestResult(
        batch_id=batch_id,
        accepted=len(inserted),
        duplicates=len(batch) - len(inserted),
        unfinished=unfinished,
        expired=sum(1 for e in batch if e.event_id in expired),
    )
    log.debug(
        "batch %s from %s: %d new, %d duplicates",
        batch_id,
        device.device_id,
        result.accepted,
        result.duplicates,
    )
    return result


#: Per-bucket rollup totals, in this order (the SQL columns of ``rollups`` after the key).
_TOTALS = (
    "n",
    "swarm_sum",
    "level_sum",
    "n_evidence",
    "evidence_swarm_sum",
    "n_no_signal",
    "n_poor_signal",
    "n_unfamiliar",
)
_INTEGER_TOTALS = frozenset({"n", "n_evidence", "n_no_signal", "n_poor_signal", "n_unfamiliar"})
_KIND_COUNT = {
    KIND_NO_SIGNAL: "n_no_signal",
    KIND_POOR_SIGNAL: "n_poor_signal",
    KIND_UNFAMILIAR: "n_unfamiliar",
    KIND_EVIDENCE: "n_evidence",
}


def _fold_rollups(
    *, conn: Connection, device: DeviceIdentity, new_events: list[ClassificationEvent], bucket_seconds: int
) -> set[int]:
    """Add the new events to their per-device buckets (atomic ``n = n + excluded.n`` upserts): every
    window in ``n``, and by kind (evidence, no signal, poor signal, unfamiliar) in its own column."""
    insert = insert_for(conn)
    totals: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_TOTALS, 0))
    labels: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for event in new_events:
        bucket = _bucket(event.window_start, bucket_seconds=bucket_seconds)
        kind = window_kind(quality=event.quality, unfamiliar=event.unfamiliar)
        evidence = kind == KIND_EVIDENCE
        total = totals[bucket]
        total["n"] += 1
        total["swarm_sum"] += event.swarm_score
        total["level_sum"] += event.level_dbfs
        total[_KIND_COUNT[kind]] += 1
        if evidence:
            total["evidence_swarm_sum"] += event.swarm_score
        for label, probability in event.probabilities.items():
            entry = labels[(bucket, label)]
            won = 1 if label == event.label else 0
            entry[0] += won
            entry[1] += probability
            entry[2] += won if evidence else 0
    stmt = insert(rollups)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rollups.c.hive_id, rollups.c.device_id, rollups.c.bucket_start],
        set_={name: rollups.c[name] + stmt.excluded[name] for name in _TOTALS},
    )
    conn.execute(
        stmt,
        [
            {
                "hive_id": device.hive_id,
                "device_id": device.device_id,
                "bucket_start": bucket,
                **{name: int(v) if name in _INTEGER_TOTALS else float(v) for name, v in total.items()},
            }
            for bucket, total in sorted(totals.items())
        ],
    )
    stmt = insert(rollup_labels)
    stmt = stmt.on_conflict_do_update(
        index_elements=[
            rollup_labels.c.hive_id,
            rollup_labels.c.device_id,
            rollup_labels.c.bucket_start,
            rollup_labels.c.label,
        ],
        set_={
            "n_top": rollup_labels.c.n_top + stmt.excluded.n_top,
            "prob_sum": rollup_labels.c.prob_sum + stmt.excluded.prob_sum,
            "n_top_evidence": rollup_labels.c.n_top_evidence + stmt.excluded.n_top_evidence,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "hive_id": device.hive_id,
                "device_id": device.device_id,
                "bucket_start": bucket,
                "label": label,
                "n_top": int(n),
                "prob_sum": p,
                "n_top_evidence": int(n_evidence),
            }
            for (bucket, label), (n, p, n_evidence) in sorted(labels.items())
        ],
    )
    return set(totals)
