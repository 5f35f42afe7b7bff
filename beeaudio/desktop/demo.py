"""``beeaudio demo``: one run shows the whole system working on a synthetic apiary.

The demo joins the parts the way a user would: it generates a small apiary (one hive starts to swarm
part-way through), trains and exports a model (cached in ``--out``, keyed by its configuration), starts the
collector on SQLite in ``--out``, registers hives and devices over the admin API, runs one device agent
per hive over that hive's recordings, waits until the collector holds every event, and reports each hive's
state.

The collector and the device agents are driven as subprocesses through the ``beeaudio`` CLI and spoken to over
HTTP, exactly as in a deployment: this package never imports ``service`` or ``device``.

Timeline. Each hive's recorder is duty-cycled: ``recording_seconds`` of audio every ``interval_minutes`` over
the last ``hours``, so the collector sees a realistic history that ends "now". The file names carry the
recordings' start times (the device agent takes a recording's time from its name), which is what lets the
agents work through hours of audio in seconds. A swarming hive sounds normal until ``swarm_at`` of the way
through the timeline, then swarms until the end.

Rerunning is safe: the model, the training data and the rendered audio are cached under ``--out/cache``
(keyed by what produced them); everything that belongs to one run (collector database, device state, spool
folders, logs, tokens) lives in ``--out/run`` and is recreated from scratch each time, because a new run has
a new "now".
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from beeaudio import __version__
from beeaudio.core.fsio import write_json

log = logging.getLogger(__name__)

#: Bumped when the demo changes how it renders audio or trains, so old caches are not reused.
DEMO_CACHE_VERSION = 1
DEFAULT_PORT = 8000
STEPS = 6
MODEL_NAME = "demo-dnn"
#: The demo's hives are drawn from synth seeds far from the training set's, so the model hears new hives.
DEMO_SEED_BASE = 7_000


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


@dataclass(frozen=True)
class ApiaryPlan:
    """How the synthetic apiary sounds and when its hives recorded (see the module docstring)."""

    hives: int = 4
    swarming: int = 1
    seed: int = 1
    hours: float = 6.0
    recording_seconds: float = 20.0
    interval_minutes: float = 10.0
    swarm_at: float = 0.7
    sample_rate: int = 8000

    def __post_init__(self) -> None:
        if self.hives < 1:
            raise ValueError("the demo needs at least one hive")
        if not 0 <= self.swarming <= self.hives:
            raise ValueError(f"swarming must be between 0 and hives ({self.hives}), got {self.swarming}")
        if (
            self.hours <= 0
            or self.recording_seconds <= 0
            or self.interval_minutes * 60 < self.recording_seconds
        ):
            raise ValueError("hours and recording_seconds must be positive, recordings may not overlap")
        if not 0.0 < self.swarm_at < 1.0:
            raise ValueError("swarm_at must be a fraction of the timeline in (0, 1)")

    @property
    def recordings(self) -> int:
        return max(1, round(self.hours * 60 / self.interval_minutes))

    def key(self) -> str:
        return _digest({"plan": dataclasses.asdict(self), "cache": DEMO_CACHE_VERSION})


@dataclass(frozen=True)
class DemoHive:
    index: int
    hive_id: str
    name: str
    device_id: str
    hive_seed: int
    swarms: bool

    @property
    def expected_state(self) -> str:
        return "swarm" if self.swarms else "normal"


@dataclass(frozen=True)
class HiveOutcome:
    """One hive as the collector reports it at the end of the run, next to what the demo generated."""

    hive_id: str
    name: str
    expected_state: str
    state: str
    swarm_score: float | None
    confidence: float | None
    last_seen: str | None
    model_version: str | None
    events: int

    @property
    def ok(self) -> bool:
        return self.state == self.expected_state


@dataclass(frozen=True)
class DemoResult:
    out: Path
    api_url: str
    dashboard_url: str
    admin_token: str
    read_token: str
    model_path: Path
    model_version: str
    model_reused: bool
    hives: tuple[HiveOutcome, ...]
    events_expected: int
    events_received: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.events_received == self.events_expected and all(h.ok for h in self.hives)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["model_path"] = str(self.model_path)
        data["ok"] = self.ok
        return data


# ---------------------------------------------------------------------------------------------- the apiary


def plan_hives(*, plan: ApiaryPlan) -> list[DemoHive]:
    """The apiary's hives; which ones swarm is drawn from the seed. Their sound comes from synth seeds
    the training set does not use, so the model hears hives it was never trained on."""
    import numpy as np

    from beeaudio.desktop.synth import hive_seed as synth_hive_seed

    rng = np.random.default_rng(plan.seed)
    swarming = (
        set(rng.choice(plan.hives, size=plan.swarming, replace=False).tolist()) if plan.swarming else set()
    )
    return [
        DemoHive(
            index=i + 1,
            hive_id=f"demo-hive-{i + 1}",
            name=f"Hive {i + 1}",
            device_id=f"demo-device-{i + 1}",
            hive_seed=synth_hive_seed(seed=DEMO_SEED_BASE + plan.seed, index=i),
            swarms=i in swarming,
        )
        for i in range(plan.hives)
    ]


def recording_segments(*, plan: ApiaryPlan, hive: DemoHive, index: int) -> list[tuple[str, float]]:
    """What recording ``index`` of ``hive`` contains: (label, seconds) segments, in order."""
    if not hive.swarms:
        return [("normal", plan.recording_seconds)]
    step = plan.interval_minutes * 60
    swarm_from = plan.swarm_at * plan.recordings * step
    start = index * step
    if start + plan.recording_seconds <= swarm_from:
        return [("normal", plan.recording_seconds)]
    if start >= swarm_from:
        return [("swarm", plan.recording_seconds)]
    return [("normal", swarm_from - start), ("swarm", start + plan.recording_seconds - swarm_from)]


def _render_one(job: tuple[ApiaryPlan, DemoHive, int, Path]) -> Path:
    from beeaudio.core.audio import write_wav
    from beeaudio.desktop.synth import render_timeline

    plan, hive, index, path = job
    # The day/night level cycle follows a timeline that ends in the afternoon.
    hour = (16.0 - (plan.recordings - 1 - index) * plan.interval_minutes / 60.0) % 24.0
    audio = render_timeline(
        hive_seed=hive.hive_seed,
        segments=recording_segments(plan=plan, hive=hive, index=index),
        sample_rate=plan.sample_rate,
        seed=plan.seed * 1_000_003 + hive.index * 10_007 + index,
        hour=hour,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_wav(path, audio=audio, sample_rate=plan.sample_rate)


def render_apiary(*, plan: ApiaryPlan, hives: Sequence[DemoHive], cache: Path, progress: bool) -> Path:
    """Render every hive's recordings once into ``cache/apiary-<key>/<hive_id>/rec-NNNN.wav``."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    folder = cache / f"apiary-{plan.key()}"
    done = folder / "complete.json"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    jobs = [
        (plan, hive, i, folder / hive.hive_id / f"rec-{i:04d}.wav")
        for hive in hives
        for i in range(plan.recordings)
    ]
    with ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for _ in tqdm(
            pool.map(_render_one, jobs, chunksize=4),
            total=len(jobs),
            desc="render apiary",
            unit="rec",
            disable=not progress,
            leave=False,
        ):
            pass
    write_json(done, {"plan": dataclasses.asdict(plan), "recordings": len(jobs)})
    return folder


