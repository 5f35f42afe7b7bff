"""What counts as delivered: only the collector's own acknowledgement of a batch deletes its events; only
the collector's own refusal of an event dead-letters it; dead letters can be put back (``requeue``).

Every wrong server is a real HTTP server on loopback: a captive portal (302 to a 200 HTML page), a proxy's
HTML 400, servers answering 200 with JSON that is not the acknowledgement. The clock-skew case runs against
the real collector (uvicorn on loopback, SQLite) with a settable clock.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from beeaudio.core.errors import EXIT_USAGE
from beeaudio.device.client import CollectorClient
from beeaudio.device.outbox import Outbox
from beeaudio.device.uplink import Uploader
from tests.fixtures.device import (
    captive_portal,
    fake_collector,
    html_answer,
    json_answer,
    make_events,
    run_cli,
)

N = 87  # the adversarial pass's outbox


def uploader(outbox: Outbox, url: str, *, batch_size: int = 200, device_id: str = "dev-1") -> Uploader:
    client = CollectorClient(base_url=url, token="t0ken", timeout_s=5)
    return Uploader(outbox=outbox, client=client, device_id=device_id, batch_size=batch_size)


def ack(batch: dict, **changes: object) -> dict:
    answer = {"batch_id": batch["batch_id"], "accepted": len(batch["events"]), "duplicates": 0}
    answer.update(changes)
    return answer


# -- item 2: any 2xx deleted the outbox ---------------------------------------------------------------------
WRONG_2XX = {
    "captive portal 302 -> 200 html": None,  # built from the running server (needs its URL)
    "html 200": html_answer(200, b"<html><body>It works!</body></html>"),
    "empty 204": lambda _b: (204, {}, b""),
    "json 200 {}": json_answer(200, lambda b: {}),
    "json 200 list": json_answer(200, lambda b: [ack(b)]),
    "wrong batch id": json_answer(200, lambda b: ack(b, batch_id="another-batch")),
    "too few counted": json_answer(200, lambda b: ack(b, accepted=len(b["events"]) - 1)),
    "too many counted": json_answer(200, lambda b: ack(b, duplicates=1)),
    "counts as text": json_answer(200, lambda b: ack(b, accepted=str(len(b["events"])))),
    "counts as booleans": json_answer(
        200, lambda b: {"batch_id": b["batch_id"], "accepted": True, "duplicates": False}
    ),
    "201 without counts": json_answer(201, lambda b: {"batch_id": b["batch_id"]}),
}


@pytest.mark.parametrize("kind", list(WRONG_2XX))
def test_only_the_collectors_acknowledgement_deletes_events(tmp_path: Path, kind: str) -> None:
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = captive_portal(server) if WRONG_2XX[kind] is None else WRONG_2XX[kind]
        outbox.add_events(make_events(N))
        up = uploader(outbox, server.url)
        outcome = up.upload_once()
        assert outcome.kind == "retry", outcome
        assert "not the collector's acknowledgement" in outcome.error or "redirect" in outcome.error
        assert outbox.depth() == N and outbox.dead_letters() == []
        assert outbox.status().uploaded_events == 0 and outbox.status().last_upload_at is None
        # The real collector comes back: everything is delivered, once.
        server.answer = None
        assert up.upload_once().kind == "sent"
        assert outbox.depth() == 0 and len(server.accepted) == N


def test_a_captive_portal_redirect_is_not_followed(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = captive_portal(server)
        outbox.add_events(make_events(3))
        outcome = uploader(outbox, server.url).upload_once()
        assert outcome.kind == "retry" and "302" in outcome.error and "/portal" in outcome.error
        assert [path for method, path, _, _ in server.requests] == ["/api/v1/events"]  # no GET of the portal


def test_duplicates_count_as_delivered(tmp_path: Path) -> None:
    """A batch the collector stored before (an acknowledgement lost on the way) is acknowledged as
    duplicates: that is delivery."""
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = json_answer(200, lambda b: ack(b, accepted=0, duplicates=len(b["events"])))
        outbox.add_events(make_events(5))
        outcome = uploader(outbox, server.url).upload_once()
        assert (outcome.kind, outcome.accepted) == ("sent", 5)
        assert outbox.depth() == 0


# -- item 3: a proxy's 400 dead-lettered everything ---------------------------------------------------------
NOT_AN_EVENT_REFUSAL = {
    "proxy html 400": html_answer(400),
    "proxy html 422": html_answer(422, b"<html>Unprocessable</html>"),
    "waf html 403": html_answer(403, b"<html>Request blocked</html>"),
    "json 400 without detail": json_answer(400, lambda b: {"error": "bad request"}),
    "json 400 not about an event": json_answer(400, lambda b: {"detail": "bad request"}),
    "collector 422 about the batch": json_answer(
        422, lambda b: {"detail": "unknown batch schema 'x'; this collector knows 'beeaudio.batch/1'"}
    ),
    "collector 403 about the token": json_answer(
        403, lambda b: {"detail": "this token belongs to device 'dev-2', not 'dev-1'"}
    ),
    "event index out of range": json_answer(422, lambda b: {"detail": f"events[{len(b['events'])}]: bad"}),
    "html that mentions events[0]": html_answer(422, b"events[0]: <html>refused</html>"),
}


@pytest.mark.parametrize("kind", list(NOT_AN_EVENT_REFUSAL))
def test_only_the_collectors_refusal_of_an_event_dead_letters_it(tmp_path: Path, kind: str) -> None:
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = NOT_AN_EVENT_REFUSAL[kind]
        outbox.add_events(make_events(N))
        started = time.monotonic()
        outcome = uploader(outbox, server.url).upload_once()
        assert outcome.kind == "retry" and outcome.dead_lettered == 0, outcome
        assert outbox.depth() == N and outbox.dead_letters() == []
        assert len(server.events_posts()) == 1  # not split into 87 single-event requests either
        assert time.monotonic() - started < 5


def test_the_collectors_refusal_dead_letters_only_the_event_it_names(tmp_path: Path) -> None:
    events = make_events(N)
    poison = {events[5].event_id, events[60].event_id}
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.refuse_event = lambda e: e["event_id"] in poison
        outbox.add_events(events)
        outcome = uploader(outbox, server.url).upload_once()
        assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", N - 2, 2)
        assert {d["event_id"] for d in outbox.dead_letters()} == poison
        assert all(d["status"] == 422 and "in the future" in d["reason"] for d in outbox.dead_letters())
        assert set(server.accepted) == {e.event_id for e in events} - poison
        assert len(server.events_posts()) == 3  # named, set aside, resent: no halving into dozens


def test_a_pydantic_style_refusal_names_the_event_too(tmp_path: Path) -> None:
    """The collector's request validation answers 422 ``events.<i>.<field>: ...`` (FastAPI's loc)."""
    events = make_events(4)

    def answer(batch: dict):
        ids = [e["event_id"] for e in batch["events"]]
        if events[2].event_id in ids:
            i = ids.index(events[2].event_id)
            detail = {"detail": f"events.{i}.window_seconds: Input should be a finite number", "errors": []}
            return 422, {"Content-Type": "application/json"}, json.dumps(detail).encode()
        return None

    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = answer
        outbox.add_events(events)
        outcome = uploader(outbox, server.url).upload_once()
        assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", 3, 1)
        assert [d["event_id"] for d in outbox.dead_letters()] == [events[2].event_id]


def test_413_shrinks_the_batch_and_dead_letters_nothing(tmp_path: Path) -> None:
    def answer(batch: dict):
        if len(batch["events"]) > 10:
            detail = {"detail": f"batch has {len(batch['events'])} events; the limit is 10 per request"}
            return 413, {"Content-Type": "application/json"}, json.dumps(detail).encode()
        return None

    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = answer
        outbox.add_events(make_events(40))
        outcome = uploader(outbox, server.url, batch_size=40).upload_once()
        assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", 40, 0)
        assert outbox.depth() == 0 and outbox.dead_letters() == []


def test_a_single_event_413_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.answer = html_answer(413, b"<html>Request Entity Too Large</html>")
        outbox.add_events(make_events(4))
        outcome = uploader(outbox, server.url).upload_once()
        assert outcome.kind == "retry" and outbox.depth() == 4 and outbox.dead_letters() == []


# -- requeue ------------------------------------------------------------------------------------------------
def test_requeue_puts_dead_letters_back_and_filters(tmp_path: Path) -> None:
    events = make_events(6)
    path = tmp_path / "state" / "outbox.sqlite"
    with Outbox(path=path, max_events=1000) as outbox, fake_collector() as server:
        server.refuse_event = lambda e: e["event_id"] in {events[1].event_id, events[4].event_id}
        outbox.add_events(events)
        uploader(outbox, server.url).upload_once()
        assert len(outbox.dead_letters()) == 2 and outbox.depth() == 0
        assert outbox.requeue(reason_contains="no such reason").requeued == 0
        assert outbox.requeue(status=500).requeued == 0
        assert outbox.requeue(older_than_s=3600).requeued == 0  # dead-lettered just now
        result = outbox.requeue(reason_contains="IN THE FUTURE")  # case-insensitive
        assert result.requeued == 2 and outbox.dead_letters() == []
        assert [p.event_id for p in outbox.pending(limit=10)] == [events[1].event_id, events[4].event_id]
        assert outbox.pending(limit=10)[0].body == events[1].to_json()
        status = outbox.status()
        assert (status.dead_letters, status.dead_lettered, status.requeued_events) == (0, 2, 2)
        # Fixed: delivered now.
        server.refuse_event = None
        assert uploader(outbox, server.url).upload_once().accepted == 2
        assert set(server.accepted) == {e.event_id for e in events}


def test_requeue_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Outbox(path=state / "outbox.sqlite", max_events=1000) as outbox, fake_collector() as server:
        server.refuse_event = lambda e: True
        outbox.add_events(make_events(3))
        uploader(outbox, server.url).upload_once()
        assert len(outbox.dead_letters()) == 3
    bare = run_cli("device", "requeue", "--state-dir", str(state))
    assert bare.returncode == EXIT_USAGE and "--all" in bare.stderr, bare.stderr
    assert "3 dead letters" in bare.stdout and "in the future" in bare.stdout  # what there is, by reason
    done = run_cli("device", "requeue", "--all", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    assert "requeued 3 " in done.stdout
    status = json.loads(run_cli("device", "status", "--json", "--state-dir", str(state)).stdout)
    assert (status["outbox_depth"], status["dead_letters"]) == (3, 0)


# -- clock skew against the real collector ------------------------------------------------------------------
@contextmanager
def real_collector(tmp_path: Path) -> Iterator[tuple[str, object, dict[str, str]]]:
    """The collector app (SQLite) served by uvicorn on loopback, with a settable clock; yields its URL, the
    clock and a device's credentials."""
    import secrets

    import uvicorn
    from fastapi.testclient import TestClient

    from beeaudio.collector.app import create_app
    from beeaudio.collector.launch import free_port
    from tests.fixtures.collector import Clock, make_settings

    clock = Clock()
    admin_token = secrets.token_urlsafe(32)
    settings = make_settings(
        db_url=f"sqlite:///{tmp_path / 'c.db'}",
        data_dir=tmp_path / "c",
        admin_token=admin_token,
        read_token=secrets.token_urlsafe(32),
    )
    app = create_app(settings, clock_ms=clock)
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    with TestClient(app) as admin:
        hive = admin.post("/api/v1/hives", json={"name": "H", "hive_id": "hive-1"}, headers=admin_headers)
        assert hive.status_code == 201, hive.text
        added = admin.post("/api/v1/hives/hive-1/devices", json={"device_id": "dev-1"}, headers=admin_headers)
        assert added.status_code == 201, added.text
        device = added.json()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", clock, device
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_clock_skewed_events_are_dead_lettered_then_requeued_and_delivered(tmp_path: Path) -> None:
    with real_collector(tmp_path) as (url, clock, device):
        now = clock.now
        ahead = make_events(3, offset=0)  # 2026-05-01T12:00 + i s: the collector's "now"
        skewed = [
            dataclasses.replace(e, window_start=now + timedelta(hours=2, seconds=i))
            for i, e in enumerate(make_events(2, offset=100))
        ]  # a device clock two hours fast
        with Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox:
            outbox.add_events(ahead + skewed)
            up = Uploader(
                outbox=outbox,
                client=CollectorClient(base_url=url, token=device["token"], timeout_s=10),
                device_id="dev-1",
                batch_size=200,
            )
            outcome = up.upload_once()
            assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", 3, 2), outcome
            letters = outbox.dead_letters()
            assert {d["event_id"] for d in letters} == {e.event_id for e in skewed}
            assert all(d["status"] == 422 and "in the future" in d["reason"] for d in letters)
            # Requeued while still in the future: refused again, back in the dead letters, nothing lost.
            assert outbox.requeue(reason_contains="in the future").requeued == 2
            assert up.upload_once().dead_lettered == 2 and len(outbox.dead_letters()) == 2
            # Once the collector's time has caught up (the skew is fixed), requeue delivers them.
            clock.advance(3 * 3600)
            assert outbox.requeue(reason_contains="in the future").requeued == 2
            again = up.upload_once()
            assert (again.kind, again.accepted, again.dead_lettered) == ("sent", 2, 0), again
            assert outbox.depth() == 0 and outbox.dead_letters() == []


