"""Several ``beeaudio collector serve`` processes on one PostgreSQL give the result of one (issue 10, part 1):
three real replicas, started at the same moment on an empty database, take concurrent batches from several
threads (each batch to any replica, some sent again to another one); afterwards every event is stored
once, each hive's steps and state equal a single-node replay of the same events, every alert is raised
once and reaches a real webhook receiver once, and the offline sweep runs once per interval between
them, not once per replica. And SQLite refuses a second collector process instead of sharing the file."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from beeaudio.collector.launch import CollectorStartError, RunningCollector, start_collector
from beeaudio.core.wire import ClassificationEvent, make_batch
from tests.fixtures.collector import (
    ADMIN,
    Clock,
    WebhookReceiver,
    bearer,
    make_settings,
    server_env,
    timeline,
)

pytestmark = pytest.mark.slow

HIVES = [f"hive-{i}" for i in range(8)]
QUIET = "quiet"  # sends once, then goes silent: the sweep raises hive_offline for it, once
QUIET_PARAMS = {"offline_after_seconds": 3.0}
SWEEP_SECONDS = 1.0


def _events(now: datetime) -> dict[str, list[ClassificationEvent]]:
    """An hour per hive: calm, a swarm, calm again (swarm_started and swarm_ended each)."""
    start = now - timedelta(minutes=65)
    out = {
        hive: timeline(
            hive_id=hive,
            device_id=f"pi-{hive}",
            start=start + timedelta(seconds=7 * i),
            segments=[(0.1, 120), (0.9, 120), (0.1, 120)],
        )
        for i, hive in enumerate(HIVES)
    }
    out[QUIET] = timeline(hive_id=QUIET, device_id=f"pi-{QUIET}", start=start, segments=[(0.1, 12)])
    return out


def _state_of(engine: sa.engine.Engine) -> dict[str, Any]:
    """What must equal between the replicas and the single-node replay: steps, state rows, swarm and
    microphone alerts (offline ones depend on arrival time, not on the events)."""
    with engine.connect() as conn:
        steps = conn.execute(
            sa.text(
                "SELECT hive_id, bucket_start, n_window, score, state, pending, since_ms, pending_since_ms "
                "FROM hive_steps ORDER BY hive_id, bucket_start"
            )
        ).all()
        states = conn.execute(
            sa.text(
                "SELECT hive_id, state, since_ms, score, n_window, counts, last_bucket, last_event_ms, "
                "reason, n_readings, rules_version, recompute_from FROM hive_state ORDER BY hive_id"
            )
        ).all()
        alerts = conn.execute(
            sa.text(
                "SELECT hive_id, kind, at_ms FROM alerts WHERE kind NOT IN ('hive_offline', 'hive_back') "
                "ORDER BY hive_id, at_ms, kind"
            )
        ).all()

    def rounded(row: Any) -> tuple:
        return tuple(round(v, 9) if isinstance(v, float) else v for v in row)

    def counts(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return {
        "steps": [rounded(r) for r in steps],
        "states": [(*rounded(r[:5]), counts(r[5]), *r[6:]) for r in states],
        "alerts": [tuple(r) for r in alerts],
    }


def _replay(*, events: dict[str, list[ClassificationEvent]], tmp_path: Path, now_ms: int) -> dict[str, Any]:
    """The same events through one in-process collector, one device after another, in order."""
    from beeaudio.collector.app import create_app

    clock = Clock(now_ms)
    app = create_app(
        make_settings(db_url=f"sqlite:///{tmp_path / 'replay.db'}", data_dir=tmp_path / "replay"),
        clock_ms=clock,
    )
    with TestClient(app) as client:
        for hive, hive_events in events.items():
            body: dict[str, Any] = {"name": hive, "hive_id": hive}
            if hive == QUIET:
                body["state_params"] = QUIET_PARAMS
            assert client.post("/api/v1/hives", json=body, headers=ADMIN).status_code == 201
            device = client.post(
                f"/api/v1/hives/{hive}/devices", json={"device_id": f"pi-{hive}"}, headers=ADMIN
            ).json()
            for i in range(0, len(hive_events), 20):
                batch = make_batch(device_id=device["device_id"], events=hive_events[i : i + 20])
                response = client.post("/api/v1/events", json=batch, headers=bearer(device["token"]))
                assert response.status_code == 200, response.text
        result = _state_of(app.state.context.engine)
    return result


def _start_replicas(*, env: dict[str, str], tmp_path: Path, n: int) -> list[RunningCollector]:
    """``n`` replicas started at the same moment (each migrates the empty database on start)."""
    with ThreadPoolExecutor(n) as pool:
        futures = [
            pool.submit(
                start_collector,
                log_path=tmp_path / f"replica-{i}.log",
                env=env,
                extra_args=["--log-level", "warning"],
                timeout_s=90,
            )
            for i in range(n)
        ]
        return [f.result() for f in futures]


def _sweeps_run(clients: list[httpx.Client]) -> float:
    """The offline sweeps the replicas ran, added up (``beeaudio_background_job_runs_total`` of each)."""
    total = 0.0
    for client in clients:
        response = client.get("/metrics", headers=ADMIN)
        assert response.status_code == 200, response.text
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "beeaudio_background_job_runs_total" and sample.labels == {"job": "sweep"}:
                    total += sample.value
    return total


def test_three_replicas_give_the_result_of_one(pg_url: str, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    env = server_env(
        db_url=pg_url,
        data_dir=tmp_path / "data",
        WEBHOOKS=receiver.url,
        SWEEP_INTERVAL_SECONDS=str(SWEEP_SECONDS),
    )
    now = datetime.now(UTC).replace(microsecond=0)
    events = _events(now)
    replicas = _start_replicas(env=env, tmp_path=tmp_path, n=3)
    engine = sa.create_engine(pg_url)
    try:
        clients = [httpx.Client(base_url=r.url, timeout=30) for r in replicas]
        tokens: dict[str, str] = {}
        for i, hive in enumerate(events):
            body: dict[str, Any] = {"name": hive, "hive_id": hive}
            if hive == QUIET:
                body["state_params"] = QUIET_PARAMS
            client = clients[i % 3]
            assert client.post("/api/v1/hives", json=body, headers=ADMIN).status_code == 201
            answer = client.post(
                f"/api/v1/hives/{hive}/devices", json={"device_id": f"pi-{hive}"}, headers=ADMIN
            )
            tokens[hive] = answer.json()["token"]

        sent: list[tuple[str, dict[str, Any]]] = []  # acknowledged batches, for the duplicator
        sent_lock = threading.Lock()
        done = threading.Event()
        answers: Counter[str] = Counter()

        def post(hive: str, body: dict[str, Any], replica: int) -> dict[str, Any]:
            response = clients[replica].post("/api/v1/events", json=body, headers=bearer(tokens[hive]))
            assert response.status_code == 200, response.text
            return response.json()

        def send_hives(worker: int, hives: list[str]) -> None:
            # Each device's batches in order (as a device sends them), each to any replica.
            rng = random.Random(worker)
            queues = {h: [events[h][i : i + 20] for i in range(0, len(events[h]), 20)] for h in hives}
            n = 0
            while any(queues.values()):
                hive = rng.choice([h for h, q in queues.items() if q])
                batch = queues[hive].pop(0)
                body = make_batch(device_id=f"pi-{hive}", events=batch, batch_id=f"{hive}-{n}")
                n += 1
                answer = post(hive, body, rng.randrange(3))
                with sent_lock:
                    answers["accepted"] += answer["accepted"]
                    answers["duplicates"] += answer["duplicates"]
                    sent.append((hive, body))

        def duplicate() -> None:
            # A device that never heard the answer sends the batch again, to another replica.
            rng = random.Random(99)
            while not done.is_set():
                with sent_lock:
                    pick = rng.choice(sent) if sent else None
                if pick is not None:
                    answer = post(pick[0], pick[1], rng.randrange(3))
                    with sent_lock:
                        answers["resent"] += len(pick[1]["events"])
                        answers["resent_duplicates"] += answer["duplicates"]
                time.sleep(0.02)

        groups = [HIVES[0:2], HIVES[2:4], HIVES[4:6], [*HIVES[6:8], QUIET]]
        with ThreadPoolExecutor(len(groups) + 2) as pool:
            dups = [pool.submit(duplicate) for _ in range(2)]
            for future in [pool.submit(send_hives, w, g) for w, g in enumerate(groups)]:
                future.result()
            done.set()
            for future in dups:
                future.result()

        total = sum(len(e) for e in events.values())
        assert answers["accepted"] == total and answers["duplicates"] == 0
        assert answers["resent"] > 0 and answers["resent_duplicates"] == answers["resent"]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == total
            doubled = (
                "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY device_id, event_id "
                "HAVING count(*) > 1) d"
            )
            assert conn.execute(sa.text(doubled)).scalar_one() == 0

        # The quiet hive goes offline: one hive_offline between three sweeping replicas. The sweep runs
        # once per interval between them (three replicas sweeping alone would run about three times as often).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                offline = conn.execute(
                    sa.text("SELECT count(*) FROM alerts WHERE kind = 'hive_offline'")
                ).scalar()
            if offline:
                break
            time.sleep(0.3)
        # Sweeps each replica ran (its own metrics), added up: once per interval between the three.
        before, started = _sweeps_run(clients), time.monotonic()
        time.sleep(6)
        runs, elapsed = _sweeps_run(clients) - before, time.monotonic() - started
        assert runs <= elapsed / SWEEP_SECONDS + 1, (runs, elapsed)
        assert runs >= elapsed / SWEEP_SECONDS / 2, (runs, elapsed)

        with engine.connect() as conn:
            alerts = conn.execute(sa.text("SELECT alert_id, hive_id, kind FROM alerts")).all()
        kinds = Counter((hive, kind) for _, hive, kind in alerts)
        assert kinds == Counter(
            {(QUIET, "hive_offline"): 1}
            | {(h, "swarm_started"): 1 for h in HIVES}
            | {(h, "swarm_ended"): 1 for h in HIVES}
        )

        # Every alert reaches the receiver once (three webhook workers share the outbox).
        deadline = time.monotonic() + 30
        while len(receiver.deliveries) < len(alerts) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # two more worker rounds: nothing may arrive twice
        assert set(receiver.deliveries) == {a.alert_id for a in alerts}
        assert set(receiver.deliveries.values()) == {1}
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, attempts FROM webhook_deliveries")).all()
        assert sorted(set(map(tuple, rows))) == [("delivered", 1)] and len(rows) == len(alerts)

        replicated = _state_of(engine)
        single = _replay(events=events, tmp_path=tmp_path, now_ms=int(time.time() * 1000))
        assert replicated["alerts"] == single["alerts"]
        assert replicated["states"] == single["states"]
        assert replicated["steps"] == single["steps"]
        for client in clients:
            client.close()
    finally:
        for replica in replicas:
            replica.stop()
        engine.dispose()
        receiver.close()


def test_sqlite_refuses_a_second_collector_process(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hives.db'}"
    env = server_env(db_url=db_url, data_dir=tmp_path / "data")
    first = start_collector(log_path=tmp_path / "first.log", env=env, extra_args=["--log-level", "warning"])
    try:
        with pytest.raises(CollectorStartError) as refused:
            start_collector(log_path=tmp_path / "second.log", env=env, extra_args=["--log-level", "warning"])
        message = str(refused.value)
        assert (
            "another collector process (pid " in message and "SQLite takes one collector process" in message
        )
        assert f"pid {first.process.pid}, collector serve" in message
        # The first one serves on, untouched.
        response = httpx.get(first.url + "/api/v1/hives", headers=ADMIN, timeout=10)
        assert response.status_code == 200
    finally:
        first.stop()
    # Once it has stopped, the database is free for the next process.
    again = start_collector(log_path=tmp_path / "again.log", env=env, extra_args=["--log-level", "warning"])
    again.stop()
