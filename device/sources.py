"""Where recordings come from: a spool folder a recorder fills, a supervised microphone recorder, or files.

**Spool folder.** A recorder writes fixed-length files, e.g. ALSA's::

    arecord -D plughw:1,0 -f S16_LE -r 16000 -c 1 -t wav --max-file-time 60 \
        --use-strftime /var/lib/beeaudio/spool/%Y%m%d-%H%M%S.wav

A recording is analysed only when it is *complete* (:class:`SpoolWatcher`); half a recording analysed and
then deleted is a reading lost for good, so every rule errs on the side of waiting:

* its name is not a partial one (``.part``, ``.tmp``, ``.partial``, ``~`` at the end, or a leading dot):
  writers that write under such a name and rename when done (:func:`beeaudio.core.audio.write_wav`) are
  always safe, and need no waiting beyond the rules below;
* it is not empty, and its size, modification time and inode were the same at two looks (two polls);
* no process the agent can see (``/proc/<pid>/fd``: its own children, processes of its user) has it open
  for writing;
* and: a **WAV** announces in its RIFF header exactly the file's size (arecord and libsndfile write the
  final sizes only when they close the file); **another format** (MP3, FLAC, OGG: no length up front) has
  not been modified for ``settle_seconds``; **any file** that has not been modified for
  ``abandoned_seconds`` is taken as it is (its writer died without finishing it: arecord killed, a power
  cut).

The rules no longer trust "a newer file exists": with two writers, or a recorder that opens its next file
early, the older file may still be growing.

**Microphone.** :class:`RecorderSupervisor` starts the recorder command (arecord by default) writing into
the spool folder, restarts it with backoff when it exits, and stops it with the agent. It runs with
``TZ=UTC`` so ``--use-strftime`` names are UTC times. Its own errors (a log it cannot open, a command
that cannot start) are logged, backed off and retried, never the end of the thread.

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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beeaudio.core.fsio import file_sha256
from beeaudio.device.health import Health

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", "~")


def is_partial_name(path: Path) -> bool:
    name = path.name
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES)


def _candidates(folder: Path, patterns: Sequence[str]) -> list[tuple[float, str, Path, os.stat_result]]:
    found: dict[Path, tuple[float, str, Path, os.stat_result]] = {}
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path in found or is_partial_name(path):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted or renamed between glob and stat
                continue
            if path.is_file():
                found[path] = (stat.st_mtime, path.name, path, stat)
    return sorted(found.values(), key=lambda item: item[:2])


def spool_files(*, folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Every recording in the folder (complete or not), oldest first."""
    if not folder.is_dir():
        return []
    return [item[2] for item in _candidates(folder, patterns)]


def wav_header_state(path: Path) -> str:
    """``"complete"``: a WAV whose RIFF header announces exactly the file's size (its writer has closed it:
    arecord and libsndfile write the final sizes on close; while recording the header announces 0 or the
    planned length); ``"incomplete"``: a WAV whose header does not match; ``"other"``: not a RIFF WAV."""
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return "incomplete"
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64"):
        return "other"
    if head[:4] == b"RF64":  # sizes in a ds64 chunk; arecord's 4 GB+ files: trust quiet time instead
        return "incomplete"
    declared = int.from_bytes(head[4:8], "little") + 8
    # The RIFF size counts a final pad byte that some writers leave out.
    return "complete" if declared in (size, size + 1) else "incomplete"


def wav_is_complete(path: Path) -> bool:
    return wav_header_state(path) == "complete"


def open_for_writing(paths: Collection[Path]) -> set[Path]:
    """Which of ``paths`` a process has open for writing, as far as ``/proc`` shows this process (its own
    children and its user's processes; others are simply not seen). Empty where there is no ``/proc``."""
    wanted = {os.path.realpath(p): Path(p) for p in paths}
    if not wanted:
        return set()
    writing: set[Path] = set()
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return writing
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                    flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                writing.add(wanted[target])
    return writing


@dataclass(frozen=True)
class _Look:
    size: int
    mtime_ns: int
    inode: int