def recording_times(*, plan: ApiaryPlan, now: datetime) -> list[datetime]:
    """Start times of the recordings, oldest first; the last one ends just before ``now``."""
    step = timedelta(minutes=plan.interval_minutes)
    # Recordings start on the minute, like a recorder on a cron schedule: each one's windows then fall in
    # one rollup bucket of the collector instead of straddling two.
    last = (now - timedelta(seconds=plan.recording_seconds + 5)).replace(second=0, microsecond=0)
    return [last - step * (plan.recordings - 1 - i) for i in range(plan.recordings)]


def spool_name(start: datetime) -> str:
    """File name a recorder would give a recording that starts at ``start`` (UTC)."""
    return start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + ".wav"


def expected_windows(*, plan: ApiaryPlan, feature_config: Any) -> int:
    """Analysis windows in one recording: what one device sends per file."""
    from beeaudio.core.features import window_starts

    n_samples = round(plan.recording_seconds * feature_config.sample_rate)
    return len(window_starts(n_samples=n_samples, config=feature_config))


# ---------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelRecipe:
    """The training set and training run behind the demo's model; its digest keys the model cache."""

    # Many hives, little audio each: what generalises to an unseen colony is having heard many colonies
    # (8 hives x 3 recordings scored ~65 % on held-out hives, 16 x 2 scores ~96-98 %).
    synth_hives: int = 16
    synth_recordings_per_class: int = 2
    synth_seconds: float = 15.0
    synth_seed: int = 11
    #: The model's own rate: recording training data any higher only costs resampling time.
    synth_sample_rate: int = 8000
    layers: int = 2
    units: int = 32
    epochs: int = 60
    patience: int = 10
    train_seed: int = 3
    # float32: at this size the model is a few KB either way, and int8's agreement check (>= 99 % of the
    # held-out windows) is a coin toss for a model trained in a minute.
    quantize: str = "float32"

    def key(self) -> str:
        return _digest(
            {"recipe": dataclasses.asdict(self), "cache": DEMO_CACHE_VERSION, "beeaudio": __version__}
        )


