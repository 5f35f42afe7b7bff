"""``GET /metrics`` (issue 10, part 4): the Prometheus exposition, parsed with prometheus_client's own
parser, changes as requests, batches, heartbeats and webhook attempts happen; the per-process counters
belong to each app, while the gauges read from the database are the same from every app on it (replicas)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from beeaudio.collector.app import create_app
from beeaudio.collector.webhooks import WebhookPolicy, WebhookWorker
from beeaudio.core import wire
from tests.fixtures.collector import ADMIN, READER, T0, make_settings, timeline

STATUS = "/api/v1/hives/{hive_id}/status"


def scrape(client: TestClient, headers: dict[str, str] = READER) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _beat(**fields: Any) -> dict[str, Any]:
    return {"schema": wire.HEARTBEAT_SCHEMA, "sent_at": "2026-05-01T11:00:00Z", **fields}


def test_metrics_need_the_read_token(collector) -> None:
    device = (collector.add_hive("h1"), collector.add_device("h1", "d1"))[1]
    assert collector.client.get("/metrics").status_code == 401
    assert (
        collector.client.get("/metrics", headers={"Authorization": f"Bearer {device['token']}"}).status_code
        == 403
    )
    assert collector.client.get("/metrics", headers=ADMIN).status_code == 200
    scrape(collector.client)


def test_ingest_status_and_refusals_are_counted(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    before = scrape(collector.client)
    assert value(before, "beeaudio_ingest_events_total", outcome="accepted") == 0
    assert value(before, "beeaudio_hives", state="unknown") == 1

    events = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=10), segments=[(0.1, 40)])
    assert collector.send(device, events[:30], batch_id="b1").status_code == 200
    assert collector.send(device, events[20:], batch_id="b2").json() == {
        "batch_id": "b2",
        "accepted": 10,
        "duplicates": 10,
    }
    # Refused: by the gate before the body is read (401), and by the contract (422).
    assert collector.send({"device_id": "d1", "token": "bdt_nobody"}, events[:1]).status_code == 401
    late = timeline(hive_id="h1", device_id="d1", start=T0 + timedelta(hours=2), segments=[(0.1, 1)])
    assert collector.send(device, late).status_code == 422
    for _ in range(3):
        collector.status("h1")

    after = scrape(collector.client)
    assert value(after, "beeaudio_ingest_events_total", outcome="accepted") == 40
    assert value(after, "beeaudio_ingest_events_total", outcome="duplicate") == 10
    assert value(after, "beeaudio_ingest_batches_total", outcome="stored") == 2
    assert value(after, "beeaudio_ingest_batches_total", outcome="refused") == 2
    assert value(after, "beeaudio_ingest_refused_batches_total", status="401") == 1
    assert value(after, "beeaudio_ingest_refused_batches_total", status="422") == 1
    assert value(after, "beeaudio_ingest_batch_events_count") == 2
    assert value(after, "beeaudio_ingest_batch_events_sum") == 50
    assert value(after, "beeaudio_ingest_batch_events_bucket", le="25.0") == 1
    assert value(after, "beeaudio_ingest_duration_seconds_count") == 4
    assert value(after, "beeaudio_status_duration_seconds_count") == 3
    assert value(after, "beeaudio_http_requests_total", method="GET", route=STATUS, status="200") == 3
    assert (
        value(after, "beeaudio_http_requests_total", method="POST", route=wire.EVENTS_PATH, status="401") == 1
    )
    # A path no route has is one series, whatever the path.
    collector.client.get("/no/such/thing", headers=ADMIN)
    collector.client.get("/nor/this", headers=ADMIN)
    assert (
        value(
            scrape(collector.client),
            "beeaudio_http_requests_total",
            method="GET",
            route="other",
            status="404",
        )
        == 2
    )

    # Hives per state, from the database: normal now, offline once nothing arrives for too long.
    assert value(after, "beeaudio_hives", state="normal") == 1
    assert value(after, "beeaudio_hives", state="unknown") == 0
    collector.clock.advance(3600)
    later = scrape(collector.client)
    assert value(later, "beeaudio_hives", state="offline") == 1
    assert value(later, "beeaudio_hives", state="normal") == 0


def test_database_gauges_are_the_same_from_every_app(collector, db_url: str, tmp_path) -> None:
    """Two apps on one database (two replicas): each counts its own requests, and both report the same
    hives and the same outbox depths and dropped readings from the devices' latest heartbeats."""
    collector.add_hive("h1")
    collector.add_hive("h2", offline_after_seconds=60)
    tokens = {d: collector.add_device(h, d)["token"] for h, d in (("h1", "d1"), ("h1", "d2"), ("h2", "d3"))}
    # Failing loops in each device's earlier and latest heartbeat: d1 failing now, d2 recovered, d3 an
    # agent older than failing_loops.
    loops = {"d1": ({}, {"upload": "disk full"}), "d2": ({"ota": "HTTP 404"}, {}), "d3": (None, None)}
    for device_id, depth, dropped in (("d1", 7, 3), ("d2", 2, 0), ("d3", 40, 11)):
        for n in range(2):  # the latest heartbeat counts, not the sum of all
            failing = {} if loops[device_id][n] is None else {"failing_loops": loops[device_id][n]}
            response = collector.client.post(
                wire.heartbeat_path(device_id),
                json=_beat(
                    outbox_depth=depth + 5 * (1 - n),
                    dropped_events=dropped + 5 * (1 - n),
                    backlog_files=1,
                    **failing,
                ),
                headers={"Authorization": f"Bearer {tokens[device_id]}"},
            )
            assert response.status_code == 200, response.text
    events = timeline(hive_id="h2", device_id="d3", start=T0 - timedelta(minutes=3), segments=[(0.1, 12)])
    assert collector.send({"device_id": "d3", "token": tokens["d3"]}, events).status_code == 200
    collector.clock.advance(120)  # h2 (offline after 60 s, its own setting) is offline; h1 never reported
    other = create_app(
        make_settings(db_url=db_url, data_dir=tmp_path / "other"),
        clock_ms=collector.clock,
        run_migrations=False,
    )
    with TestClient(other) as second:
        one, two = scrape(collector.client), scrape(second)
    for samples in (one, two):
        assert value(samples, "beeaudio_device_outbox_events") == 7 + 2 + 40
        assert value(samples, "beeaudio_device_outbox_events_max") == 40
        assert value(samples, "beeaudio_device_dropped_events") == 3 + 0 + 11
        assert value(samples, "beeaudio_device_backlog_files") == 3
        assert value(samples, "beeaudio_devices_failing") == 1
        assert value(samples, "beeaudio_devices") == value(samples, "beeaudio_devices_reporting") == 3
        assert value(samples, "beeaudio_hives", state="offline") == 1
        assert value(samples, "beeaudio_hives", state="unknown") == 1
        assert value(samples, "beeaudio_metrics_database_up") == 1
    assert value(one, "beeaudio_ingest_events_total", outcome="accepted") == 12
    assert value(two, "beeaudio_ingest_events_total", outcome="accepted") == 0  # its own registry


