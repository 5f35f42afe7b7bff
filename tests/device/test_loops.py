"""Every background loop of the agent survives its own errors, and ``beeaudio device status`` shows a loop
that is failing or not running.

The full disk is real: a 2 MB tmpfs mounted for the test (the tests run as root; elsewhere they skip),
filled to the last byte, so SQLite's own write of the acknowledge step fails with SQLITE_FULL ("database or
disk is full"); then space is freed and the same thread must carry on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beeaudio.device.client import CollectorClient
from beeaudio.device.health import Health, StatusWriter, read_status
from beeaudio.device.outbox import Outbox
from beeaudio.device.sources import RecorderSupervisor
from beeaudio.device.uplink import Backoff, Uplink, Uploader
from tests.fixtures.device import (
    REPO_ROOT,
    FakeCollector,
    cli,
    fake_collector,
    html_answer,
    make_events,
    run_cli,
    wait_for,
    write_config,
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system (tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file (delete it to free)."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 16, 4096, 512, 1):
            while True:
                try:
                    handle.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return filler


def failures(health: Health, loop: str) -> int:
    state = health.snapshot().get(loop)
    return state.failures if state is not None else 0


def uplink_for(outbox: Outbox, url: str, *, health: Health, ota=None) -> Uplink:
    client = CollectorClient(base_url=url, token="t0ken", timeout_s=5)
    return Uplink(
        uploader=Uploader(outbox=outbox, client=client, device_id="dev-1", batch_size=50),
        heartbeat=lambda: {"schema": "beeaudio.heartbeat/1", "outbox_depth": outbox.depth()},
        heartbeat_interval_s=0.2,
        upload_interval_s=0.05,
        backoff=Backoff(initial_s=0.05, max_s=0.3, rng=random.Random(0)),
        ota=ota,
        ota_interval_s=0.2 if ota else 0.0,
        health=health,
    )


def test_the_uplink_survives_a_full_disk_and_resumes_when_space_is_freed(small_disk: Path) -> None:
    health = Health()
    with Outbox(path=small_disk / "outbox.sqlite", max_events=10_000) as outbox, fake_collector() as server:
        events = make_events(120)
        outbox.add_events(events)
        filler = fill(small_disk)
        uplink = uplink_for(outbox, server.url, health=health)
        uplink.start()
        try:
            # The collector gets the batch, the outbox cannot delete it: SQLITE_FULL in the acknowledge step.
            assert wait_for(lambda: failures(health, "upload") >= 2, timeout=20)
            failing = health.snapshot()["upload"]
            assert "full" in failing.last_error, failing
            assert uplink.is_alive() and outbox.depth() == len(events)
            # Heartbeats go on meanwhile.
            beats = len(server.heartbeats())
            assert wait_for(lambda: len(server.heartbeats()) >= beats + 2, timeout=10)
            # Space is freed: the same thread delivers everything (the collector counts re-sent ones once).
            filler.unlink()
            assert wait_for(lambda: outbox.depth() == 0, timeout=20)
            assert uplink.is_alive()
            assert wait_for(lambda: health.snapshot()["upload"].failures == 0, timeout=5)
            assert set(server.accepted) == {e.event_id for e in events}
            # And the outbox keeps working afterwards.
            outbox.add_events(make_events(3, offset=500))
            assert wait_for(lambda: outbox.depth() == 0, timeout=10)
        finally:
            uplink.stop()
            uplink.join(timeout=5)


def test_a_failing_heartbeat_or_model_poll_does_not_stop_the_thread(tmp_path: Path) -> None:
    """A heartbeat whose body cannot be built (the outbox closed under it) and a model poll answered with
    a portal's HTML: both reported as failing, uploads unaffected."""
    health = Health()
    outbox = Outbox(path=tmp_path / "outbox.sqlite", max_events=100)
    with fake_collector() as server:
        server.routes["/api/v1/devices/dev-1/model"] = (
            200,
            {"Content-Type": "text/html"},
            b"<html>login</html>",
        )
        outbox.add_events(make_events(5))
        polls: list[int] = []

        def ota() -> None:
            from beeaudio.device.modelstore import ModelStore
            from beeaudio.device.uplink import check_model_update

            polls.append(1)
            check_model_update(
                client=CollectorClient(base_url=server.url, token="t", timeout_s=5),
                device_id="dev-1",
                store=ModelStore(root=tmp_path / "models"),
            )

        uplink = uplink_for(outbox, server.url, health=health, ota=ota)
        broken = Outbox(path=tmp_path / "other.sqlite", max_events=10)
        broken.close()
        uplink.heartbeat = lambda: {"outbox_depth": broken.depth()}  # sqlite3.ProgrammingError: closed
        uplink.start()
        try:
            assert wait_for(lambda: outbox.depth() == 0, timeout=10)
            assert wait_for(lambda: failures(health, "heartbeat") >= 2, timeout=10)
            assert wait_for(lambda: len(polls) >= 1 and health.snapshot().get("ota") is not None, timeout=10)
            assert "not an offer" in health.snapshot()["ota"].last_error
            assert uplink.is_alive()
            outbox.add_events(make_events(2, offset=10))
            assert wait_for(lambda: outbox.depth() == 0, timeout=10)
        finally:
            uplink.stop()
            uplink.join(timeout=5)
            outbox.close()


