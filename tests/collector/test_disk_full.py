"""A full disk is a 503 with ``Retry-After`` and nothing stored, never a 500 (issue 14, item 14); once there
is space again the same request goes through. On a real full file system: a 2 MB tmpfs mounted for the
test (root only) holding the SQLite file and the data folder, and for PostgreSQL a tablespace on one, which
the test schema's tables are created in (``default_tablespace``)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from beeaudio.core import wire
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import (
    ADMIN,
    PG_BASE,
    T0,
    Clock,
    bearer,
    fake_bundle_bytes,
    make_settings,
    timeline,
)


@dataclass
class FullDisk:
    """A small tmpfs: ``fill()`` takes every free byte, ``free()`` gives them back."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> None:
        # Unbuffered: no half-written buffer left to flush (and fail) on close.
        with self.filler.open("ab", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str = "2m", options: str = "") -> Iterator[FullDisk]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield FullDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _retry_later(response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert isinstance(response.json()["detail"], str)


def _exercise(client: TestClient, disk: FullDisk, count_events) -> None:
    """Hive and device set up with space; then a full disk; then space again."""
    assert (
        client.post("/api/v1/hives", json={"name": "North", "hive_id": "h1"}, headers=ADMIN).status_code
        == 201
    )
    device = client.post("/api/v1/hives/h1/devices", json={"device_id": "d1"}, headers=ADMIN).json()
    events = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=60), segments=[(0.2, 300)])
    events = [replace(event, extra={"pad": "x" * 200}) for event in events]  # enough to need new pages
    body = make_batch(device_id="d1", events=events, batch_id="b1")
    beat = {"schema": wire.HEARTBEAT_SCHEMA, "sent_at": "2026-05-01T11:00:00Z", "outbox_depth": 3}
    disk.fill()
    _retry_later(client.post(wire.EVENTS_PATH, json=body, headers=bearer(device["token"])))
    assert count_events() == 0
    # Reads still work on a full disk.
    assert client.get("/api/v1/hives/h1/status", headers=ADMIN).status_code == 200
    disk.free()
    response = client.post(wire.EVENTS_PATH, json=body, headers=bearer(device["token"]))
    assert response.status_code == 200 and response.json()["accepted"] == 300, response.text
    assert (
        client.post(wire.heartbeat_path("d1"), json=beat, headers=bearer(device["token"])).status_code == 200
    )


def _counter(engine: sa.engine.Engine):
    from beeaudio.collector.db import events

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()

    return count


def test_a_full_disk_under_sqlite_is_a_503(tmp_path: Path) -> None:
    from beeaudio.collector.app import create_app

    with tmpfs(tmp_path / "disk") as disk:
        settings = make_settings(db_url=f"sqlite:///{disk.path / 'c.db'}", data_dir=disk.path / "data")
        app = create_app(settings, clock_ms=Clock())
        with TestClient(app, raise_server_exceptions=False) as client:
            _exercise(client, disk, _counter(app.state.context.engine))
        app.state.context.engine.dispose()


def test_a_full_data_folder_refuses_an_upload_with_a_503(tmp_path: Path) -> None:
    from beeaudio.collector.app import create_app

    with tmpfs(tmp_path / "disk") as disk:
        settings = make_settings(
            db_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=disk.path / "data", model_check=False
        )
        app = create_app(settings, clock_ms=Clock())
        with TestClient(app, raise_server_exceptions=False) as client:
            content = fake_bundle_bytes() + b"\0" * 3_000_000  # larger than the disk (a zip may trail)
            disk.fill()
            _retry_later(client.post("/api/v1/models", content=content, headers=ADMIN))
            disk.free()
            assert sorted(p.name for p in (disk.path / "data" / "models").iterdir()) == []
            response = client.post("/api/v1/models", content=fake_bundle_bytes(), headers=ADMIN)
            assert response.status_code == 201, response.text
        app.state.context.engine.dispose()


@pytest.mark.postgres
def test_a_full_disk_under_postgresql_is_a_503(tmp_path: Path, postgres_available: bool) -> None:
    """The test schema's tables live in a tablespace on a 4 MB tmpfs: PostgreSQL cannot extend them."""
    from tests.conftest import require

    require(postgres_available, "PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test')")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("PostgreSQL does not run as a local postgres user here")
    # Outside pytest's private tmp folder, which the server's user cannot enter.
    mountpoint = Path(tempfile.mkdtemp(prefix="beeaudio-pg-full-"))
    mountpoint.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(mountpoint.rmdir)
        _full_postgres(mountpoint=mountpoint, owner=owner, tmp_path=tmp_path)


def _full_postgres(*, mountpoint: Path, owner: pwd.struct_passwd, tmp_path: Path) -> None:
    from beeaudio.collector.app import create_app

    with tmpfs(mountpoint, size="4m", options=f",uid={owner.pw_uid},gid={owner.pw_gid},mode=0700") as disk:
        name = f"bee_full_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE TABLESPACE {name} LOCATION '{disk.path}'")
                conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        except sa.exc.DBAPIError as exc:
            admin.dispose()
            pytest.skip(f"cannot make a tablespace on the tmpfs: {exc.orig}")
        url = f"{PG_BASE}?options=-csearch_path%3D{name}%20-cdefault_tablespace%3D{name}"
        try:
            settings = make_settings(db_url=url, data_dir=tmp_path / "data")
            app = create_app(settings, clock_ms=Clock())
            with TestClient(app, raise_server_exceptions=False) as client:
                _exercise(client, disk, _counter(app.state.context.engine))
            app.state.context.engine.dispose()
        finally:
            disk.free()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                conn.exec_driver_sql(f"DROP TABLESPACE IF EXISTS {name}")
            admin.dispose()
