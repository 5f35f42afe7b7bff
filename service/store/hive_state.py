"""Incremental hive state in the database: steps per bucket, the current-state row, the offline sweep.

The current state of a hive lives in one ``hive_state`` row (a status query reads that row). It is the last
of the hive's ``hive_steps``: one row per rollup bucket with data, each the state machine of
``beeaudio.collector.state`` advanced by that bucket. When events land in bucket ``b`` (in order or
late), the steps from ``b`` on are re-evaluated from the rollups; the walk stops as soon as a step is past
the reach of the changed buckets (``StateParams.reach_seconds``: the smoothing window, or the look-back a
sparse hive's window may take) and comes out as it was stored, because every later step then follows
unchanged. So the stored state is always the one in-order arrival would have given.

``rules_version`` in the state row says which rules its steps were derived with: a hive whose steps are
older than :data:`RULES_VERSION` is re-derived from its rollups (at start-up, and before its next batch).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import (
    hive_state,
    hive_steps,
    hives,
    insert_for,
    lock_clause,
    read_transaction,
    rollup_labels,
    rollups,
    write_transaction,
)
from beeaudio.collector.state import (
    INITIAL,
    NO_READINGS,
    NO_SIGNAL,
    SWARM,
    UNKNOWN,
    StateParams,
    Step,
    Window,
    confidence,
    hive_params,
    next_step,
)
from beeaudio.collector.store.alerts import (
    HIVE_OFFLINE,
    MICROPHONE_BACK,
    MICROPHONE_SILENT,
    SWARM_ENDED,
    SWARM_STARTED,
    last_alert_ms,
    last_swarm_alert_ms,
    record_alert,
)
from beeaudio.collector.store.errors import NotFound
from beeaudio.collector.timeutil import iso_ms

log = logging.getLogger(__name__)

#: Buckets read per query while walking the steps (bounds memory for a long backlog).
CHUNK = 2000
#: Steps one transaction re-evaluates at most (about 30 ms each thousand on SQLite); the rest of a long
#: walk (a late batch before a history whose state it changes for days) continues in transactions of its
#: own, so other hives' batches get their turn in between. A day of one-minute buckets is 1 440 steps.
STEP_BUDGET = 2000
#: Later steps of one run whose ``since`` one transaction moves at most (a plain UPDATE, about 20 µs a row
#: on PostgreSQL): a late batch that only makes a 60-day run begin a day earlier takes 9 transactions.
MOVE_BUDGET = 10_000
#: The rules the steps are derived with. 1: every window counted, smoothing window only. 2 (schema 0002):
#: evidence windows only, the look-back for sparse hives, reasons and the microphone-silent alert.
RULES_VERSION = 2
_MICROPHONE_ALERTS = (MICROPHONE_SILENT, MICROPHONE_BACK)


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
        **_no_readings(),
        "silent_alerted": False,
    }


def _no_readings() -> dict[str, Any]:
    """The state-row values of a hive with nothing to derive a state from."""
    return {
        "reason": NO_READINGS,
        "window_seconds": None,
        "n_readings": 0,
        "n_no_signal": 0,
        "n_poor_signal": 0,
        "n_unfamiliar": 0,
        "rules_version": RULES_VERSION,
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
    """The stored fields are equal (``reason`` and ``window`` follow from the same window)."""
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


@dataclass
class _Totals:
    """One bucket's rollups (all devices summed), or a running sum of several."""

    bucket: int = 0
    evidence: int = 0
    evidence_swarm_sum: float = 0.0
    no_signal: int = 0
    poor_signal: int = 0
    unfamiliar: int = 0

    def add(self, other: _Totals, sign: int = 1) -> None:
        self.evidence += sign * other.evidence
        self.evidence_swarm_sum += sign * other.evidence_swarm_sum
        self.no_signal += sign * other.no_signal
        self.poor_signal += sign * other.poor_signal
        self.unfamiliar += sign * other.unfamiliar

    def window(self, *, seconds: float, first_bucket: int | None) -> Window:
        return Window(
            seconds=seconds,
            first_bucket=first_bucket,
            evidence=self.evidence,
            evidence_swarm_sum=self.evidence_swarm_sum,
            no_signal=self.no_signal,
            poor_signal=self.poor_signal,
            unfamiliar=self.unfamiliar,
        )


