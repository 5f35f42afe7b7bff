"""Files still being written: a recording is analysed only when it is complete, and never deleted if it
changed after it was analysed.

Every writer is a real process writing into the spool folder while the agent (in this process, in a thread)
watches it: one that pauses longer than ``settle_seconds`` in the middle of a WAV (arecord-style header,
finalised on close), one that creates its file and writes nothing for a while, two writers at once, an MP3
writer that pauses with its file open. The last test resumes writing a recording while it is analysed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.audio import iter_windows, write_wav
from beeaudio.core.bundle import read_bundle
from beeaudio.device import sources
from beeaudio.device.agent import Agent
from beeaudio.device.config import load_config
from beeaudio.device.modelstore import ModelStore
from beeaudio.device.outbox import Outbox
from tests.fixtures.device import RATE, hive_audio, spool_name, wait_for, write_config

START = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
SETTLE = 0.5

#: Writes a 16 kHz mono PCM_16 WAV the way arecord does: a header announcing a length (``--planned``
#: seconds, or 0 like libsndfile until it closes), the samples in chunks with pauses, then the final sizes.
WAV_WRITER = r"""
import argparse, struct, sys, time
import numpy as np
p = argparse.ArgumentParser()
p.add_argument("path"); p.add_argument("--seconds", type=float); p.add_argument("--chunks", type=int)
p.add_argument("--pause-after", type=int, default=-1); p.add_argument("--pause", type=float, default=0)
p.add_argument("--chunk-gap", type=float, default=0.05); p.add_argument("--empty-for", type=float, default=0)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
rate = 16000
rng = np.random.default_rng(a.seed)
t = np.arange(int(a.seconds * rate)) / rate
pcm = (8000 * np.sin(2 * np.pi * 250 * t) + 800 * rng.standard_normal(t.size)).astype("<i2").tobytes()
def header(data_bytes):
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
    riff, data = struct.pack("<I", 36 + data_bytes), struct.pack("<I", data_bytes)
    return b"RIFF" + riff + b"WAVEfmt " + fmt + b"data" + data
with open(a.path, "wb") as f:
    if a.empty_for:
        f.flush(); time.sleep(a.empty_for)
    f.write(header(0)); f.flush()              # libsndfile/arecord: sizes not final while writing
    step = len(pcm) // a.chunks
    for i in range(a.chunks):
        f.write(pcm[i * step : (i + 1) * step if i < a.chunks - 1 else len(pcm)]); f.flush()
        time.sleep(a.pause if i == a.pause_after else a.chunk_gap)
    f.seek(0); f.write(header(len(pcm)))        # closed: the header announces exactly the file's size