def test_the_real_collectors_acknowledgement_is_accepted(tmp_path: Path) -> None:
    with (
        real_collector(tmp_path) as (url, _clock, device),
        Outbox(path=tmp_path / "o.sqlite", max_events=1000) as outbox,
    ):
        events = make_events(5)
        outbox.add_events(events)
        up = Uploader(
            outbox=outbox,
            client=CollectorClient(base_url=url, token=device["token"], timeout_s=10),
            device_id="dev-1",
            batch_size=200,
        )
        assert up.upload_once().accepted == 5
        outbox.add_events(events)  # the same events again: the collector counts them as duplicates
        assert up.upload_once().accepted == 5 and outbox.depth() == 0


def test_a_redirected_model_download_does_not_carry_the_token_elsewhere(tmp_path: Path) -> None:
    """Downloads follow redirects (their content is checked against the announced sha256), but the device
    token never goes to another host."""
    with fake_collector() as collector, fake_collector() as elsewhere:
        elsewhere.routes["/file"] = (200, {}, b"bundle bytes")
        collector.routes["/api/v1/models/m/file"] = (302, {"Location": f"{elsewhere.url}/file"}, b"")
        collector.routes["/same"] = (302, {"Location": "/api/v1/models/m/file"}, b"")
        client = CollectorClient(base_url=collector.url, token="secret-token", timeout_s=5)
        assert client.request("GET", "/api/v1/models/m/file").status == 302  # not followed by default
        answer = client.request("GET", "/api/v1/models/m/file", follow_redirects=True)
        assert answer.status == 200 and answer.body == b"bundle bytes"
        assert all("Authorization" not in headers for _, _, headers, _ in elsewhere.requests)
        client.request("GET", "/same", follow_redirects=True)
        same_host = [h for _, path, h, _ in collector.requests if path == "/api/v1/models/m/file"]
        assert same_host[-1].get("Authorization") == "Bearer secret-token"
