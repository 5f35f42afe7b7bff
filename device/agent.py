"""The analysis loop: finished recordings → windows → classifier → events in the outbox → collector.

For each recording: decode window by window (bounded memory), compute features, run the model, build one
:class:`ClassificationEvent` per window with a deterministic id (device, recording, offset, model), and
commit all of them to the outbox **in one transaction together with the mark that the file is done**; only
then is the file deleted or archived. A crash before the commit leaves the file to be analysed again; a
crash after it finds the file marked done and just finishes deleting it. Either way no event is lost and
none is duplicated (the ids are the same, and the collector drops ids it has).

A bad recording (any :class:`beeaudio.core.audio.AudioError`, or anything else that fails on it) is logged and
moved to the quarantine folder; the loop goes on. SIGTERM/SIGINT stop the loop after the current window: the
recording being analysed is left untouched for the next start. Between recordings the loop looks at the
model store's ``current`` pointer and switches to a newly installed model.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core import audio as audio_io
from beeaudio.core import features as feats
from beeaudio.core.inference import BATCH_WINDOWS, Classifier
from beeaudio.core.wire import (
    QUALITY_OK,
    QUALITY_UNCALIBRATED,
    ClassificationEvent,
    Heartbeat,
    make_event_id,
)
from beeaudio.device import sources
from beeaudio.device.config import DeviceConfig
from beeaudio.device.health import STATUS_FILE, Health, StatusWriter
from beeaudio.device.modelstore import (
    BundleRefusedError,
    ChildCheck,
    ModelStore,
    ModelStoreError,
    check_servable,
)
from beeaudio.device.outbox import Outbox

log = logging.getLogger(__name__)

STAGES = ("decode", "features", "inference")


@dataclass
class StageTimer:
    """Milliseconds spent per stage, summed; reported as the mean per window."""

    totals_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    windows: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, decode_ms: float, features_ms: float, inference_ms: float, windows: int = 1) -> None:
        """Add the times of ``windows`` windows (a batch of them)."""
        with self._lock:
            self.totals_ms["decode"] += decode_ms
            self.totals_ms["features"] += features_ms
            self.totals_ms["inference"] += inference_ms
            self.windows += windows

    def mean_ms(self) -> dict[str, float]:
        with self._lock:
            n = max(1, self.windows)
            return {stage: round(self.totals_ms[stage] / n, 4) for stage in STAGES}


@dataclass(frozen=True)
class Identity:
    device_id: str
    hive_id: str


def analyse_file(
    *,
    path: Path,
    classifier: Classifier,
    identity: Identity,
    source_id: str,
    name_time_formats: Sequence[str],
    name_timezone: str = "UTC",
    max_windows: int = 0,
    timer: StageTimer | None = None,
    stop: threading.Event | None = None,
) -> list[ClassificationEvent] | None:
    """Every window's event of one recording, or None when ``stop`` was set part way.

    Each event carries the window's signal check (``quality``) and, when the bundle has a novelty detector,
    its ``novelty`` score and ``novelty_threshold``. A model that takes features relative to the hive's
    baseline sees them through the classifier's baseline; without one its windows are ``uncalibrated``
    (uniform probabilities, no novelty score: no evidence). Raises :class:`beeaudio.core.audio.AudioError`
    for a file that cannot be analysed."""
    config = classifier.config
    manifest = classifier.manifest
    labels = manifest.labels
    info = audio_io.probe(path)
    start = sources.recording_start(
        path=path, duration_s=info.duration_s, formats=name_time_formats, timezone=name_timezone
    )
    windows = audio_io.iter_windows(path, config=config)
    events: list[ClassificationEvent] = []
    while True:
        # A few windows at a time: their features, the model and the novelty detector each take them in one
        # call (BATCH_WINDOWS), which costs far less per window than one call each.
        size = BATCH_WINDOWS if not max_windows else min(BATCH_WINDOWS, max_windows - len(events))
        t0 = time.perf_counter()
        batch = list(itertools.islice(windows, size))
        if not batch:
            break
        t1 = time.perf_counter()
        samples = np.stack([w for _, w in batch])
        signals = [classifier.check_signal(row) for row in samples]  # before the model: a dead microphone
        features = classifier.window_features(samples)
        t2 = time.perf_counter()
        scored = classifier.score(features)  # through the hive's baseline when the model takes one
        scores = scored.novelty  # None: the bundle has no detector (or the hive no baseline yet)
        t3 = time.perf_counter()
        if timer is not None:
            timer.add(
                decode_ms=(t1 - t0) * 1e3,
                features_ms=(t2 - t1) * 1e3,
                inference_ms=(t3 - t2) * 1e3,
                windows=len(batch),
            )
        for i, (start_s, _) in enumerate(batch):
            probs = scored.probabilities[i]
            quality = signals[i].verdict
            if quality == QUALITY_OK and not scored.calibrated:
                quality = QUALITY_UNCALIBRATED
            probabilities = {label: float(p) for label, p in zip(labels, probs, strict=True)}
            events.append(
                ClassificationEvent(
                    event_id=make_event_id(
                        device_id=identity.device_id,
                        source_id=source_id,
                        window_offset_s=float(start_s),
                        model_sha256=manifest.model_sha256,
                    ),
                    hive_id=identity.hive_id,
                    device_id=identity.device_id,
                    model_name=manifest.model_name,
                    model_version=manifest.model_version,
                    window_start=start + timedelta(seconds=float(start_s)),
                    window_seconds=config.window_seconds,
                    probabilities=probabilities,
                    label=labels[int(np.argmax(probs))],
                    swarm_score=min(1.0, max(0.0, probabilities[manifest.swarm_label])),
                    level_dbfs=feats.level_dbfs(audio=samples[i]),
                    source_format=info.container,
                    extra={"file": path.name, "offset_s": round(float(start_s), 3)},
                    quality=quality,
                    novelty=None if scores is None else float(scores[i]),
                    novelty_threshold=None if scores is None else classifier.novelty_threshold,
                )
            )
        if stop is not None and stop.is_set():
            return None
        if max_windows and len(events) >= max_windows:
            break
    if not events:
        raise audio_io.TooShortAudioError(path, f"shorter than one {config.window_seconds:g} s window")
    return events


class Agent:
    """One device: a source, the current model, the outbox and (if a collector is configured) the uplink."""

    def __init__(self, *, config: DeviceConfig, once: bool = False, inputs: Sequence[Path] = ()) -> None:
        self.config = config
        self.once = once
        self.inputs = [Path(p) for p in inputs]
        self.kind = "files" if self.inputs else config.source.kind
        self.identity = Identity(
            device_id=config.device.device_id or socket.gethostname(),
            hive_id=config.device.hive_id or "unassigned",
        )
        self.stop_event = threading.Event()
        self.timer = StageTimer()
        self.started = time.monotonic()
        self.store = ModelStore(
            root=config.model_dir,
            child=ChildCheck(
                timeout_s=config.model.check_timeout_s, memory_limit_mb=config.model.check_memory_mb
            ),
        )
        self.outbox: Outbox | None = None
        self.classifier: Classifier | None = None
        self.model_sha: str | None = None
        self.backlog_files = 0
        self.uplink: Any = None
        self.recorder: sources.RecorderSupervisor | None = None
        # Each loop reports here; `beeaudio device status` reads the snapshot the writer thread keeps.
        self.health = Health()
        self.status_writer: StatusWriter | None = None
        src = config.source
        self.watcher = sources.SpoolWatcher(
            folder=config.spool_dir,
            patterns=src.patterns,
            settle_seconds=src.settle_seconds,
            # A one-shot run works off a backlog nobody writes to any more: no need to wait for long.
            abandoned_seconds=src.settle_seconds if once else src.abandoned_seconds,
        )
        # Recordings handled in this run, by (path, size, mtime): a kept file is not hashed again every poll.
        self._handled: set[tuple[Path, int, int]] = set()

    # -- lifecycle -------------------------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        if not self.stop_event.is_set():
            log.info("stopping after the current window")
        self.stop_event.set()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    def _recording_rate(self) -> int | None:
        return self.config.microphone.sample_rate if self.kind == "microphone" else None

    def _load_model(self) -> None:
        """(Re)load the store's current model; keep the running one if the new one fails.

        A bundle this process has not seen pass is first loaded and self-tested in a child process
        (``ModelStore.ensure_checked``): a model that crashes the runtime is refused there, not here. At
        start, with nothing running yet, a refused current model is rolled back to the previous one."""
        sha = self.store.current_sha()
        if sha == self.model_sha and self.classifier is not None:
            self._refresh_baseline()
            return
        try:
            classifier = self._checked_classifier(sha)
        except BundleRefusedError as exc:
            if self.classifier is None and self._roll_back_from(sha, reason=str(exc)):
                return
            self._refuse_model(sha, exc)
            return
        except Exception as exc:
            self._refuse_model(sha, exc)
            return
        self.classifier, self.model_sha = classifier, sha
        m = classifier.manifest
        log.info(
            "model %s %s loaded on %s (resampler: %s)",
            m.model_name, m.model_version, classifier.runtime, audio_io.RESAMPLER,
        )  # fmt: skip

    def _attach_baseline(self, classifier: Classifier) -> None:
        """Give a model that takes features relative to the hive's baseline the one in the state folder
        for its feature config (if any): kept across restarts and across models sharing the config."""
        from beeaudio.device.calibration import attach_baseline

        attach_baseline(classifier=classifier, state_dir=self.config.state_dir, hive_id=self.identity.hive_id)

    def _refresh_baseline(self) -> None:
        """Between recordings: pick up a baseline ``beeaudio device calibrate`` wrote while running."""
        if self.classifier is not None and self.classifier.needs_baseline:
            self._attach_baseline(self.classifier)

    def _checked_classifier(self, sha: str | None) -> Classifier:
        path = self.store.current_path()
        assert sha is not None
        model = self.config.model
        self.store.ensure_checked(sha256=sha, runtime=model.runtime or None, num_threads=model.num_threads)
        classifier = Classifier.load(path, runtime=model.runtime or None, num_threads=model.num_threads)
        check_servable(manifest=classifier.manifest, recording_rate=self._recording_rate())
        self._attach_baseline(classifier)
        return classifier

    def _refuse_model(self, sha: str | None, exc: Exception) -> None:
        if self.classifier is None:
            raise ModelStoreError(f"cannot load the current model: {exc}") from exc
        log.error("new model %s refused, keeping %s: %s", sha, self.model_sha, exc)
        self.model_sha = sha  # do not retry the same broken switch for every file

    def _roll_back_from(self, sha: str | None, *, reason: str) -> bool:
        """At start: the current model is refused (e.g. it crashes the runtime); run the previous one."""
        previous = self.store.previous_sha()
        if previous is None or previous == sha:
            return False
        log.error("the current model %s is refused (%s); rolling back to %s", (sha or "?")[:12], reason,
                  previous[:12])  # fmt: skip
        try:
            self.store.rollback()
            classifier = self._checked_classifier(previous)
        except Exception as exc:
            log.error("the previous model %s cannot run either: %s", previous[:12], exc)
            return False
        self.classifier, self.model_sha = classifier, previous
        m = classifier.manifest
        log.info(
            "model %s %s loaded on %s (resampler: %s)",
            m.model_name, m.model_version, classifier.runtime, audio_io.RESAMPLER,
        )  # fmt: skip
        return True

    def _start_uplink(self) -> None:
        from beeaudio.device.client import CollectorClient
        from beeaudio.device.uplink import Backoff, Uplink, Uploader, check_model_update

        c = self.config.collector
        if not self.config.uploads or self.outbox is None:
            return
        http = None
        if c.url:
            http = CollectorClient(base_url=c.url, token=self.config.token(), timeout_s=c.timeout_s)
        client: Any = http
        if c.transport == "mqtt":
            from beeaudio.device.mqtt_uplink import MqttCollectorClient  # paho-mqtt: only on this transport

            client = MqttCollectorClient(
                broker_url=c.mqtt_url,
                device_id=self.identity.device_id,
                token=self.config.token(),
                username=c.mqtt_username,
                password=c.mqtt_password,
                ca_file=c.mqtt_ca_file,
                timeout_s=c.timeout_s,
                http=http,
            )
        uploader = Uploader(
            outbox=self.outbox, client=client, device_id=self.identity.device_id, batch_size=c.batch_size
        )
        refused: set[str] = set()

        def ota() -> None:
            assert http is not None  # model files come over HTTP only
            installed = check_model_update(
                client=http,
                device_id=self.identity.device_id,
                store=self.store,
                runtime=self.config.model.runtime or None,
                recording_rate=self._recording_rate(),
                num_threads=self.config.model.num_threads,
                refused=refused,
            )
            if installed is not None:
                log.info("over-the-air update installed %s", installed.describe())

        self.uplink = Uplink(
            uploader=uploader,
            heartbeat=self.heartbeat,
            heartbeat_interval_s=c.heartbeat_interval_s,
            upload_interval_s=c.upload_interval_s,
            backoff=Backoff(initial_s=c.backoff_initial_s, max_s=c.backoff_max_s),
            ota=ota if c.ota_poll_interval_s > 0 and http is not None else None,
            ota_interval_s=c.ota_poll_interval_s,
            health=self.health,
        )
        self.uplink.start()

    def _start_recorder(self) -> None:
        mic = self.config.microphone
        command = sources.recorder_command(
            template=mic.command,
            spool=self.config.spool_dir,
            alsa_device=mic.alsa_device,
            sample_rate=mic.sample_rate,
            channels=mic.channels,
            file_seconds=mic.file_seconds,
        )
        self.recorder = sources.RecorderSupervisor(
            command=command,
            spool=self.config.spool_dir,
            log_path=self.config.state_dir / "recorder.log",
            restart_initial_s=mic.restart_initial_s,
            restart_max_s=mic.restart_max_s,
            health=self.health,
        )
        self.recorder.start()

    def _threads_alive(self) -> dict[str, bool]:
        """Which loops' threads run, for the status file (a thread that died cannot say so itself)."""
        alive: dict[str, bool] = {"analysis": not self.stop_event.is_set()}
        if self.uplink is not None:
            alive.update(dict.fromkeys(self.uplink.loops(), self.uplink.is_alive()))
        if self.recorder is not None:
            alive["recorder"] = self.recorder.is_alive()
        return alive

    def _restart_dead_threads(self) -> None:
        """The loops guard themselves; should one die anyway (a bug), start it again rather than go on
        without uploads or recordings until someone restarts the agent."""
        if self.uplink is not None and not self.uplink.is_alive():
            log.error("the uplink thread is not running: starting it again")
            self._start_uplink()
        if self.recorder is not None and not self.recorder.is_alive():
            log.error("the recorder supervisor is not running: starting it again")
            self._start_recorder()

    # -- reporting -------------------------------------------------------------------------------------
    def heartbeat(self) -> dict[str, Any]:
        status = self.outbox.status() if self.outbox is not None else None
        manifest = self.classifier.manifest if self.classifier is not None else None
        try:
            free = shutil.disk_usage(self.config.state_dir).free
        except OSError:
            free = 0
        return Heartbeat(
            sent_at=datetime.now(UTC),
            uptime_s=round(time.monotonic() - self.started, 3),
            backlog_files=self.backlog_files,
            outbox_depth=status.depth if status else 0,
            dropped_events=status.dropped_events if status else 0,
            model_name=manifest.model_name if manifest else None,
            model_version=manifest.model_version if manifest else None,
            disk_free_bytes=int(free),
            stage_ms=self.timer.mean_ms(),
            failing_loops=self.health.troubles(alive=self._threads_alive()),
        ).to_json()

    # -- the loop --------------------------------------------------------------------------------------
    def _pending_files(self) -> list[Path]:
        src = self.config.source
        if self.kind == "files":
            found: list[Path] = []
            for path in self.inputs or [src.path]:  # type: ignore[list-item]
                found.extend(sources.input_files(path=Path(path), patterns=src.patterns))
            return [path for path in found if self._key(path) not in self._handled]
        files = self.watcher.complete()
        return [path for path in files if self._key(path) not in self._handled]

    @staticmethod
    def _key(path: Path) -> tuple[Path, int, int]:
        try:
            stat = path.stat()
        except OSError:
            return (path, -1, -1)
        return (path, stat.st_size, stat.st_mtime_ns)

    def _backlog_done(self) -> bool:
        """``once``: every recording present has been handled (none left unfinished to wait for)."""
        if self.kind == "files":
            return True
        present = sources.spool_files(folder=self.config.spool_dir, patterns=self.config.source.patterns)
        # An empty file is nothing to analyse (and never complete): it does not hold a one-shot run up.
        return all(self._key(path) in self._handled or self._key(path)[1] == 0 for path in present)

    def _quarantine(self, path: Path, *, reason: str) -> None:
        if self.kind == "files":  # one-shot inputs are the user's files: never moved
            return
        try:
            sources.quarantine_file(path=path, folder=self.config.quarantine_dir, reason=reason)
        except OSError as exc:
            log.error("cannot move %s to quarantine: %s", path, exc)

    def _finish(self, path: Path, *, before: tuple[Path, int, int]) -> None:
        """After the commit: delete or archive the recording (never for one-shot file inputs) — only if it
        is still the file that was analysed (``before``: its :meth:`_key` then). A writer that went on
        writing after the analysis would otherwise lose what it wrote since; such a file stays and is
        analysed again once complete. Its size and modification time say so, as they do before the commit
        (:meth:`_changed`). Hashing the file again cost as much as its first hash: 0.05 CPU s per hour of
        audio on x86 with SHA instructions, several times that on a Pi 4, whose cores have none."""
        after = "keep" if self.kind == "files" else self.config.source.after
        if after != "keep":
            now = self._key(path)
            if now[1] < 0:
                return  # gone already (deleted by someone else, or by us before a crash)
            if now != before:
                log.warning("%s changed after it was analysed: kept, not %sd; it is analysed again once "
                            "complete", path.name, after)  # fmt: skip
                return
        try:
            if after == "delete":
                path.unlink(missing_ok=True)
            elif after == "archive":
                sources.archive_file(path=path, folder=self.config.archive_dir)
        except OSError as exc:
            log.error("cannot %s %s: %s", after, path, exc)

    def process_file(self, path: Path) -> str:
        """Analyse one recording; returns "done", "skipped", "quarantined" or "stopped"."""
        key = self._key(path)
        outcome = self._process(path)
        if outcome not in ("stopped", "changed"):
            self._handled.add(key)
        return outcome

    def _changed(self, path: Path, before: tuple[Path, int, int]) -> bool:
        """The recording is not what it was when its analysis began (its writer went on writing)."""
        if self._key(path) == before:
            return False
        log.warning("%s changed while it was analysed: nothing kept; it is analysed again once complete",
                    path.name)  # fmt: skip
        return True

    def _process(self, path: Path) -> str:
        assert self.outbox is not None and self.classifier is not None
        before = self._key(path)
        try:
            source_id = sources.source_id_of(path)
        except OSError as exc:  # vanished between listing and reading
            log.warning("skipping %s: %s", path, exc)
            return "skipped"
        status = self.outbox.file_status(source_id)
        if status == "quarantined":  # its move failed last time: try again, never delete it
            self._quarantine(path, reason="analysed before and refused (see the log)")
            return "skipped"
        if status is not None:
            # Committed before a crash or a stop (the content hashes to that id); only the clean-up is left.
            self._finish(path, before=before)
            return "skipped"
        src = self.config.source
        try:
            events = analyse_file(
                path=path,
                classifier=self.classifier,
                identity=self.identity,
                source_id=source_id,
                name_time_formats=src.name_time_formats,
                name_timezone=src.name_timezone,
                max_windows=src.windows_per_file,
                timer=self.timer,
                stop=self.stop_event,
            )
        except Exception as exc:  # one bad recording must never stop the device
            if self._changed(path, before):  # not bad: still being written
                return "changed"
            reason = str(exc) if isinstance(exc, audio_io.AudioError) else f"{type(exc).__name__}: {exc}"
            log.warning("quarantining %s: %s", path, reason)
            self.outbox.mark_file(source_id=source_id, path=str(path), status="quarantined")
            self._quarantine(path, reason=reason)
            return "quarantined"
        if events is None:
            return "stopped"
        if self._changed(path, before):
            return "changed"
        dropped = self.outbox.commit_file(source_id=source_id, path=str(path), events=events)
        if dropped:
            log.warning("outbox full (%d events): dropped the %d oldest", self.outbox.max_events, dropped)
        if self.uplink is not None:
            self.uplink.wake()
        self._finish(path, before=before)
        log.info("%s: %d windows", path.name, len(events))
        return "done"

    def _drain(self, *, timeout_s: float) -> bool:
        if self.uplink is None or self.outbox is None:
            return True
        deadline = time.monotonic() + timeout_s
        self.uplink.wake()
        while self.outbox.depth() > 0:
            if time.monotonic() >= deadline or self.stop_event.is_set():
                return False
            time.sleep(0.1)
        return True

    def _open_outbox(self) -> Outbox | None:
        """The outbox, retried with backoff while it cannot be opened (a full or failing disk at start):
        the agent waits, and says so in its status, rather than exit and be restarted in a loop."""
        cfg, failures = self.config, 0
        while not self.stop_event.is_set():
            try:
                return Outbox(path=cfg.outbox_path, max_events=cfg.outbox.max_events)
            except sqlite3.Error as exc:
                failures += 1
                delay = min(60.0, 2.0**failures)
                log.error("cannot open the outbox %s (%s); next try in %.0f s", cfg.outbox_path, exc, delay)
                self.health.failed("analysis", f"cannot open the outbox: {exc}")
                self.stop_event.wait(delay)
        return None

    def _analysis_pass(self) -> bool:
        """One look at the source: analyse what is complete. True when a one-shot run is done."""
        self._load_model()
        files = self._pending_files()
        self.backlog_files = len(files)
        for path in files:
            if self.stop_event.is_set():
                break
            try:
                self.process_file(path)
            except sqlite3.Error as exc:  # disk full, card failing: the file stays, the pass is retried
                raise sqlite3.OperationalError(
                    f"outbox write failed, {path.name} stays in the spool: {exc}"
                ) from exc
            self.backlog_files = max(0, self.backlog_files - 1)
            self._load_model()
        if self.once and self._backlog_done():
            return True
        if len(self._handled) > 10_000:  # forget files that are gone (deleted or archived)
            self._handled = {key for key in self._handled if key[0].exists()}
        return False

    def run(self, *, drain_timeout_s: float = 120.0) -> int:
        """Run until stopped (or, with ``once``, until the backlog is analysed and uploaded).

        Exit codes: 0 fine, 2 no usable model, 3 ``once`` ended with events still in the outbox."""
        self._install_signal_handlers()
        cfg = self.config
        for folder in (cfg.state_dir, cfg.spool_dir if self.kind != "files" else cfg.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        try:
            self._load_model()
        except ModelStoreError as exc:
            log.error("%s", exc)
            return 2
        self.status_writer = StatusWriter(
            health=self.health, path=cfg.state_dir / STATUS_FILE, alive=self._threads_alive
        )
        self.status_writer.start()
        self.outbox = self._open_outbox()
        if self.outbox is None:  # stopped while the outbox could not be opened
            self.status_writer.stop()
            self.status_writer.write(stopping=True)
            return 0
        code = 0
        try:
            try:
                self.outbox.prune_files(older_than_s=cfg.outbox.keep_files_days * 86400)
            except sqlite3.Error as exc:  # a full disk: housekeeping can wait
                log.warning("cannot prune the outbox's journal of old recordings: %s", exc)
            self._start_uplink()
            if self.kind == "microphone":
                self._start_recorder()
            self.health.started("analysis")
            failures = 0
            while not self.stop_event.is_set():
                try:
                    if self._analysis_pass():
                        break
                except Exception as exc:  # disk full, card failing, a bug: keep the files, try later
                    failures += 1
                    delay = min(30.0, cfg.source.poll_seconds * 2**failures)
                    log.exception("analysis loop failed (%s); the recordings stay in the spool, next try in "
                                  "%.0f s", exc, delay)  # fmt: skip
                    self.health.failed("analysis", f"{type(exc).__name__}: {exc}")
                    self.stop_event.wait(delay)
                    continue
                failures = 0
                self.health.ok("analysis")
                self._restart_dead_threads()
                self.stop_event.wait(cfg.source.poll_seconds)
            if self.once and not self.stop_event.is_set() and not self._drain(timeout_s=drain_timeout_s):
                assert self.outbox is not None
                log.error("%d events not uploaded within %.0f s", self.outbox.depth(), drain_timeout_s)
                code = 3
        finally:
            self.health.stopped("analysis")
            if self.recorder is not None:
                self.recorder.stop()
            if self.uplink is not None:
                self.uplink.stop()
                self.uplink.join(timeout=cfg.collector.timeout_s + 5)
                self.uplink.send_heartbeat()
            self.outbox.close()
            self.status_writer.stop()
            self.status_writer.join(timeout=5)
            self.status_writer.write(stopping=True)
        log.info("agent stopped")
        return code
