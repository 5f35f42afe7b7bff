"""Window quality and familiarity: the collector keeps what the device said, counts only evidence towards
the state, says why a hive is unknown, and raises ``microphone_silent`` / ``microphone_back`` once each.
Old devices (``beeaudio.event/1``) keep working and count as before."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from beeaudio.collector.state import (
    CONFIRMING,
    INITIAL,
    NO_SIGNAL,
    NORMAL,
    SWARM,
    TOO_FEW_READINGS,
    UNFAMILIAR,
    UNKNOWN,
    ParamsError,
    StateParams,
    Window,
    next_step,
    unusable_reason,
    window_kind,
)
from beeaudio.core import wire
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, T0, V1_EVENT_SCHEMA, bearer, event, timeline

START = T0 - timedelta(hours=2)


def _interleaved(hive_id: str, device_id: str, start: datetime, plan: list[tuple[int, dict]], step_s: float):
    """Events ``step_s`` apart, the kinds of ``plan`` ((count, event kwargs), ...) taking turns, so that
    every bucket holds a mix."""
    groups = [[kw] * count for count, kw in plan]
    queue = []
    while any(groups):
        for group in groups:
            if group:
                queue.append(group.pop())
    return [
        event(hive_id=hive_id, device_id=device_id, at=start + timedelta(seconds=i * step_s), **kw)
        for i, kw in enumerate(queue)
    ]


# -- the pure rules ------------------------------------------------------------------------------------------
def test_window_kinds() -> None:
    assert window_kind(quality=None, unfamiliar=False) == "evidence"  # a v1 event
    assert window_kind(quality="ok", unfamiliar=False) == "evidence"
    assert window_kind(quality="no_signal", unfamiliar=True) == "no_signal"  # silence first
    for quality in ("clipped", "dropout", "dc_offset"):
        assert window_kind(quality=quality, unfamiliar=False) == "poor_signal"
    assert window_kind(quality="ok", unfamiliar=True) == "unfamiliar"
    # The same verdict as the contract's own definition of evidence.
    for quality in wire.QUALITIES:
        for novelty in (1.0, 5.0):
            e = event(
                hive_id="h",
                device_id="d",
                at=T0,
                swarm=0.1,
                quality=quality,
                novelty=novelty,
                novelty_threshold=3.0,
            )
            kind = window_kind(quality=e.quality, unfamiliar=e.unfamiliar)
            assert (kind == "evidence") == e.is_evidence


def test_unusable_reasons_in_order() -> None:
    params = StateParams()
    assert unusable_reason(window=Window(seconds=300, evidence=30), params=params) is None
    # Half the readings without signal is no_signal, whatever else the window holds.
    assert unusable_reason(window=Window(seconds=300, evidence=15, no_signal=15), params=params) == NO_SIGNAL
    assert unusable_reason(window=Window(seconds=300, evidence=16, no_signal=14), params=params) is None
    # Too few readings to call a microphone silent: too few readings, said as such.
    few = Window(seconds=300, no_signal=9)
    assert unusable_reason(window=few, params=params) == TOO_FEW_READINGS
    # Unfamiliar is a share of the windows with a signal (clipped or silent ones do not dilute it).
    mostly_strange = Window(seconds=300, evidence=10, unfamiliar=10, poor_signal=40, no_signal=20)
    assert unusable_reason(window=mostly_strange, params=params) == UNFAMILIAR
    assert unusable_reason(window=Window(seconds=300, evidence=21, unfamiliar=19), params=params) is None
    assert unusable_reason(window=Window(seconds=300, evidence=9, poor_signal=30), params=params) == (
        TOO_FEW_READINGS
    )


def test_windows_without_evidence_never_decide() -> None:
    """A silent window that the model called normal (digital silence scores 0 % swarm) is no evidence."""
    params = StateParams(min_events=5)
    silent = Window(seconds=300, no_signal=30, evidence_swarm_sum=0.0)
    step = next_step(previous=INITIAL, bucket_start=0, window=silent, params=params)
    assert (step.state, step.reason, step.n_window, step.score) == (UNKNOWN, NO_SIGNAL, 0, None)
    normal = next_step(previous=step, bucket_start=60, window=Window(seconds=300, evidence=10), params=params)
    assert normal.state == NORMAL and normal.reason is None
    # A normal hive whose microphone dies is unknown from the step that says so, since that step.
    dead = next_step(previous=normal, bucket_start=120, window=silent, params=params)
    assert (dead.state, dead.reason, dead.since_ms) == (UNKNOWN, NO_SIGNAL, 120_000)
    # Unknown while a swarm waits for confirmation says so too.
    high = Window(seconds=300, evidence=10, evidence_swarm_sum=9.0)
    pending = next_step(previous=INITIAL, bucket_start=0, window=high, params=params)
    assert (pending.state, pending.reason) == (UNKNOWN, CONFIRMING)
    assert next_step(previous=pending, bucket_start=60, window=high, params=params).state == SWARM


def test_new_params_are_checked() -> None:
    for bad in (
        {"no_signal_fraction": 0},
        {"no_signal_fraction": 1.5},
        {"unfamiliar_fraction": -0.1},
        {"silent_min_events": 0},
        {"max_lookback_seconds": 0},
    ):
        with pytest.raises(ParamsError, match=next(iter(bad))):
            StateParams().with_overrides(bad)
    assert StateParams().with_overrides({"silent_min_events": 20}).silent_min_events == 20
    # A long smoothing window is never cut short by the look-back.
    assert StateParams(smoothing_seconds=7200).reach_seconds == 7200


# -- in the database -----------------------------------------------------------------------------------------
def _rollup_totals(collector, hive_id: str) -> dict[str, int]:
    from beeaudio.collector.db import rollups

    names = ("n", "n_evidence", "n_no_signal", "n_poor_signal", "n_unfamiliar")
    with collector.engine.connect() as conn:
        row = conn.execute(
            sa.select(*(sa.func.sum(rollups.c[name]) for name in names)).where(rollups.c.hive_id == hive_id)
        ).one()
    return dict(zip(names, (int(v) for v in row), strict=True))


def test_no_signal_and_poor_signal_windows_are_not_counted(collector) -> None:
    """Silent windows scored 95 % swarm and clipped ones 99 %: counted, they would make a swarm."""
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    events = _interleaved(
        "h1",
        "d1",
        T0 - timedelta(minutes=5),
        [
            (14, {"swarm": 0.1}),
            (10, {"swarm": 0.95, "quality": "no_signal"}),
            (26, {"swarm": 0.99, "quality": "clipped"}),
        ],
        step_s=6,
    )
    assert collector.send(device, events).status_code == 200
    status = collector.status("h1")
    assert status["state"] == NORMAL and status["reason"] is None
    assert status["swarm_score"] == pytest.approx(0.1)
    assert status["n_window"] == 14 and sum(status["counts"].values()) == 14
    assert status["window"] == {
        "seconds": 300.0,
        "readings": 50,
        "evidence": 14,
        "no_signal": 10,
        "poor_signal": 26,
        "unfamiliar": 0,
    }
    assert _rollup_totals(collector, "h1") == {
        "n": 50,
        "n_evidence": 14,
        "n_no_signal": 10,
        "n_poor_signal": 26,
        "n_unfamiliar": 0,
    }
    assert [a["kind"] for a in collector.alerts("h1")] == []
    # History keeps every window (devices and the demo count them) and says which were evidence.
    history = collector.client.get(
        "/api/v1/hives/h1/history",
        params={"from": (T0 - timedelta(hours=1)).isoformat(), "to": T0.isoformat(), "bucket": 3600},
        headers=ADMIN,
    ).json()
    (bucket,) = history["buckets"]
    assert (bucket["n"], bucket["n_evidence"], bucket["n_no_signal"], bucket["n_poor_signal"]) == (
        50,
        14,
        10,
        26,
    )
    assert bucket["mean_evidence_swarm_score"] == pytest.approx(0.1)
    assert sum(bucket["counts"].values()) == 50


def test_unfamiliar_windows_are_not_counted(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    strange = {"swarm": 0.95, "novelty": 7.5, "novelty_threshold": 3.0}
    familiar = {"swarm": 0.1, "novelty": 1.2, "novelty_threshold": 3.0}
    events = _interleaved("h1", "d1", T0 - timedelta(minutes=5), [(30, familiar), (20, strange)], step_s=6)
    assert collector.send(device, events).status_code == 200
    status = collector.status("h1")
    assert (status["state"], status["n_window"]) == (NORMAL, 30)
    assert status["swarm_score"] == pytest.approx(0.1)
    assert status["window"]["unfamiliar"] == 20
    assert _rollup_totals(collector, "h1")["n_unfamiliar"] == 20


def test_reasons_in_words(collector) -> None:
    """Every unknown hive says why, with its numbers."""
    collector.add_hive("new")
    assert (collector.status("new")["reason"], collector.status("new")["reason_text"]) == (
        "no_readings",
        "no readings received yet",
    )

    def hive(hive_id: str, events_of) -> dict:
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        events = events_of(hive_id, device["device_id"])
        assert collector.send(device, events, batch_id=hive_id).status_code == 200
        status = collector.status(hive_id)
        assert status["state"] == UNKNOWN, status
        return status

    # A dead microphone: 2 usable readings, then 58 silent ones, 5 s apart.
    silent = hive(
        "silent",
        lambda h, d: (
            timeline(hive_id=h, device_id=d, start=START, segments=[(0.05, 2)], step_s=5)
            + timeline(
                hive_id=h,
                device_id=d,
                start=START + timedelta(seconds=10),
                segments=[(0.0, 58)],
                step_s=5,
                quality="no_signal",
            )
        ),
    )
    assert silent["reason"] == "no_signal"
    assert silent["reason_text"].startswith("microphone silent: 58 of the last 60 readings had no signal")
    # Audio the model has never heard.
    strange = hive(
        "strange",
        lambda h, d: _interleaved(
            h,
            d,
            START,
            [(10, {"swarm": 0.1}), (20, {"swarm": 0.6, "novelty": 9.0, "novelty_threshold": 3.0})],
            step_s=6,
        ),
    )
    assert strange["reason"] == "unfamiliar"
    assert strange["reason_text"].startswith(
        "the model has not heard audio like this hive's: 20 of the last 30 readings with signal"
    )
    assert "train on your hives" in strange["reason_text"]
    # One duty-cycled recording: 9 windows, 1 s apart.
    sparse = hive(
        "sparse",
        lambda h, d: timeline(hive_id=h, device_id=d, start=START, segments=[(0.1, 9)], step_s=1),
    )
    assert sparse["reason"] == "too_few_readings"
    assert sparse["reason_text"] == "9 readings in the last 60 min, 10 needed"
    # Clipped windows do not count, and the text says so.
    clipped = hive(
        "clipped",
        lambda h, d: _interleaved(
            h, d, START, [(6, {"swarm": 0.1}), (20, {"swarm": 0.1, "quality": "clipped"})], step_s=6
        ),
    )
    assert clipped["reason_text"] == (
        "6 usable readings in the last 60 min, 10 needed (not counted: 20 clipped, dropping out or offset)"
    )
    # A swarm waiting for its confirmation.
    confirming = hive(
        "confirming",
        lambda h, d: timeline(hive_id=h, device_id=d, start=START, segments=[(0.9, 12)], step_s=5),
    )
    assert confirming["reason"] == "confirming" and "enter_swarm" in confirming["reason_text"]
    # Known states carry no reason.
    calm = timeline(hive_id="new", device_id="dev-new", start=START, segments=[(0.1, 12)], step_s=5)
    device = collector.add_device("new", "dev-new")
    collector.send(device, calm)
    assert collector.status("new")["state"] == NORMAL
    assert (collector.status("new")["reason"], collector.status("new")["reason_text"]) == (None, None)


def _silence_story(hive_id: str, device_id: str) -> list:
    """20 min calm, 30 min of a dead microphone (which the model calls normal), 20 min calm again."""
    start = T0 - timedelta(minutes=70)
    calm = timeline(hive_id=hive_id, device_id=device_id, start=start, segments=[(0.1, 120)])
    dead = timeline(
        hive_id=hive_id,
        device_id=device_id,
        start=start + timedelta(minutes=20),
        segments=[(0.0, 180)],
        quality="no_signal",
    )
    back = timeline(
        hive_id=hive_id, device_id=device_id, start=start + timedelta(minutes=50), segments=[(0.1, 120)]
    )
    return calm + dead + back


def test_microphone_silent_is_raised_once_and_ended_once(db_url, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from beeaudio.collector.app import create_app
    from beeaudio.collector.db import webhook_deliveries
    from tests.fixtures.collector import Clock, Collector, make_settings

    clock = Clock()
    settings = make_settings(db_url=db_url, data_dir=tmp_path / "d", webhooks="http://hooks.example/a")
    app = create_app(settings, clock_ms=clock)
    with TestClient(app) as client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        device = collector.add_device("h1", "d1")
        events = _silence_story("h1", "d1")
        batches = [events[i : i + 30] for i in range(0, len(events), 30)]
        silent_from = T0 - timedelta(minutes=50)
        for i, batch in enumerate(batches):
            assert collector.send(device, batch, batch_id=f"b{i}").status_code == 200
            # Re-sent batches (a device retrying after a lost answer) change nothing.
            assert collector.send(device, batch, batch_id=f"b{i}").json()["accepted"] == 0
            if batch[-1].window_start == silent_from + timedelta(minutes=30) - timedelta(seconds=10):
                status = collector.status("h1")
                assert (status["state"], status["reason"]) == (UNKNOWN, NO_SIGNAL)
                assert status["reason_text"].startswith("microphone silent: 180 of the last 19")
        alerts = collector.alerts("h1")
        assert [a["kind"] for a in alerts] == ["microphone_silent", "microphone_back"]
        silent, back = alerts
        assert silent["details"]["since"] == silent_from.isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
        assert silent["at"] == silent["details"]["since"] and back["at"] > silent["at"]
        assert collector.status("h1")["state"] == NORMAL
        with collector.engine.connect() as conn:
            queued = conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)).scalar_one()
        assert queued == 2  # one webhook delivery per alert


def test_silence_state_does_not_depend_on_arrival_order(collector) -> None:
    import random

    results = {}
    for hive_id, order in (("ordered", "in"), ("backlog", "newest-first"), ("shuffled", "random")):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        events = _silence_story(hive_id, device["device_id"])[:260]  # ends with the microphone dead
        batches = [events[i : i + 40] for i in range(0, len(events), 40)]
        if order == "newest-first":
            batches = batches[::-1]
        elif order == "random":
            random.Random(3).shuffle(events)
            batches = [events[i : i + 40] for i in range(0, len(events), 40)]
        for i, batch in enumerate(batches):
            assert collector.send(device, batch, batch_id=f"{hive_id}-{i}").status_code == 200
        status = collector.status(hive_id)
        results[hive_id] = {k: status[k] for k in ("state", "since", "reason", "window", "n_window")}
        assert "swarm_started" not in [a["kind"] for a in collector.alerts(hive_id)]
    assert results["ordered"]["reason"] == NO_SIGNAL
    assert results["backlog"] == results["ordered"]
    assert results["shuffled"] == results["ordered"]
    # Alerts follow the current state: one silence, one alert, in order or as a backlog newest first.
    for hive_id in ("ordered", "backlog"):
        assert [a["kind"] for a in collector.alerts(hive_id)] == ["microphone_silent"]


# -- old devices ---------------------------------------------------------------------------------------------
def test_v1_events_are_accepted_and_count_as_evidence(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    old = timeline(
        hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=4), segments=[(0.8, 24)], quality=None
    )
    assert old[0].schema == V1_EVENT_SCHEMA
    body = make_batch(device_id="d1", events=old, batch_id="v1")
    assert all("quality" not in e and e["schema"] == V1_EVENT_SCHEMA for e in body["events"])
    response = collector.client.post("/api/v1/events", json=body, headers=bearer(device["token"]))
    assert response.status_code == 200 and response.json()["accepted"] == 24, response.text
    status = collector.status("h1")
    assert status["state"] == SWARM  # counted as they always were
    assert status["n_window"] == 24 and status["window"]["evidence"] == 24
    assert _rollup_totals(collector, "h1")["n_evidence"] == 24
    # A v2 event next to them keeps what the device said; the v1 ones come back as v1.
    new = event(
        hive_id="h1", device_id="d1", at=T0, swarm=0.2, quality="clipped", novelty=1.0, novelty_threshold=4.0
    )
    assert collector.send(device, [new], batch_id="v2").status_code == 200
    page = collector.client.get("/api/v1/hives/h1/events", params={"limit": 2}, headers=ADMIN).json()
    newest, older = page["events"]
    assert (newest["schema"], newest["quality"], newest["novelty"], newest["novelty_threshold"]) == (
        wire.EVENT_SCHEMA,
        "clipped",
        1.0,
        4.0,
    )
    assert older["schema"] == V1_EVENT_SCHEMA and "quality" not in older
    # A v1 event that claims v2 fields is refused, as the contract says.
    bad = make_batch(device_id="d1", events=old[:1], batch_id="bad")
    bad["events"][0]["quality"] = "ok"
    response = collector.client.post("/api/v1/events", json=bad, headers=bearer(device["token"]))
    assert response.status_code == 422
