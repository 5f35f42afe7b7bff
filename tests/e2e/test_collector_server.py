"""End to end against a real ``beeaudio collector serve`` (uvicorn) on loopback: CLI set-up, ingest, a
webhook delivered to a real HTTP receiver, SIGKILL right after a 2xx and a restart that still has every
acknowledged event."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from beeaudio.collector.launch import RunningCollector, start_collector
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, ADMIN_TOKEN, timeline

pytestmark = pytest.mark.slow


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``beeaudio collector ...`` in this process (the server below is the separate process)."""
    from beeaudio.cli import main

    capsys.readouterr()
    assert main(["-q", "collector", *args]) == 0
    return capsys.readouterr().out


class Receiver:
    """A real webhook endpoint on loopback that remembers what it was sent."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_real_server_survives_sigkill_after_acknowledging(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = Receiver()
    env = {
        "BEEAUDIO_DATABASE_URL": db_url,
        "BEEAUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
        "BEEAUDIO_DATA_DIR": str(tmp_path / "data"),
        "BEEAUDIO_WEBHOOKS": receiver.url,
        "BEEAUDIO_MODE": "production",
        "BEEAUDIO_READ_TOKEN": "",  # no read token, whatever the environment says
    }
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
    receiver = Receiver()
    env = {
        "BEEAUDIO_DATABASE_URL": db_url,
        "BEEAUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
        "BEEAUDIO_DATA_DIR": str(tmp_path / "data"),
        "BEEAUDIO_WEBHOOKS": receiver.url,
        "BEEAUDIO_MODE": "production",
        "BEEAUDIO_READ_TOKEN": "",
    }
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
