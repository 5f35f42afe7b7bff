"""Duty-cycled recorders with the default parameters: a battery recorder that records 10 s every 5 min
(9 windows of 2 s, 1 s apart) sends 9 readings per smoothing window, fewer than ``min_events``. The window
reaches back far enough (``max_lookback_seconds``) for the hive to get a state, and says why when it
cannot. Ten hours of a calm hive, real-series-like flicker included (about 30 % of windows scored swarm),
must be ``normal``; ten hours with a swarm in the last two must raise exactly one ``swarm_started``."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from beeaudio.collector.state import NORMAL, SWARM, UNKNOWN
from tests.fixtures.collector import T0, event, stored_steps

HOURS = 10
PERIOD_S = 300  # one recording every 5 minutes
WINDOWS = 9  # 10 s recorded: 2-s windows, 1 s apart
# Recordings start 55 s into a minute, so each one straddles two rollup buckets (5 + 4 windows): two
# steps per recording, the harder case for the confirmation.
START = T0 - timedelta(hours=HOURS) + timedelta(seconds=55)


def _calm(rng: random.Random) -> float:
    # Real non-swarming series had about a third of their windows called swarm by a synthetic-trained model.
    return rng.uniform(0.6, 0.95) if rng.random() < 0.3 else rng.uniform(0.02, 0.3)


def _swarming(rng: random.Random) -> float:
    return rng.uniform(0.7, 0.99) if rng.random() < 0.85 else rng.uniform(0.1, 0.4)


def recordings(*, hive_id: str, device_id: str, swarm_from_hour: float | None, seed: int) -> list[list]:
    """One list of events per recording, in time order."""
    rng = random.Random(seed)
    out = []
    for r in range(HOURS * 3600 // PERIOD_S):
        begins = START + timedelta(seconds=r * PERIOD_S)
        swarming = swarm_from_hour is not None and r * PERIOD_S >= swarm_from_hour * 3600
        out.append(
            [
                event(
                    hive_id=hive_id,
                    device_id=device_id,
                    at=begins + timedelta(seconds=w),
                    swarm=round(_swarming(rng) if swarming else _calm(rng), 4),
                )
                for w in range(WINDOWS)
            ]
        )
    return out


def _upload_live(collector, device, recs: list[list], tag: str) -> list[dict]:
    """One batch per recording, as a live device uploads; the status after each."""
    statuses = []
    for i, batch in enumerate(recs):
        response = collector.send(device, batch, batch_id=f"{tag}-{i}")
        assert response.status_code == 200, response.text
        statuses.append(collector.status(device["hive_id"]))
    return statuses


def test_calm_duty_cycled_hive_is_normal_with_default_params(collector) -> None:
    collector.add_hive("calm")
    device = collector.add_device("calm", "rec-calm")
    statuses = _upload_live(
        collector, device, recordings(hive_id="calm", device_id="rec-calm", swarm_from_hour=None, seed=1), "c"
    )
    # The first recording alone is too little, and the status says so ...
    first = statuses[0]
    assert (first["state"], first["reason"]) == (UNKNOWN, "too_few_readings")
    assert first["reason_text"] == "9 readings in the last 60 min, 10 needed"
    # ... from the second one on the hive is normal, for the whole ten hours.
    assert [s["state"] for s in statuses[1:]] == [NORMAL] * (len(statuses) - 1)
    last = statuses[-1]
    assert last["reason"] is None and last["confidence"] > 0.5
    assert last["n_window"] >= 10 and last["window"]["seconds"] <= 2 * PERIOD_S
    assert all(s["state"] != UNKNOWN or s["reason"] for s in statuses)
    assert collector.alerts("calm") == []


def test_duty_cycled_swarm_raises_exactly_one_alert(collector) -> None:
    collector.add_hive("swarming")
    device = collector.add_device("swarming", "rec-swarm")
    recs = recordings(hive_id="swarming", device_id="rec-swarm", swarm_from_hour=HOURS - 2, seed=2)
    statuses = _upload_live(collector, device, recs, "s")
    alerts = collector.alerts("swarming")
    assert [a["kind"] for a in alerts] == ["swarm_started"]
    # Dated at the bucket where the confirming run began: within three recordings (15 minutes) of the
    # swarm's first window, and not before the bucket that holds it.
    swarm_began = START + timedelta(hours=HOURS - 2)
    since = datetime.fromisoformat(alerts[0]["details"]["since"].replace("Z", "+00:00"))
    assert swarm_began.replace(second=0) <= since <= swarm_began + timedelta(minutes=15)
    assert statuses[-1]["state"] == SWARM
    calm_part = statuses[1 : (HOURS - 2) * 12]
    assert {s["state"] for s in calm_part} == {NORMAL}


@pytest.mark.slow  # the same ten hours sent in three orders
def test_duty_cycled_backlog_in_any_order_gives_the_same_state(collector) -> None:
    results = {}
    for hive_id, order in (("live", "in"), ("shuffled", "random")):
        collector.add_hive(hive_id)
        device = collector.add_device(hive_id, f"rec-{hive_id}")
        recs = recordings(hive_id=hive_id, device_id=device["device_id"], swarm_from_hour=HOURS - 2, seed=3)
        events = [e for rec in recs for e in rec]
        if order == "random":
            random.Random(5).shuffle(events)
        for i in range(0, len(events), 50):
            assert collector.send(device, events[i : i + 50], batch_id=f"{hive_id}-{i}").status_code == 200
        status = collector.status(hive_id)
        results[hive_id] = (
            {k: status[k] for k in ("state", "since", "swarm_score", "n_window", "window", "counts")},
            stored_steps(collector, hive_id),
        )
    assert results["live"][0]["state"] == SWARM
    assert results["shuffled"] == results["live"]


def test_without_the_look_back_the_status_says_why(collector) -> None:
    """With the look-back no longer than the smoothing window (the old behaviour), a duty-cycled hive stays
    unknown, and its status says how many readings it has and how many it needs."""
    collector.add_hive("short", max_lookback_seconds=300)
    device = collector.add_device("short", "rec-short")
    recs = recordings(hive_id="short", device_id="rec-short", swarm_from_hour=None, seed=4)[:24]
    statuses = _upload_live(collector, device, recs, "short")
    assert {s["state"] for s in statuses} == {UNKNOWN}
    assert statuses[-1]["reason"] == "too_few_readings"
    # Every step's window holds one recording (5 + 4 windows from the two buckets it straddles).
    assert {s["reason_text"] for s in statuses} == {"9 readings in the last 5 min, 10 needed"}
    # Nine readings are no basis for a swarm score either: none is shown.
    assert {s["swarm_score"] for s in statuses} == {None}


def test_a_late_event_re_evaluates_a_bounded_number_of_steps(collector, monkeypatch) -> None:
    """The look-back widens how far a late event reaches (an hour by default), and no further: a late
    reading in the middle of a day's history re-evaluates at most the hour after it."""
    from beeaudio.collector.store import hive_state

    collector.add_hive("long")
    device = collector.add_device("long", "rec-long")
    recs = recordings(hive_id="long", device_id="rec-long", swarm_from_hour=None, seed=6)
    events = [e for rec in recs for e in rec]
    late_index = len(events) // 2
    late = events.pop(late_index)
    for i in range(0, len(events), 200):
        assert collector.send(device, events[i : i + 200], batch_id=f"l{i}").status_code == 200
    calls = []
    real = hive_state.next_step
    monkeypatch.setattr(hive_state, "next_step", lambda **kw: calls.append(kw["bucket_start"]) or real(**kw))
    assert collector.send(device, [late], batch_id="late").json()["accepted"] == 1
    reach_buckets = int(collector.status("long")["params"]["max_lookback_seconds"]) // 60
    assert calls and calls[0] >= int(late.window_start.timestamp()) // 60 * 60
    # Steps exist only where there are readings: two per recording, 12 recordings an hour.
    assert len(calls) <= 2 * reach_buckets // 5 + 2, len(calls)
