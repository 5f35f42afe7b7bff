"""``beeaudio demo`` end to end: synthetic apiary → model → collector → device agents → hive states.

The demo runs as a user runs it (a subprocess of the ``beeaudio`` CLI), once per test session (the browser
test reuses that run's collector database: :func:`tests.fixtures.demo.shared_demo`), and then a second time
in the same folder to show a rerun needs no cleanup and reuses the cached model.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from beeaudio.core.errors import EXIT_USAGE
from tests.fixtures.demo import DEMO_TIMEOUT_S, first_run, run_demo_cli, shared_demo


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_shows_the_states_the_apiary_was_generated_with(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run = first_run(tmp_path_factory)
    result, stdout = run["result"], run["stdout"]

    hives = result["hives"]
    assert len(hives) == 3
    assert sorted(h["expected_state"] for h in hives) == ["normal", "normal", "swarm"]
    for hive in hives:
        assert hive["state"] == hive["expected_state"], hive
        assert hive["model_version"] == result["model_version"]
        assert hive["last_seen"], hive
    swarming = next(h for h in hives if h["expected_state"] == "swarm")
    calm = [h for h in hives if h["expected_state"] == "normal"]
    assert swarming["swarm_score"] > max(h["swarm_score"] for h in calm)

    # Every window of every recording reached the collector exactly once.
    assert result["events_expected"] > 0
    assert result["events_received"] == result["events_expected"]
    assert all(h["events"] == result["events_expected"] // 3 for h in hives)
    assert result["ok"] is True
    assert result["model_reused"] is False

    # The timeline ends "now": the last reading is minutes old, not hours.
    last_seen = max(datetime.fromisoformat(h["last_seen"].replace("Z", "+00:00")) for h in hives)
    assert (datetime.now(UTC) - last_seen).total_seconds() < DEMO_TIMEOUT_S + 600

    # What the user reads: progress, then the status table with each hive and its state.
    assert "[1/6]" in stdout and "[6/6]" in stdout
    for hive in hives:
        line = next(line for line in stdout.splitlines() if f"({hive['hive_id']})" in line)
        assert (hive["state"].upper() if hive["state"] == "swarm" else hive["state"]) in line
    assert "SWARM" in stdout
    # In a beekeeper's words: since when, what a swarm means and what to do, whether the demo came out right.
    header = next(line for line in stdout.splitlines() if line.startswith("hive "))
    assert "since" in header and "generated" not in header and "model" not in header
    assert "look at the hive soon" in stdout
    assert "All 3 synthetic hives show the state they were generated with." in stdout
    assert result["seconds"]["total"] < 300


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_reruns_in_the_same_folder_and_reuses_the_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = shared_demo(tmp_path_factory)
    first = first_run(tmp_path_factory)["result"]

    completed = run_demo_cli(out)
    assert completed.returncode == 0, f"rerun failed:\n{completed.stdout}\n{completed.stderr}"
    second = json.loads((out / "demo-result.json").read_text())
    assert second["model_reused"] is True
    assert second["model_path"] == first["model_path"]
    assert second["ok"] is True
    assert [h["state"] for h in second["hives"]] == [h["expected_state"] for h in second["hives"]]
    # A fresh collector database: the rerun's events, not both runs' events.
    assert second["events_received"] == second["events_expected"] == first["events_expected"]
    assert second["admin_token"] != first["admin_token"]
    assert "reused" in completed.stdout
    # Nothing of the run is left running: the collector's port is free again.
    port = int(second["api_url"].rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        sock.bind(("127.0.0.1", port))


def test_swarming_hive_sounds_normal_then_swarms() -> None:
    from beeaudio.desktop.demo import ApiaryPlan, plan_hives, recording_segments

    plan = ApiaryPlan(hives=5, swarming=2, seed=4, hours=2.0, recording_seconds=30.0, interval_minutes=10.0)
    hives = plan_hives(plan=plan)
    assert [h.hive_id for h in hives] == [f"demo-hive-{i}" for i in range(1, 6)]
    assert sum(h.swarms for h in hives) == 2
    assert len({h.hive_seed for h in hives}) == 5
    assert plan_hives(plan=plan) == hives  # the seed decides, nothing else

    swarmer = next(h for h in hives if h.swarms)
    calm = next(h for h in hives if not h.swarms)
    labels = [[label for label, _ in recording_segments(plan=plan, hive=swarmer, index=i)] for i in range(12)]
    first_swarm = next(i for i, segment in enumerate(labels) if "swarm" in segment)
    assert all(segment == ["normal"] for segment in labels[:first_swarm])
    assert all(segment[-1] == "swarm" for segment in labels[first_swarm:])
    assert 0.5 * 12 <= first_swarm <= 0.9 * 12
    for i in range(12):
        segments = recording_segments(plan=plan, hive=swarmer, index=i)
        assert sum(seconds for _, seconds in segments) == pytest.approx(30.0)
        assert recording_segments(plan=plan, hive=calm, index=i) == [("normal", 30.0)]


def test_recordings_end_just_before_now_and_are_named_by_their_start() -> None:
    from beeaudio.desktop.demo import ApiaryPlan, recording_times, spool_name

    plan = ApiaryPlan(hours=1.0, recording_seconds=30.0, interval_minutes=10.0)
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    times = recording_times(plan=plan, now=now)
    assert len(times) == 6
    assert all((b - a).total_seconds() == 600 for a, b in itertools.pairwise(times))
    assert 0 < (now - times[-1]).total_seconds() - 30 < 95
    assert all(t.second == 0 for t in times)
    assert spool_name(times[-1]) == times[-1].strftime("%Y%m%dT%H%M%SZ") + ".wav"


def test_bad_settings_are_refused_with_a_reason(tmp_path: Path) -> None:
    from beeaudio.desktop.demo import ApiaryPlan, DemoError, choose_port

    with pytest.raises(ValueError, match="swarming"):
        ApiaryPlan(hives=2, swarming=3)
    with pytest.raises(ValueError, match="at least one hive"):
        ApiaryPlan(hives=0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(DemoError, match="in use"):
            choose_port(port=busy.getsockname()[1], serve=True)
    completed = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "beeaudio.cli",
            "demo",
            "--out",
            str(tmp_path),
            "--hives",
            "2",
            "--swarming",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == EXIT_USAGE  # an option that cannot work: beeaudio --help's exit codes
    assert "swarming" in completed.stderr and "Traceback" not in completed.stderr


def test_a_device_configuration_is_private_and_loads_as_written(tmp_path: Path) -> None:
    from beeaudio.desktop.demo import ApiaryPlan, plan_hives
    from beeaudio.desktop.demo.devices import prepare_device
    from beeaudio.device.config import load_config

    hive = plan_hives(plan=ApiaryPlan(hives=1))[0]
    job = prepare_device(run=tmp_path, hive=hive, token='tok"en\\', api_url="http://127.0.0.1:8123")

    assert job.config.stat().st_mode & 0o777 == 0o600  # it holds the device token
    assert job.config.read_text(encoding="utf-8").startswith("# Written by `beeaudio demo`")
    config = load_config(job.config)
    assert (config.device.device_id, config.device.hive_id) == (hive.device_id, hive.hive_id)
    assert config.token() == 'tok"en\\' and config.collector.url == "http://127.0.0.1:8123"
    assert config.source.kind == "spool" and config.source.after == "archive"
    assert config.spool_dir == tmp_path / "spool" / hive.hive_id
    assert config.state_dir == tmp_path / "devices" / hive.hive_id
    assert config.collector.ota_poll_interval_s == 0.0 and config.source.settle_seconds == 0.0
