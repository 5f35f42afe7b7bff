"""End to end against a real ``beeaudio collector serve`` (uvicorn) on loopback: CLI set-up, ingest, a
webhook delivered to a real HTTP receiver, SIGKILL right after a 2xx and a restart that still has every
acknowledged event; and what only a real server shows (issue 14): bodies from strangers are refused before
they are read (the server's memory stays flat under a dozen anonymous 60 MB uploads), uploads stream to
disk, a stalled body is cut off, and deep nesting is a 422, not a 500."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from beeaudio.collector.launch import RunningCollector, start_collector
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, WebhookReceiver, server_env, timeline

pytestmark = pytest.mark.slow


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``beeaudio collector ...`` in this process (the server below is the separate process)."""
    from beeaudio.cli import main

    capsys.readouterr()
    assert main(["-q", "collector", *args]) == 0
    return capsys.readouterr().out


def test_real_server_survives_sigkill_after_acknowledging(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = WebhookReceiver()
    env = server_env(db_url=db_url, data_dir=tmp_path / "data", WEBHOOKS=receiver.url)
    hive = cli(
        "add-hive", "--db", db_url, "--name", "Apiary North / Hive 3", "--hive-id", "north-3", capsys=capsys
    )
    assert hive.strip() == "north-3"
    out = cli("add-device", "--db", db_url, "--hive", "north-3", "--device-id", "pi-1", capsys=capsys)
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("token "))
    device = {"Authorization": f"Bearer {token}"}

    log_path = tmp_path / "server.log"

    def start(port: int | None = None) -> RunningCollector:
        return start_collector(log_path=log_path, port=port, env=env, extra_args=["--log-level", "warning"])

    server: RunningCollector | None = None
    try:
        server = start()
        now = datetime.now(UTC).replace(microsecond=0)
        events = timeline(
            hive_id="north-3",
            device_id="pi-1",
            start=now - timedelta(minutes=10),
            segments=[(0.1, 20), (0.95, 40)],
            step_s=10,
        )
        batches = [events[i : i + 10] for i in range(0, len(events), 10)]
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i, batch in enumerate(batches):
                body = make_batch(device_id="pi-1", events=batch, batch_id=f"b{i}")
                response = client.post("/api/v1/events", json=body, headers=device)
                assert response.status_code == 200, response.text
        # Killed the moment the last 2xx is in: no shutdown, no flush.
        server.kill()

        server = start(port=server.port)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            ids: set[str] = set()
            cursor = None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = client.get("/api/v1/hives/north-3/events", params=params, headers=ADMIN).json()
                ids.update(e["event_id"] for e in page["events"])
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert ids == {e.event_id for e in events}
            status = client.get("/api/v1/hives/north-3/status", headers=ADMIN).json()
            assert status["state"] == "swarm"
            # The device never heard some answers? It re-sends: all duplicates, nothing doubled.
            body = make_batch(device_id="pi-1", events=batches[-1], batch_id="again")
            assert client.post("/api/v1/events", json=body, headers=device).json()["duplicates"] == 10
            # The swarm alert reaches the real webhook receiver (the worker polls every second).
            deadline = time.monotonic() + 15
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [a["kind"] for a in receiver.received] == ["swarm_started"]
    finally:
        if server is not None:
            server.stop()
        receiver.close()