print("done", flush=True)
"""

#: Copies a finished MP3 into place in two halves with a pause between, the file open all along.
MP3_WRITER = r"""
import sys, time
source, target, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(source, "rb").read()
with open(target, "wb") as f:
    f.write(data[: len(data) // 2]); f.flush()
    time.sleep(pause)
    f.write(data[len(data) // 2 :]); f.flush()
print("done", flush=True)
"""


def expected_windows(path: Path, bundle: Path) -> int:
    return sum(1 for _ in iter_windows(path, config=read_bundle(bundle).manifest.feature_config))


def events_per_file(outbox_path: Path) -> dict[str, int]:
    if not outbox_path.is_file():
        return {}
    with Outbox(path=outbox_path, max_events=100_000) as outbox:
        counts: dict[str, int] = {}
        for event in outbox.pending(limit=100_000):
            counts[event.body["extra"]["file"]] = counts.get(event.body["extra"]["file"], 0) + 1
        return counts


@pytest.fixture
def device(tmp_path: Path, bundle: Path) -> Path:
    path = write_config(
        tmp_path / "device.toml",
        {
            "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(tmp_path / "state")},
            "source": {
                "path": str(tmp_path / "spool"),
                "after": "delete",
                "poll_seconds": 0.1,
                "settle_seconds": SETTLE,
            },
        },
    )
    (tmp_path / "spool").mkdir()
    ModelStore(root=load_config(path).model_dir).install(source=bundle)
    return path


@contextmanager
def running_agent(config_path: Path) -> Iterator[Agent]:
    agent = Agent(config=load_config(config_path))
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.request_stop()
        thread.join(timeout=30)


def writer(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> None:
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "done" in out


def written_copy(tmp_path: Path, name: str, *args: str) -> Path:
    """What a writer leaves once done (run to completion elsewhere), to count its windows."""
    reference = tmp_path / "reference" / name
    reference.parent.mkdir(exist_ok=True)
    finished(writer(WAV_WRITER, str(reference), *args))
    return reference


def test_a_writer_that_pauses_longer_than_settle_seconds_is_waited_for(tmp_path, bundle, device):
    name = spool_name(START)
    args = ("--seconds", "8", "--chunks", "8", "--pause-after", "2", "--pause", str(6 * SETTLE))
    want = expected_windows(written_copy(tmp_path, name, *args), bundle)
    target = tmp_path / "spool" / name
    with running_agent(device) as agent:
        process = writer(WAV_WRITER, str(target), *args)
        finished(process)
        outbox = agent.config.outbox_path
        assert wait_for(lambda: name in events_per_file(outbox) and not target.exists(), timeout=30)
    assert events_per_file(outbox) == {name: want}  # all of it, once, and only then deleted
    quarantine = tmp_path / "state" / "quarantine"
    assert not quarantine.exists() or not list(quarantine.iterdir())


def test_an_empty_file_is_not_quarantined_while_its_writer_starts(tmp_path, bundle, device):
    name = spool_name(START)
    args = ("--seconds", "4", "--chunks", "2", "--empty-for", str(4 * SETTLE))
    want = expected_windows(written_copy(tmp_path, name, *args), bundle)
    with running_agent(device) as agent:
        finished(writer(WAV_WRITER, str(tmp_path / "spool" / name), *args))
        assert wait_for(lambda: name in events_per_file(agent.config.outbox_path), timeout=30)
    assert events_per_file(agent.config.outbox_path) == {name: want}
    quarantine = tmp_path / "state" / "quarantine"
    assert not quarantine.exists() or not list(quarantine.iterdir())


def test_with_two_writers_the_older_file_is_not_taken_while_it_grows(tmp_path, bundle, device):
    older, newer = spool_name(START), spool_name(START.replace(minute=1))
    slow = ("--seconds", "8", "--chunks", "8", "--chunk-gap", str(SETTLE / 2), "--seed", "1")
    quick = ("--seconds", "3", "--chunks", "1", "--seed", "2")
    want = {
        older: expected_windows(written_copy(tmp_path, older, *slow), bundle),
        newer: expected_windows(written_copy(tmp_path, newer, *quick), bundle),
    }
    with running_agent(device) as agent:
        first = writer(WAV_WRITER, str(tmp_path / "spool" / older), *slow)
        assert wait_for(lambda: (tmp_path / "spool" / older).exists(), timeout=10)
        finished(writer(WAV_WRITER, str(tmp_path / "spool" / newer), *quick))  # a newer file exists now
        finished(first)
        assert wait_for(lambda: set(events_per_file(agent.config.outbox_path)) == set(want), timeout=30)
    assert events_per_file(agent.config.outbox_path) == want


def test_an_mp3_writer_that_pauses_with_its_file_open_is_waited_for(tmp_path, bundle, device):
    from beeaudio.desktop.codec import encode_mp3

    name = spool_name(START, ".mp3")
    source = encode_mp3(
        audio=hive_audio(seconds=8.0, seed=3), sample_rate=RATE, path=tmp_path / "src.mp3", bitrate_kbps=32
    )
    want = expected_windows(source, bundle)
    with running_agent(device) as agent:
        finished(writer(MP3_WRITER, str(source), str(tmp_path / "spool" / name), str(6 * SETTLE)))
        assert wait_for(lambda: name in events_per_file(agent.config.outbox_path), timeout=30)
    assert events_per_file(agent.config.outbox_path) == {name: want}


class _AppendsWhileAnalysed:
    """The agent's classifier, which lets a writer append to the recording during the first scoring
    (a writer that resumed while the agent was analysing what looked complete)."""

    def __init__(self, classifier, *, path: Path, extra: bytes) -> None:
        self._classifier, self._path, self._extra, self.appended = classifier, path, extra, False

    def score(self, features):
        if not self.appended:
            with self._path.open("ab") as handle:
                handle.write(self._extra)
            self.appended = True
        return self._classifier.score(features)

    def __getattr__(self, name):
        return getattr(self._classifier, name)


def test_a_recording_that_changes_while_analysed_is_never_deleted(tmp_path, bundle, device):
    path = write_wav(
        tmp_path / "spool" / spool_name(START), audio=hive_audio(seconds=4.0, seed=4), sample_rate=RATE
    )
    agent = Agent(config=load_config(device))
    agent.outbox = Outbox(path=agent.config.outbox_path, max_events=10_000)
    agent._load_model()
    try:
        agent.classifier = _AppendsWhileAnalysed(
            agent.classifier, path=path, extra=np.zeros(32000, "<i2").tobytes()
        )
        outcome = agent.process_file(path)
        assert agent.classifier.appended
        assert path.exists(), "a recording that grew after its analysis started was deleted"
        assert outcome != "done" and agent.outbox.depth() == 0  # its events were not kept either
    finally:
        agent.outbox.close()


def test_the_watcher_rules(tmp_path):
    """Unit view of the rules: first look never takes; a WAV needs its closing header; other formats need
    settle_seconds of quiet; empty files wait; abandoned files are taken after abandoned_seconds."""
    spool = tmp_path / "spool"
    spool.mkdir()
    watcher = sources.SpoolWatcher(
        folder=spool, patterns=("*.wav", "*.mp3"), settle_seconds=10, abandoned_seconds=100
    )
    closed = write_wav(spool / "a.wav", audio=np.zeros(1600, np.float32), sample_rate=16000)
    writing = spool / "b.wav"
    head = bytearray(closed.read_bytes()[:44])
    head[4:8], head[40:44] = (36).to_bytes(4, "little"), (0).to_bytes(4, "little")  # sizes of 0 samples
    writing.write_bytes(bytes(head) + bytes(3200))  # ...with 3200 bytes behind: a writer not done yet
    mp3 = spool / "c.mp3"
    mp3.write_bytes(b"ID3" + bytes(100))
    empty = spool / "d.wav"
    empty.touch()
    (spool / "e.wav.part").write_bytes(closed.read_bytes())
    now = closed.stat().st_mtime
    assert watcher.complete(now=now) == []  # first look
    assert watcher.complete(now=now + 1) == [closed]
    assert watcher.complete(now=now + 11) == [closed, mp3]
    assert watcher.complete(now=now + 101) == [closed, writing, mp3]  # b.wav abandoned by its writer
    assert empty not in watcher.complete(now=now + 10_000)
    writing.write_bytes(writing.read_bytes() + bytes(10))  # it grows: looked at afresh
    assert writing not in watcher.complete(now=now + 102)