@pytest.mark.slow  # waits on the wall clock (restarts, back-off, a hang cut short)
def test_the_recorder_supervisor_survives_its_own_errors(tmp_path: Path) -> None:
    """The recorder's log cannot be opened (a folder stands where the file should be): the supervisor
    reports, backs off and retries; once it can, the recorder runs."""
    log_path = tmp_path / "recorder.log"
    log_path.mkdir()
    health = Health()
    script = tmp_path / "rec.py"
    script.write_text("import time\nprint('recording', flush=True)\ntime.sleep(30)\n")
    supervisor = RecorderSupervisor(
        command=[sys.executable, str(script)],
        spool=tmp_path / "spool",
        log_path=log_path,
        restart_initial_s=0.05,
        restart_max_s=0.2,
        health=health,
    )
    supervisor.start()
    try:
        assert wait_for(lambda: failures(health, "recorder") >= 2, timeout=10)
        assert supervisor.is_alive()
        assert "recorder.log" in health.snapshot()["recorder"].last_error
        log_path.rmdir()
        assert wait_for(lambda: log_path.is_file() and "recording" in log_path.read_text(), timeout=10)
        assert wait_for(lambda: health.snapshot()["recorder"].failures == 0, timeout=5)
    finally:
        supervisor.stop()


# -- the status file ---------------------------------------------------------------------------------------
def test_status_file_shows_loops_and_goes_stale(tmp_path: Path) -> None:
    clock = [1000.0]
    health = Health(clock=lambda: clock[0])
    health.started("upload")
    health.ok("upload")
    health.failed("upload", "sqlite3.OperationalError: database or disk is full")
    path = tmp_path / "agent-status.json"
    writer = StatusWriter(health=health, path=path, alive=lambda: {"upload": True, "recorder": False})
    assert writer.write()
    status = read_status(path=path)
    assert status.running and status.pid == os.getpid()
    loops = {loop.name: loop for loop in status.loops}
    assert loops["upload"].running and loops["upload"].failures == 1 and "full" in loops["upload"].last_error
    assert not loops["recorder"].running
    assert "upload" in status.summary and "recorder" in status.summary
    # Written long ago: the agent is stuck or cannot write any more.
    stale = read_status(path=path, now=time.time() + 3600)
    assert not stale.running and "not running or stuck" in stale.summary
    # Written by a process that is gone.
    data = json.loads(path.read_text())
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    data["pid"] = int(gone.stdout)
    path.write_text(json.dumps(data))
    dead = read_status(path=path)
    assert not dead.running and "is gone" in dead.summary and not any(loop.running for loop in dead.loops)
    assert not read_status(path=tmp_path / "absent.json").running


def test_heartbeat_troubles_name_failing_and_dead_loops_only() -> None:
    from beeaudio.core.wire import MAX_LOOP_TROUBLE

    health = Health()
    for name in ("analysis", "upload", "heartbeat"):
        health.started(name)
        health.ok(name)
    health.failed("upload", "sqlite3.OperationalError: database or disk is full")
    health.failed("upload", "x" * 1000)
    troubles = health.troubles(alive={"analysis": True, "upload": True, "heartbeat": True, "recorder": False})
    assert set(troubles) == {"upload", "recorder"}
    assert (
        troubles["upload"].startswith("2 failures in a row: xxx")
        and len(troubles["upload"]) == MAX_LOOP_TROUBLE
    )
    assert troubles["recorder"] == "not running"
    health.ok("upload")
    assert health.troubles(alive={"upload": True}) == {}
    from beeaudio.core.wire import MAX_LOOPS

    many = {f"loop{i:02d}": False for i in range(MAX_LOOPS + 4)}  # never more than the collector takes
    assert len(health.troubles(alive=many)) == MAX_LOOPS