def ensure_model(*, recipe: ModelRecipe, cache: Path) -> tuple[Path, bool]:
    """The demo's bundle: reused from ``cache`` when a readable one with this recipe exists, else trained.

    Training runs in a child process (``python -m beeaudio.desktop.demo train-model``) whose output goes to
    ``train.log`` next to the bundle: TensorFlow's start-up chatter is no part of the demo's story, and its
    memory is returned before the collector and the agents start. Returns ``(path, reused)``.
    """
    from beeaudio.core.bundle import BundleError, read_bundle

    folder = cache / f"model-{recipe.key()}"
    bundle_path = folder / f"{MODEL_NAME}.beemodel"
    if bundle_path.is_file():
        try:
            read_bundle(bundle_path)
            return bundle_path, True
        except BundleError as exc:
            log.warning("cached model %s is unusable (%s); training a new one", bundle_path, exc)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log.info(
        "      synthesising %d training hives (none of them in the apiary), training a %d x %d DNN, "
        "exporting it to TF-Lite; log: %s",
        recipe.synth_hives, recipe.layers, recipe.units, folder / "train.log",
    )  # fmt: skip
    log_path = folder / "train.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable,
        "-P",
        "-m",
        "beeaudio.desktop.demo",
        "train-model",
        str(folder),
        json.dumps(dataclasses.asdict(recipe)),
    ]
    with log_path.open("wb") as sink:
        code = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    if code != 0 or not bundle_path.is_file():
        raise DemoError(
            f"training the demo model failed (exit code {code}; log {log_path}):\n{_tail(log_path)}"
        )
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    log.info(
        "      held-out accuracy %.1f %% on hives never seen in training; exported as %s",
        100 * summary["accuracy"], summary["quantization"],
    )  # fmt: skip
    return bundle_path, False


