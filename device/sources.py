"""Where recordings come from: a spool folder a recorder fills, a supervised microphone recorder, or files.

**Spool folder.** A recorder writes fixed-length files, e.g. ALSA's::

    arecord -D plughw:1,0 -f S16_LE -r 16000 -c 1 -t wav --max-file-time 60 \
        --use-strftime /var/lib/beeaudio/spool/%Y%m%d-%H%M%S.wav

A file is *finished* (safe to analyse) when

* its name is not a partial one (``.part``, ``.tmp``, ``.partial``, ``~`` at the end, or a leading dot:
  writers that write-then-rename, like :func:`beeaudio.core.audio.write_wav`, are always safe), and
* the recorder has moved on: a newer file exists in the folder (arecord opens the next file as soon as it
  closes one), **or** the file has not been modified for ``settle_seconds`` (the recorder stopped).

The file arecord is writing is always the newest and keeps changing, so it is never taken; its WAV header
is only finalised when arecord closes it, which is why the rules above matter.

**Microphone.** :class:`RecorderSupervisor` starts the recorder command (arecord by default) writing into
the spool folder, restarts it with backoff when it exits, and stops it with the agent. It runs with
``TZ=UTC`` so ``--use-strftime`` names are UTC times.

A one-shot run (``run --once``) applies the same rules, and also takes the newest file at once when it is a
WAV whose header announces exactly its size (closed by its writer); otherwise it waits for it to settle.

**Files.** One file or a folder (recursively) for one-shot runs; nothing is moved or deleted.

A window's start time in UTC is the recording's start (from its name, parsed with the configured strftime
patterns, else its modification time minus its duration) plus the window's offset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beeaudio.core.fsio import file_sha256

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", "~")


def is_partial_name(path: Path) -> bool:
    name = path.name
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES)


def _candidates(folder: Path, patterns: Sequence[str]) -> list[tuple[float, str, Path]]:
    found: dict[Path, tuple[float, str, Path]] = {}
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path in found or is_partial_name(path):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted or renamed between glob and stat
                continue
            if path.is_file():
                found[path] = (stat.st_mtime, path.name, path)
    return sorted(found.values())


def spool_files(*, folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Every recording in the folder (finished or not), oldest first."""
    if not folder.is_dir():
        return []
    return [path for _, _, path in _candidates(folder, patterns)]


def wav_is_complete(path: Path) -> bool:
    """A WAV whose RIFF header announces exactly the file's size: its writer has closed it (arecord writes
    the final sizes when it closes a file; while recording, the header announces the planned length)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
        size = path.stat().st_size
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    return int.from_bytes(head[4:8], "little") + 8 == size


def finished_files(
    *,
    folder: Path,
    patterns: Sequence[str],
    settle_seconds: float,
    now: float | None = None,
    trust_wav_header: bool = False,
) -> list[Path]:
    """The spool folder's finished recordings, oldest first (see the module docstring for the rules).

    ``trust_wav_header``: also take the newest file at once if it is a WAV whose header matches its size
    (one-shot runs over a backlog). Not by default: some writers keep the header current while writing."""
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    found = _candidates(folder, patterns)
    finished = []
    for i, (mtime, _, path) in enumerate(found):
        newer_exists = i < len(found) - 1
        settled = now - mtime >= settle_seconds
        if newer_exists or settled or (trust_wav_header and wav_is_complete(path)):
            finished.append(path)
    return finished


def input_files(*, path: Path, patterns: Sequence[str]) -> list[Path]:
    """A one-shot input: the file itself, or the folder's recordings (recursively), sorted by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    found = {p for pattern in patterns for p in path.rglob(pattern) if p.is_file() and not is_partial_name(p)}
    return sorted(found)


def source_id_of(path: Path) -> str:
    """Identity of a recording for event ids: its name and the sha256 of its content. The same file analysed
    again after a crash gets the same id; two recordings never do (their names are their start times)."""
    return f"{path.name}:{file_sha256(path)}"


def time_from_name(*, path: Path, formats: Sequence[str], timezone: str = "UTC") -> datetime | None:
    """The recording's start time from its file name, or None if no pattern matches."""
    stem = path.name.split(".", 1)[0]
    for fmt in formats:
        try:
            moment = datetime.strptime(stem, fmt)
        except ValueError:
            continue
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
        if timezone == "local":
            return moment.astimezone().astimezone(UTC)  # naive = local time for astimezone()
        return moment.replace(tzinfo=UTC)
    return None


def recording_start(
    *, path: Path, duration_s: float, formats: Sequence[str], timezone: str = "UTC"
) -> datetime:
    """Start of a recording in UTC: from its name, else its modification time minus its duration."""
    named = time_from_name(path=path, formats=formats, timezone=timezone)
    if named is not None:
        return named
    mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return mtime - timedelta(seconds=duration_s)


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    counter = 1
    while target.exists():
        target = folder / f"{Path(name).stem}.{counter}{Path(name).suffix}"
        counter += 1
    return target


def archive_file(*, path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, path.name)
    shutil.move(str(path), target)
    return target


def quarantine_file(*, path: Path, folder: Path, reason: str) -> Path:
    """Move a bad recording aside with a note saying why, so a person can look at it later."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, path.name)
    shutil.move(str(path), target)
    target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target


def recorder_command(
    *,
    template: Sequence[str],
    spool: Path,
    alsa_device: str,
    sample_rate: int,
    channels: int,
    file_seconds: int,
) -> list[str]:
    """The recorder's argv with ``{spool}``, ``{alsa_device}``, ``{sample_rate}``, ``{channels}`` and
    ``{file_seconds}`` filled in (plain replacement: strftime's ``%`` and other braces stay as they are)."""
    values = {
        "{spool}": str(spool),
        "{alsa_device}": alsa_device,
        "{sample_rate}": str(sample_rate),
        "{channels}": str(channels),
        "{file_seconds}": str(file_seconds),
    }
    argv = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    return argv


class RecorderSupervisor(threading.Thread):
    """Keeps a recorder process running; restarts it with exponential backoff when it exits."""

    def __init__(
        self,
        *,
        command: Sequence[str],
        spool: Path,
        log_path: Path,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 60.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        super().__init__(name="beeaudio-recorder", daemon=True)
        self.command = list(command)
        self.spool = spool
        self.log_path = log_path
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.healthy_after_s = healthy_after_s
        self.starts = 0
        self._halt = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        self._halt.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.is_alive():
            self.join(timeout=timeout_s)

    def run(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        env = dict(os.environ, TZ="UTC")  # arecord's --use-strftime uses local time: make it UTC
        while not self._halt.is_set():
            started = time.monotonic()
            with self.log_path.open("ab") as sink:
                try:
                    process = subprocess.Popen(
                        self.command, cwd=self.spool, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                        stderr=sink, start_new_session=True,
                    )  # fmt: skip
                except OSError as exc:
                    log.error("cannot start the recorder %s: %s", self.command[0], exc)
                    process = None
                if process is not None:
                    self.starts += 1
                    log.info("recorder started (pid %d): %s", process.pid, " ".join(self.command))
                    with self._lock:
                        self._process = process
                    while process.poll() is None and not self._halt.is_set():
                        self._halt.wait(0.2)
                    if self._halt.is_set():
                        break
                    log.warning("recorder exited with code %s (log: %s)", process.returncode, self.log_path)
            if time.monotonic() - started >= self.healthy_after_s:
                failures = 0
            delay = min(self.restart_max_s, self.restart_initial_s * (2 ** min(failures, 20)))
            failures += 1
            log.info("restarting the recorder in %.1f s", delay)
            self._halt.wait(delay)
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait()
