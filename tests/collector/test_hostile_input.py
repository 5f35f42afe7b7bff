"""Input no database or JSON answer can hold is refused at the door with a 4xx that names the field, on
SQLite and PostgreSQL; nothing of it is stored, so no later read can fail on it (issue 14, items 9 and 10).

* lone surrogates (``\\udc00``) in an event's ``extra`` or a heartbeat: once stored, every answer that
  carried them was a 500;
* timestamps at the edge of what a datetime holds (``9999-12-31T23:59:59-01:00``);
* JSON nested deeper than the contract allows (``extra`` 600 levels, heartbeats 900; far deeper bodies the
  JSON parser cannot even read);
* a NUL in an id of a path or query (PostgreSQL text cannot hold it), and in a body's ids;
* cursors made of other digits than ASCII ones (``²³.1``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from beeaudio.core import wire
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, T0, bearer, timeline


@pytest.fixture
def device(collector) -> dict[str, str]:
    collector.add_hive("h1")
    return collector.add_device("h1", "d1")


def _events(n: int = 3, *, minutes_ago: int = 5) -> list[wire.ClassificationEvent]:
    return timeline(
        hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=minutes_ago), segments=[(0.2, n)]
    )


def _post_raw(collector, path: str, raw: str, token: str) -> Any:
    # json.dumps keeps a lone surrogate as the escape \udc00: what a hostile client sends on the wire.
    headers = {**bearer(token), "Content-Type": "application/json"}
    return collector.client.post(path, content=raw.encode("ascii"), headers=headers)


def _refused(response: Any, *, status: int = 422, words: str = "") -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail
    return detail


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def _reads_still_work(collector) -> None:
    for path in ("/api/v1/hives/h1/events", "/api/v1/hives/h1/devices", "/api/v1/hives", "/api/v1/alerts"):
        response = collector.client.get(path, headers=ADMIN)
        assert response.status_code == 200, (path, response.text)


# -- item 9: lone surrogates --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("extra value", lambda e: e.update(extra={"note": "ab\udc00"})),
        ("extra key", lambda e: e.update(extra={"\ud800x": 1})),
        ("extra deep in a list", lambda e: e.update(extra={"list": [1, {"s": "\udfff"}]})),
        ("a label", lambda e: e.update(probabilities={"normal\udc00": 0.8, "swarm": 0.2})),
    ],
)
def test_lone_surrogates_in_an_event_are_refused(collector, device, where: str, change) -> None:
    body = make_batch(device_id="d1", events=_events(), batch_id="b")
    change(body["events"][1])
    detail = _refused(_post_raw(collector, wire.EVENTS_PATH, json.dumps(body), device["token"]))
    assert "surrogate" in detail or "unicode" in detail.lower(), detail
    assert "events[1]" in detail or "events.1" in detail, detail
    assert collector.count("events") == 0
    _reads_still_work(collector)


def test_lone_surrogates_in_a_heartbeat_are_refused(collector, device) -> None:
    beat = {"schema": wire.HEARTBEAT_SCHEMA, "sent_at": "2026-05-01T11:00:00Z", "notes": {"x": "\udc00"}}
    path = wire.heartbeat_path("d1")
    detail = _refused(_post_raw(collector, path, json.dumps(beat), device["token"]), words="notes.x")
    assert "surrogate" in detail
    assert collector.count("heartbeats") == 0
    _reads_still_work(collector)


def test_a_valid_batch_with_unicode_is_stored_and_read_back(collector, device) -> None:
    events = _events()
    body = make_batch(device_id="d1", events=events, batch_id="b")
    body["events"][0]["extra"] = {"note": "Bienenstock Nord 🐝 — ok", "nested": [{"a": [1, 2]}]}
    response = collector.client.post(wire.EVENTS_PATH, json=body, headers=bearer(device["token"]))
    assert response.status_code == 200, response.text
    page = collector.client.get("/api/v1/hives/h1/events", headers=ADMIN).json()
    assert {"note": "Bienenstock Nord 🐝 — ok", "nested": [{"a": [1, 2]}]} in [
        e.get("extra") for e in page["events"]
    ]


# -- item 10: dates at the edge ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999-12:00"]
)
def test_timestamps_beyond_what_a_date_holds_are_refused(collector, device, stamp: str) -> None:
    body = make_batch(device_id="d1", events=_events(), batch_id="b")
    body["events"][2]["window_start"] = stamp
    response = collector.client.post(wire.EVENTS_PATH, json=body, headers=bearer(device["token"]))
    _refused(response, words="events[2]")
    assert "window_start" in response.json()["detail"]
    assert collector.count("events") == 0


# -- item 10: deep nesting --------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [wire.MAX_JSON_DEPTH, 100, 600, 2000, 50_000])
def test_deeply_nested_extra_is_refused(collector, device, depth: int) -> None:
    body = make_batch(device_id="d1", events=_events(), batch_id="b")
    body["events"][0]["extra"] = {"deep": None}
    raw = json.dumps(body).replace('{"deep": null}', '{"k": ' * depth + "1" + "}" * depth)
    detail = _refused(_post_raw(collector, wire.EVENTS_PATH, raw, device["token"]))
    assert "nested" in detail and ("extra" in detail or "body" in detail), detail
    assert collector.count("events") == 0
    _reads_still_work(collector)


# 5 000 levels: beyond what the JSON parser itself can read, and still under the heartbeat size limit.
@pytest.mark.parametrize("depth", [wire.MAX_JSON_DEPTH, 900, 5_000])
def test_deeply_nested_heartbeat_is_refused(collector, device, depth: int) -> None:
    head = f'{{"schema": "{wire.HEARTBEAT_SCHEMA}", "sent_at": "2026-05-01T11:00:00Z", "stage_info": '
    raw = head + "[" * depth + "]" * depth + "}"
    detail = _refused(_post_raw(collector, wire.heartbeat_path("d1"), raw, device["token"]))
    assert "nested" in detail, detail
    assert collector.count("heartbeats") == 0
    _reads_still_work(collector)


def test_nesting_within_the_limit_is_kept(collector, device) -> None:
    body = make_batch(device_id="d1", events=_events(), batch_id="b")
    # The event is 3 levels below the body (body, events, the event): extra may go the rest of the way.
    body["events"][0]["extra"] = _nested(wire.MAX_JSON_DEPTH - 4)
    response = collector.client.post(wire.EVENTS_PATH, json=body, headers=bearer(device["token"]))
    assert response.status_code == 200, response.text
    _reads_still_work(collector)


# -- item 10: NUL in ids ----------------------------------------------------------------------------------
NUL_READS = [
    "/api/v1/hives/h%00x",
    "/api/v1/hives/h%00x/status",
    "/api/v1/hives/h%00x/history",
    "/api/v1/hives/h%00x/events",
    "/api/v1/hives/h%00x/devices",
    "/api/v1/alerts?hive_id=h%00x",
    "/api/v1/devices/d%00x/model",
    "/api/v1/models/m%00x/file",
    "/api/v1/hives/h1/history?from=2026-05-01T00:00:00%00Z",
]


@pytest.mark.parametrize("path", NUL_READS)
def test_a_nul_in_a_path_or_query_is_refused(collector, device, path: str) -> None:
    detail = _refused(collector.client.get(path, headers=ADMIN))
    assert "NUL" in detail, detail


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/api/v1/hives/h%00x/params", {"state_params": {}}),
        ("POST", "/api/v1/hives/h%00x/devices", {}),
        ("DELETE", "/api/v1/devices/d%00x/token", None),
        ("POST", "/api/v1/devices/d%00x/token", None),
        ("POST", "/api/v1/models/m%00x/publish", {"hive_id": None}),
        ("POST", "/api/v1/models/m1/publish", {"hive_id": "h\x00x"}),
        ("POST", "/api/v1/hives", {"name": "North\x00"}),
        ("POST", "/api/v1/hives", {"name": "North", "hive_id": "h\x00"}),
        ("PUT", "/api/v1/hives/h1/params", {"state_params": {"enter\x00": 0.7}}),
    ],
)
def test_a_nul_in_an_admin_request_is_refused(collector, device, method: str, path: str, body) -> None:
    response = collector.client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 422, (method, path, response.text)
    assert isinstance(response.json()["detail"], str)


def test_a_nul_in_a_heartbeat_device_id_is_refused(collector, device) -> None:
    beat = {"schema": wire.HEARTBEAT_SCHEMA, "sent_at": "2026-05-01T11:00:00Z"}
    response = collector.client.post(
        "/api/v1/devices/d1%00/heartbeat", json=beat, headers=bearer(device["token"])
    )
    _refused(response, words="NUL")


# -- item 10: cursors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cursor", ["²³.1", "1.²", "١٢.3", "1.2.3", "-1.2", "1 .2", "9" * 19 + ".1", ""])
def test_cursors_that_were_never_handed_out_are_refused(collector, device, cursor: str) -> None:
    response = collector.client.get("/api/v1/hives/h1/events", params={"cursor": cursor}, headers=ADMIN)
    _refused(response, words="cursor")


def test_handed_out_cursors_still_work(collector, device) -> None:
    collector.send(device, _events(5))
    first = collector.client.get("/api/v1/hives/h1/events", params={"limit": 2}, headers=ADMIN).json()
    page = collector.client.get(
        "/api/v1/hives/h1/events", params={"limit": 2, "cursor": first["next_cursor"]}, headers=ADMIN
    )
    assert page.status_code == 200 and len(page.json()["events"]) == 2
