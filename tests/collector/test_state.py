"""Hive state: the pure machine (hysteresis, confirmation, unknown), and in the database: late and
out-of-order events give the in-order state, offline detection, history from rollups."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from beeaudio.collector.state import (
    INITIAL,
    NORMAL,
    SWARM,
    UNKNOWN,
    ParamsError,
    StateParams,
    Window,
    next_step,
)
from beeaudio.collector.store.hive_state import sweep_offline
from tests.fixtures.collector import ADMIN, T0, stored_steps, timeline


def evidence(n: int, mean: float) -> Window:
    """A window of ``n`` evidence windows with mean swarm score ``mean``."""
    return Window(seconds=60, evidence=n, evidence_swarm_sum=n * mean)


def run(scores: list[tuple[int, float]], params: StateParams) -> list[str]:
    """Feed buckets of (n events, mean score) one minute apart, each its own smoothing window."""
    step, states = INITIAL, []
    for i, (n, mean) in enumerate(scores):
        step = next_step(previous=step, bucket_start=60 * i, window=evidence(n, mean), params=params)
        states.append(step.state)
    return states


PARAMS = StateParams(smoothing_seconds=60, enter_swarm=0.6, exit_swarm=0.4, confirm_buckets=2, min_events=5)


def test_unknown_until_min_events() -> None:
    assert run([(0, 0.0), (4, 0.9), (5, 0.1)], PARAMS) == [UNKNOWN, UNKNOWN, NORMAL]


def test_entering_swarm_needs_consecutive_confirmation() -> None:
    # One bucket over enter_swarm is a flicker, two in a row are a swarm.
    states = run([(6, 0.1), (6, 0.9), (6, 0.1), (6, 0.9), (6, 0.95), (6, 0.9)], PARAMS)
    assert states == [NORMAL, NORMAL, NORMAL, NORMAL, SWARM, SWARM]


def test_entering_swarm_from_unknown_needs_the_same_confirmation() -> None:
    # The first decision is no exception: one bucket over enter_swarm is a flicker from any state.
    assert run([(6, 0.9), (6, 0.1), (6, 0.1)], PARAMS) == [UNKNOWN, NORMAL, NORMAL]
    assert run([(6, 0.9), (6, 0.9), (6, 0.9)], PARAMS) == [UNKNOWN, SWARM, SWARM]
    # A run towards swarm is broken by a step with too few events, as a run from normal would be.
    assert run([(6, 0.9), (4, 0.9), (6, 0.9), (6, 0.9)], PARAMS) == [UNKNOWN] * 3 + [SWARM]
    # Below enter_swarm there is nothing to confirm: normal at once, as before.
    assert run([(6, 0.5)], PARAMS) == [NORMAL]
    # With confirm_buckets=1 a single step decides, from unknown as from normal.
    assert run([(6, 0.9)], replace(PARAMS, confirm_buckets=1)) == [SWARM]
    step = INITIAL
    for i, mean in enumerate([0.9, 0.9]):
        step = next_step(previous=step, bucket_start=60 * i, window=evidence(6, mean), params=PARAMS)
    assert (step.state, step.since_ms) == (SWARM, 0)  # since = the start of the confirming run


def test_hysteresis_band_keeps_the_state() -> None:
    # Scores between exit (0.4) and enter (0.6) change nothing, whichever state the hive is in.
    swarm = run([(6, 0.9), (6, 0.9), (6, 0.5), (6, 0.45), (6, 0.55), (6, 0.3), (6, 0.2)], PARAMS)
    assert swarm == [UNKNOWN, SWARM, SWARM, SWARM, SWARM, SWARM, NORMAL]
    normal = run([(6, 0.1), (6, 0.5), (6, 0.59), (6, 0.55)], PARAMS)
    assert normal == [NORMAL] * 4


def test_since_is_the_start_of_the_confirming_run() -> None:
    step = INITIAL
    for i, mean in enumerate([0.1, 0.1, 0.8, 0.9, 0.9]):
        step = next_step(previous=step, bucket_start=60 * i, window=evidence(10, mean), params=PARAMS)
    assert step.state == SWARM
    assert step.since_ms == 120_000  # the bucket where the score first crossed enter_swarm


def test_params_overrides_are_checked() -> None:
    assert StateParams().with_overrides({"enter_swarm": 0.7}).enter_swarm == 0.7
    with pytest.raises(ParamsError, match="hysteresis"):
        StateParams().with_overrides({"enter_swarm": 0.3})
    with pytest.raises(ParamsError, match="unknown"):
        StateParams().with_overrides({"enter": 0.7})
    with pytest.raises(ParamsError, match="whole number"):
        StateParams().with_overrides({"min_events": 2.5})


SEGMENTS = [(0.1, 60), (0.85, 50), (0.5, 12), (0.9, 20), (0.15, 60)]  # 10 s apart: ~33 minutes


def _comparable(status: dict) -> dict:
    return {k: status[k] for k in ("state", "since", "confidence", "swarm_score", "n_window", "counts")}


def test_late_and_out_of_order_events_give_the_in_order_state(collector) -> None:
    start = T0 - timedelta(hours=1)
    results = {}
    for hive_id, order in (("ordered", "in"), ("shuffled", "random"), ("backlog", "reverse-batches")):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        events = timeline(hive_id=hive_id, device_id=device["device_id"], start=start, segments=SEGMENTS)
        if order == "random":
            random.Random(4).shuffle(events)
        batches = [events[i : i + 25] for i in range(0, len(events), 25)]
        if order == "reverse-batches":
            # A device uploading its backlog newest-first after an outage: every batch is late.
            batches = batches[::-1]
        for i, batch in enumerate(batches):
            response = collector.send(device, batch, batch_id=f"{hive_id}-{i}")
            assert response.status_code == 200, response.text
        results[hive_id] = (_comparable(collector.status(hive_id)), stored_steps(collector, hive_id))
    assert results["ordered"][0]["state"] == NORMAL
    assert results["ordered"][1], "steps were stored"
    assert results["shuffled"] == results["ordered"]
    assert results["backlog"] == results["ordered"]


def test_swarm_alerts_fire_once_despite_flicker(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    segments = [(0.1, 60), (0.95, 3), (0.1, 30), (0.9, 60), (0.55, 30), (0.1, 60)]
    events = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(hours=1), segments=segments)
    for i in range(0, len(events), 10):
        assert collector.send(device, events[i : i + 10], batch_id=f"b{i}").status_code == 200
    alerts = collector.client.get("/api/v1/alerts", params={"hive_id": "h1"}, headers=ADMIN).json()
    assert [a["kind"] for a in alerts] == ["swarm_started", "swarm_ended"]
    started = alerts[0]
    assert started["details"]["to"] == SWARM
    assert collector.status("h1")["state"] == NORMAL


def test_unknown_then_offline_then_back(collector) -> None:
    collector.add_hive("h1", offline_after_seconds=600, min_events=5)
    device = collector.add_device("h1", "d1")
    assert collector.status("h1")["state"] == UNKNOWN
    few = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(seconds=40), segments=[(0.2, 3)])
    collector.send(device, few)
    assert collector.status("h1")["state"] == UNKNOWN
    more = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(seconds=10), segments=[(0.2, 3)])
    collector.send(device, more, batch_id="b2")
    assert collector.status("h1")["state"] == NORMAL

    context = collector.app.state.context
    collector.clock.advance(599)
    assert collector.status("h1")["state"] == NORMAL
    assert (
        sweep_offline(
            engine=collector.engine, defaults=context.defaults, webhook_urls=[], now_ms=collector.clock()
        ).went_offline
        == []
    )
    collector.clock.advance(2)
    status = collector.status("h1")
    assert status["state"] == "offline"
    first = sweep_offline(
        engine=collector.engine, defaults=context.defaults, webhook_urls=[], now_ms=collector.clock()
    )
    again = sweep_offline(
        engine=collector.engine, defaults=context.defaults, webhook_urls=[], now_ms=collector.clock()
    )
    assert first.went_offline == ["h1"] and again.went_offline == []

    back = timeline(hive_id="h1", device_id="d1", start=collector.clock.now, segments=[(0.2, 1)])
    assert collector.send(device, back, batch_id="b3").status_code == 200
    assert collector.status("h1")["state"] != "offline"
    kinds = [a["kind"] for a in collector.client.get("/api/v1/alerts", headers=ADMIN).json()]
    assert kinds == ["hive_offline", "hive_back"]


def test_history_comes_from_rollups(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    start = T0 - timedelta(minutes=30)
    events = timeline(hive_id="h1", device_id="d1", start=start, segments=[(0.2, 30), (0.8, 30)], step_s=20)
    collector.send(device, events)
    response = collector.client.get(
        "/api/v1/hives/h1/history",
        params={"from": (start).isoformat(), "to": T0.isoformat(), "bucket": 600},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket_seconds"] == 600
    buckets = body["buckets"]
    assert [b["n"] for b in buckets] == [30, 30]
    assert buckets[0]["counts"] == {"normal": 30, "swarm": 0}
    assert buckets[1]["mean_probabilities"]["swarm"] == pytest.approx(0.8)
    assert buckets[0]["mean_swarm_score"] == pytest.approx(0.2)
    # The same numbers survive deleting the raw events: history reads only the rollups.
    from beeaudio.collector.db import events as events_table

    with collector.engine.begin() as conn:
        conn.execute(sa.delete(events_table))
    again = collector.client.get(
        "/api/v1/hives/h1/history",
        params={"from": start.isoformat(), "to": T0.isoformat(), "bucket": 600},
        headers=ADMIN,
    ).json()
    assert again["buckets"] == buckets


def test_params_change_rederives_state(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    events = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=20), segments=[(0.55, 100)])
    collector.send(device, events)
    assert collector.status("h1")["state"] == NORMAL  # 0.55 < enter_swarm 0.6
    response = collector.client.put(
        "/api/v1/hives/h1/params",
        json={"state_params": {"enter_swarm": 0.5, "exit_swarm": 0.3}},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == SWARM
    assert response.json()["params"]["enter_swarm"] == 0.5
    bad = collector.client.put(
        "/api/v1/hives/h1/params", json={"state_params": {"enter_swarm": 2}}, headers=ADMIN
    )
    assert bad.status_code == 422


def _alerts(collector, hive_id: str) -> list[dict]:
    response = collector.client.get("/api/v1/alerts", params={"hive_id": hive_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def _upload(collector, device: dict, batches: list[list], tag: str) -> None:
    for i, batch in enumerate(batches):
        response = collector.send(device, batch, batch_id=f"{tag}-{i}")
        assert response.status_code == 200, response.text


def _in_batches(events: list, size: int = 100) -> list[list]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def _assert_alerts_in_order(alerts: list[dict]) -> None:
    # Swarm alerts alternate and each one is dated at or after the one whose state it ends.
    swarm = [a for a in alerts if a["kind"] in ("swarm_started", "swarm_ended")]
    kinds = [a["kind"] for a in swarm]
    assert kinds == ["swarm_started", "swarm_ended"] * (len(kinds) // 2) + ["swarm_started"] * (
        len(kinds) % 2
    )
    moments = [datetime.fromisoformat(a["at"].replace("Z", "+00:00")) for a in swarm]
    assert moments == sorted(moments), swarm


def test_normal_hive_files_out_of_order_raise_no_swarm_alert(collector) -> None:
    """The demo run: an agent read a short recording (05:10:30, one minute of flicker) before the 40
    minutes that precede it. The first decision on the short file went straight from unknown to swarm
    (no confirmation), and when the earlier file landed the collector said swarm_ended dated 04:31,
    before the swarm_started of 05:11."""
    day = T0.replace(hour=0)
    results = {}
    for hive_id, order in (("in-order", "in"), ("files-swapped", "swapped")):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        # 6 s apart: 10 events per 60-s bucket, so min_events (10) needs a full bucket.
        file_a = timeline(
            hive_id=hive_id,
            device_id=device["device_id"],
            start=day.replace(hour=4, minute=31),
            segments=[(0.02, 395)],
            step_s=6,
        )
        file_b = timeline(
            hive_id=hive_id,
            device_id=device["device_id"],
            start=day.replace(hour=5, minute=10, second=30),
            segments=[(0.02, 5), (0.95, 10), (0.02, 10)],
            step_s=6,
        )
        files = [file_a, file_b] if order == "in" else [file_b, file_a]
        for f, events in enumerate(files):
            _upload(collector, device, _in_batches(events), tag=f"{hive_id}-{f}")
        results[hive_id] = (_comparable(collector.status(hive_id)), stored_steps(collector, hive_id))
        assert [a["kind"] for a in _alerts(collector, hive_id)] == [], order
    assert results["in-order"][0]["state"] == NORMAL
    assert results["files-swapped"] == results["in-order"]


def test_late_batch_before_since_never_dates_an_alert_before_the_one_it_ends(collector) -> None:
    """A swarm seen on a fresh upload, then the 40 minutes before it arrive newest batch first: the smoothed
    score says the hive was normal all along, so the swarm ends. The alert must not be dated before the
    swarm_started it ends (the new normal state's ``since`` is 04:31, far earlier)."""
    day = T0.replace(hour=0)
    results = {}
    for hive_id, order in (("in-order", "in"), ("late", "late")):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"dev-{hive_id}")
        before = timeline(
            hive_id=hive_id,
            device_id=device["device_id"],
            start=day.replace(hour=4, minute=31),
            segments=[(0.05, 400)],
            step_s=6,
        )
        burst = timeline(
            hive_id=hive_id,
            device_id=device["device_id"],
            start=day.replace(hour=5, minute=11),
            segments=[(0.9, 40)],
            step_s=6,
        )
        if order == "in":
            _upload(collector, device, _in_batches(before + burst), tag=hive_id)
        else:
            _upload(collector, device, [burst], tag=f"{hive_id}-burst")
            assert collector.status(hive_id)["state"] == SWARM
            _upload(collector, device, _in_batches(before)[::-1], tag=f"{hive_id}-before")
        results[hive_id] = (_comparable(collector.status(hive_id)), stored_steps(collector, hive_id))
    assert results["late"] == results["in-order"]
    assert results["late"][0]["state"] == NORMAL
    assert results["late"][0]["since"].startswith(day.replace(hour=4, minute=31).strftime("%Y-%m-%dT%H:%M"))
    assert _alerts(collector, "in-order") == []
    alerts = _alerts(collector, "late")
    assert [a["kind"] for a in alerts] == ["swarm_started", "swarm_ended"]
    _assert_alerts_in_order(alerts)
    started, ended = alerts
    assert ended["at"] == started["at"]  # the swarm is withdrawn, not back-dated
    assert ended["details"]["revised"] is True
    assert ended["details"]["since"] < started["at"]  # when the new state began, in event time


@pytest.mark.parametrize("seed", [1, 2])
def test_clearly_normal_hive_never_swarms_whatever_the_batches(collector, seed: int) -> None:
    """Events all near 0, files in random order with gaps, batches of random sizes that split buckets."""
    rng = random.Random(seed)
    collector.add_hive("calm")
    device = collector.add_device("calm", "dev-calm")
    files, at = [], T0.replace(hour=3)
    for _ in range(8):
        at += timedelta(seconds=rng.choice([0, 7, 45, 400]))
        n = rng.randint(15, 150)
        events = timeline(
            hive_id="calm", device_id="dev-calm", start=at, segments=[(0.01, n)], step_s=rng.choice([2, 6])
        )
        files.append([replace(e, swarm_score=rng.uniform(0.0, 0.05)) for e in events])
        at = events[-1].window_start + timedelta(seconds=6)
    rng.shuffle(files)
    batches = []
    for events in files:
        i = 0
        while i < len(events):
            size = rng.choice([3, 9, 100])
            batches.append(events[i : i + size])
            i += size
    _upload(collector, device, batches, tag="calm")
    assert [a["kind"] for a in _alerts(collector, "calm")] == []
    assert collector.status("calm")["state"] == NORMAL