def train_model(*, recipe: ModelRecipe, folder: Path) -> dict[str, Any]:
    """Synthesise the training set, train and export the demo's bundle into ``folder`` (needs TensorFlow).

    The int8 export refuses a model whose quantised outputs disagree with the Keras model on the held-out
    windows; a model that small can miss that bar, and then the demo ships the float32 export instead.
    """
    from beeaudio.desktop.synth import SynthConfig, generate_dataset
    from beeaudio.desktop.training.export import ExportError, export_bundle
    from beeaudio.desktop.training.train import TrainConfig, train_run

    data = folder / "data"
    synth = SynthConfig(
        hives=recipe.synth_hives,
        recordings_per_class=recipe.synth_recordings_per_class,
        seconds=recipe.synth_seconds,
        seed=recipe.synth_seed,
        sample_rate=recipe.synth_sample_rate,
    )
    generate_dataset(out=data, config=synth, progress=False)
    config = TrainConfig(
        model="dnn",
        layers=recipe.layers,
        units=recipe.units,
        epochs=recipe.epochs,
        patience=recipe.patience,
        seed=recipe.train_seed,
        verbose=0,
        progress=False,  # the log file gets the summary lines, not progress bars
    )
    result = train_run(data=data, out=folder / "run", config=config, cache_dir=folder / "feature-cache")
    bundle_path = folder / f"{MODEL_NAME}.beemodel"
    tmp = folder / f"{MODEL_NAME}.beemodel.tmp"
    quantization = recipe.quantize
    for quantization in dict.fromkeys((recipe.quantize, "float32")):
        try:
            export_bundle(
                run=folder / "run",
                out=tmp,
                quantize=quantization,
                model_name=MODEL_NAME,
                model_version=f"demo-{recipe.key()[:8]}",
            )
            break
        except ExportError as exc:
            if quantization == "float32":
                raise
            log.warning("%s export refused (%s); exporting float32", quantization, exc)
    summary = {"accuracy": float(result.metrics["accuracy"]), "quantization": quantization}
    write_json(folder / "summary.json", summary)
    tmp.replace(bundle_path)
    return summary


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Api:
    """A minimal JSON client of the collector's REST API (urllib: no extra dependency)."""

    base_url: str
    token: str
    timeout: float = 10.0

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if raw is not None:
            request.add_header("Content-Type", "application/octet-stream")
        elif data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise DemoError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DemoError(
                f"{method} {path}: the collector at {self.base_url} did not answer ({exc})"
            ) from exc
        return json.loads(payload) if payload else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections of an earlier server in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(*, port: int | None, serve: bool) -> int:
    """``port`` if given (it must be free); else 8000 when serving and free; else any free port."""
    if port is not None:
        if not _port_free(port):
            raise DemoError(f"port {port} is in use on 127.0.0.1; choose another with --port")
        return port
    if serve and _port_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- subprocesses


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-P", "-m", "beeaudio.cli", *args]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Collector:
    """The collector subprocess of one run."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_collector(*, run: Path, port: int, admin_token: str, read_token: str) -> Collector:
    db = run / "collector.db"
    log_path = run / "logs" / "collector.log"
    env = {
        **os.environ,
        "BEEAUDIO_MODE": "local",
        "BEEAUDIO_DATABASE_URL": f"sqlite:///{db}",
        "BEEAUDIO_ADMIN_TOKEN": admin_token,
        "BEEAUDIO_READ_TOKEN": read_token,
    }
    command = _cli(
        "collector", "serve", "--db", f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)
    )
    command.append("--local")
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=run)
    (run / "collector.pid").write_text(str(process.pid))
    collector = Collector(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"the collector exited with code {process.returncode}:\n{_tail(log_path)}")
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(collector.url + "/api/v1/health", timeout=2) as response,
        ):
            if json.loads(response.read()).get("status") == "ok":
                return collector
        time.sleep(0.2)
    collector.stop()
    raise DemoError(f"the collector did not become healthy within 60 s:\n{_tail(log_path)}")


def device_config(*, hive: DemoHive, token: str, api_url: str, spool: Path, state: Path) -> str:
    """The device agent's TOML for one demo hive (options: ``device/device.example.toml``)."""
    lines = [
        "# Written by `beeaudio demo`: one hive's device agent, working off its spool folder.",
        "[device]",
        f"device_id = {_toml_str(hive.device_id)}",
        f"hive_id = {_toml_str(hive.hive_id)}",
        f"state_dir = {_toml_str(str(state))}",
        "",
        "[collector]",
        f"url = {_toml_str(api_url)}",
        f"token = {_toml_str(token)}",
        "batch_size = 500",
        # The demo installs its model directly; the collector publishes none.
        "ota_poll_interval_s = 0.0",
        "",
        "[source]",
        'kind = "spool"',
        f"path = {_toml_str(str(spool))}",
        'after = "archive"',
        # The files are complete when the demo links them in: no need to wait for a recorder to finish.
        "settle_seconds = 0.0",
        "",
    ]
    return "\n".join(lines)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class DeviceJob:
    hive: DemoHive
    config: Path
    log_path: Path


