"""Upgrading a collector database written by the first schema (revision 0001, v1 readings only): every
row is kept, the readings stored before count as evidence, and the state of each hive is derived again
with the current rules when the collector starts (so the duty-cycled hive that was stuck at ``unknown``
gets its state)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient

from beeaudio.collector import migrate
from beeaudio.collector.db import make_engine, metadata
from beeaudio.collector.tokens import token_digest
from tests.fixtures.collector import T0, T0_MS, Clock, Collector, make_settings, timeline

TOKEN = "bdt_an-old-device-token-from-the-first-schema"

# The tables as revision 0001 made them (only the columns written here), independent of db.py.
HIVES = sa.table(
    "hives", sa.column("hive_id"), sa.column("name"), sa.column("created_ms"), sa.column("params", sa.JSON)
)
DEVICES = sa.table(
    "devices",
    sa.column("device_id"),
    sa.column("hive_id"),
    sa.column("token_sha256"),
    sa.column("created_ms"),
)
EVENTS = sa.table(
    "events",
    *(
        sa.column(name)
        for name in (
            "hive_id",
            "device_id",
            "event_id",
            "model_name",
            "model_version",
            "window_start_ms",
            "window_seconds",
            "label",
            "swarm_score",
            "level_dbfs",
            "source_format",
            "received_ms",
        )
    ),
    sa.column("probabilities", sa.JSON),
)
ROLLUPS = sa.table(
    "rollups",
    *(sa.column(name) for name in ("hive_id", "device_id", "bucket_start", "n", "swarm_sum", "level_sum")),
)
LABELS = sa.table(
    "rollup_labels",
    *(sa.column(name) for name in ("hive_id", "device_id", "bucket_start", "label", "n_top", "prob_sum")),
)
STEPS = sa.table(
    "hive_steps",
    *(sa.column(name) for name in ("hive_id", "bucket_start", "n_window", "score", "state", "pending")),
    sa.column("since_ms"),
    sa.column("pending_since_ms"),
)
STATE = sa.table(
    "hive_state",
    *(
        sa.column(name)
        for name in (
            "hive_id",
            "state",
            "since_ms",
            "confidence",
            "score",
            "n_window",
            "last_bucket",
            "last_seen_ms",
            "last_event_ms",
            "model_version",
            "offline_alerted",
            "updated_ms",
        )
    ),
    sa.column("counts", sa.JSON),
)
ALERTS = sa.table(
    "alerts",
    *(sa.column(name) for name in ("alert_id", "hive_id", "kind", "at_ms", "created_ms")),
    sa.column("details", sa.JSON),
)


def _write_v1_hive(conn: Any, *, hive_id: str, device_id: str, events: list, state: str, token: str) -> None:
    """A hive as the 0001 collector stored it: raw events, their rollups, steps and the state row."""
    conn.execute(sa.insert(HIVES).values(hive_id=hive_id, name=hive_id, created_ms=T0_MS, params={}))
    conn.execute(
        sa.insert(DEVICES).values(
            device_id=device_id, hive_id=hive_id, token_sha256=token_digest(token), created_ms=T0_MS
        )
    )
    rows, buckets, labels = [], {}, {}
    for e in events:
        ms = int(e.window_start.timestamp() * 1000)
        rows.append(
            {
                "hive_id": hive_id,
                "device_id": device_id,
                "event_id": e.event_id,
                "model_name": e.model_name,
                "model_version": e.model_version,
                "window_start_ms": ms,
                "window_seconds": e.window_seconds,
                "label": e.label,
                "swarm_score": e.swarm_score,
                "level_dbfs": e.level_dbfs,
                "source_format": e.source_format,
                "received_ms": T0_MS,
                "probabilities": e.probabilities,
            }
        )
        bucket = ms // 1000 - (ms // 1000) % 60
        n, s, lv = buckets.get(bucket, (0, 0.0, 0.0))
        buckets[bucket] = (n + 1, s + e.swarm_score, lv + e.level_dbfs)
        for label, p in e.probabilities.items():
            top, total = labels.get((bucket, label), (0, 0.0))
            labels[(bucket, label)] = (top + (label == e.label), total + p)
    conn.execute(sa.insert(EVENTS), rows)
    conn.execute(
        sa.insert(ROLLUPS),
        [
            {
                "hive_id": hive_id,
                "device_id": device_id,
                "bucket_start": b,
                "n": n,
                "swarm_sum": s,
                "level_sum": lv,
            }
            for b, (n, s, lv) in buckets.items()
        ],
    )
    conn.execute(
        sa.insert(LABELS),
        [
            {
                "hive_id": hive_id,
                "device_id": device_id,
                "bucket_start": b,
                "label": label,
                "n_top": t,
                "prob_sum": p,
            }
            for (b, label), (t, p) in labels.items()
        ],
    )
    last = max(buckets)
    conn.execute(
        sa.insert(STEPS).values(
            hive_id=hive_id,
            bucket_start=last,
            n_window=9,
            score=0.1,
            state=state,
            pending=0,
            since_ms=None,
            pending_since_ms=None,
        )
    )
    conn.execute(
        sa.insert(STATE).values(
            hive_id=hive_id,
            state=state,
            since_ms=last * 1000,
            confidence=0.0,
            score=0.1,
            n_window=9,
            counts={"normal": 9},
            last_bucket=last,
            last_seen_ms=T0_MS,
            last_event_ms=rows[-1]["window_start_ms"],
            model_version="1.0",
            offline_alerted=False,
            updated_ms=T0_MS,
        )
    )


def _duty_cycled(hive_id: str, device_id: str) -> list:
    """Two hours of 10 s every 5 min: the hive the first schema kept at unknown."""
    out = []
    for r in range(24):
        start = T0 - timedelta(hours=2) + timedelta(seconds=300 * r)
        out += timeline(hive_id=hive_id, device_id=device_id, start=start, segments=[(0.1, 9)], step_s=1)
    return out


def _comparing(conn: Any) -> MigrationContext:
    """A comparison of the schema with db.py that leaves out the events partitions (PostgreSQL)."""
    return MigrationContext.configure(conn, opts={"include_name": migrate.include_name})


def _count(conn: Any, table: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def test_a_first_schema_database_upgrades_with_its_data(db_url: str, tmp_path) -> None:
    engine = make_engine(db_url)
    assert migrate.upgrade(engine=engine, revision="0001") == "0001"
    continuous = timeline(
        hive_id="north", device_id="pi-north", start=T0 - timedelta(minutes=30), segments=[(0.1, 180)]
    )
    sparse = _duty_cycled("sparse", "pi-sparse")
    with engine.begin() as conn:
        _write_v1_hive(
            conn, hive_id="north", device_id="pi-north", events=continuous, state="normal", token=TOKEN
        )
        _write_v1_hive(
            conn, hive_id="sparse", device_id="pi-sparse", events=sparse, state="unknown", token=TOKEN + "-2"
        )
        conn.execute(
            sa.insert(ALERTS).values(
                alert_id="a" * 32,
                hive_id="north",
                kind="swarm_ended",
                at_ms=T0_MS - 3_600_000,
                created_ms=T0_MS,
                details={"from": "swarm"},
            )
        )
        before = {t: _count(conn, t) for t in ("events", "rollups", "rollup_labels", "hive_steps", "alerts")}

    assert migrate.upgrade(engine=engine) == migrate.head_revision() == "0004"
    with engine.connect() as conn:
        assert {t: _count(conn, t) for t in before} == before
        assert compare_metadata(_comparing(conn), metadata) == []
        # v1 readings: no quality, and all of them evidence.
        assert (
            conn.execute(sa.text("SELECT count(*) FROM events WHERE quality IS NOT NULL")).scalar_one() == 0
        )
        n, evidence, swarm_sum, evidence_sum, silent = conn.execute(
            sa.text(
                "SELECT sum(n), sum(n_evidence), sum(swarm_sum), sum(evidence_swarm_sum), sum(n_no_signal) "
                "FROM rollups"
            )
        ).one()
        assert (n, evidence, silent) == (180 + 24 * 9, 180 + 24 * 9, 0)
        assert abs(swarm_sum - evidence_sum) < 1e-9
        top, top_evidence = conn.execute(
            sa.text("SELECT sum(n_top), sum(n_top_evidence) FROM rollup_labels")
        ).one()
        assert top == top_evidence == n
        versions = dict(conn.execute(sa.text("SELECT hive_id, rules_version FROM hive_state")).all())
        assert versions == {"north": 1, "sparse": 1}
    engine.dispose()

    # The collector starts on it: every hive's state is derived again, with the current rules.
    clock = Clock()
    app = create_app_for(db_url, tmp_path, clock)
    with TestClient(app) as client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        north, stuck = collector.status("north"), collector.status("sparse")
        assert (north["state"], north["reason"], north["n_window"]) == ("normal", None, 30)
        assert north["window"]["evidence"] == 30 and north["counts"] == {"normal": 30}
        assert (stuck["state"], stuck["reason"]) == ("normal", None)
        assert [a["kind"] for a in collector.alerts("north")] == ["swarm_ended"]
        # The old device keeps sending v1 events, with its old token.
        more = timeline(hive_id="north", device_id="pi-north", start=T0, segments=[(0.1, 6)], quality=None)
        response = collector.send({"device_id": "pi-north", "token": TOKEN}, more, batch_id="after")
        assert response.status_code == 200 and response.json()["accepted"] == 6, response.text
        assert collector.status("north")["state"] == "normal"
        assert collector.count("events") == before["events"] + 6
        with collector.engine.connect() as conn:
            assert set(conn.execute(sa.text("SELECT rules_version FROM hive_state")).scalars()) == {2}


def create_app_for(db_url: str, tmp_path, clock: Clock) -> Any:
    from beeaudio.collector.app import create_app

    return create_app(make_settings(db_url=db_url, data_dir=tmp_path / "data"), clock_ms=clock)


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine=engine, revision="0001")
    with engine.begin() as conn:
        _write_v1_hive(
            conn,
            hive_id="h",
            device_id="d",
            events=timeline(
                hive_id="h", device_id="d", start=T0 - timedelta(minutes=5), segments=[(0.2, 30)]
            ),
            state="normal",
            token=TOKEN,
        )
    migrate.upgrade(engine=engine)
    config = migrate.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")  # keeps the 0001 columns and rows
    assert migrate.current_revision(engine=engine) == "0001"
    with engine.connect() as conn:
        assert _count(conn, "events") == 30 and _count(conn, "rollups") == 5
    assert migrate.upgrade(engine=engine) == "0004"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT sum(n_evidence) FROM rollups")).scalar_one() == 30
    engine.dispose()


def test_0003_adds_the_unfinished_walk_and_keeps_every_row(db_url: str) -> None:
    """A database at 0002 with readings upgrades to 0003 with every row, no walk left unfinished, and the
    same state; and 0003 downgrades to 0002 without losing any."""
    engine = make_engine(db_url)
    migrate.upgrade(engine=engine, revision="0001")
    with engine.begin() as conn:
        _write_v1_hive(
            conn,
            hive_id="h",
            device_id="d",
            events=timeline(
                hive_id="h", device_id="d", start=T0 - timedelta(minutes=9), segments=[(0.2, 50)]
            ),
            state="normal",
            token=TOKEN,
        )
    migrate.upgrade(engine=engine, revision="0002")
    tables = ("events", "rollups", "rollup_labels", "hive_steps", "hive_state", "devices")
    with engine.connect() as conn:
        before = {t: _count(conn, t) for t in tables}
        state = conn.execute(sa.text("SELECT state, since_ms FROM hive_state WHERE hive_id = 'h'")).one()
    assert migrate.upgrade(engine=engine) == "0004"
    with engine.connect() as conn:
        assert {t: _count(conn, t) for t in tables} == before
        assert (
            conn.execute(sa.text("SELECT state, since_ms FROM hive_state WHERE hive_id = 'h'")).one() == state
        )
        pending = (
            "SELECT count(*) FROM hive_state WHERE recompute_from IS NOT NULL OR recompute_until IS NOT NULL"
        )
        assert conn.execute(sa.text(pending)).scalar_one() == 0
        assert compare_metadata(_comparing(conn), metadata) == []
    config = migrate.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    with engine.connect() as conn:
        assert {t: _count(conn, t) for t in tables} == before
    assert migrate.upgrade(engine=engine) == "0004"
    engine.dispose()


def test_rollups_written_without_the_split_count_as_evidence(db_url: str) -> None:
    """A bulk loader that writes rollups as the first schema had them (bench/collector.py does) gets
    every window counted as evidence, as v1 readings are."""
    from beeaudio.collector.db import rollup_labels, rollups, write_transaction

    engine = make_engine(db_url)
    migrate.upgrade(engine=engine)
    with write_transaction(engine) as conn:
        conn.execute(
            sa.insert(rollups),
            [
                {
                    "hive_id": "h",
                    "device_id": "d",
                    "bucket_start": 60 * i,
                    "n": i + 1,
                    "swarm_sum": 0.5 * i,
                    "level_sum": -30.0,
                }
                for i in range(3)
            ],
        )
        conn.execute(
            sa.insert(rollup_labels),
            [
                {
                    "hive_id": "h",
                    "device_id": "d",
                    "bucket_start": 0,
                    "label": "normal",
                    "n_top": 4,
                    "prob_sum": 3.5,
                }
            ],
        )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                rollups.c.n, rollups.c.n_evidence, rollups.c.evidence_swarm_sum, rollups.c.n_no_signal
            ).order_by(rollups.c.bucket_start)
        ).all()
        assert [tuple(r) for r in rows] == [(1, 1, 0.0, 0), (2, 2, 0.5, 0), (3, 3, 1.0, 0)]
        assert conn.execute(sa.select(rollup_labels.c.n_top_evidence)).scalar_one() == 4
    engine.dispose()


def test_a_stale_hive_is_re_derived_by_its_next_batch(db_url: str, tmp_path) -> None:
    """Started without its start-up pass (several processes, or an app built with ``run_migrations=False``),
    the collector still says why the old unknown hive is unknown, and derives it again at its next batch."""
    from beeaudio.collector.app import create_app

    engine = make_engine(db_url)
    migrate.upgrade(engine=engine, revision="0001")
    with engine.begin() as conn:
        _write_v1_hive(
            conn,
            hive_id="sparse",
            device_id="pi-sparse",
            events=_duty_cycled("sparse", "pi-sparse"),
            state="unknown",
            token=TOKEN,
        )
    migrate.upgrade(engine=engine)
    engine.dispose()
    clock = Clock()
    settings = make_settings(db_url=db_url, data_dir=tmp_path / "data")
    app = create_app(settings, clock_ms=clock, run_migrations=False)
    with TestClient(app) as client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        stale = collector.status("sparse")
        assert (stale["state"], stale["reason"]) == ("unknown", "too_few_readings")
        assert stale["reason_text"]
        recording = timeline(
            hive_id="sparse", device_id="pi-sparse", start=T0, segments=[(0.1, 9)], step_s=1, quality=None
        )
        response = collector.send({"device_id": "pi-sparse", "token": TOKEN}, recording, batch_id="next")
        assert response.status_code == 200, response.text
        fresh = collector.status("sparse")
        assert (fresh["state"], fresh["reason"]) == ("normal", None)
        assert fresh["window"]["evidence"] >= 10
        with collector.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT rules_version FROM hive_state")).scalar_one() == 2
