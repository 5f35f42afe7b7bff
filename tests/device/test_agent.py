"""The analysis loop: events per window with stable ids, quarantine, crash idempotency, model switches,
heartbeats, SIGTERM, and the microphone source with a fake recorder."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from beeaudio.core.audio import iter_windows
from beeaudio.core.bundle import read_bundle
from beeaudio.device.agent import Agent, Identity, analyse_file
from beeaudio.device.config import load_config
from beeaudio.device.modelstore import ModelStore
from beeaudio.device.outbox import Outbox
from beeaudio.device.sources import source_id_of
from tests.fixtures.device import (
    REPO_ROOT,
    cli,
    event_ids_in,
    fake_collector,
    run_cli,
    wait_for,
    write_config,
    write_recordings,
)

START = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def keep_signal_handlers():
    """Agent.run installs SIGTERM/SIGINT handlers in the main thread; give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def make_device(tmp_path: Path, bundle: Path, **sections: dict) -> Path:
    """A device config under tmp_path with ``bundle`` installed; returns the config path."""
    values = {
        "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(tmp_path / "state")},
        "source": {
            "path": str(tmp_path / "spool"),
            "after": "archive",
            "poll_seconds": 0.2,
            "settle_seconds": 1.0,
        },
    }
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    config_path = write_config(tmp_path / "device.toml", values)
    ModelStore(root=load_config(config_path).model_dir).install(source=bundle)
    return config_path


def windows_in(path: Path, bundle: Path) -> int:
    return sum(1 for _ in iter_windows(path, config=read_bundle(bundle).manifest.feature_config))


