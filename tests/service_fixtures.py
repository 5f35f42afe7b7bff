"""Fixtures and helpers for the collector tests (import the fixtures you use into the test module).

``db_url`` is parametrised over SQLite and PostgreSQL, so every test that uses it (directly or through
``collector``) runs against both. Each PostgreSQL test gets a fresh schema (``search_path`` in the URL),
dropped afterwards, so runs never see each other's rows. Outside CI a PostgreSQL that is down skips those
tests; with ``CI=true`` it fails them (``require``).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from beeaudio.events import ClassificationEvent, make_batch
from tests.conftest import require

PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
READ_TOKEN = "test-read-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
#: A fixed "now" for tests that drive the clock: 2026-05-01T12:00:00Z.
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def postgres_up() -> bool:
    try:
        engine = sa.create_engine(PG_BASE, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return postgres_up()


def pg_schema_url(schema: str) -> str:
    return f"{PG_BASE}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_available: bool) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.db'}"
        return
    require(postgres_available, "PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test')")
    schema = f"bee_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # test-generated identifier, not user input
    try:
        yield pg_schema_url(schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


class Clock:
    """A settable clock for the app (epoch milliseconds)."""

    def __init__(self, start_ms: int = T0_MS) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, tz=UTC)


def make_settings(*, db_url: str, data_dir: Path, **overrides: Any) -> Any:
    from service.settings import Settings

    values: dict[str, Any] = {
        "database_url": db_url,
        "admin_token": ADMIN_TOKEN,
        "read_token": READ_TOKEN,
        "data_dir": data_dir,
        "background_tasks": False,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Collector:
    """A test app on a real database, with a fake clock and helpers for the usual chores."""

    client: TestClient
    clock: Clock
    app: Any
    db_url: str

    @property
    def engine(self) -> sa.engine.Engine:
        return self.app.state.context.engine

    def add_hive(self, hive_id: str, **params: float) -> dict[str, Any]:
        body: dict[str, Any] = {"name": f"Hive {hive_id}", "hive_id": hive_id}
        if params:
            body["state_params"] = params
        response = self.client.post("/api/v1/hives", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()

    def add_device(self, hive_id: str, device_id: str) -> dict[str, str]:
        response = self.client.post(
            f"/api/v1/hives/{hive_id}/devices", json={"device_id": device_id}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        return response.json()

    def send(self, device: dict[str, str], events: list[ClassificationEvent], batch_id: str = "b") -> Any:
        batch = make_batch(device_id=device["device_id"], events=events, batch_id=batch_id)
        return self.client.post("/api/v1/events", json=batch, headers=bearer(device["token"]))

    def status(self, hive_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/hives/{hive_id}/status", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    def count(self, table: str) -> int:
        from service import db

        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(getattr(db, table))).scalar_one()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def collector(db_url: str, tmp_path: Path) -> Iterator[Collector]:
    from service.app import create_app

    clock = Clock()
    app = create_app(make_settings(db_url=db_url, data_dir=tmp_path / "data"), clock_ms=clock)
    with TestClient(app) as client:
        yield Collector(client=client, clock=clock, app=app, db_url=db_url)


def event(
    *,
    hive_id: str,
    device_id: str,
    at: datetime,
    swarm: float,
    n: int = 0,
    model_version: str = "1.0",
) -> ClassificationEvent:
    """One window's event with swarm probability ``swarm`` (labels normal/swarm)."""
    return ClassificationEvent(
        event_id=f"{device_id}-{int(at.timestamp() * 1000)}-{n}",
        hive_id=hive_id,
        device_id=device_id,
        model_name="test-model",
        model_version=model_version,
        window_start=at,
        window_seconds=2.0,
        probabilities={"normal": round(1.0 - swarm, 6), "swarm": swarm},
        label="swarm" if swarm >= 0.5 else "normal",
        swarm_score=swarm,
        level_dbfs=-32.5,
        source_format="wav",
    )


def timeline(
    *, hive_id: str, device_id: str, start: datetime, segments: list[tuple[float, int]], step_s: float = 10.0
) -> list[ClassificationEvent]:
    """Events every ``step_s`` seconds: ``segments`` of (swarm probability, number of events)."""
    out: list[ClassificationEvent] = []
    at = start
    for swarm, count in segments:
        for _ in range(count):
            out.append(event(hive_id=hive_id, device_id=device_id, at=at, swarm=swarm))
            at += timedelta(seconds=step_s)
    return out


def fake_bundle_bytes(*, model_name: str = "hive-net", model_version: str = "3") -> bytes:
    """A ``.beemodel`` that ``read_bundle`` accepts (manifest, checksum, self-test shapes), built without
    TensorFlow: the registry verifies bundles but never runs them."""
    from beeaudio.bundle import BUNDLE_FORMAT_VERSION, BundleManifest, SelfTest, sha256_hex
    from beeaudio.features import FeatureConfig

    config = FeatureConfig()
    model_bytes = f"not really a tflite model {model_name} {model_version}".encode()
    labels = ("normal", "swarm")
    manifest = BundleManifest(
        format_version=BUNDLE_FORMAT_VERSION,
        model_name=model_name,
        model_version=model_version,
        labels=labels,
        swarm_label="swarm",
        feature_config=config,
        input_shape=(1, *config.feature_shape),
        input_dtype="float32",
        output_shape=(1, len(labels)),
        output_dtype="float32",
        quantization="float32",
        model_sha256=sha256_hex(model_bytes),
        created_at="2026-05-01T00:00:00+00:00",
    )
    manifest.check()
    selftest = SelfTest(
        features=np.zeros((2, *config.feature_shape), dtype=np.float32),
        expected=np.full((2, len(labels)), 0.5, dtype=np.float32),
        atol=1e-4,
    )
    npz = io.BytesIO()
    np.savez(npz, features=selftest.features, expected=selftest.expected, atol=np.asarray(selftest.atol))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest.to_json()))
        archive.writestr("model.tflite", model_bytes)
        archive.writestr("selftest.npz", npz.getvalue())
    return buffer.getvalue()