def _buckets(*, conn: Connection, hive_id: str, start: int, stop: int | None = None) -> Iterator[_Totals]:
    """The hive's buckets, all devices summed, from ``start`` on (up to ``stop`` included), in order."""
    columns = (
        sa.func.sum(rollups.c.n_evidence),
        sa.func.sum(rollups.c.evidence_swarm_sum),
        sa.func.sum(rollups.c.n_no_signal),
        sa.func.sum(rollups.c.n_poor_signal),
        sa.func.sum(rollups.c.n_unfamiliar),
    )
    while True:
        query = sa.select(rollups.c.bucket_start, *columns).where(
            rollups.c.hive_id == hive_id, rollups.c.bucket_start >= start
        )
        if stop is not None:
            query = query.where(rollups.c.bucket_start <= stop)
        rows = conn.execute(
            query.group_by(rollups.c.bucket_start).order_by(rollups.c.bucket_start).limit(CHUNK)
        ).all()
        for bucket, evidence, swarm_sum, no_signal, poor, unfamiliar in rows:
            yield _Totals(
                bucket=int(bucket),
                evidence=int(evidence),
                evidence_swarm_sum=float(swarm_sum),
                no_signal=int(no_signal),
                poor_signal=int(poor),
                unfamiliar=int(unfamiliar),
            )
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


class _Windows:
    """The sliding window of the steps: ``core`` holds the buckets of the last ``smoothing_seconds``
    (with a running sum), ``older`` the ones behind it that a sparse hive's window may still reach.

    ``load_older`` gives the buckets before the first one pushed that are still within reach, oldest
    first. It is called once, and only when a step needs to look back: a hive that reports steadily never
    needs it, so a live batch reads the smoothing window's buckets only, as before the look-back."""

    def __init__(self, params: StateParams, *, load_older: Callable[[], list[_Totals]]) -> None:
        self.params = params
        self._load_older: Callable[[], list[_Totals]] | None = load_older
        self.smoothing_ms = int(params.smoothing_seconds * 1000)
        self.reach_ms = int(params.reach_seconds * 1000)
        self.core: deque[_Totals] = deque()
        self.older: deque[_Totals] = deque()
        self.core_sum = _Totals()

    def push(self, totals: _Totals) -> None:
        bucket_ms = totals.bucket * 1000
        self.core.append(totals)
        self.core_sum.add(totals)
        while self.core and self.core[0].bucket * 1000 <= bucket_ms - self.smoothing_ms:
            old = self.core.popleft()
            self.core_sum.add(old, sign=-1)
            self.older.append(old)
        self._forget(bucket_ms)

    def _forget(self, bucket_ms: int) -> None:
        while self.older and self.older[0].bucket * 1000 <= bucket_ms - self.reach_ms:
            self.older.popleft()

    def window(self, bucket: int) -> Window:
        """The window of the step at ``bucket`` (the last one pushed): the smoothing window, reaching
        further back, bucket by bucket, while it holds fewer than ``min_events`` evidence windows."""
        needed = self.params.min_events
        first = self.core[0].bucket if self.core else None
        if self.core_sum.evidence >= needed:
            return self.core_sum.window(seconds=self.params.smoothing_seconds, first_bucket=first)
        if self._load_older is not None:
            earlier, self._load_older = self._load_older(), None
            self.older.extendleft(reversed(earlier))
            self._forget(bucket * 1000)
        reached = _Totals()
        reached.add(self.core_sum)
        for totals in reversed(self.older):
            reached.add(totals)
            first = totals.bucket
            if reached.evidence >= needed:
                seconds = max(self.params.smoothing_seconds, float(bucket - first))
                return reached.window(seconds=seconds, first_bucket=first)
        # Not enough even this far back: the window is everything within reach, and says how far that is.
        return reached.window(seconds=self.params.reach_seconds, first_bucket=first)