def test_real_server_says_why_and_sends_microphone_silent(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device whose microphone dies: the status says so in words, and ``microphone_silent`` reaches a
    real webhook receiver once; an old device next to it keeps sending v1 events."""
    receiver = WebhookReceiver()
    env = server_env(db_url=db_url, data_dir=tmp_path / "data", WEBHOOKS=receiver.url)
    cli("add-hive", "--db", db_url, "--name", "South 1", "--hive-id", "south-1", capsys=capsys)
    tokens = {}
    for device_id in ("pi-new", "pi-old"):
        out = cli("add-device", "--db", db_url, "--hive", "south-1", "--device-id", device_id, capsys=capsys)
        tokens[device_id] = next(line.split()[1] for line in out.splitlines() if line.startswith("token "))
    server = start_collector(log_path=tmp_path / "server.log", env=env, extra_args=["--log-level", "warning"])
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(minutes=12)
        calm = timeline(hive_id="south-1", device_id="pi-new", start=start, segments=[(0.1, 30)])
        dead = timeline(
            hive_id="south-1",
            device_id="pi-new",
            start=start + timedelta(minutes=5),
            segments=[(0.0, 40)],
            quality="no_signal",
        )
        old = timeline(
            hive_id="south-1", device_id="pi-old", start=start, segments=[(0.1, 3)], step_s=60, quality=None
        )
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for device_id, events in (("pi-old", old), ("pi-new", calm), ("pi-new", dead)):
                body = make_batch(device_id=device_id, events=events)
                headers = {"Authorization": f"Bearer {tokens[device_id]}"}
                response = client.post("/api/v1/events", json=body, headers=headers)
                assert response.status_code == 200 and response.json()["accepted"] == len(events)
            status = client.get("/api/v1/hives/south-1/status", headers=ADMIN).json()
            assert (status["state"], status["reason"]) == ("unknown", "no_signal")
            assert status["reason_text"].startswith("microphone silent: 40 of the last ")
            deadline = time.monotonic() + 15
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # one more worker round: nothing else may arrive
            assert [a["kind"] for a in receiver.received] == ["microphone_silent"]
            assert receiver.received[0]["details"]["no_signal"] == 40
    finally:
        server.stop()
        receiver.close()


# -- issue 14, item 11: memory before auth --------------------------------------------------------------
UPLOAD = 60_000_000
CHUNK = 1 << 20


def rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def raw_upload(
    url: str, *, size: int, headers: dict[str, str], stall_after: int | None = None, timeout_s: float = 60
) -> int | None:
    """POST ``size`` bytes to /api/v1/models over a plain socket, as fast as the server takes them (or stop
    sending after ``stall_after`` bytes); the status line's code, or None if the server said nothing."""
    host, port = url.removeprefix("http://").split(":")
    head = ["POST /api/v1/models HTTP/1.1", f"Host: {host}", f"Content-Length: {size}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    chunk = b"\0" * CHUNK
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        try:
            while sent < (size if stall_after is None else stall_after):
                sock.sendall(chunk[: min(CHUNK, size - sent)])
                sent += CHUNK
        except OSError:
            pass  # the server answered and closed without reading the rest: what a refusal should do
        try:
            answer = sock.recv(200)
        except OSError:
            return None
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_strangers_bodies_are_not_read_and_uploads_stream_to_disk(db_url: str, tmp_path: Path) -> None:
    env = server_env(db_url=db_url, data_dir=tmp_path / "data", BODY_READ_TIMEOUT_SECONDS="2")
    server = start_collector(log_path=tmp_path / "server.log", env=env, extra_args=["--log-level", "warning"])
    try:
        pid = server.process.pid
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(20):  # warm up: every route and model imported once
                client.get("/api/v1/hives", headers=ADMIN)
        baseline, _ = rss_mb(pid)
        # Twelve anonymous (or wrongly authenticated) 60 MB uploads at once.
        strangers = [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Bearer bdt_x"}] * 4
        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(lambda h: raw_upload(server.url, size=UPLOAD, headers=h), strangers))
        assert set(codes) <= {401, None} and 401 in codes, codes
        _, peak = rss_mb(pid)
        assert peak - baseline < 80, f"anonymous uploads took the server from {baseline:.0f} to {peak:.0f} MB"
        # The admin's 60 MB (not a bundle) streams to a file and is refused; memory stays about flat.
        code = raw_upload(
            server.url, size=UPLOAD, headers={**ADMIN, "Content-Type": "application/octet-stream"}
        )
        assert code == 422
        _, peak = rss_mb(pid)
        assert peak - baseline < 80, f"an admin upload took the server from {baseline:.0f} to {peak:.0f} MB"
        assert list((tmp_path / "data" / "models").iterdir()) == []
        # A body that stops coming is cut off (408) and leaves nothing behind.
        started = time.monotonic()
        stalled = raw_upload(server.url, size=UPLOAD, headers=ADMIN, stall_after=4 * CHUNK, timeout_s=30)
        assert stalled == 408 and time.monotonic() - started < 20
        assert list((tmp_path / "data" / "models").iterdir()) == []
        assert server.process.poll() is None
    finally:
        server.stop()


# -- issue 14, item 10: deep nesting over a real server -------------------------------------------------
def test_deep_nesting_is_refused_by_a_real_server(db_url: str, tmp_path: Path, capsys) -> None:
    cli("add-hive", "--db", db_url, "--name", "Deep", "--hive-id", "deep", capsys=capsys)
    out = cli("add-device", "--db", db_url, "--hive", "deep", "--device-id", "pi-d", capsys=capsys)
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("token "))
    env = server_env(db_url=db_url, data_dir=tmp_path / "data")
    server = start_collector(log_path=tmp_path / "server.log", env=env, extra_args=["--log-level", "warning"])
    device = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        events = timeline(
            hive_id="deep", device_id="pi-d", start=now - timedelta(minutes=5), segments=[(0.2, 3)]
        )
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for depth in (600, 900, 5000):
                body = make_batch(device_id="pi-d", events=events, batch_id=f"deep-{depth}")
                body["events"][0]["extra"] = {"deep": None}
                raw = json.dumps(body).replace('{"deep": null}', '{"k": ' * depth + "1" + "}" * depth)
                response = client.post("/api/v1/events", content=raw, headers=device)
                assert response.status_code == 422 and "nested" in response.json()["detail"], response.text
                beat = (
                    '{"schema": "beeaudio.heartbeat/1", "sent_at": "2026-05-01T11:00:00Z", "x": '
                    + "[" * depth
                    + "]" * depth
                    + "}"
                )
                response = client.post("/api/v1/devices/pi-d/heartbeat", content=beat, headers=device)
                assert response.status_code == 422 and "nested" in response.json()["detail"], response.text
            for path in ("/api/v1/hives/deep/events", "/api/v1/hives/deep/devices"):
                assert client.get(path, headers=ADMIN).status_code == 200
    finally:
        server.stop()