def test_webhook_attempts_are_counted(db_url: str, tmp_path) -> None:
    from tests.fixtures.collector import Clock, bearer

    clock = Clock()
    settings = make_settings(
        db_url=db_url, data_dir=tmp_path / "data", webhooks="http://good.test/h,http://bad.test/h"
    )
    app = create_app(settings, clock_ms=clock)
    with TestClient(app) as client:
        client.post("/api/v1/hives", json={"name": "h", "hive_id": "h1"}, headers=ADMIN)
        device = client.post("/api/v1/hives/h1/devices", json={"device_id": "d1"}, headers=ADMIN).json()
        events = timeline(
            hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=10), segments=[(0.95, 40)]
        )
        body = wire.make_batch(device_id="d1", events=events, batch_id="b")
        assert client.post("/api/v1/events", json=body, headers=bearer(device["token"])).status_code == 200

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503 if "bad" in str(request.url) else 204)

        worker = WebhookWorker(
            engine=app.state.context.engine,
            policy=WebhookPolicy(max_attempts=2, backoff_seconds=1),
            clock_ms=clock,
            transport=httpx.MockTransport(handler),
            metrics=app.state.context.metrics,
        )
        assert asyncio.run(worker.run_once()) == 2
        clock.advance(5)
        assert asyncio.run(worker.run_once()) == 1
        samples = scrape(client)
    assert value(samples, "beeaudio_webhook_attempts_total", outcome="delivered") == 1
    assert value(samples, "beeaudio_webhook_attempts_total", outcome="retry") == 1
    assert value(samples, "beeaudio_webhook_attempts_total", outcome="failed") == 1
