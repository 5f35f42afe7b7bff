"""End to end: the real collector (uvicorn on loopback, SQLite) and the agent (a subprocess) on a spool of
synthetic WAV and MP3 recordings. Every window's event must arrive exactly once, through a collector outage,
an agent killed by SIGKILL part way, and a corrupt file in the spool."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from beeaudio.collector.launch import RunningCollector, free_port, start_collector
from beeaudio.core.bundle import read_bundle
from beeaudio.core.inference import Classifier
from beeaudio.device.agent import Identity, analyse_file
from beeaudio.device.sources import source_id_of
from tests.fixtures.device import REPO_ROOT, cli, run_cli, wait_for, write_config
from tests.fixtures.device import write_recordings as write_spool

pytestmark = pytest.mark.slow

HIVE, DEVICE = "hive-e2e", "dev-e2e"


class Collector:
    """``beeaudio collector serve --local`` in a subprocess; stop and start it again on the same database."""

    def __init__(self, *, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = "adm-" + secrets.token_hex(16)
        self.running: RunningCollector | None = None
        self.log = folder / "collector.log"

    def start(self) -> None:
        self.running = start_collector(
            log_path=self.log,
            db_url=f"sqlite:///{self.folder / 'collector.db'}",
            port=self.port,
            env={"BEEAUDIO_ADMIN_TOKEN": self.admin},
            extra_args=["--local"],
        )

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(timeout_s=20)
        self.running = None

    def call(self, method: str, path: str, body: object = None, *, raw: bytes | None = None) -> object:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        content_type = "application/octet-stream" if raw is not None else "application/json"
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.admin}", "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def event_ids(self) -> list[str]:
        ids, cursor = [], None
        while True:
            query = "limit=500" + (f"&cursor={cursor}" if cursor else "")
            page = self.call("GET", f"/api/v1/hives/{HIVE}/events?{query}")
            ids.extend(event["event_id"] for event in page["events"])
            cursor = page.get("next_cursor")
            if not cursor:
                return ids


def expected_ids(paths: list[Path], bundle: Path) -> dict[str, set[str]]:
    """The ids the agent must produce for each recording, computed independently of it."""
    classifier = Classifier.load(bundle)
    identity = Identity(device_id=DEVICE, hive_id=HIVE)
    result = {}
    for path in paths:
        events = analyse_file(
            path=path,
            classifier=classifier,
            identity=identity,
            source_id=source_id_of(path),
            name_time_formats=("%Y%m%d-%H%M%S",),
        )
        result[path.name] = {e.event_id for e in events}
    return result


def test_every_window_arrives_exactly_once_through_outage_and_sigkill(tmp_path, bundle):
    collector = Collector(folder=tmp_path)
    collector.start()
    agent: subprocess.Popen[str] | None = None
    try:
        collector.call("POST", "/api/v1/hives", {"name": "E2E hive", "hive_id": HIVE})
        token = collector.call("POST", f"/api/v1/hives/{HIVE}/devices", {"device_id": DEVICE})["token"]

        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        staging = tmp_path / "staging"
        first = write_spool(folder=staging / "a", count=4, seconds=8.0, start=start, mp3_every=2, seed=1)
        second = write_spool(
            folder=staging / "b",
            count=4,
            seconds=8.0,
            start=start + timedelta(minutes=1),
            mp3_every=2,
            seed=5,
        )
        # Many more recordings (copies of one sound under later names) for the SIGKILL phase.
        third = []
        for i in range(30):
            name = (start + timedelta(minutes=2, seconds=8 * i)).strftime("%Y%m%d-%H%M%S") + ".wav"
            third.append(staging / "c" / name)
            third[-1].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first[0], third[-1])
        expected = expected_ids(first + second + third, bundle)
        all_ids = set().union(*expected.values())
        assert len(all_ids) == sum(len(v) for v in expected.values())  # ids are distinct across files

        spool = tmp_path / "spool"
        spool.mkdir()
        config = write_config(
            tmp_path / "device.toml",
            {
                "device": {"device_id": DEVICE, "hive_id": HIVE, "state_dir": str(tmp_path / "state")},
                "source": {"path": str(spool), "after": "delete", "poll_seconds": 0.2, "settle_seconds": 0.5},
                "collector": {
                    "url": collector.url,
                    "token": token,
                    "upload_interval_s": 0.2,
                    "backoff_initial_s": 0.2,
                    "backoff_max_s": 1.0,
                    "batch_size": 25,
                    "heartbeat_interval_s": 1.0,
                    "ota_poll_interval_s": 0,
                },
            },
        )
        installed = run_cli("device", "install-model", str(bundle), "--config", str(config))
        assert installed.returncode == 0, installed.stderr
        agent_log = (tmp_path / "agent.log").open("a")

        def start_agent(*extra: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                cli("device", "run", "--config", str(config), *extra),
                cwd=REPO_ROOT,
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                text=True,
            )

        # Phase 1: recordings arrive (written then renamed, as a recorder should) plus a corrupt file.
        for path in first:
            os.replace(path, spool / path.name)
        corrupt = spool / (start - timedelta(minutes=1)).strftime("%Y%m%d-%H%M%S.wav")
        corrupt.write_bytes(b"RIFF" + os.urandom(300))
        agent = start_agent()
        assert wait_for(lambda: set(collector.event_ids()) >= set().union(*(expected[p.name] for p in first)),
                        timeout=60, interval=0.3)  # fmt: skip

        # Phase 2: the collector goes down; recordings keep coming and wait in the outbox.
        collector.stop()
        for path in second:
            os.replace(path, spool / path.name)
        assert wait_for(lambda: not any(spool.iterdir()), timeout=60)

        # Phase 3: the agent is killed (SIGKILL) part way through a backlog.
        for path in third:
            os.replace(path, spool / path.name)
        assert wait_for(lambda: len(list(spool.iterdir())) <= len(third) - 3, timeout=60)
        agent.kill()
        agent.wait(timeout=10)
        left = len(list(spool.iterdir()))
        assert left > 0, "the agent finished before it could be killed part way"

        # Phase 4: the collector is back, the agent restarts and works everything off.
        collector.start()
        agent = start_agent("--once", "--drain-timeout", "60")
        assert agent.wait(timeout=120) == 0, (tmp_path / "agent.log").read_text()[-3000:]
        agent = None

        ids = collector.event_ids()
        assert len(ids) == len(set(ids))  # nothing twice
        assert set(ids) == all_ids  # nothing lost, nothing extra
        quarantine = tmp_path / "state" / "quarantine"
        assert (quarantine / corrupt.name).is_file() and (quarantine / f"{corrupt.name}.reason.txt").is_file()
        assert not any(spool.iterdir())

        status = run_cli("device", "status", "--config", str(config), "--json")
        report = json.loads(status.stdout)
        assert report["outbox_depth"] == 0 and report["dropped_events"] == 0
        assert report["files_quarantined"] == 1
        hive = collector.call("GET", f"/api/v1/hives/{HIVE}")
        assert hive["last_seen"] is not None
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        collector.stop()


def test_over_the_air_model_from_the_real_collector(tmp_path, bundle, bundle_f32):
    """A model published on the collector reaches the running agent, which verifies it, switches between
    recordings, and labels the next events with it."""
    collector = Collector(folder=tmp_path)
    collector.start()
    agent: subprocess.Popen[str] | None = None
    try:
        collector.call("POST", "/api/v1/hives", {"name": "OTA hive", "hive_id": HIVE})
        token = collector.call("POST", f"/api/v1/hives/{HIVE}/devices", {"device_id": DEVICE})["token"]
        spool = tmp_path / "spool"
        spool.mkdir()
        config = write_config(
            tmp_path / "device.toml",
            {
                "device": {"device_id": DEVICE, "hive_id": HIVE, "state_dir": str(tmp_path / "state")},
                "source": {"path": str(spool), "poll_seconds": 0.2, "settle_seconds": 0.5},
                "collector": {
                    "url": collector.url,
                    "token": token,
                    "upload_interval_s": 0.2,
                    "heartbeat_interval_s": 1.0,
                    "ota_poll_interval_s": 0.5,
                },
            },
        )
        assert run_cli("device", "install-model", str(bundle), "--config", str(config)).returncode == 0
        store = tmp_path / "state" / "models"
        before = (store / "current").read_text().strip()
        agent = subprocess.Popen(
            cli("device", "run", "--config", str(config)),
            cwd=REPO_ROOT,
            stdout=(tmp_path / "agent.log").open("a"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        uploaded = collector.call("POST", "/api/v1/models", raw=bundle_f32.read_bytes())
        collector.call("POST", f"/api/v1/models/{uploaded['model_id']}/publish", {"hive_id": HIVE})
        assert wait_for(lambda: (store / "current").read_text().strip() != before, timeout=30)
        assert (store / "current").read_text().strip() == uploaded["sha256"]
        assert (store / "previous").read_text().strip() == before

        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        (recording,) = write_spool(folder=tmp_path / "staging", count=1, seconds=6.0, start=start)
        os.replace(recording, spool / recording.name)
        version = read_bundle(bundle_f32).manifest.model_version

        def new_model_events() -> bool:
            page = collector.call("GET", f"/api/v1/hives/{HIVE}/events?limit=50")
            return bool(page["events"]) and all(e["model_version"] == version for e in page["events"])

        assert wait_for(new_model_events, timeout=30, interval=0.3)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        agent = None
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        collector.stop()


def test_agent_imports_stay_light():
    """The device package imports nothing heavy: no TensorFlow, librosa, FastAPI, SQLAlchemy, httpx."""
    code = (
        "import sys, beeaudio.device.cli, beeaudio.device.agent, beeaudio.device.uplink;"
        "import beeaudio.device.modelstore, beeaudio.device.outbox;"
        "from beeaudio.device.agent import Agent;"
        "heavy = [m for m in ('tensorflow', 'librosa', 'fastapi', 'sqlalchemy', 'httpx',"
        " 'beeaudio.collector', 'beeaudio.desktop', 'keras')"
        " if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