def test_once_analyses_the_backlog_and_quarantines_a_corrupt_file(tmp_path, bundle, keep_signal_handlers):
    spool = tmp_path / "spool"
    files = write_recordings(folder=spool, count=4, seconds=4.0, start=START, mp3_every=2)
    corrupt = spool / "20260401-103000.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(20))
    expected = {f.name: windows_in(f, bundle) for f in files}
    config = load_config(make_device(tmp_path, bundle))

    assert Agent(config=config, once=True).run() == 0

    with Outbox(path=config.outbox_path, max_events=1000) as outbox:
        pending = outbox.pending(limit=1000)
        status = outbox.status()
    assert len(pending) == sum(expected.values()) and len({p.event_id for p in pending}) == len(pending)
    assert (status.files_done, status.files_quarantined) == (4, 1)
    by_file: dict[str, list[dict]] = {}
    for p in pending:
        by_file.setdefault(p.body["extra"]["file"], []).append(p.body)
    assert {name: len(v) for name, v in by_file.items()} == expected
    mp3 = [b for b in pending if b.body["source_format"] == "MP3"]
    assert mp3 and all(b.body["extra"]["file"].endswith(".mp3") for b in mp3)
    # Window starts come from the file name plus the window's offset.
    first = sorted(by_file[files[1].name], key=lambda b: b["window_start"])
    assert [b["window_start"] for b in first] == [
        (START + timedelta(seconds=4 + k)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for k in range(len(first))
    ]
    assert all(b["device_id"] == "dev-1" and b["hive_id"] == "hive-1" for b in (p.body for p in pending))
    # Files went to the archive, the corrupt one to quarantine with the reason next to it.
    assert sorted(p.name for p in (tmp_path / "state" / "archive").iterdir()) == sorted(expected)
    assert not list(spool.iterdir())
    reason = (tmp_path / "state" / "quarantine" / f"{corrupt.name}.reason.txt").read_text()
    assert corrupt.name in reason
    # Analysing the same recording again gives the same ids (what makes a crash harmless).
    archived = tmp_path / "state" / "archive" / files[0].name
    from beeaudio.core.inference import Classifier

    again = analyse_file(
        path=archived,
        classifier=Classifier.load(ModelStore(root=config.model_dir).current_path()),
        identity=Identity(device_id="dev-1", hive_id="hive-1"),
        source_id=source_id_of(archived),
        name_time_formats=config.source.name_time_formats,
    )
    assert {e.event_id for e in again} == {b["event_id"] for b in by_file[files[0].name]}


def test_crash_after_commit_before_delete_is_harmless(tmp_path, bundle, keep_signal_handlers):
    spool = tmp_path / "spool"
    (recording,) = write_recordings(folder=spool, count=1, seconds=4.0, start=START)
    backup = recording.read_bytes()
    config = load_config(make_device(tmp_path, bundle))
    assert Agent(config=config, once=True).run() == 0
    ids = event_ids_in(config.outbox_path)
    # The file "comes back", as if the agent had died right after the commit and before archiving it.
    recording.write_bytes(backup)
    assert Agent(config=config, once=True).run() == 0
    assert event_ids_in(config.outbox_path) == ids
    assert not recording.exists()


def test_model_switch_is_picked_up_between_files(tmp_path, bundle, bundle_f32):
    config = load_config(make_device(tmp_path, bundle))
    agent = Agent(config=config)
    agent._load_model()
    first = agent.classifier
    assert first.manifest.quantization == "int8"
    agent._load_model()
    assert agent.classifier is first  # nothing changed: not reloaded
    ModelStore(root=config.model_dir).install(source=bundle_f32)
    agent._load_model()
    assert agent.classifier.manifest.quantization == "float32"
    # A pointer to a model that cannot be loaded: the running one stays.
    (config.model_dir / "current").write_text("f" * 64 + "\n")
    agent._load_model()
    assert agent.classifier.manifest.quantization == "float32"


def test_uploads_and_heartbeat_report_drops_and_stage_times(tmp_path, bundle, keep_signal_handlers):
    spool = tmp_path / "spool"
    files = write_recordings(folder=spool, count=3, seconds=4.0, start=START)
    total = sum(windows_in(f, bundle) for f in files)
    config_path = make_device(tmp_path, bundle, outbox={"max_events": 4})
    # Offline first: the outbox bound drops the oldest events, and counts them.
    assert Agent(config=load_config(config_path), once=True).run() == 0
    kept = event_ids_in(load_config(config_path).outbox_path)
    assert len(kept) == 4
    with fake_collector() as collector:
        write_config(
            config_path,
            {
                "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(tmp_path / "state")},
                "source": {"path": str(spool), "after": "archive"},
                "outbox": {"max_events": 4},
                "collector": {"url": collector.url, "token": "tok", "upload_interval_s": 0.1},
            },
        )
        assert Agent(config=load_config(config_path), once=True).run(drain_timeout_s=20) == 0
        assert sorted(collector.accepted) == sorted(kept)
        beats = collector.heartbeats()
    assert beats, "no heartbeat sent"
    beat = beats[-1]
    assert beat["schema"] == "beeaudio.heartbeat/1"
    assert beat["dropped_events"] == total - 4
    assert beat["outbox_depth"] == 0
    assert beat["model_name"] == read_bundle(bundle).manifest.model_name
    assert beat["disk_free_bytes"] > 0
    assert set(beat["stage_ms"]) == {"decode", "features", "inference"}
    status = run_cli("device", "status", "--config", str(config_path), "--json")
    assert status.returncode == 0, status.stderr
    assert '"dropped_events": ' + str(total - 4) in status.stdout
    assert '"outbox_depth": 0' in status.stdout


def _events_per_file(outbox_path: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(outbox_path) as db:
            rows = db.execute("SELECT json_extract(body, '$.extra.file'), COUNT(*) FROM events GROUP BY 1")
            return dict(rows.fetchall())
    except sqlite3.OperationalError:  # the agent is still creating the tables
        return {}


def test_sigterm_stops_cleanly_after_the_current_window(tmp_path, bundle):
    spool = tmp_path / "spool"
    (source,) = write_recordings(folder=tmp_path / "src", count=1, seconds=20.0, start=START)
    # Many recordings (same sound, different start times) so SIGTERM surely lands part way through.
    spool.mkdir()
    files = [spool / f"20260401-{10 + i // 60:02d}{i % 60:02d}00.wav" for i in range(40)]
    for path in files:
        path.write_bytes(source.read_bytes())
    per_file = windows_in(source, bundle)
    config_path = make_device(tmp_path, bundle)
    archive = tmp_path / "state" / "archive"
    process = subprocess.Popen(
        cli("device", "run", "--config", str(config_path)),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: archive.is_dir() and any(archive.iterdir()), timeout=60)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "agent stopped" in output
    done = sorted(p.name for p in archive.iterdir())
    left = sorted(p.name for p in spool.iterdir())
    assert sorted(done + left) == sorted(f.name for f in files)  # every file in exactly one place
    assert left, "SIGTERM came too late to test anything"
    counts = _events_per_file(tmp_path / "state" / "outbox.sqlite")
    assert counts == dict.fromkeys(done, per_file)  # whole files only, nothing half-written
    # The rest is done by the next start.
    finished = run_cli("device", "run", "--config", str(config_path), "--once")
    assert finished.returncode == 0, finished.stderr
    assert _events_per_file(tmp_path / "state" / "outbox.sqlite") == {f.name: per_file for f in files}


FAKE_ARECORD = r"""
import sys, time
import numpy as np, soundfile as sf
spool, files = sys.argv[1], int(sys.argv[2])
print("fake arecord start", flush=True)
rng = np.random.default_rng(int(time.time()))
for _ in range(files):
    name = f"{spool}/{time.strftime('%Y%m%d-%H%M%S')}.wav"   # local time = UTC (TZ set by the agent)
    with sf.SoundFile(name, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        for _ in range(4):                                      # 4 s of audio, written over ~1.2 s
            out.write((0.1 * rng.standard_normal(16000)).astype("float32"))
            out.flush()
            time.sleep(0.3)
sys.exit(1)
"""


def test_microphone_source_supervises_the_recorder(tmp_path, bundle):
    script = tmp_path / "fake_arecord.py"
    script.write_text(FAKE_ARECORD)
    config_path = make_device(
        tmp_path,
        bundle,
        source={"kind": "microphone", "settle_seconds": 30.0, "after": "delete"},
        microphone={
            "command": [sys.executable, str(script), "{spool}", "2"],
            "restart_initial_s": 0.2,
            "restart_max_s": 0.5,
        },
    )
    outbox = tmp_path / "state" / "outbox.sqlite"
    process = subprocess.Popen(
        cli("device", "run", "--config", str(config_path)),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = datetime.now(UTC)
    try:
        assert wait_for(lambda: outbox.is_file() and len(_events_per_file(outbox)) >= 3, timeout=60)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert (tmp_path / "state" / "recorder.log").read_text().count("fake arecord start") >= 2  # restarted
    counts = _events_per_file(outbox)
    assert set(counts.values()) == {3}, counts  # only finished 4 s files: 3 windows each, never partial
    with sqlite3.connect(outbox) as db:
        starts = [row[0] for row in db.execute("SELECT json_extract(body, '$.window_start') FROM events")]
    for text in starts:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert abs((moment - started).total_seconds()) < 120
    # The recorder's unfinished file is left for the next start, not analysed half-written.
    assert len(list((tmp_path / "spool").glob("*.wav"))) <= 2


# -- window quality and novelty on every event -------------------------------------------------------------
def _events_of(path: Path, bundle: Path):
    from beeaudio.core.inference import Classifier

    return analyse_file(
        path=path,
        classifier=Classifier.load(bundle),
        identity=Identity(device_id="dev-1", hive_id="hive-1"),
        source_id=f"test:{path.name}",
        name_time_formats=("%Y%m%d-%H%M%S",),
    )


def test_an_event_of_a_silent_window_says_no_signal(tmp_path, bundle):
    """A dead microphone: every event says no_signal, carries the novelty score, and is no evidence."""
    import numpy as np

    from beeaudio.core.audio import write_wav
    from beeaudio.core.wire import ClassificationEvent

    silent = write_wav(
        tmp_path / "20260401-100000.wav", audio=np.zeros(16000 * 5, np.float32), sample_rate=16000
    )
    events = _events_of(silent, bundle)
    assert len(events) == 4 and {e.quality for e in events} == {"no_signal"}
    assert all(e.novelty is not None and e.novelty_threshold is not None for e in events)
    assert not any(e.is_evidence for e in events)
    again = ClassificationEvent.from_json(events[0].to_json())  # what the collector receives
    assert again.quality == "no_signal" and again.novelty == events[0].novelty and not again.is_evidence


def test_events_of_hive_audio_are_ok_and_familiar(tmp_path, bundle):
    (recording,) = write_recordings(folder=tmp_path, count=1, seconds=8.0, start=START)
    events = _events_of(recording, bundle)
    read = read_bundle(bundle)
    assert read.novelty is not None
    assert all(e.novelty_threshold == pytest.approx(read.novelty.threshold) for e in events)
    assert sum(e.quality == "ok" for e in events) == len(events)
    assert sum(e.is_evidence for e in events) >= len(events) - 1
