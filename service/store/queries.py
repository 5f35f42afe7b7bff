"""Read side: hive status (one row per hive), history from rollups, raw events page by page.

Functions that take an engine read in their own transaction and raise :class:`NotFound` for an unknown
hive; those that take a connection read inside the caller's (e.g. the status a write answers with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import events, hive_state, hives, read_transaction, rollup_labels, rollups
from beeaudio.collector.reasons import reason_text
from beeaudio.collector.state import (
    NO_READINGS,
    OFFLINE,
    TOO_FEW_READINGS,
    UNKNOWN,
    StateParams,
    Window,
    hive_params,
)
from beeaudio.collector.store.errors import NotFound
from beeaudio.collector.timeutil import iso_ms
from beeaudio.core.wire import EVENT_SCHEMA, EVENT_SCHEMAS, V2_FIELDS, unclean_reason

#: What an event stored without a quality flag was sent as (v2 events always carry one).
V1_EVENT_SCHEMA = EVENT_SCHEMAS[0]

_STATUS_COLUMNS = (
    hives.c.hive_id,
    hives.c.name,
    hives.c.created_ms,
    hives.c.params,
    hive_state.c.state,
    hive_state.c.since_ms,
    hive_state.c.confidence,
    hive_state.c.score,
    hive_state.c.n_window,
    hive_state.c.counts,
    hive_state.c.last_seen_ms,
    hive_state.c.last_event_ms,
    hive_state.c.model_version,
    hive_state.c.last_bucket,
    hive_state.c.reason,
    hive_state.c.window_seconds,
    hive_state.c.n_readings,
    hive_state.c.n_no_signal,
    hive_state.c.n_poor_signal,
    hive_state.c.n_unfamiliar,
)


def status_json(row: Any, *, defaults: StateParams, now_ms: int) -> dict[str, Any]:
    """A hive's status; ``offline`` overrides the stored state when nothing arrived for too long."""
    params = hive_params(defaults=defaults, overrides=row.params)
    state, since_ms, conf = row.state, row.since_ms, row.confidence
    if row.last_seen_ms is not None:
        offline_at = row.last_seen_ms + int(params.offline_after_seconds * 1000)
        if now_ms > offline_at:
            state, since_ms, conf = OFFLINE, row.last_seen_ms, 1.0
    window = Window(
        seconds=row.window_seconds or 0.0,
        evidence=row.n_window,
        no_signal=row.n_no_signal,
        poor_signal=row.n_poor_signal,
        unfamiliar=row.n_unfamiliar,
    )
    reason = None
    if state == UNKNOWN:
        # A state row always says why it is unknown; the fallback covers a row written by older code.
        reason = row.reason or (NO_READINGS if row.last_bucket is None else TOO_FEW_READINGS)
    return {
        "hive_id": row.hive_id,
        "name": row.name,
        "state": state,
        "confidence": conf,
        "since": iso_ms(since_ms),
        "last_seen": iso_ms(row.last_seen_ms),
        "last_event": iso_ms(row.last_event_ms),
        "model_version": row.model_version,
        "swarm_score": None if row.score is None else round(row.score, 4),
        "n_window": row.n_window,
        "counts": row.counts or {},
        "reason": reason,
        "reason_text": reason_text(reason=reason, window=window, params=params, score=row.score),
        "window": {
            "seconds": window.seconds,
            "readings": window.readings,
            "evidence": window.evidence,
            "no_signal": window.no_signal,
            "poor_signal": window.poor_signal,
            "unfamiliar": window.unfamiliar,
        },
        "params": params.to_dict(),
        "created_at": iso_ms(row.created_ms),
    }


def _require_hive(*, conn: Connection, hive_id: str) -> None:
    if conn.execute(sa.select(hives.c.hive_id).where(hives.c.hive_id == hive_id)).first() is None:
        raise NotFound(f"hive {hive_id!r} does not exist")


def status_in(*, conn: Connection, hive_id: str, defaults: StateParams, now_ms: int) -> dict[str, Any]:
    """The hive's status read in the caller's transaction; :class:`NotFound` for an unknown hive."""
    row = conn.execute(
        sa.select(*_STATUS_COLUMNS)
        .join(hive_state, hive_state.c.hive_id == hives.c.hive_id)
        .where(hives.c.hive_id == hive_id)
    ).first()
    if row is None:
        raise NotFound(f"hive {hive_id!r} does not exist")
    return status_json(row, defaults=defaults, now_ms=now_ms)


def hive_status(*, engine: Engine, hive_id: str, defaults: StateParams, now_ms: int) -> dict[str, Any]:
    with read_transaction(engine) as conn:
        return status_in(conn=conn, hive_id=hive_id, defaults=defaults, now_ms=now_ms)


def all_statuses(*, engine: Engine, defaults: StateParams, now_ms: int) -> list[dict[str, Any]]:
    with read_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(*_STATUS_COLUMNS)
            .join(hive_state, hive_state.c.hive_id == hives.c.hive_id)
            .order_by(hives.c.hive_id)
        ).all()
    return [status_json(row, defaults=defaults, now_ms=now_ms) for row in rows]


def history(
    *, engine: Engine, hive_id: str, start_s: int, end_s: int, bucket_seconds: int
) -> list[dict[str, Any]]:
    """Per-bucket counts and means, aggregated from the rollups (never from raw events).

    Buckets are aligned to multiples of ``bucket_seconds`` since the epoch, so the same bucket has the same
    start whatever range is asked for.
    """
    with read_transaction(engine) as conn:
        _require_hive(conn=conn, hive_id=hive_id)
        return _history(
            conn=conn, hive_id=hive_id, start_s=start_s, end_s=end_s, bucket_seconds=bucket_seconds
        )


