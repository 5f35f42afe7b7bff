"""Start a collector in its own process and wait until it answers: for the demo, the tests and the benchmarks.

The child is ``beeaudio collector serve`` exactly as a user starts it (``-P``: the current folder never
shadows the installed package). :func:`start_collector` returns once ``/api/v1/health`` says ``ok``, or
raises :class:`CollectorStartError` with the end of the collector's log. Importing this module imports
only the standard library, so the demo can use it without the collector's dependencies loaded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from beeaudio.core.errors import BeeaudioError
from beeaudio.core.wire import HEALTH_PATH


class CollectorStartError(BeeaudioError):
    """The collector exited or did not become healthy in time; the message holds the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` of a log file, or ``(no log)``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def is_healthy(url: str, *, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=timeout_s) as answer:
            return json.loads(answer.read()).get("status") == "ok"
    except (OSError, ValueError):
        return False


@dataclass
class RunningCollector:
    """A collector process started by :func:`start_collector`."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM (uvicorn finishes its requests), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: what a power cut or the OOM killer does."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def __enter__(self) -> RunningCollector:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_collector(
    *,
    log_path: Path,
    db_url: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    python: str = sys.executable,
    timeout_s: float = 60.0,
) -> RunningCollector:
    """Run ``beeaudio collector serve`` on ``host:port`` (a free port by default) and wait for health.

    ``env`` replaces the child's environment variables of the same names (e.g. ``BEEAUDIO_ADMIN_TOKEN``);
    ``extra_args`` go after ``serve`` (e.g. ``--local``, ``--log-level warning``). The child's output goes to
    ``log_path``.
    """
    port = port or free_port(host)
    command = [python, "-P", "-m", "beeaudio.cli", "collector", "serve", "--host", host, "--port", str(port)]
    if db_url is not None:
        command += ["--db", db_url]
    command += list(extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    running = RunningCollector(process=process, url=f"http://{host}:{port}", port=port, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CollectorStartError(
                f"the collector exited with code {process.returncode}:\n{tail(log_path)}"
            )
        if is_healthy(running.url):
            return running
        time.sleep(0.1)
    running.stop()
    raise CollectorStartError(
        f"the collector did not become healthy within {timeout_s:g} s:\n{tail(log_path)}"
    )
