"""Helpers for the device agent's tests: synthetic recordings, config files, a scriptable fake collector.

The fake collector is a real HTTP server on loopback (``http.server``); it answers from a script of
statuses and records what it received, for the uploader's unit tests. The end-to-end test uses the real
collector instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beeaudio.audio import encode_mp3, write_wav

REPO_ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def hive_audio(*, seconds: float, seed: int, state: str = "normal", rate: int = RATE) -> np.ndarray:
    """Synthetic hive sound (``beeaudio.synth``)."""
    from beeaudio.synth import render_timeline

    return render_timeline(hive_seed=seed % 7, segments=[(state, seconds)], sample_rate=rate, seed=seed)


def spool_name(start: datetime, suffix: str = ".wav") -> str:
    """The name arecord's ``--use-strftime %Y%m%d-%H%M%S.wav`` gives a recording started at ``start``."""
    return start.astimezone(UTC).strftime("%Y%m%d-%H%M%S") + suffix


def write_recordings(
    *, folder: Path, count: int, seconds: float, start: datetime, mp3_every: int = 0, seed: int = 0
) -> list[Path]:
    """``count`` consecutive recordings named by their start time; every ``mp3_every``-th one is an MP3."""
    paths = []
    for i in range(count):
        begin = start + timedelta(seconds=i * seconds)
        audio = hive_audio(seconds=seconds, seed=seed + i, state="swarm" if i % 3 == 2 else "normal")
        if mp3_every and i % mp3_every == mp3_every - 1:
            paths.append(
                encode_mp3(
                    audio=audio, sample_rate=RATE, path=folder / spool_name(begin, ".mp3"), bitrate_kbps=32
                )
            )
        else:
            paths.append(write_wav(folder / spool_name(begin), audio=audio, sample_rate=RATE))
    return paths


def expected_windows(*, seconds: float, window_seconds: float = 2.0, hop_seconds: float = 1.0) -> int:
    return int((seconds - window_seconds) // hop_seconds) + 1


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cli(*args: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "beeaudio.cli", *args]


def run_cli(
    *args: str, timeout: float = 120, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args, python=python), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


# -- a scriptable collector -------------------------------------------------------------------------------
@dataclass
class FakeCollector:
    """Answers POST /api/v1/events from ``statuses`` (then 200), or from ``decide(batch) -> status``."""

    statuses: list[int] = field(default_factory=list)
    decide: Callable[[dict[str, Any]], int] | None = None
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry_after: str | None = None  # sent with every non-2xx answer to an events POST
    post_times: list[float] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events_posts(self) -> list[Any]:
        return [body for method, path, _, body in self.requests if path == "/api/v1/events"]

    def heartbeats(self) -> list[Any]:
        return [body for method, path, _, body in self.requests if path.endswith("/heartbeat")]


@contextmanager
def fake_collector(collector: FakeCollector | None = None) -> Iterator[FakeCollector]:
    state = collector or FakeCollector()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", self.path, dict(self.headers.items()), None))
                route = state.routes.get(self.path)
            if route is None:
                self._reply(404, b'{"detail": "no such route"}')
                return
            status, headers, body = route
            etag = headers.get("ETag")
            if etag and self.headers.get("If-None-Match") == etag:
                self._reply(304)
                return
            self._reply(status, body, headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            with state.lock:
                state.requests.append(("POST", self.path, dict(self.headers.items()), body))
                state.post_times.append(time.monotonic())
                if self.path != "/api/v1/events":
                    self._reply(200, b"{}")
                    return
                status = state.statuses.pop(0) if state.statuses else 200
                if state.decide is not None:
                    status = state.decide(body)
                if 200 <= status < 300:
                    for event in body["events"]:
                        state.accepted.setdefault(event["event_id"], event)
                    answer = {"batch_id": body["batch_id"], "accepted": len(body["events"]), "duplicates": 0}
                    self._reply(status, json.dumps(answer).encode())
                else:
                    headers = {"Retry-After": state.retry_after} if state.retry_after else {}
                    self._reply(status, json.dumps({"detail": f"scripted {status}"}).encode(), headers)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event_ids_in(outbox_path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(outbox_path) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM events ORDER BY seq")]


def make_events(n: int, *, device_id: str = "dev-1", hive_id: str = "hive-1", offset: int = 0) -> list[Any]:
    from beeaudio.events import ClassificationEvent, make_event_id

    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    return [
        ClassificationEvent(
            event_id=make_event_id(
                device_id=device_id, source_id="unit", window_offset_s=float(i), model_sha256="0" * 64
            ),
            hive_id=hive_id,
            device_id=device_id,
            model_name="m",
            model_version="1",
            window_start=start + timedelta(seconds=i),
            window_seconds=2.0,
            probabilities={"normal": 0.75, "swarm": 0.25},
            label="normal",
            swarm_score=0.25,
            level_dbfs=-30.0,
            source_format="WAV",
        )
        for i in range(offset, offset + n)
    ]


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# -- bundles ------------------------------------------------------------------------------------------------
# The training engineer's session fixtures (tests/fixtures_bundle.py). DEV_BUNDLES, if set, names a folder
# with int8.beemodel and f32.beemodel to use instead (quick iterations without training).
DEV_BUNDLES = "BEEAUDIO_DEVICE_TEST_BUNDLES"


def resolve_bundle(request: pytest.FixtureRequest, *, kind: str) -> Path:
    """``kind`` "int8" → ``tiny_bundle``; "float32" → ``tiny_bundle_float32``."""
    if os.environ.get(DEV_BUNDLES):
        return Path(os.environ[DEV_BUNDLES]) / ("int8.beemodel" if kind == "int8" else "f32.beemodel")
    return Path(request.getfixturevalue("tiny_bundle" if kind == "int8" else "tiny_bundle_float32"))