@dataclass(frozen=True)
class Walk:
    """How a re-evaluation of a hive's steps ended.

    ``last``: the new last step, when the walk went through the hive's newest bucket (the state row follows
    it); None when it stopped earlier because nothing later could change, or at its budget.
    ``resume_at``: where the walk stopped at its budget of steps, or None when it is done; the rest is
    continued later in transactions of their own (:func:`continue_recompute`), ``until`` being the bucket
    before which it may not stop on a step that came out as stored."""

    last: Step | None
    resume_at: int | None
    until: int
    steps: int


def _since_only(old: Step, new: Step) -> bool:
    """Equal but for ``since``, with no run pending: every later step of the same run then differs in
    ``since`` alone (it is copied forwards until the state changes), so UPDATEs bring them all."""
    return (
        old.since_ms != new.since_ms
        and old.pending == new.pending == 0
        and _same(old, replace(new, since_ms=old.since_ms))
    )


def _move_since(
    *, conn: Connection, hive_id: str, after: int, old_ms: int | None, new_ms: int | None
) -> int | None:
    """Give the steps after ``after`` that continue the run which began at ``old_ms`` its new beginning,
    at most :data:`MOVE_BUDGET` of them; returns the bucket where the rest goes on, or None when the move
    reached the newest step (and then the state row too, when its step is ``after`` or one of them). A
    later run begins after ``after`` (its ``since`` is a later bucket), so it is never taken for this one."""
    end = conn.execute(
        sa.select(hive_steps.c.bucket_start)
        .where(hive_steps.c.hive_id == hive_id, hive_steps.c.bucket_start > after)
        .order_by(hive_steps.c.bucket_start)
        .offset(MOVE_BUDGET)
        .limit(1)
    ).scalar()
    same_run = hive_steps.c.since_ms.is_(None) if old_ms is None else hive_steps.c.since_ms == old_ms
    span = [hive_steps.c.hive_id == hive_id, hive_steps.c.bucket_start > after, same_run]
    if end is not None:
        span.append(hive_steps.c.bucket_start < end)
    conn.execute(sa.update(hive_steps).where(*span).values(since_ms=new_ms))
    if end is not None:
        return int(end)
    state_run = hive_state.c.since_ms.is_(None) if old_ms is None else hive_state.c.since_ms == old_ms
    conn.execute(
        sa.update(hive_state)
        .where(hive_state.c.hive_id == hive_id, hive_state.c.last_bucket >= after, state_run)
        .values(since_ms=new_ms)
    )
    return None