def _run_device(job: DeviceJob, model: Path) -> str | None:
    """Install the model on one hive's device, then work off its spool folder once; the failure, if any."""
    with job.log_path.open("wb") as sink:
        for command in (
            _cli("device", "install-model", str(model), "--config", str(job.config)),
            _cli("device", "run", "--config", str(job.config), "--once"),
        ):
            code = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT)
            if code != 0:
                return f"{job.hive.name}: `beeaudio device {command[4]}` exit code {code}, log {job.log_path}"
    return None


def run_devices(*, jobs: Sequence[DeviceJob], model: Path, progress: bool) -> None:
    """Every hive's device agent, as many at a time as there are CPU cores."""
    from tqdm import tqdm

    failures = []
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc="device agents", unit="hive", disable=not progress, leave=False) as bar,
    ):
        for job, failure in zip(jobs, pool.map(lambda job: _run_device(job, model), jobs), strict=True):
            bar.update(1)
            if failure:
                failures.append(f"{failure}:\n{_tail(job.log_path)}")
    if failures:
        raise DemoError("device agents failed:\n" + "\n".join(failures))


def count_events(*, api: Api, hive_id: str, start: datetime, end: datetime) -> int:
    """Events the collector holds for a hive between ``start`` and ``end`` (from its history rollups)."""
    query = urllib.parse.urlencode({"from": _iso(start), "to": _iso(end), "bucket": 86400})
    history = api.call("GET", f"/api/v1/hives/{hive_id}/history?{query}")
    return sum(int(n) for bucket in history.get("buckets", []) for n in bucket.get("counts", {}).values())


