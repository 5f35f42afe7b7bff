"""Webhook delivery from the outbox: delivered, retried with exponential backoff, given up; ingest never
waits for a webhook."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from beeaudio.collector.app import create_app
from beeaudio.collector.db import webhook_deliveries
from beeaudio.collector.store.alerts import DELIVERED, FAILED, PENDING
from beeaudio.collector.webhooks import WebhookPolicy, WebhookWorker
from tests.fixtures.collector import T0, Clock, make_settings, timeline

GOOD, BAD = "http://hooks.example/good", "http://hooks.example/bad"


@pytest.fixture
def hooked(db_url, tmp_path):
    clock = Clock()
    settings = make_settings(db_url=db_url, data_dir=tmp_path / "d", webhooks=f"{GOOD}, {BAD}")
    app = create_app(settings, clock_ms=clock)
    with TestClient(app) as client:
        yield app, client, clock


def _deliveries(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(webhook_deliveries)).all()
    return {row.url: (row.status, row.attempts, row.next_attempt_ms) for row in rows}


def test_alerts_are_delivered_retried_and_given_up(hooked) -> None:
    from tests.fixtures.collector import ADMIN, bearer

    app, client, clock = hooked
    client.post("/api/v1/hives", json={"name": "h", "hive_id": "h1"}, headers=ADMIN)
    device = client.post("/api/v1/hives/h1/devices", json={"device_id": "d1"}, headers=ADMIN).json()
    from beeaudio.core.wire import make_batch

    events = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=10), segments=[(0.95, 40)])
    response = client.post(
        "/api/v1/events",
        json=make_batch(device_id="d1", events=events, batch_id="b"),
        headers=bearer(device["token"]),
    )
    assert response.status_code == 200  # stored although no webhook has been reached yet
    assert {k: v[0] for k, v in _deliveries(app.state.context.engine).items()} == {
        GOOD: PENDING,
        BAD: PENDING,
    }

    received: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == BAD:
            return httpx.Response(503)
        import json

        received.append(json.loads(request.content))
        return httpx.Response(204)

    policy = WebhookPolicy(max_attempts=3, backoff_seconds=10, backoff_max_seconds=15)
    worker = WebhookWorker(
        engine=app.state.context.engine, policy=policy, clock_ms=clock, transport=httpx.MockTransport(handler)
    )
    assert asyncio.run(worker.run_once()) == 2
    state = _deliveries(app.state.context.engine)
    assert state[GOOD][:2] == (DELIVERED, 1)
    assert state[BAD][:2] == (PENDING, 1) and state[BAD][2] == clock() + 10_000
    assert received and received[0]["kind"] == "swarm_started" and received[0]["hive_id"] == "h1"
    # Not due yet: nothing happens; then exponential (capped) backoff, then give up.
    assert asyncio.run(worker.run_once()) == 0
    clock.advance(10)
    assert asyncio.run(worker.run_once()) == 1
    assert _deliveries(app.state.context.engine)[BAD][2] == clock() + 15_000  # 20 s capped at 15 s
    clock.advance(15)
    assert asyncio.run(worker.run_once()) == 1
    assert _deliveries(app.state.context.engine)[BAD][:2] == (FAILED, 3)
    clock.advance(3600)
    assert asyncio.run(worker.run_once()) == 0
    assert len(received) == 1


def test_backoff_policy() -> None:
    policy = WebhookPolicy(backoff_seconds=2, backoff_max_seconds=60)
    assert [policy.delay_ms(attempts=a) for a in range(1, 8)] == [
        2000,
        4000,
        8000,
        16000,
        32000,
        60000,
        60000,
    ]
