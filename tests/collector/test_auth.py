"""Auth: admin/read/device roles; a device token for hive A cannot write, read or impersonate hive B;
revocation; tokens stored hashed; the admin secret refused when weak outside local mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from beeaudio.collector.app import create_app
from beeaudio.collector.settings import Settings, SettingsError, resolve_admin_token
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, READER, T0, bearer, timeline


@pytest.fixture
def two_hives(collector):
    collector.add_hive("hive-a")
    collector.add_hive("hive-b")
    a = collector.add_device("hive-a", "dev-a")
    b = collector.add_device("hive-b", "dev-b")
    return a, b


def test_device_token_of_hive_a_cannot_touch_hive_b(collector, two_hives) -> None:
    a, _b = two_hives
    start = T0 - timedelta(minutes=5)
    b_events = timeline(hive_id="hive-b", device_id="dev-b", start=start, segments=[(0.9, 5)])
    # Write: B's events (B's device and hive) with A's token.
    batch = make_batch(device_id="dev-b", events=b_events, batch_id="x")
    assert collector.client.post("/api/v1/events", json=batch, headers=bearer(a["token"])).status_code == 403
    # Impersonate: A's device id in the batch, but events claiming hive B or device B.
    as_a_for_b = timeline(hive_id="hive-b", device_id="dev-a", start=start, segments=[(0.9, 5)])
    assert collector.send(a, as_a_for_b).status_code == 403
    spoofed = make_batch(device_id="dev-a", events=b_events, batch_id="y")
    assert (
        collector.client.post("/api/v1/events", json=spoofed, headers=bearer(a["token"])).status_code == 403
    )
    # Heartbeat and model for B's device.
    beat = {"schema": "beeaudio.heartbeat/1", "sent_at": "2026-05-01T11:00:00Z"}
    assert (
        collector.client.post(
            "/api/v1/devices/dev-b/heartbeat", json=beat, headers=bearer(a["token"])
        ).status_code
        == 403
    )
    assert collector.client.get("/api/v1/devices/dev-b/model", headers=bearer(a["token"])).status_code == 403
    # Read: no hive status, history, events or alerts with a device token — B's or its own.
    for path in (
        "/api/v1/hives/hive-b/status",
        "/api/v1/hives/hive-b/history",
        "/api/v1/hives/hive-b/events",
        "/api/v1/hives/hive-a/status",
        "/api/v1/hives",
        "/api/v1/alerts",
    ):
        assert collector.client.get(path, headers=bearer(a["token"])).status_code == 403, path
    assert collector.count("events") == 0
    # A writing its own readings works.
    own = timeline(hive_id="hive-a", device_id="dev-a", start=start, segments=[(0.1, 5)])
    assert collector.send(a, own).status_code == 200
    assert collector.count("events") == 5


def test_roles(collector, two_hives) -> None:
    a, _ = two_hives
    client = collector.client
    assert client.get("/api/v1/hives").status_code == 401
    assert client.get("/api/v1/hives", headers=bearer("nonsense")).status_code == 401
    assert client.get("/api/v1/hives", headers=READER).status_code == 200
    # The read token reads but does not administer.
    assert client.post("/api/v1/hives", json={"name": "x"}, headers=READER).status_code == 403
    assert client.post("/api/v1/hives/hive-a/devices", json={}, headers=READER).status_code == 403
    assert client.post("/api/v1/hives", json={"name": "x"}, headers=bearer(a["token"])).status_code == 403
    # Admin and read tokens do not send readings: only a device does.
    batch = make_batch(device_id="dev-a", events=[], batch_id="e")
    assert client.post("/api/v1/events", json=batch, headers=ADMIN).status_code == 403
    assert client.get("/api/v1/health").status_code == 200


def test_revoked_token_is_refused_and_tokens_are_stored_hashed(collector, two_hives) -> None:
    a, _ = two_hives
    from beeaudio.collector.db import devices

    with collector.engine.connect() as conn:
        stored = conn.execute(
            sa.select(devices.c.token_sha256).where(devices.c.device_id == "dev-a")
        ).scalar_one()
    assert a["token"] not in stored and len(stored) == 64
    events = timeline(
        hive_id="hive-a", device_id="dev-a", start=T0 - timedelta(minutes=1), segments=[(0.1, 2)]
    )
    assert collector.send(a, events).status_code == 200
    assert collector.client.delete("/api/v1/devices/dev-a/token", headers=READER).status_code == 403
    assert collector.client.delete("/api/v1/devices/dev-a/token", headers=ADMIN).status_code == 200
    assert collector.send(a, events).status_code == 401
    assert collector.client.delete("/api/v1/devices/nope/token", headers=ADMIN).status_code == 404


def test_conflicts_and_missing_things(collector, two_hives) -> None:
    client = collector.client
    assert (
        client.post("/api/v1/hives", json={"name": "again", "hive_id": "hive-a"}, headers=ADMIN).status_code
        == 409
    )
    assert (
        client.post("/api/v1/hives/hive-a/devices", json={"device_id": "dev-b"}, headers=ADMIN).status_code
        == 409
    )
    assert client.post("/api/v1/hives/nope/devices", json={}, headers=ADMIN).status_code == 404
    assert client.get("/api/v1/hives/nope/status", headers=ADMIN).status_code == 404
    generated = client.post("/api/v1/hives", json={"name": "Apiary North / Hive 3"}, headers=ADMIN)
    assert generated.status_code == 201 and generated.json()["hive_id"].startswith("hive-")


#: Weak whatever their length (issue 14, item 14: the check was length-only).
WEAK = [
    "",
    "changeme",
    "admin",
    "short",
    "a" * 40,
    "changemechangemechangeme",
    "Password!Password!",
    "password1234567890",
    "qwertyuiopasdfghjkl",
    "0123456789abcdef0123",
    "admin-token-secret-test",
    "1212121212121212121",
    "aaaaaaaaaaaaaaaaaaab",
]
STRONG = ["pX3-Vq9LzR7tKm2WcY8n", "3f9a1c7e5b2d8f40a6c1e9b7d3f5a2c8", "adm-TS6a4i0Lk2b8zhKLnP5rI4CYd7GvMQWe"]


@pytest.mark.parametrize("secret", WEAK)
def test_production_refuses_weak_admin_secrets(tmp_path, secret: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", admin_token=secret, mode="production")
    with pytest.raises(SettingsError, match="BEEAUDIO_ADMIN_TOKEN"):
        create_app(settings)


@pytest.mark.parametrize("secret", [s for s in WEAK if s])
def test_production_refuses_a_weak_read_token(tmp_path, secret: str) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        admin_token=STRONG[0],
        read_token=secret,
        mode="production",
    )
    with pytest.raises(SettingsError, match="BEEAUDIO_READ_TOKEN"):
        create_app(settings)


def test_read_token_rules(tmp_path) -> None:
    from beeaudio.collector.settings import resolve_read_token

    def settings(**values):
        return Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", admin_token=STRONG[0], **values)

    for secret in STRONG[1:]:
        assert resolve_read_token(settings(read_token=secret), admin_token=STRONG[0]) == secret
    assert resolve_read_token(settings(), admin_token=STRONG[0]) == ""  # unset: no read token
    with pytest.raises(SettingsError, match="admin token"):
        resolve_read_token(settings(read_token=STRONG[0]), admin_token=STRONG[0])
    # Local mode (a demo) warns and goes on, as it does for a weak admin token.
    assert resolve_read_token(settings(read_token="reader", mode="local"), admin_token=STRONG[0]) == "reader"


@pytest.mark.parametrize("secret", STRONG)
def test_random_secrets_are_accepted(secret: str) -> None:
    from beeaudio.collector.secret_rules import secret_weakness

    assert secret_weakness(secret) is None


def test_generated_secrets_are_accepted() -> None:
    import secrets

    from beeaudio.collector.secret_rules import secret_weakness

    for _ in range(500):
        for secret in (secrets.token_urlsafe(32), secrets.token_urlsafe(16), "adm-" + secrets.token_hex(16)):
            assert secret_weakness(secret) is None, secret


def test_rotating_a_device_token(collector, two_hives) -> None:
    a, _ = two_hives
    events = timeline(
        hive_id="hive-a", device_id="dev-a", start=T0 - timedelta(minutes=1), segments=[(0.1, 2)]
    )
    assert collector.client.post("/api/v1/devices/dev-a/token", headers=READER).status_code == 403
    assert collector.client.post("/api/v1/devices/dev-a/token", headers=bearer(a["token"])).status_code == 403
    assert collector.client.post("/api/v1/devices/nope/token", headers=ADMIN).status_code == 404
    rotated = collector.client.post("/api/v1/devices/dev-a/token", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["device_id"] == "dev-a" and new["hive_id"] == "hive-a" and new["token"] != a["token"]
    assert collector.send(a, events).status_code == 401  # the old token, from now on
    assert collector.send(new, events).status_code == 200
    # A revoked device is admitted again by a new token.
    assert collector.client.delete("/api/v1/devices/dev-a/token", headers=ADMIN).status_code == 200
    assert collector.send(new, events).status_code == 401
    again = collector.client.post("/api/v1/devices/dev-a/token", headers=ADMIN).json()
    assert collector.send(again, events).json()["duplicates"] == 2
    listed = collector.client.get("/api/v1/hives/hive-a/devices", headers=ADMIN).json()
    assert listed[0]["revoked_at"] is None


def test_local_mode_generates_and_keeps_a_token(tmp_path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", mode="local", background_tasks=False)
    token, generated = resolve_admin_token(settings)
    assert generated and len(token) >= 32
    path = settings.admin_token_file()
    assert path.read_text().strip() == token and path.parent == tmp_path
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again, generated_again = resolve_admin_token(settings)
    assert again == token and not generated_again


def test_serve_refuses_to_start_without_a_secret(tmp_path, monkeypatch, capsys) -> None:
    from beeaudio.cli import main
    from beeaudio.core.errors import EXIT_USAGE

    monkeypatch.delenv("BEEAUDIO_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("BEEAUDIO_MODE", raising=False)
    capsys.readouterr()
    assert main(["collector", "serve", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--port", "1"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("beeaudio collector serve: error: BEEAUDIO_ADMIN_TOKEN"), err