def wait_for_events(
    *, api: Api, hives: Sequence[DemoHive], per_hive: int, between: tuple[datetime, datetime], timeout: float
) -> dict[str, int]:
    """Per-hive event counts, once every hive has ``per_hive`` of them or ``timeout`` seconds have passed."""
    start, end = between
    deadline = time.monotonic() + timeout
    while True:
        counts = {h.hive_id: count_events(api=api, hive_id=h.hive_id, start=start, end=end) for h in hives}
        if all(n >= per_hive for n in counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------- the run


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _previous_collector_alive(run: Path) -> int | None:
    """The pid of a collector an earlier ``--serve`` run left serving this folder, if it is still up."""
    try:
        pid = int((run / "collector.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    if cmdline and b"collector" not in cmdline:
        return None  # the pid now belongs to something else
    return pid


@contextlib.contextmanager
def _step(number: int, title: str, seconds: dict[str, float], key: str) -> Iterator[None]:
    log.info("[%d/%d] %s", number, STEPS, title)
    started = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - started, 2)
    log.info("      done in %.1f s", seconds[key])


def state_params(*, plan: ApiaryPlan) -> dict[str, Any]:
    """The collector's hive-state parameters for the demo's duty-cycled recorders.

    The collector's defaults smooth over 5 minutes, sized for a recorder that never stops. These recorders
    hear ``recording_seconds`` every ``interval_minutes``, so the smoothing window is widened to hold the
    last three recordings (one odd recording -- rain, a bird, someone talking -- cannot flip a hive on its
    own) and ``offline`` waits for several missed recordings; the thresholds and the hysteresis stay at
    the collector's defaults.
    """
    interval_s = plan.interval_minutes * 60
    return {"smoothing_seconds": 3 * interval_s, "offline_after_seconds": max(3600.0, 6 * interval_s)}


def run_demo(
    *,
    out: Path,
    hives: int = 4,
    swarming: int = 1,
    seed: int = 1,
    serve: bool = False,
    port: int | None = None,
    progress: bool = True,
    hours: float = 6.0,
    on_ready: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo in ``out`` (see the module docstring) and return what the collector reports.

    With ``serve`` the collector keeps running after the report (``on_ready`` is called with the result so
    the caller can print the dashboard URL) until interrupted (Ctrl-C / SIGTERM as KeyboardInterrupt); it
    is always stopped before this function returns. Progress is logged on ``beeaudio.desktop.demo`` at INFO.
    """
    started = time.perf_counter()
    plan = ApiaryPlan(hives=hives, swarming=swarming, seed=seed, hours=hours)
    out = Path(out).resolve()
    cache, run = out / "cache", out / "run"
    pid = _previous_collector_alive(run)
    if pid is not None:
        raise DemoError(
            f"a collector from an earlier `beeaudio demo --serve` (pid {pid}) is still serving {out}; "
            "stop that demo (Ctrl-C in its terminal) first, or use another --out"
        )
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run, ignore_errors=True)
    (run / "logs").mkdir(parents=True)
    seconds: dict[str, float] = {}
    apiary = plan_hives(plan=plan)

    with _step(1, "Training the model (or reusing the cached one)", seconds, "model"):
        model_path, reused = ensure_model(recipe=ModelRecipe(), cache=cache)
        from beeaudio.core.bundle import read_bundle

        manifest = read_bundle(model_path).manifest
        how = "reused from the cache" if reused else "trained now"
        log.info(
            "      %s %s (%s), %s", manifest.model_name, manifest.model_version, manifest.quantization, how
        )

    swarmers = ", ".join(h.name for h in apiary if h.swarms) or "none"
    title = (
        f"Rendering the apiary: {plan.hives} hives, {plan.hours:g} h of {plan.recording_seconds:g}-s "
        f"recordings every {plan.interval_minutes:g} min; swarming: {swarmers}"
    )
    with _step(2, title, seconds, "apiary"):
        audio = render_apiary(plan=plan, hives=apiary, cache=cache, progress=progress)
        now = datetime.now(UTC)
        times = recording_times(plan=plan, now=now)
        for hive in apiary:
            spool = run / "spool" / hive.hive_id
            spool.mkdir(parents=True)
            for i, start in enumerate(times):
                finished = start + timedelta(seconds=plan.recording_seconds)
                source = audio / hive.hive_id / f"rec-{i:04d}.wav"
                _place_recording(source, spool / spool_name(start), finished=finished)

    admin_token, read_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    write_json(run / "tokens.json", {"admin_token": admin_token, "read_token": read_token}, private=True)
    chosen_port = choose_port(port=port, serve=serve)
    with _step(
        3, f"Starting the collector on 127.0.0.1:{chosen_port} (SQLite in {run})", seconds, "collector"
    ):
        collector = start_collector(run=run, port=chosen_port, admin_token=admin_token, read_token=read_token)
    try:
        admin = Api(base_url=collector.url, token=admin_token)
        with _step(4, "Registering hives and devices", seconds, "register"):
            jobs = [register_hive(api=admin, plan=plan, hive=hive, run=run) for hive in apiary]

        per_hive = plan.recordings * expected_windows(plan=plan, feature_config=manifest.feature_config)
        title = f"Running {len(jobs)} device agents ({plan.recordings} files, {per_hive} windows per hive)"
        with _step(5, title, seconds, "devices"):
            run_devices(jobs=jobs, model=model_path, progress=progress)
            window = (times[0] - timedelta(hours=1), now + timedelta(hours=1))
            counts = wait_for_events(api=admin, hives=apiary, per_hive=per_hive, between=window, timeout=60)

        with _step(6, "Reading every hive's state", seconds, "status"):
            outcomes = tuple(
                _outcome(hive=h, status=admin.call("GET", f"/api/v1/hives/{h.hive_id}/status"), events=counts)
                for h in apiary
            )
        seconds["total"] = round(time.perf_counter() - started, 2)
        result = DemoResult(
            out=out,
            api_url=collector.url,
            dashboard_url=f"{collector.url}/#token={read_token}",
            admin_token=admin_token,
            read_token=read_token,
            model_path=model_path,
            model_version=manifest.model_version,
            model_reused=reused,
            hives=outcomes,
            events_expected=per_hive * len(apiary),
            events_received=sum(counts.values()),
            seconds=seconds,
        )
        write_json(out / "demo-result.json", result.to_json(), private=True)
        if serve:
            if on_ready is not None:
                on_ready(result)
            collector.process.wait()
            if collector.process.returncode != 0:
                log.warning("the collector stopped (exit code %s); its log: %s",
                            collector.process.returncode, collector.log_path)  # fmt: skip
        return result
    finally:
        collector.stop()
        (run / "collector.pid").unlink(missing_ok=True)


def register_hive(*, api: Api, plan: ApiaryPlan, hive: DemoHive, run: Path) -> DeviceJob:
    """Create the hive and its device over the admin API and write the device's configuration."""
    api.call(
        "POST",
        "/api/v1/hives",
        {"name": hive.name, "hive_id": hive.hive_id, "state_params": state_params(plan=plan)},
    )
    device = api.call("POST", f"/api/v1/hives/{hive.hive_id}/devices", {"device_id": hive.device_id})
    folder = run / "devices" / hive.hive_id
    folder.mkdir(parents=True)
    config = folder / "device.toml"
    text = device_config(
        hive=hive,
        token=device["token"],
        api_url=api.base_url,
        spool=run / "spool" / hive.hive_id,
        state=folder,
    )
    # The file holds the device's token: readable by its owner only, like /etc/beeaudio/device.toml.
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return DeviceJob(hive=hive, config=config, log_path=run / "logs" / f"device-{hive.hive_id}.log")


def _outcome(*, hive: DemoHive, status: dict[str, Any], events: dict[str, int]) -> HiveOutcome:
    return HiveOutcome(
        hive_id=hive.hive_id,
        name=hive.name,
        expected_state=hive.expected_state,
        state=str(status.get("state")),
        swarm_score=status.get("swarm_score"),
        confidence=status.get("confidence"),
        last_seen=status.get("last_seen"),
        model_version=status.get("model_version"),
        events=events[hive.hive_id],
    )


def _place_recording(source: Path, target: Path, *, finished: datetime) -> None:
    """Put a cached recording into a spool folder as the recorder would have left it."""
    # The agent archives or deletes what it has processed: a hard link keeps the cached original intact.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    # Agents work off a backlog oldest file first (by modification time), as a recorder leaves it.
    stamp = finished.timestamp()
    os.utime(target, (stamp, stamp))


def format_status_table(result: DemoResult) -> str:
    """The hive status table the CLI prints."""
    rows = [("hive", "state", "swarm score", "last seen", "model version", "generated as")]
    for h in result.hives:
        score = f"{h.swarm_score:.2f}" if isinstance(h.swarm_score, int | float) else "-"
        rows.append(
            (
                f"{h.name} ({h.hive_id})",
                h.state.upper() if h.state == "swarm" else h.state,
                score,
                _short_time(h.last_seen),
                h.model_version or "-",
                h.expected_state + ("" if h.ok else "  <-- differs"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short_time(value: str | None) -> str:
    if not value:
        return "never"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    age = datetime.now(UTC) - moment
    return f"{moment.astimezone().strftime('%H:%M:%S')} ({max(0, int(age.total_seconds()))} s ago)"


def _main(argv: Sequence[str]) -> int:
    """``python -m beeaudio.desktop.demo train-model FOLDER RECIPE_JSON``: the child of
    :func:`ensure_model`."""
    if len(argv) != 3 or argv[0] != "train-model":
        print("usage: python -m beeaudio.desktop.demo train-model FOLDER RECIPE_JSON", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_model(recipe=ModelRecipe(**json.loads(argv[2])), folder=Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
