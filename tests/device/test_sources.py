"""The agent's configuration and sources: config errors, finished-file detection, times, the recorder."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from beeaudio.device import sources
from beeaudio.device.config import ConfigError, DeviceConfig, config_from_dict, load_config
from tests.fixtures.device import REPO_ROOT, wait_for, write_config

EXAMPLE = REPO_ROOT / "device" / "device.example.toml"


# -- configuration ----------------------------------------------------------------------------------------
def test_example_config_documents_every_option_with_its_default():
    config = load_config(EXAMPLE)
    assert config == DeviceConfig()
    text = EXAMPLE.read_text()
    for section in dataclasses.fields(DeviceConfig):
        assert f"[{section.name}]" in text
        for option in dataclasses.fields(getattr(config, section.name)):
            assert re.search(rf"^#? ?{option.name} = ", text, re.MULTILINE), f"{section.name}.{option.name}"


def test_config_paths_defaults_and_relative_paths(tmp_path):
    path = write_config(
        tmp_path / "device.toml",
        {"device": {"device_id": "d", "hive_id": "h", "state_dir": "state"}, "source": {"after": "archive"}},
    )
    config = load_config(path)
    assert config.state_dir == tmp_path / "state"
    assert config.spool_dir == tmp_path / "state" / "spool"
    assert config.outbox_path == tmp_path / "state" / "outbox.sqlite"
    assert config.model_dir == tmp_path / "state" / "models"
    assert config.source.after == "archive"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"devise": {}}, r"unknown section\(s\) \['devise'\]"),
        ({"collector": {"urll": "x"}}, r"unknown key\(s\) \['urll'\] in \[collector\]; known keys: url"),
        ({"collector": {"batch_size": "10"}}, r"\[collector\] batch_size must be an integer"),
        ({"source": {"after": "shred"}}, r"after must be one of"),
        ({"source": {"kind": "files"}}, r"needs path"),
        ({"collector": {"url": "ftp://x"}}, r"must start with http"),
        ({"outbox": {"max_events": 0}}, r"max_events must be at least 1"),
        ({"source": {"patterns": "*.wav"}}, r"must be a list of strings"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data=data, base=tmp_path)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    config = config_from_dict(
        data={"collector": {"url": "http://x", "token_file": str(token_file)}, "device": {"device_id": "d"}},
        base=tmp_path,
    )
    assert config.token() == "s3cret"
    with pytest.raises(ConfigError, match="device_id and hive_id are required"):
        config.check_for_run()


# -- spool folder -----------------------------------------------------------------------------------------
def _touch(path: Path, *, age_s: float, now: float) -> Path:
    path.write_bytes(b"x")
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_spool_files_leave_out_partial_names(tmp_path):
    now = time.time()
    old = _touch(tmp_path / "20240101-000000.wav", age_s=120, now=now)
    recent = _touch(tmp_path / "20240101-000100.mp3", age_s=61, now=now)
    _touch(tmp_path / "20240101-000300.wav.part", age_s=500, now=now)  # write-then-rename in progress
    _touch(tmp_path / ".20240101-000400.wav", age_s=500, now=now)  # hidden temporary file
    _touch(tmp_path / "notes.txt", age_s=500, now=now)  # not a recording
    patterns = ("*.wav", "*.mp3")
    assert sources.spool_files(folder=tmp_path, patterns=patterns) == [old, recent]
    watcher = sources.SpoolWatcher(
        folder=tmp_path, patterns=patterns, settle_seconds=10, abandoned_seconds=60
    )
    assert watcher.complete(now=now) == []  # the first look never takes anything
    # Not RIFF ("x"): another format, quiet for more than settle_seconds.
    assert watcher.complete(now=now) == [old, recent]
    absent = sources.SpoolWatcher(folder=tmp_path / "absent", patterns=patterns, settle_seconds=0,
                                  abandoned_seconds=0)  # fmt: skip
    assert absent.complete() == []


def test_a_wav_is_complete_when_its_header_announces_its_size(tmp_path):
    import numpy as np

    from beeaudio.core.audio import write_wav

    closed = write_wav(tmp_path / "20240101-000100.wav", audio=np.zeros(1600, np.float32), sample_rate=16000)
    assert sources.wav_header_state(closed) == "complete" and sources.wav_is_complete(closed)
    watcher = sources.SpoolWatcher(
        folder=tmp_path, patterns=("*.wav",), settle_seconds=10, abandoned_seconds=60
    )
    assert watcher.complete() == [] and watcher.complete() == [closed]  # at once: no settling needed
    # arecord while recording: the header announces the planned length, the file is shorter.
    data = bytearray(closed.read_bytes())
    data[4:8] = (len(data) - 8 + 32000).to_bytes(4, "little")
    closed.write_bytes(bytes(data))
    assert sources.wav_header_state(closed) == "incomplete"
    assert watcher.complete() == [] and watcher.complete() == []
    (tmp_path / "x.wav").write_bytes(b"ID3 not a wav")
    assert sources.wav_header_state(tmp_path / "x.wav") == "other"


def test_a_file_open_for_writing_is_seen(tmp_path):
    path = tmp_path / "rec.mp3"
    with path.open("wb") as handle:
        handle.write(b"x")
        handle.flush()
        assert sources.open_for_writing([path]) == {path}
    assert sources.open_for_writing([path]) == set()
    with path.open("rb"):
        assert sources.open_for_writing([path]) == set()  # readers do not count


def test_times_from_names_and_mtime(tmp_path):
    formats = ("%Y%m%d-%H%M%S", "%Y%m%dT%H%M%SZ")
    named = tmp_path / "20240305-061500.wav"
    assert sources.time_from_name(path=named, formats=formats) == datetime(2024, 3, 5, 6, 15, tzinfo=UTC)
    iso = tmp_path / "20240305T061500Z.mp3"
    assert sources.time_from_name(path=iso, formats=formats) == datetime(2024, 3, 5, 6, 15, tzinfo=UTC)
    other = tmp_path / "hive-recording.wav"
    other.write_bytes(b"x")
    os.utime(other, (1_700_000_060, 1_700_000_060))
    start = sources.recording_start(path=other, duration_s=60.0, formats=formats)
    assert start == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_source_id_is_content_and_name(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"one")
    first = sources.source_id_of(a)
    assert sources.source_id_of(a) == first
    a.write_bytes(b"two")
    assert sources.source_id_of(a) != first
    b = tmp_path / "b.wav"
    b.write_bytes(b"two")
    assert sources.source_id_of(b) != sources.source_id_of(a)


def test_recorder_command_fills_placeholders(tmp_path):
    argv = sources.recorder_command(
        template=DeviceConfig().microphone.command,
        spool=tmp_path,
        alsa_device="plughw:1,0",
        sample_rate=16000,
        channels=1,
        file_seconds=60,
    )
    assert argv[:5] == ["arecord", "-q", "-D", "plughw:1,0", "-f"]
    assert argv[-1] == f"{tmp_path}/%Y%m%d-%H%M%S.wav"
    assert "--max-file-time" in argv and "60" in argv


FAKE_RECORDER = r"""
import sys, time
from pathlib import Path
spool, count = Path(sys.argv[1]), int(sys.argv[2])
print("fake recorder start", flush=True)
for _ in range(count):
    name = spool / (time.strftime("%Y%m%d-%H%M%S") + ".wav")   # local time: the supervisor sets TZ=UTC
    with name.open("wb") as f:
        f.write(b"RIFF")
        time.sleep(0.3)
        f.write(b"more")
    time.sleep(0.8)