class SpoolWatcher:
    """Which recordings of a spool folder are complete (see the module docstring); it remembers what it saw
    at the previous look, so one per agent, looked at once per poll."""

    def __init__(
        self,
        *,
        folder: Path,
        patterns: Sequence[str],
        settle_seconds: float,
        abandoned_seconds: float,
        check_writers: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.patterns = tuple(patterns)
        self.settle_seconds = settle_seconds
        self.abandoned_seconds = max(abandoned_seconds, settle_seconds)
        self.check_writers = check_writers
        self._looks: dict[Path, _Look] = {}

    def complete(self, *, now: float | None = None) -> list[Path]:
        """The complete recordings, oldest first."""
        if not self.folder.is_dir():
            self._looks = {}
            return []
        now = time.time() if now is None else now
        looks: dict[Path, _Look] = {}
        ready: list[Path] = []
        for mtime, _, path, stat in _candidates(self.folder, self.patterns):
            look = _Look(size=stat.st_size, mtime_ns=stat.st_mtime_ns, inode=stat.st_ino)
            looks[path] = look
            if self._looks.get(path) != look or look.size == 0:
                continue  # first look, changed since the last one, or nothing written yet
            quiet = now - mtime
            header = wav_header_state(path)
            if (
                header == "complete"
                or (header == "other" and quiet >= self.settle_seconds)
                or quiet >= self.abandoned_seconds
            ):
                ready.append(path)
        self._looks = looks
        if self.check_writers and ready:
            writing = open_for_writing(ready)
            if writing:
                log.debug("still open for writing: %s", ", ".join(p.name for p in sorted(writing)))
            ready = [path for path in ready if path not in writing]
        return ready


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
        health: Health | None = None,
    ) -> None:
        super().__init__(name="beeaudio-recorder", daemon=True)
        self.health = health or Health()
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
        self.health.started("recorder")
        try:
            self._supervise()
        except BaseException as exc:  # a bug in the guards: say so; the agent restarts the thread
            log.exception("the recorder supervisor stopped")
            self.health.failed("recorder", f"supervisor died: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._stop_process()
            self.health.stopped("recorder")

    def _supervise(self) -> None:
        failures = 0
        env = dict(os.environ, TZ="UTC")  # arecord's --use-strftime uses local time: make it UTC
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self._run_once(env)
            except Exception as exc:  # e.g. the spool or the log cannot be created: report and retry
                log.error("cannot run the recorder: %s", exc)
                self.health.failed("recorder", f"{type(exc).__name__}: {exc}")
            if self._halt.is_set():
                break
            if time.monotonic() - started >= self.healthy_after_s:
                failures = 0
            delay = min(self.restart_max_s, self.restart_initial_s * (2 ** min(failures, 20)))
            failures += 1
            log.info("restarting the recorder in %.1f s", delay)
            self._halt.wait(delay)

    def _run_once(self, env: dict[str, str]) -> None:
        """Start the recorder and wait for it to exit (or for the stop)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            try:
                process = subprocess.Popen(
                    self.command, cwd=self.spool, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                    stderr=sink, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                log.error("cannot start the recorder %s: %s", self.command[0], exc)
                self.health.failed("recorder", f"cannot start {self.command[0]}: {exc}")
                return
            self.starts += 1
            log.info("recorder started (pid %d): %s", process.pid, " ".join(self.command))
            with self._lock:
                self._process = process
            began, reported = time.monotonic(), False
            while process.poll() is None and not self._halt.is_set():
                self._halt.wait(0.2)
                # Running for a second, not just started: a recorder that dies at once is failing.
                if not reported and time.monotonic() - began >= 1.0:
                    self.health.ok("recorder")
                    reported = True
            if self._halt.is_set():
                return
            log.warning("recorder exited with code %s (log: %s)", process.returncode, self.log_path)
            self.health.failed("recorder", f"exited with code {process.returncode} (log: {self.log_path})")

    def _stop_process(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            if process.poll() is None:
                process.kill()
                process.wait()