def _history(
    *, conn: Connection, hive_id: str, start_s: int, end_s: int, bucket_seconds: int
) -> list[dict[str, Any]]:
    width = sa.literal(bucket_seconds, sa.BigInteger)
    key = (rollups.c.bucket_start // width).label("k")
    totals = conn.execute(
        sa.select(
            key,
            sa.func.sum(rollups.c.n),
            sa.func.sum(rollups.c.swarm_sum),
            sa.func.sum(rollups.c.n_evidence),
            sa.func.sum(rollups.c.evidence_swarm_sum),
            sa.func.sum(rollups.c.n_no_signal),
            sa.func.sum(rollups.c.n_poor_signal),
            sa.func.sum(rollups.c.n_unfamiliar),
        )
        .where(
            rollups.c.hive_id == hive_id, rollups.c.bucket_start >= start_s, rollups.c.bucket_start < end_s
        )
        .group_by(key)
        .order_by(key)
    ).all()
    label_key = (rollup_labels.c.bucket_start // width).label("k")
    label_rows = conn.execute(
        sa.select(
            label_key,
            rollup_labels.c.label,
            sa.func.sum(rollup_labels.c.n_top),
            sa.func.sum(rollup_labels.c.prob_sum),
        )
        .where(
            rollup_labels.c.hive_id == hive_id,
            rollup_labels.c.bucket_start >= start_s,
            rollup_labels.c.bucket_start < end_s,
        )
        .group_by(label_key, rollup_labels.c.label)
    ).all()
    per_label: dict[int, list[tuple[str, int, float]]] = {}
    for k, label, n_top, prob_sum in label_rows:
        per_label.setdefault(int(k), []).append((label, int(n_top), float(prob_sum)))
    buckets = []
    for k, n, swarm_sum, n_evidence, evidence_sum, no_signal, poor_signal, unfamiliar in totals:
        n, n_evidence = int(n), int(n_evidence)
        if not n:
            continue
        labels = sorted(per_label.get(int(k), []))
        buckets.append(
            {
                "start": iso_ms(int(k) * bucket_seconds * 1000),
                "n": n,
                "counts": {label: n_top for label, n_top, _ in labels},
                "mean_probabilities": {label: round(p / n, 6) for label, _, p in labels},
                "mean_swarm_score": round(float(swarm_sum) / n, 6),
                "n_evidence": n_evidence,
                "n_no_signal": int(no_signal),
                "n_poor_signal": int(poor_signal),
                "n_unfamiliar": int(unfamiliar),
                "mean_evidence_swarm_score": (
                    round(float(evidence_sum) / n_evidence, 6) if n_evidence else None
                ),
            }
        )
    return buckets


def event_json(row: Any) -> dict[str, Any]:
    """An event as stored: v2 with its quality and novelty, or v1 (stored without a quality flag)."""
    v2 = row.quality is not None
    data = {
        "schema": EVENT_SCHEMA if v2 else V1_EVENT_SCHEMA,
        "event_id": row.event_id,
        "hive_id": row.hive_id,
        "device_id": row.device_id,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "window_start": iso_ms(row.window_start_ms),
        "window_seconds": row.window_seconds,
        "probabilities": row.probabilities,
        "label": row.label,
        "swarm_score": row.swarm_score,
        "level_dbfs": row.level_dbfs,
        "source_format": row.source_format,
        "received_at": iso_ms(row.received_ms),
    }
    if v2:
        data.update({name: getattr(row, name) for name in V2_FIELDS})
    if row.extra:
        data["extra"] = readable_json(row.extra, where="extra")
    return data


def readable_json(value: Any, *, where: str) -> Any:
    """A stored JSON value, or a note in its place when it is one no answer can carry (a lone surrogate,
    nesting too deep: refused at ingest since, but a database from before may hold it). One such row
    must not make every answer that includes it a 500."""
    reason = unclean_reason(value, where=where)
    return value if reason is None else {"unreadable": reason}


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    #: Hand it back for the next page; None on the last page.
    next_cursor: str | None


#: ``<window_start_ms>.<row id>`` in ASCII digits (``str.isdigit`` also takes ``²``, which ``int`` refuses).
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})", re.ASCII)


def parse_cursor(cursor: str) -> tuple[int, int] | None:
    """The position in a cursor :func:`event_page` handed out, or None for anything else."""
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def event_page(*, engine: Engine, hive_id: str, limit: int, cursor: tuple[int, int] | None) -> EventPage:
    """Newest window first; the cursor is ``<window_start_ms>.<row id>`` of the last event returned."""
    query = sa.select(events).where(events.c.hive_id == hive_id)
    if cursor is not None:
        ms, row_id = cursor
        query = query.where(
            sa.or_(
                events.c.window_start_ms < ms,
                sa.and_(events.c.window_start_ms == ms, events.c.id < row_id),
            )
        )
    with read_transaction(engine) as conn:
        _require_hive(conn=conn, hive_id=hive_id)
        rows = conn.execute(
            query.order_by(events.c.window_start_ms.desc(), events.c.id.desc()).limit(limit + 1)
        ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].window_start_ms}.{rows[-1].id}" if more and rows else None
    return EventPage(events=[event_json(row) for row in rows], next_cursor=next_cursor)