sys.exit(3)   # a recorder that dies: it must be restarted
"""


@pytest.mark.slow  # waits on the wall clock (restarts, back-off, a hang cut short)
def test_supervisor_restarts_a_dying_recorder(tmp_path):
    script = tmp_path / "fake_recorder.py"
    script.write_text(FAKE_RECORDER)
    spool = tmp_path / "spool"
    supervisor = sources.RecorderSupervisor(
        command=[sys.executable, str(script), str(spool), "1"],
        spool=spool,
        log_path=tmp_path / "recorder.log",
        restart_initial_s=0.1,
        restart_max_s=0.2,
    )
    supervisor.start()
    try:
        log = tmp_path / "recorder.log"
        assert wait_for(
            lambda: log.is_file() and log.read_text().count("fake recorder start") >= 3, timeout=20
        )
    finally:
        supervisor.stop()
    assert not supervisor.is_alive()
    assert supervisor.starts >= 3
    names = sorted(p.name for p in spool.glob("*.wav"))
    assert len(names) >= 2
    # Named in UTC (TZ=UTC in the recorder's environment), so the times parse to "now".
    start = sources.time_from_name(path=spool / names[-1], formats=("%Y%m%d-%H%M%S",))
    assert abs((datetime.now(UTC) - start).total_seconds()) < 60
