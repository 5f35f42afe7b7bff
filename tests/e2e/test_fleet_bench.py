"""A smoke run of ``bench/fleet.py`` (a few devices, seconds): it starts, measures over both transports, and
reports 0 lost and 0 duplicated. The figures themselves are the bench's business (docs/scale.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require
from tests.fixtures.collector import postgres_up
from tests.fixtures.mqtt import mosquitto_binary

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_fleet_bench_smoke(tmp_path):
    require(postgres_up(), "PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test')")
    require(mosquitto_binary() is not None and shutil.which("mosquitto_passwd") is not None,
            "mosquitto is not installed (apt-get install mosquitto)")  # fmt: skip
    out = tmp_path / "fleet.json"
    command = [sys.executable, "bench/fleet.py", "--devices", "20", "--seconds", "2", "--warmup", "1",
               "--replicas", "1", "--status-rate", "5", "--json", str(out)]  # fmt: skip
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["transport"] for r in results] == ["http", "mqtt"]
    for result in results:
        assert result["events_per_s"] > 0 and result["lost"] == 0 and result["duplicated"] == 0
    assert "| transport | replicas | events/s" in run.stdout
