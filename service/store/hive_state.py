"""Incremental hive state in the database: steps per bucket, the current-state row, the offline sweep.

The current state of a hive lives in one ``hive_state`` row (a status query reads that row). It is the last
of the hive's ``hive_steps``: one row per rollup bucket with data, each the state machine of
``beeaudio.collector.state`` advanced by that bucket. When events land in bucket ``b`` (in order or
late), the steps
from ``b`` on are re-evaluated from the rollups; the walk stops as soon as a step is past the reach of the
changed buckets (``smoothing_seconds``) and comes out as it was stored, because every later step then
follows unchanged. So the stored state is always the one in-order arrival would have given.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import (
    hive_state,
    hive_steps,
    hives,
    insert_for,
    lock_clause,
    rollup_labels,
    rollups,
    write_transaction,
)
from beeaudio.collector.state import (
    INITIAL,
    SWARM,
    UNKNOWN,
    StateParams,
    Step,
    confidence,
    hive_params,
    next_step,
)
from beeaudio.collector.store.alerts import (
    HIVE_OFFLINE,
    SWARM_ENDED,
    SWARM_STARTED,
    last_swarm_alert_ms,
    record_alert,
)
from beeaudio.collector.store.errors import NotFound
from beeaudio.collector.timeutil import iso_ms

log = logging.getLogger(__name__)

#: Buckets read per query while walking the steps (bounds memory for a long backlog).
CHUNK = 2000


def new_state_row(*, hive_id: str, now_ms: int) -> dict[str, Any]:
    return {
        "hive_id": hive_id,
        "state": UNKNOWN,
        "since_ms": None,
        "confidence": 0.0,
        "score": None,
        "n_window": 0,
        "counts": {},
        "last_bucket": None,
        "last_seen_ms": None,
        "last_event_ms": None,
        "model_version": None,
        "offline_alerted": False,
        "updated_ms": now_ms,
    }


def _step_from_row(row: Any) -> Step:
    return Step(
        bucket_start=row.bucket_start,
        n_window=row.n_window,
        score=row.score,
        state=row.state,
        pending=row.pending,
        since_ms=row.since_ms,
        pending_since_ms=row.pending_since_ms,
    )


def _same(a: Step, b: Step) -> bool:
    scores_equal = (a.score is None and b.score is None) or (
        a.score is not None and b.score is not None and abs(a.score - b.score) <= 1e-9
    )
    return scores_equal and (
        a.bucket_start,
        a.n_window,
        a.state,
        a.pending,
        a.since_ms,
        a.pending_since_ms,
    ) == (b.bucket_start, b.n_window, b.state, b.pending, b.since_ms, b.pending_since_ms)


def _buckets(*, conn: Connection, hive_id: str, start: int) -> Iterator[tuple[int, int, float]]:
    """(bucket_start, n, swarm_sum) of the hive, all devices summed, from ``start`` on, in order."""
    while True:
        rows = conn.execute(
            sa.select(rollups.c.bucket_start, sa.func.sum(rollups.c.n), sa.func.sum(rollups.c.swarm_sum))
            .where(rollups.c.hive_id == hive_id, rollups.c.bucket_start >= start)
            .group_by(rollups.c.bucket_start)
            .order_by(rollups.c.bucket_start)
            .limit(CHUNK)
        ).all()
        for bucket, n, swarm_sum in rows:
            yield int(bucket), int(n), float(swarm_sum)
        if len(rows) < CHUNK:
            return
        start = int(rows[-1][0]) + 1


def _stored_steps(*, conn: Connection, hive_id: str, start: int, stop: int) -> dict[int, Step]:
    rows = conn.execute(
        sa.select(hive_steps).where(
            hive_steps.c.hive_id == hive_id,
            hive_steps.c.bucket_start >= start,
            hive_steps.c.bucket_start <= stop,
        )
    ).all()
    return {row.bucket_start: _step_from_row(row) for row in rows}


def _save_steps(*, conn: Connection, hive_id: str, steps: list[Step]) -> None:
    if not steps:
        return
    insert = insert_for(conn)
    stmt = insert(hive_steps)
    stmt = stmt.on_conflict_do_update(
        index_elements=[hive_steps.c.hive_id, hive_steps.c.bucket_start],
        set_={
            name: stmt.excluded[name]
            for name in ("n_window", "score", "state", "pending", "since_ms", "pending_since_ms")
        },
    )
    conn.execute(
        stmt,
        [
            {
                "hive_id": hive_id,
                "bucket_start": s.bucket_start,
                "n_window": s.n_window,
                "score": s.score,
                "state": s.state,
                "pending": s.pending,
                "since_ms": s.since_ms,
                "pending_since_ms": s.pending_since_ms,
            }
            for s in steps
        ],
    )


def recompute_steps(
    *, conn: Connection, hive_id: str, first_bucket: int, last_touched: int, params: StateParams
) -> Step | None:
    """Re-evaluate the hive's steps from ``first_bucket``; returns the new last step, or None when the
    walk stopped early because the last step could not have changed."""
    window_ms = int(params.smoothing_seconds * 1000)
    previous_row = conn.execute(
        sa.select(hive_steps)
        .where(hive_steps.c.hive_id == hive_id, hive_steps.c.bucket_start < first_bucket)
        .order_by(hive_steps.c.bucket_start.desc())
        .limit(1)
    ).first()
    previous = _step_from_row(previous_row) if previous_row is not None else INITIAL
    # Buckets whose events are inside the smoothing window of the first re-evaluated step.
    reach_start = first_bucket - window_ms // 1000
    window: deque[tuple[int, int, float]] = deque()
    n_sum, s_sum = 0, 0.0
    changed: list[Step] = []
    stored: dict[int, Step] = {}
    stored_until = first_bucket - 1
    last: Step | None = None
    for bucket, n, swarm_sum in _buckets(conn=conn, hive_id=hive_id, start=reach_start + 1):
        window.append((bucket, n, swarm_sum))
        n_sum += n
        s_sum += swarm_sum
        while window and window[0][0] * 1000 <= bucket * 1000 - window_ms:
            _, old_n, old_sum = window.popleft()
            n_sum -= old_n
            s_sum -= old_sum
        if bucket < first_bucket:
            continue
        step = next_step(
            previous=previous, bucket_start=bucket, n_window=n_sum, swarm_sum=s_sum, params=params
        )
        if bucket > stored_until:
            stored_until = bucket + CHUNK * 60
            stored = _stored_steps(conn=conn, hive_id=hive_id, start=bucket, stop=stored_until)
        old = stored.get(bucket)
        if old is not None and _same(old, step):
            if bucket * 1000 - window_ms >= last_touched * 1000:
                _save_steps(conn=conn, hive_id=hive_id, steps=changed)
                return None
        else:
            changed.append(step)
            if len(changed) >= CHUNK:
                _save_steps(conn=conn, hive_id=hive_id, steps=changed)
                changed = []
        previous = step
        last = step
    _save_steps(conn=conn, hive_id=hive_id, steps=changed)
    return last


def window_counts(*, conn: Connection, hive_id: str, last_bucket: int, params: StateParams) -> dict[str, int]:
    """Per-label counts (winning label) over the smoothing window that ends with ``last_bucket``."""
    low = last_bucket - int(params.smoothing_seconds)
    rows = conn.execute(
        sa.select(rollup_labels.c.label, sa.func.sum(rollup_labels.c.n_top))
        .where(
            rollup_labels.c.hive_id == hive_id,
            rollup_labels.c.bucket_start > low,
            rollup_labels.c.bucket_start <= last_bucket,
        )
        .group_by(rollup_labels.c.label)
    ).all()
    return {label: int(n) for label, n in sorted(rows) if n}


def apply_step(
    *,
    conn: Connection,
    hive_id: str,
    step: Step,
    previous_state: str,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> dict[str, Any]:
    """The state-row values for a new last step, and the alert for a change into or out of ``swarm``."""
    values = {
        "state": step.state,
        "since_ms": step.since_ms,
        "confidence": confidence(state=step.state, score=step.score),
        "score": step.score,
        "n_window": step.n_window,
        "counts": window_counts(conn=conn, hive_id=hive_id, last_bucket=step.bucket_start, params=params),
        "last_bucket": step.bucket_start,
    }
    if step.state != previous_state and SWARM in (step.state, previous_state):
        kind = SWARM_STARTED if step.state == SWARM else SWARM_ENDED
        since_ms = step.since_ms if step.since_ms is not None else now_ms
        # A late batch can show that the new state began (event time) before the state it replaces was
        # announced: the swarm alerted at 05:11 "ended" at 04:31. Such an alert is dated when the old
        # state was announced, so swarm alerts never go back in time; ``since`` keeps the event time.
        announced_ms = last_swarm_alert_ms(conn=conn, hive_id=hive_id)
        revised = announced_ms is not None and since_ms < announced_ms
        record_alert(
            conn=conn,
            hive_id=hive_id,
            kind=kind,
            at_ms=announced_ms if revised else since_ms,
            details={
                "from": previous_state,
                "to": step.state,
                "since": iso_ms(since_ms),
                "revised": revised,
                "score": step.score,
                "n_window": step.n_window,
                "params": params.to_dict(),
            },
            webhook_urls=webhook_urls,
            now_ms=now_ms,
        )
    return values


def lock_state(*, conn: Connection, hive_id: str) -> Any | None:
    """The hive's state row, locked for the rest of the transaction (one writer per hive); None if the
    hive does not exist. SQLite needs no lock: its write transactions are serialised."""
    query = sa.select(hive_state).where(hive_state.c.hive_id == hive_id)
    if lock_clause(conn):
        query = query.with_for_update()
    return conn.execute(query).first()


def rederive(
    *,
    conn: Connection,
    hive_id: str,
    previous_state: str,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> None:
    """Forget the hive's steps and derive them again from all its rollups (call under :func:`lock_state`);
    the state row follows, with an alert if the current state changes."""
    conn.execute(sa.delete(hive_steps).where(hive_steps.c.hive_id == hive_id))
    first, last = conn.execute(
        sa.select(sa.func.min(rollups.c.bucket_start), sa.func.max(rollups.c.bucket_start)).where(
            rollups.c.hive_id == hive_id
        )
    ).one()
    if first is None:
        return
    step = recompute_steps(conn=conn, hive_id=hive_id, first_bucket=first, last_touched=last, params=params)
    if step is None:
        return
    values = apply_step(
        conn=conn,
        hive_id=hive_id,
        step=step,
        previous_state=previous_state,
        params=params,
        webhook_urls=webhook_urls,
        now_ms=now_ms,
    )
    conn.execute(
        sa.update(hive_state).where(hive_state.c.hive_id == hive_id).values(updated_ms=now_ms, **values)
    )


def rebuild(
    *, engine: Engine, hive_id: str, defaults: StateParams, webhook_urls: list[str], now_ms: int
) -> None:
    """Derive a hive's steps and state again from its rollups with its own parameters (e.g. after rollups
    were loaded in bulk); :class:`NotFound` if the hive does not exist."""
    with write_transaction(engine) as conn:
        current = lock_state(conn=conn, hive_id=hive_id)
        if current is None:
            raise NotFound(f"hive {hive_id!r} does not exist")
        overrides = conn.execute(sa.select(hives.c.params).where(hives.c.hive_id == hive_id)).scalar_one()
        rederive(
            conn=conn,
            hive_id=hive_id,
            previous_state=current.state,
            params=hive_params(defaults=defaults, overrides=overrides),
            webhook_urls=webhook_urls,
            now_ms=now_ms,
        )


@dataclass(frozen=True)
class SweepResult:
    checked: int
    went_offline: list[str]


def sweep_offline(
    *, engine: Engine, defaults: StateParams, webhook_urls: list[str], now_ms: int
) -> SweepResult:
    """Raise ``hive_offline`` once for each hive silent longer than its ``offline_after_seconds``.

    Offline is also decided at query time, so a status is right between sweeps; the sweep only makes sure
    an alert goes out. The conditional update makes a racing ingest (which resets the flag) win.
    """
    went: list[str] = []
    with write_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(hive_state.c.hive_id, hive_state.c.last_seen_ms, hives.c.params)
            .join(hives, hives.c.hive_id == hive_state.c.hive_id)
            .where(hive_state.c.offline_alerted.is_(False), hive_state.c.last_seen_ms.is_not(None))
        ).all()
        for hive_id, last_seen_ms, overrides in rows:
            params = hive_params(defaults=defaults, overrides=overrides)
            deadline = last_seen_ms + int(params.offline_after_seconds * 1000)
            if now_ms <= deadline:
                continue
            result = conn.execute(
                sa.update(hive_state)
                .where(
                    hive_state.c.hive_id == hive_id,
                    hive_state.c.offline_alerted.is_(False),
                    hive_state.c.last_seen_ms == last_seen_ms,
                )
                .values(offline_alerted=True, updated_ms=now_ms)
            )
            if result.rowcount != 1:
                continue
            record_alert(
                conn=conn,
                hive_id=hive_id,
                kind=HIVE_OFFLINE,
                at_ms=deadline,
                details={"last_seen_ms": last_seen_ms, "offline_after_seconds": params.offline_after_seconds},
                webhook_urls=webhook_urls,
                now_ms=now_ms,
            )
            went.append(hive_id)
    return SweepResult(checked=len(rows), went_offline=went)
