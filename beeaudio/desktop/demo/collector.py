"""The demo's collector: its port, its process (the collector's own launcher) and the admin API calls the
demo makes to it (the device's own HTTP client, the wire contract's paths).

Everything that fails here fails as a :class:`DemoError` that names the request, or the collector's log.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from beeaudio.collector.launch import CollectorStartError, RunningCollector, free_port, start_collector
from beeaudio.core.wire import HIVES_PATH, hive_path, utc_iso
from beeaudio.desktop.demo.errors import DemoError
from beeaudio.desktop.demo.plan import ApiaryPlan, DemoHive
from beeaudio.device.client import CollectorClient, TransportError

#: With ``--serve``: the port a user expects a local web app on, when it is free.
DEFAULT_PORT = 8000
#: The admin API answers in milliseconds on loopback: a request that takes longer is a collector in trouble.
REQUEST_TIMEOUT_S = 10.0
PID_FILE = "collector.pid"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections of an earlier server in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(*, port: int | None, serve: bool) -> int:
    """``port`` if given (it must be free); else 8000 when serving and free; else any free port."""
    if port is not None:
        if not _port_free(port):
            raise DemoError(f"port {port} is in use on 127.0.0.1; choose another with --port")
        return port
    if serve and _port_free(DEFAULT_PORT):
        return DEFAULT_PORT
    return free_port()


def previous_collector_alive(*, run: Path) -> int | None:
    """The pid of a collector an earlier ``--serve`` run left serving this folder, if it is still up."""
    try:
        pid = int((run / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    if cmdline and b"collector" not in cmdline:
        return None  # the pid now belongs to something else
    return pid


def start_demo_collector(*, run: Path, port: int, admin_token: str, read_token: str) -> RunningCollector:
    """The run's collector on SQLite in ``run``, in local mode, with this run's tokens; healthy on return.

    Its pid goes to ``run/collector.pid`` so that a second demo in the same folder can refuse to wipe the
    database a ``--serve`` run is still serving (:func:`previous_collector_alive`).
    """
    db_url = f"sqlite:///{run / 'collector.db'}"
    env = {
        "BEEAUDIO_MODE": "local",
        "BEEAUDIO_DATABASE_URL": db_url,
        "BEEAUDIO_ADMIN_TOKEN": admin_token,
        "BEEAUDIO_READ_TOKEN": read_token,
    }
    try:
        collector = start_collector(
            log_path=run / "logs" / "collector.log",
            db_url=db_url,
            port=port,
            env=env,
            extra_args=["--local"],
            cwd=run,
        )
    except CollectorStartError as exc:
        raise DemoError(str(exc)) from exc
    (run / PID_FILE).write_text(str(collector.process.pid))
    return collector


def stop_demo_collector(*, collector: RunningCollector, run: Path) -> None:
    collector.stop()
    (run / PID_FILE).unlink(missing_ok=True)


def admin_client(*, url: str, token: str) -> CollectorClient:
    return CollectorClient(base_url=url, token=token, timeout_s=REQUEST_TIMEOUT_S)


def call(*, client: CollectorClient, method: str, path: str, body: Any = None) -> Any:
    """One JSON request; an answer other than 2xx, or none, is a :class:`DemoError` naming the request."""
    try:
        response = client.request(method, path, body=body)
    except TransportError as exc:
        raise DemoError(
            f"{method} {path}: the collector at {client.base_url} did not answer ({exc})"
        ) from exc
    if not 200 <= response.status < 300:
        raise DemoError(f"{method} {path}: HTTP {response.status}: {response.detail()}")
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DemoError(f"{method} {path}: the answer is not JSON ({exc})") from exc


def state_params(*, plan: ApiaryPlan) -> dict[str, Any]:
    """The collector's hive-state parameters for the demo's duty-cycled recorders.

    The collector's defaults smooth over 5 minutes, sized for a recorder that never stops. These recorders
    hear ``recording_seconds`` every ``interval_minutes``, so the smoothing window is widened to hold the
    last three recordings (one odd recording -- rain, a bird, someone talking -- cannot flip a hive on its
    own) and ``offline`` waits for several missed recordings; the thresholds and the hysteresis stay at
    the collector's defaults.
    """
    interval_s = plan.interval_minutes * 60
    return {"smoothing_seconds": 3 * interval_s, "offline_after_seconds": max(3600.0, 6 * interval_s)}


def register_hive(*, client: CollectorClient, plan: ApiaryPlan, hive: DemoHive) -> str:
    """Create the hive and its device over the admin API; returns the device's token."""
    call(
        client=client,
        method="POST",
        path=HIVES_PATH,
        body={"name": hive.name, "hive_id": hive.hive_id, "state_params": state_params(plan=plan)},
    )
    device = call(
        client=client,
        method="POST",
        path=hive_path(hive.hive_id, "devices"),
        body={"device_id": hive.device_id},
    )
    return str(device["token"])


def hive_status(*, client: CollectorClient, hive: DemoHive) -> dict[str, Any]:
    """The hive's state as the collector reports it (``GET /api/v1/hives/{hive_id}/status``)."""
    path = hive_path(hive.hive_id, "status")
    status = call(client=client, method="GET", path=path)
    if not isinstance(status, dict):
        raise DemoError(f"GET {path}: expected a JSON object, got {status!r}"[:500])
    return status


def count_events(*, client: CollectorClient, hive_id: str, start: datetime, end: datetime) -> int:
    """Events the collector holds for a hive between ``start`` and ``end`` (from its history rollups)."""
    query = urllib.parse.urlencode({"from": utc_iso(start), "to": utc_iso(end), "bucket": 86400})
    history = call(client=client, method="GET", path=f"{hive_path(hive_id, 'history')}?{query}")
    return sum(int(n) for bucket in history.get("buckets", []) for n in bucket.get("counts", {}).values())


def wait_for_events(
    *,
    client: CollectorClient,
    hives: Sequence[DemoHive],
    per_hive: int,
    between: tuple[datetime, datetime],
    timeout: float,
) -> dict[str, int]:
    """Per-hive event counts, once every hive has ``per_hive`` of them or ``timeout`` seconds have passed."""
    start, end = between
    deadline = time.monotonic() + timeout
    while True:
        counts = {
            h.hive_id: count_events(client=client, hive_id=h.hive_id, start=start, end=end) for h in hives
        }
        if all(n >= per_hive for n in counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)