def recompute_steps(
    *,
    conn: Connection,
    hive_id: str,
    first_bucket: int,
    until: int,
    params: StateParams,
    max_steps: int | None = None,
) -> Walk:
    """Re-evaluate the hive's steps from ``first_bucket`` on, in the caller's transaction.

    The walk stops at the first step at or after ``until`` that comes out as it was stored (every later
    step follows unchanged), or that differs from it only in ``since`` (the rest of that run is moved by
    :func:`_move_since`), or at the hive's newest bucket; and, whatever else, after ``max_steps`` steps
    (default :data:`STEP_BUDGET`), so that no batch holds the hive (on SQLite: every writer) for long. A
    batch gives ``until`` = its last bucket + the reach of a window: no step after that sees its events."""
    budget = STEP_BUDGET if max_steps is None else max_steps
    previous_row = conn.execute(
        sa.select(hive_steps)
        .where(hive_steps.c.hive_id == hive_id, hive_steps.c.bucket_start < first_bucket)
        .order_by(hive_steps.c.bucket_start.desc())
        .limit(1)
    ).first()
    previous = _step_from_row(previous_row) if previous_row is not None else INITIAL
    # The first step's smoothing window is read with the walk; the buckets behind it that its look-back
    # can reach (start > first - reach) only if a step needs them.
    reach_ms = int(params.reach_seconds * 1000)
    walk_start = first_bucket - -(-int(params.smoothing_seconds * 1000) // 1000) + 1
    reach_start = first_bucket - -(-reach_ms // 1000) + 1

    def load_older() -> list[_Totals]:
        if reach_start >= walk_start:
            return []
        return list(_buckets(conn=conn, hive_id=hive_id, start=reach_start, stop=walk_start - 1))

    windows = _Windows(params, load_older=load_older)
    changed: list[Step] = []
    stored: dict[int, Step] = {}
    stored_until = first_bucket - 1
    last: Step | None = None
    walked = 0
    for totals in _buckets(conn=conn, hive_id=hive_id, start=walk_start):
        bucket = totals.bucket
        windows.push(totals)
        if bucket < first_bucket:
            continue
        if walked >= budget:
            _save_steps(conn=conn, hive_id=hive_id, steps=changed)
            return Walk(last=None, resume_at=bucket, until=until, steps=walked)
        walked += 1
        step = next_step(previous=previous, bucket_start=bucket, window=windows.window(bucket), params=params)
        if bucket > stored_until:
            stored_until = bucket + CHUNK * 60
            stored = _stored_steps(conn=conn, hive_id=hive_id, start=bucket, stop=stored_until)
        old = stored.get(bucket)
        if old is not None and bucket >= until and _same(old, step):
            _save_steps(conn=conn, hive_id=hive_id, steps=changed)
            return Walk(last=None, resume_at=None, until=until, steps=walked)
        if old is not None and bucket >= until and _since_only(old, step):
            _save_steps(conn=conn, hive_id=hive_id, steps=[*changed, step])
            rest = _move_since(
                conn=conn, hive_id=hive_id, after=bucket, old_ms=old.since_ms, new_ms=step.since_ms
            )
            return Walk(last=None, resume_at=rest, until=until, steps=walked)
        if old is None or not _same(old, step):
            changed.append(step)
            if len(changed) >= CHUNK:
                _save_steps(conn=conn, hive_id=hive_id, steps=changed)
                changed = []
        previous = step
        last = step
    _save_steps(conn=conn, hive_id=hive_id, steps=changed)
    return Walk(last=last, resume_at=None, until=until, steps=walked)


def until_for(*, last_touched: int, params: StateParams) -> int:
    """The first bucket whose window cannot reach ``last_touched``: where a batch's walk may stop."""
    return last_touched + -(-int(params.reach_seconds * 1000) // 1000)


def window_counts(*, conn: Connection, hive_id: str, step: Step) -> dict[str, int]:
    """Per-label counts (winning label) of the evidence windows in the step's window."""
    window = step.window
    if window is None or window.first_bucket is None:
        return {}
    rows = conn.execute(
        sa.select(rollup_labels.c.label, sa.func.sum(rollup_labels.c.n_top_evidence))
        .where(
            rollup_labels.c.hive_id == hive_id,
            rollup_labels.c.bucket_start >= window.first_bucket,
            rollup_labels.c.bucket_start <= step.bucket_start,
        )
        .group_by(rollup_labels.c.label)
    ).all()
    return {label: int(n) for label, n in sorted(rows) if n}


def _silent_since_ms(*, conn: Connection, hive_id: str, step: Step, params: StateParams) -> int:
    """When the microphone went quiet: the first bucket with silent windows after the last bucket that
    held evidence (within the step's reach)."""
    low = step.bucket_start - int(params.reach_seconds)
    in_reach = (
        rollups.c.hive_id == hive_id,
        rollups.c.bucket_start > low,
        rollups.c.bucket_start <= step.bucket_start,
    )
    last_heard = conn.execute(
        sa.select(sa.func.max(rollups.c.bucket_start)).where(*in_reach, rollups.c.n_evidence > 0)
    ).scalar()
    after = low if last_heard is None else int(last_heard)
    first_silent = conn.execute(
        sa.select(sa.func.min(rollups.c.bucket_start)).where(
            *in_reach, rollups.c.n_no_signal > 0, rollups.c.bucket_start > after
        )
    ).scalar()
    return int(first_silent if first_silent is not None else step.bucket_start) * 1000


def _window_values(step: Step) -> dict[str, Any]:
    window = step.window or Window(seconds=0.0)
    return {
        "reason": step.reason if step.state == UNKNOWN else None,
        "window_seconds": window.seconds,
        "n_readings": window.readings,
        "n_no_signal": window.no_signal,
        "n_poor_signal": window.poor_signal,
        "n_unfamiliar": window.unfamiliar,
    }


def apply_step(
    *,
    conn: Connection,
    hive_id: str,
    step: Step,
    current: Any,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> dict[str, Any]:
    """The state-row values for a new last step, and the alerts its change brings: into or out of
    ``swarm``, and into or out of a silent microphone. ``current`` is the hive's state row before."""
    previous_state = current.state
    values = {
        "state": step.state,
        "since_ms": step.since_ms,
        "confidence": confidence(state=step.state, score=step.score),
        "score": step.score,
        "n_window": step.n_window,
        "counts": window_counts(conn=conn, hive_id=hive_id, step=step),
        "last_bucket": step.bucket_start,
        **_window_values(step),
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
    values.update(
        _microphone_alert(
            conn=conn,
            hive_id=hive_id,
            step=step,
            current=current,
            params=params,
            webhook_urls=webhook_urls,
            now_ms=now_ms,
        )
    )
    return values


def _microphone_alert(
    *,
    conn: Connection,
    hive_id: str,
    step: Step,
    current: Any,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> dict[str, Any]:
    """``microphone_silent`` once when the current step says the window is mostly without signal,
    ``microphone_back`` once when it no longer does: like ``hive_offline``/``hive_back``, a flag in the
    state row makes each fire once per silence, whatever is re-sent or arrives late."""
    silent = step.reason == NO_SIGNAL
    if silent == bool(current.silent_alerted):
        return {}
    window = step.window or Window(seconds=0.0)
    counts = {
        "readings": window.readings,
        "no_signal": window.no_signal,
        "evidence": window.evidence,
        "window_seconds": window.seconds,
    }
    # Dated in event time, never before the previous microphone alert (they alternate, forwards).
    previous_ms = last_alert_ms(conn=conn, hive_id=hive_id, kinds=_MICROPHONE_ALERTS)
    if silent:
        since_ms = _silent_since_ms(conn=conn, hive_id=hive_id, step=step, params=params)
        kind, at_ms, details = MICROPHONE_SILENT, since_ms, {"since": iso_ms(since_ms), **counts}
    else:
        at_ms = step.bucket_start * 1000
        kind, details = MICROPHONE_BACK, {"state": step.state, "reason": step.reason, **counts}
    if previous_ms is not None:
        at_ms = max(at_ms, previous_ms)
    record_alert(
        conn=conn,
        hive_id=hive_id,
        kind=kind,
        at_ms=at_ms,
        details=details,
        webhook_urls=webhook_urls,
        now_ms=now_ms,
    )
    return {"silent_alerted": silent}


def lock_state(*, conn: Connection, hive_id: str) -> Any | None:
    """The hive's state row, locked for the rest of the transaction (one writer per hive); None if the
    hive does not exist. SQLite needs no lock: its write transactions are serialised."""
    query = sa.select(hive_state).where(hive_state.c.hive_id == hive_id)
    if lock_clause(conn):
        query = query.with_for_update()
    return conn.execute(query).first()


def walk_steps(
    *,
    conn: Connection,
    hive_id: str,
    current: Any,
    first_bucket: int,
    until: int,
    params: StateParams,
    max_steps: int | None = None,
) -> Walk:
    """:func:`recompute_steps` for a batch's buckets, taking over the rest of an unfinished walk: while
    one is pending (``recompute_from``), the steps from there on may not follow from their predecessors,
    so the walk starts there (or earlier) and goes at least to its ``until``."""
    if current.recompute_from is not None:
        first_bucket = min(first_bucket, current.recompute_from)
        until = max(until, current.recompute_until if current.recompute_until is not None else until)
    return recompute_steps(
        conn=conn, hive_id=hive_id, first_bucket=first_bucket, until=until, params=params, max_steps=max_steps
    )


def walk_outcome(
    *,
    conn: Connection,
    hive_id: str,
    walk: Walk,
    current: Any,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> dict[str, Any]:
    """The state-row values a walk leads to: what is left of it, and, when it reached the newest bucket,
    the state its last step gives (with the alerts that change brings, :func:`apply_step`)."""
    values = _pending(walk)
    if walk.last is not None:
        values.update(
            apply_step(
                conn=conn,
                hive_id=hive_id,
                step=walk.last,
                current=current,
                params=params,
                webhook_urls=webhook_urls,
                now_ms=now_ms,
            )
        )
    return values


def _pending(walk: Walk) -> dict[str, Any]:
    if walk.resume_at is None:
        return {"recompute_from": None, "recompute_until": None}
    log.info("steps re-evaluated up to bucket %d; the rest continues in its own transactions", walk.resume_at)
    return {"recompute_from": walk.resume_at, "recompute_until": walk.until}


def rederive(
    *,
    conn: Connection,
    hive_id: str,
    current: Any,
    params: StateParams,
    webhook_urls: list[str],
    now_ms: int,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Forget the hive's steps and derive them again from all its rollups (call under :func:`lock_state`);
    returns the state-row values to write (with the alerts if the current state changes). A history
    longer than the step budget is derived on by :func:`continue_recompute`."""
    conn.execute(sa.delete(hive_steps).where(hive_steps.c.hive_id == hive_id))
    first, last = conn.execute(
        sa.select(sa.func.min(rollups.c.bucket_start), sa.func.max(rollups.c.bucket_start)).where(
            rollups.c.hive_id == hive_id
        )
    ).one()
    values: dict[str, Any] = {"rules_version": RULES_VERSION, "updated_ms": now_ms}
    if first is None:
        return {
            **values,
            **_no_readings(),
            "state": UNKNOWN,
            "since_ms": None,
            "confidence": 0.0,
            "score": None,
            "n_window": 0,
            "counts": {},
            "last_bucket": None,
            "recompute_from": None,
            "recompute_until": None,
        }
    # No stored step is left to stop at: the walk goes to the newest bucket (in one or more transactions).
    walk = recompute_steps(
        conn=conn, hive_id=hive_id, first_bucket=first, until=last, params=params, max_steps=max_steps
    )
    values.update(
        walk_outcome(
            conn=conn,
            hive_id=hive_id,
            walk=walk,
            current=current,
            params=params,
            webhook_urls=webhook_urls,
            now_ms=now_ms,
        )
    )
    return values


def continue_recompute(
    *,
    engine: Engine,
    hive_id: str,
    defaults: StateParams,
    webhook_urls: list[str],
    now_ms: int,
    max_steps: int | None = None,
) -> bool:
    """One more transaction of the hive's unfinished walk (at most ``max_steps`` steps, under the hive's
    lock); True while some of it is left. When the walk reaches the newest bucket, the state row follows
    it, with the alerts its change brings."""
    with write_transaction(engine) as conn:
        current = lock_state(conn=conn, hive_id=hive_id)
        if current is None or current.recompute_from is None:
            return False
        overrides = conn.execute(sa.select(hives.c.params).where(hives.c.hive_id == hive_id)).scalar_one()
        params = hive_params(defaults=defaults, overrides=overrides)
        walk = recompute_steps(
            conn=conn,
            hive_id=hive_id,
            first_bucket=current.recompute_from,
            until=current.recompute_until if current.recompute_until is not None else current.recompute_from,
            params=params,
            max_steps=max_steps,
        )
        values: dict[str, Any] = {
            "updated_ms": now_ms,
            **walk_outcome(
                conn=conn,
                hive_id=hive_id,
                walk=walk,
                current=current,
                params=params,
                webhook_urls=webhook_urls,
                now_ms=now_ms,
            ),
        }
        conn.execute(sa.update(hive_state).where(hive_state.c.hive_id == hive_id).values(**values))
    return walk.resume_at is not None


def finish_recomputes(
    *,
    engine: Engine,
    defaults: StateParams,
    webhook_urls: list[str],
    now_ms: int,
    hive_id: str | None = None,
    max_steps: int | None = None,
) -> list[str]:
    """Bring every unfinished walk (or ``hive_id``'s) to its end, one transaction of ``max_steps`` steps at
    a time, so other writers get their turn in between; returns the hives done. Run after a batch that
    left one, at start-up and by the background sweep (a walk a crash interrupted is finished then)."""
    query = sa.select(hive_state.c.hive_id).where(hive_state.c.recompute_from.is_not(None))
    if hive_id is not None:
        query = query.where(hive_state.c.hive_id == hive_id)
    with read_transaction(engine) as conn:
        pending = list(conn.execute(query.order_by(hive_state.c.hive_id)).scalars())
    for pending_id in pending:
        while continue_recompute(
            engine=engine,
            hive_id=pending_id,
            defaults=defaults,
            webhook_urls=webhook_urls,
            now_ms=now_ms,
            max_steps=max_steps,
        ):
            pass
    return pending


def rederive_locked(
    *,
    conn: Connection,
    hive_id: str,
    defaults: StateParams,
    webhook_urls: list[str],
    now_ms: int,
) -> None:
    """Lock the hive's state row, re-derive its steps with its own parameters and write the row;
    :class:`NotFound` if the hive does not exist."""
    current = lock_state(conn=conn, hive_id=hive_id)
    if current is None:
        raise NotFound(f"hive {hive_id!r} does not exist")
    overrides = conn.execute(sa.select(hives.c.params).where(hives.c.hive_id == hive_id)).scalar_one()
    values = rederive(
        conn=conn,
        hive_id=hive_id,
        current=current,
        params=hive_params(defaults=defaults, overrides=overrides),
        webhook_urls=webhook_urls,
        now_ms=now_ms,
    )
    conn.execute(sa.update(hive_state).where(hive_state.c.hive_id == hive_id).values(**values))


def rebuild(
    *, engine: Engine, hive_id: str, defaults: StateParams, webhook_urls: list[str], now_ms: int
) -> None:
    """Derive a hive's steps and state again from its rollups with its own parameters (e.g. after rollups
    were loaded in bulk); :class:`NotFound` if the hive does not exist."""
    with write_transaction(engine) as conn:
        rederive_locked(
            conn=conn, hive_id=hive_id, defaults=defaults, webhook_urls=webhook_urls, now_ms=now_ms
        )
    finish_recomputes(
        engine=engine, defaults=defaults, webhook_urls=webhook_urls, now_ms=now_ms, hive_id=hive_id
    )


def rederive_stale(
    *, engine: Engine, defaults: StateParams, webhook_urls: list[str], now_ms: int
) -> list[str]:
    """Re-derive every hive whose steps were derived with older rules (after an upgrade), one hive per
    transaction; returns their ids. A hive that a batch re-derived meanwhile is skipped."""
    with read_transaction(engine) as conn:
        stale = list(
            conn.execute(
                sa.select(hive_state.c.hive_id)
                .where(hive_state.c.rules_version != RULES_VERSION)
                .order_by(hive_state.c.hive_id)
            ).scalars()
        )
    done = []
    for hive_id in stale:
        with write_transaction(engine) as conn:
            current = lock_state(conn=conn, hive_id=hive_id)
            if current is None or current.rules_version == RULES_VERSION:
                continue
            rederive_locked(
                conn=conn, hive_id=hive_id, defaults=defaults, webhook_urls=webhook_urls, now_ms=now_ms
            )
        done.append(hive_id)
    finish_recomputes(engine=engine, defaults=defaults, webhook_urls=webhook_urls, now_ms=now_ms)
    if done:
        log.info("re-derived the state of %d hive(s) with the rules of version %d", len(done), RULES_VERSION)
    return done


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