def test_a_status_file_that_cannot_be_written_does_not_stop_the_writer(small_disk: Path) -> None:
    writer = StatusWriter(health=Health(), path=small_disk / "agent-status.json", interval_s=0.05)
    filler = fill(small_disk)
    assert not writer.write()
    writer.start()
    try:
        time.sleep(0.2)
        assert writer.is_alive()
        filler.unlink()
        assert wait_for(lambda: (small_disk / "agent-status.json").is_file(), timeout=5)
    finally:
        writer.stop()
        writer.join(timeout=5)


def test_status_command_shows_the_failing_loops_of_a_running_agent(
    tmp_path: Path, small_disk: Path, bundle: Path
) -> None:
    """The agent (a real process) with its outbox on the small disk. Started on a full disk, it waits for
    the outbox and ``status`` says why; later, with the collector's batch stored but the disk full again,
    ``status`` shows the upload loop failing with SQLite's error while analysis runs; freed, everything is
    delivered by the same process; stopped, ``status`` says the agent is not running."""
    state = tmp_path / "state"
    assert run_cli("device", "install-model", str(bundle), "--state-dir", str(state)).returncode == 0
    with fake_collector(FakeCollector()) as server:
        server.answer = html_answer(503, b"<html>maintenance</html>")
        config = write_config(
            tmp_path / "device.toml",
            {
                "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(state)},
                "source": {"poll_seconds": 0.2, "settle_seconds": 0.5},
                "collector": {"url": server.url, "token": "t", "upload_interval_s": 0.2,
                              "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "heartbeat_interval_s": 0.5},
                "outbox": {"path": str(small_disk / "outbox.sqlite")},
            },
        )  # fmt: skip
        with Outbox(path=small_disk / "outbox.sqlite", max_events=1000) as outbox:
            outbox.add_events(make_events(40))
        filler = fill(small_disk)

        def report() -> dict:
            done = run_cli("device", "status", "--json", "--config", str(config))
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        def loop(name: str) -> dict:
            return report()["agent"]["loops"].get(name, {})

        agent = subprocess.Popen(cli("device", "run", "--config", str(config)), cwd=REPO_ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            # Phase 1: booted on a full disk (the outbox cannot even be opened): waiting, and saying why.
            assert wait_for(lambda: "cannot open the outbox" in loop("analysis").get("last_error", ""),
                            timeout=60, interval=0.5), report()  # fmt: skip
            assert agent.poll() is None
            filler.unlink()
            # Phase 2: running; the collector is down (503), so the batch waits.
            assert wait_for(lambda: "503" in loop("upload").get("last_error", ""), timeout=60, interval=0.3)
            filler = fill(small_disk)
            server.answer = None  # the collector stores the batch; deleting it from the outbox fails
            assert wait_for(
                lambda: "full" in loop("upload").get("last_error", ""), timeout=60, interval=0.3
            ), report()
            shown = report()["agent"]
            assert (
                shown["running"]
                and shown["loops"]["analysis"]["running"]
                and shown["loops"]["upload"]["running"]
            )
            text = run_cli("device", "status", "--config", str(config)).stdout
            assert "upload" in text and "FAILING" in text and "disk is full" in text, text

            def troubles() -> list[dict]:  # what the heartbeats tell the collector, newest last
                return [beat.get("failing_loops") for beat in server.heartbeats() if isinstance(beat, dict)]

            # The collector hears of it too: the heartbeats name the failing loop and why.
            assert wait_for(lambda: "full" in ((troubles() or [{}])[-1] or {}).get("upload", ""), timeout=30)
            assert "analysis" not in troubles()[-1]
            # Phase 3: space freed, the same process delivers everything.
            filler.unlink()
            with Outbox(path=small_disk / "outbox.sqlite", max_events=1000) as outbox:
                assert wait_for(lambda: outbox.depth() == 0, timeout=60)
            assert wait_for(lambda: loop("upload").get("failures") == 0, timeout=30)
            # (This fake collector has no model route: the model poll's 404 is named all along.)
            assert wait_for(lambda: "upload" not in troubles()[-1], timeout=30), troubles()[-3:]
            assert "404" in troubles()[-1].get("ota", "")
            assert agent.poll() is None
        finally:
            with contextlib.suppress(ProcessLookupError):
                agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
        assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""
        assert len(server.accepted) == 40
        stopped = run_cli("device", "status", "--config", str(config))
        assert "agent not running" in stopped.stdout, stopped.stdout
