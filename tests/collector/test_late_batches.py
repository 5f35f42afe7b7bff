"""A late batch cannot hold a hive (on SQLite: every writer) for long (issue 14, item 13).

Before, a 10-event batch dated before a 60-day history re-evaluated all 86 400 later steps in its own
transaction: seconds, with SQLite's write lock held, so another hive's batch waited as long. Now:

* a step beyond the reach of the batch's windows that differs only in ``since`` (the common case: the run
  now begins earlier) moves the rest of that run's ``since`` in UPDATEs of at most ``MOVE_BUDGET`` rows;
* a walk that must go on longer (the late events flip a hysteresis band for days) stops after
  ``STEP_BUDGET`` steps and goes on in transactions of its own, after the answer, taken over by the next
  batch of the hive, and finished at start-up or by the sweep if a crash interrupted it;
* either way, the steps and the state come out exactly as a derivation from scratch (in-order arrival).

The budgets are made small here so that a few days of history show what 60 days do with the defaults
(bench/collector.py --late measures those).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from beeaudio.collector.store import hive_state
from tests.fixtures.collector import ADMIN, T0, load_history, stored_steps, timeline

# Days of minute buckets walked in tiny transactions: ~5 s in all, so in the full suite, not the fast loop.
pytestmark = pytest.mark.slow

DAYS = 3
BUCKETS = DAYS * 1440
STEP_BUDGET = 300
MOVE_BUDGET = 500


@dataclass
class WriteMeter:
    """Rows each committed write transaction wrote to ``hive_steps`` (the walk's footprint)."""

    per_transaction: list[int] = field(default_factory=list)
    current: int = 0

    @property
    def largest(self) -> int:
        return max(self.per_transaction, default=0)


@pytest.fixture
def meter(collector) -> Iterator[WriteMeter]:
    found = WriteMeter()

    def on_execute(_conn, cursor, statement, parameters, _context, executemany) -> None:
        text = statement.lstrip().upper()
        if "HIVE_STEPS" in text and text.startswith(("INSERT", "UPDATE", "DELETE")):
            found.current += cursor.rowcount if cursor.rowcount >= 0 else len(parameters)

    def on_commit(_conn) -> None:
        if found.current:
            found.per_transaction.append(found.current)
        found.current = 0

    engine = collector.engine
    sa_event.listen(engine, "after_cursor_execute", on_execute)
    sa_event.listen(engine, "commit", on_commit)
    yield found
    sa_event.remove(engine, "after_cursor_execute", on_execute)
    sa_event.remove(engine, "commit", on_commit)


@pytest.fixture
def small_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    # raising=False: the same test ran against the collector before the budgets existed.
    monkeypatch.setattr(hive_state, "STEP_BUDGET", STEP_BUDGET, raising=False)
    monkeypatch.setattr(hive_state, "MOVE_BUDGET", MOVE_BUDGET, raising=False)


def _from_scratch(collector, hive_id: str) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The steps and status a derivation from all the rollups gives (what in-order arrival gives)."""
    from beeaudio.collector.store.hive_state import rebuild

    context = collector.app.state.context
    rebuild(
        engine=collector.engine,
        hive_id=hive_id,
        defaults=context.defaults,
        webhook_urls=[],
        now_ms=collector.clock(),
    )
    return stored_steps(collector, hive_id), _status(collector, hive_id)


def _status(collector, hive_id: str) -> dict[str, Any]:
    status = collector.status(hive_id)
    return {k: status[k] for k in ("state", "since", "swarm_score", "n_window", "counts", "reason")}


def _late_history(collector, *, swarm: float) -> tuple[dict[str, str], int]:
    collector.add_hive("old")
    device = collector.add_device("old", "old-d")
    first = load_history(
        collector=collector,
        hive_id="old",
        device_id="old-d",
        end_s=int(T0.timestamp()) - 60,
        buckets=BUCKETS,
        swarm=swarm,
    )
    return device, first


def _late_events(first: int, *, swarm: float, n: int = 10) -> list:
    start = datetime.fromtimestamp(first, UTC) - timedelta(hours=2)
    return timeline(hive_id="old", device_id="old-d", start=start, segments=[(swarm, n)], step_s=6)


def test_a_late_batch_that_only_moves_since_writes_little_per_transaction(
    collector, meter: WriteMeter, small_budgets: None
) -> None:
    device, first = _late_history(collector, swarm=0.1)
    before_since = collector.status("old")["since"]
    meter.per_transaction.clear()
    response = collector.send(device, _late_events(first, swarm=0.1), batch_id="late")
    assert response.status_code == 200 and response.json()["accepted"] == 10
    # The hive has been normal since the late readings: two hours before the history began.
    status = _status(collector, "old")
    assert status["state"] == "normal" and status["since"] < before_since
    assert meter.largest <= MOVE_BUDGET + 10, meter.per_transaction
    assert sum(meter.per_transaction) >= BUCKETS  # every step of the run was moved, in several goes
    steps = stored_steps(collector, "old")
    assert (steps, status) == _from_scratch(collector, "old")


def test_a_late_batch_before_the_only_step_moves_the_current_since(collector) -> None:
    """The step that differs only in ``since`` is the hive's newest: the state row moves with it."""
    collector.add_hive("old")
    device = collector.add_device("old", "old-d")
    # Ten readings in one bucket each: one step at 11:55, then one at 09:00 (beyond its reach).
    recent = timeline(
        hive_id="old", device_id="old-d", start=T0 - timedelta(minutes=5), segments=[(0.1, 10)], step_s=5
    )
    assert collector.send(device, recent, batch_id="recent").status_code == 200
    assert collector.status("old")["since"] == "2026-05-01T11:55:00.000Z"
    early = timeline(
        hive_id="old", device_id="old-d", start=T0 - timedelta(hours=3), segments=[(0.1, 10)], step_s=5
    )
    assert collector.send(device, early, batch_id="early").status_code == 200
    status = _status(collector, "old")
    assert (status["state"], status["since"]) == ("normal", "2026-05-01T09:00:00.000Z")
    assert (stored_steps(collector, "old"), status) == _from_scratch(collector, "old")


def test_a_late_batch_that_changes_days_of_state_goes_on_in_its_own_transactions(
    collector, meter: WriteMeter, small_budgets: None
) -> None:
    """Scores in the hysteresis band (0.5) for days: a late swarm keeps the hive in swarm through all of
    them, so every step changes; the walk goes on after the answer, a budget at a time."""
    device, first = _late_history(collector, swarm=0.5)
    assert _status(collector, "old")["state"] == "normal"
    meter.per_transaction.clear()
    response = collector.send(device, _late_events(first, swarm=0.95, n=30), batch_id="late")
    assert response.status_code == 200, response.text
    assert meter.largest <= STEP_BUDGET + 10, meter.per_transaction
    assert len(meter.per_transaction) > BUCKETS // STEP_BUDGET
    status = _status(collector, "old")
    assert status["state"] == "swarm"
    assert [a["kind"] for a in collector.alerts("old")] == ["swarm_started"]
    steps = stored_steps(collector, "old")
    assert (steps, status) == _from_scratch(collector, "old")


def test_an_unfinished_walk_is_taken_over_and_finished_after_a_crash(collector, small_budgets: None) -> None:
    from beeaudio.collector.app import create_app
    from beeaudio.collector.store.devices import DeviceIdentity
    from beeaudio.collector.store.hive_state import finish_recomputes
    from beeaudio.collector.store.ingest import store_batch
    from tests.fixtures.collector import make_settings

    _device, first = _late_history(collector, swarm=0.5)
    context = collector.app.state.context
    identity = DeviceIdentity(device_id="old-d", hive_id="old")

    def store(batch_id: str, events: list) -> Any:
        return store_batch(
            engine=collector.engine,
            device=identity,
            batch_id=batch_id,
            batch=events,
            defaults=context.defaults,
            bucket_seconds=60,
            webhook_urls=[],
            now_ms=collector.clock(),
        )

    # The batch is committed; the walk it left is what a crash right after the answer would leave.
    assert store("late", _late_events(first, swarm=0.95, n=30)).unfinished
    # A live batch of the same hive meanwhile takes the walk over where it stands (and leaves the rest).
    live = timeline(hive_id="old", device_id="old-d", start=T0 - timedelta(seconds=50), segments=[(0.5, 5)])
    assert store("live", live).unfinished
    assert collector.status("old")["state"] == "normal"  # not derived that far yet
    # Start-up finishes what is left (as the sweep would, every SWEEP_INTERVAL_SECONDS).
    settings = make_settings(db_url=collector.db_url, data_dir=context.data_dir)
    create_app(settings, clock_ms=collector.clock).state.context.engine.dispose()
    assert (
        finish_recomputes(engine=collector.engine, defaults=context.defaults, webhook_urls=[], now_ms=0) == []
    )
    status = _status(collector, "old")
    assert status["state"] == "swarm"
    assert (stored_steps(collector, "old"), status) == _from_scratch(collector, "old")


SEGMENTS = [(0.1, 60), (0.9, 50), (0.5, 40), (0.2, 40), (0.95, 30), (0.1, 40)]


@pytest.mark.parametrize("order", ["random", "reverse-batches"])
def test_out_of_order_batches_with_tiny_budgets_give_the_in_order_state(
    collector, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """Budgets of a few steps, so nearly every batch leaves a walk for later: still the in-order state."""
    monkeypatch.setattr(hive_state, "STEP_BUDGET", 3)
    monkeypatch.setattr(hive_state, "MOVE_BUDGET", 2)
    start = T0 - timedelta(hours=1)
    results = {}
    for hive_id, how in (("ordered", "in"), ("other", order)):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        events = timeline(
            hive_id=hive_id, device_id=device["device_id"], start=start, segments=SEGMENTS, step_s=15
        )
        if how == "random":
            random.Random(7).shuffle(events)
        batches = [events[i : i + 20] for i in range(0, len(events), 20)]
        if how == "reverse-batches":
            batches = batches[::-1]
        for i, batch in enumerate(batches):
            assert collector.send(device, batch, batch_id=f"{hive_id}-{i}").status_code == 200
        results[hive_id] = (stored_steps(collector, hive_id), _status(collector, hive_id))
    assert results["other"] == results["ordered"]
    assert results["ordered"] == _from_scratch(collector, "ordered")
    response = collector.client.get("/api/v1/hives", headers=ADMIN)
    assert response.status_code == 200
