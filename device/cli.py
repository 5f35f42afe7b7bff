"""``beeaudio device ...``: install-model, run, status, requeue, rollback, selftest, calibrate (a thin layer
over the agent).

Found by ``beeaudio.cli`` through the ``beeaudio.commands`` entry point. Everything heavy is imported inside
the handlers so that ``beeaudio --help`` stays quick on a Pi. Failures print one line and exit with the
codes of ``beeaudio --help``: 1 for a refused bundle or a failed check, 2 for a configuration that cannot
work, 3 when ``run --once`` could not upload everything in time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from beeaudio.core.console import guarded
from beeaudio.core.errors import EXIT_FAILURE, EXIT_USAGE

log = logging.getLogger("beeaudio.device")


def _config(args: argparse.Namespace, *, optional: bool = False):  # -> DeviceConfig
    """The configuration a command works with: ``--config``, else /etc/beeaudio/device.toml if present.

    Without either, ``--state-dir`` alone gives the defaults in that folder. With none of the three there is
    nothing to work on: the command refuses rather than create /var/lib/beeaudio behind the user's back
    (unless it is ``optional``: a self-test of a given bundle needs no state).
    """
    from dataclasses import replace

    from beeaudio.device.config import DEFAULT_CONFIG_PATH, ConfigError, DeviceConfig, load_config

    state_dir = getattr(args, "state_dir", None)
    if args.config is not None:
        config = load_config(Path(args.config))
    elif DEFAULT_CONFIG_PATH.is_file():
        config = load_config(DEFAULT_CONFIG_PATH)
    elif state_dir or optional:
        config = DeviceConfig()
    else:
        raise ConfigError(
            f"no configuration: {DEFAULT_CONFIG_PATH} does not exist; pass --config FILE (a commented "
            "example is device/device.example.toml) or --state-dir DIR to use the defaults in DIR"
        )
    if state_dir:
        config = replace(config, device=replace(config.device, state_dir=Path(state_dir).resolve()))
    return config


def _recording_rate(config) -> int | None:  # type: ignore[no-untyped-def]
    return config.microphone.sample_rate if config.source.kind == "microphone" else None


def _store(config):  # type: ignore[no-untyped-def]  # -> ModelStore, with the configured child check
    from beeaudio.device.modelstore import ChildCheck, ModelStore

    m = config.model
    return ModelStore(
        root=config.model_dir,
        child=ChildCheck(timeout_s=m.check_timeout_s, memory_limit_mb=m.check_memory_mb),
    )


def _when(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, tz=UTC).isoformat(timespec="seconds") if moment else None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d`` → seconds (argparse type for ``--older-than``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    factor = units.get(value[-1:])
    number = value[:-1] if factor else value
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90, 30m, 2h, 7d)") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    return seconds


def _install_model(args: argparse.Namespace) -> int:
    from beeaudio.device.modelstore import ModelStoreError

    config = _config(args)
    store = _store(config)
    try:
        installed = store.install(
            source=Path(args.bundle),
            runtime=config.model.runtime or None,
            recording_rate=_recording_rate(config),
            num_threads=config.model.num_threads,
        )
    except ModelStoreError as exc:
        print(f"beeaudio device install-model: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"installed {installed.describe()} in {store.root}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from beeaudio.device.agent import Agent
    from beeaudio.device.config import ConfigError

    config = _config(args)
    config.check_for_run()
    if args.once and config.source.kind == "microphone" and not args.input:
        raise ConfigError("--once works off a spool folder or files, not a live microphone")
    agent = Agent(config=config, once=args.once, inputs=[Path(p) for p in args.input or []])
    return agent.run(drain_timeout_s=args.drain_timeout)


def _status(args: argparse.Namespace) -> int:
    from beeaudio.device.health import STATUS_FILE, read_status
    from beeaudio.device.modelstore import ModelStoreError
    from beeaudio.device.outbox import Outbox

    config = _config(args)
    store = _store(config)
    try:
        current = store.current()
        previous = store.previous()
    except ModelStoreError as exc:
        current = previous = None
        print(f"warning: {exc}", file=sys.stderr)
    agent = read_status(path=config.state_dir / STATUS_FILE)
    report: dict[str, object] = {
        "device_id": config.device.device_id,
        "hive_id": config.device.hive_id,
        "agent": agent.to_json(),
        "model": current.describe() if current else None,
        "previous_model": previous.describe() if previous else None,
        "refused_bundles": len(store.refusals()),
        "calibration": _calibration_line(config, current_path=store.current_path() if current else None),
    }
    status = None
    if config.outbox_path.is_file():
        try:
            with Outbox(
                path=config.outbox_path, max_events=config.outbox.max_events, read_only=True
            ) as outbox:
                status = outbox.status()
        except sqlite3.Error as exc:  # e.g. a full disk: the agent's loops are what matters then
            report["outbox"] = f"unreadable ({config.outbox_path}: {exc})"
    else:
        report["outbox"] = f"none yet at {config.outbox_path}"
    if status is not None:
        report.update(
            outbox_depth=status.depth,
            dropped_events=status.dropped_events,
            dead_letters=status.dead_letters,
            dead_lettered=status.dead_lettered,
            requeued_events=status.requeued_events,
            uploaded_events=status.uploaded_events,
            last_upload=_when(status.last_upload_at),
            files_done=status.files_done,
            files_quarantined=status.files_quarantined,
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "agent":
            print(f"{'agent':18} {agent.summary}")
            for loop in agent.loops:
                print(f"  {loop.name:16} {_loop_line(loop)}")
        else:
            print(f"{key:18} {value}")
    return 0


def _calibration_line(config, *, current_path: Path | None) -> str:  # type: ignore[no-untyped-def]
    """What `status` says about the hive's baseline for the current model (none installed: nothing to say)."""
    from beeaudio.core.bundle import BundleError, read_bundle
    from beeaudio.device.calibration import baseline_status

    if current_path is None:
        return "no model installed"
    try:
        manifest = read_bundle(current_path).manifest
    except BundleError as exc:
        return f"unknown (the current model cannot be read: {exc})"
    status = baseline_status(
        config=manifest.feature_config,
        needed=manifest.normalization is not None,
        state_dir=config.state_dir,
        hive_id=config.device.hive_id,
    )
    return status.line()


def _parse_time(text: str) -> datetime:
    """``2024-05-01``, ``2024-05-01T06:00``, ``2024-05-01T06:00+02:00`` → an aware datetime (naive = UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an ISO 8601 time (e.g. 2024-05-01T06:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _calibrate(args: argparse.Namespace) -> int:
    from beeaudio.core.baseline import remove_baseline
    from beeaudio.core.bundle import BundleError, read_bundle
    from beeaudio.device.calibration import CalibrationError, calibrate
    from beeaudio.device.modelstore import ModelStoreError

    config = _config(args)
    store = _store(config)
    try:
        path = Path(args.bundle) if args.bundle else store.current_path()
        manifest = read_bundle(path).manifest
    except (BundleError, ModelStoreError, OSError, ValueError) as exc:
        print(
            f"beeaudio device calibrate: error: no model to calibrate for ({exc}); install one first "
            "(the baseline is computed with the model's own features) or pass --bundle",
            file=sys.stderr,
        )
        return EXIT_USAGE
    features = manifest.feature_config
    if args.forget:
        gone = remove_baseline(state_dir=config.state_dir, config=features)
        what = "removed the" if gone else "there was no"
        print(f"{what} hive baseline for feature config {features.fingerprint()}")
        return 0
    inputs = [Path(p) for p in args.input or []] or [config.archive_dir]
    least = manifest.normalization.min_windows if manifest.normalization is not None else 1
    try:
        result = calibrate(
            paths=inputs,
            config=features,
            state_dir=config.state_dir,
            hive_id=config.device.hive_id,
            patterns=config.source.patterns,
            name_time_formats=config.source.name_time_formats,
            name_timezone=config.source.name_timezone,
            since=args.since,
            until=args.until,
            min_windows=args.min_windows or max(config.calibration.min_windows, least),
            save=not args.dry_run,
        )
    except (CalibrationError, FileNotFoundError) as exc:
        print(f"beeaudio device calibrate: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    b = result.baseline
    skipped = f"; left out by the signal check: {b.skipped}" if b.skipped else ""
    unreadable = f"; {len(result.skipped_files)} recordings unreadable" if result.skipped_files else ""
    print(f"hive baseline from {b.windows} windows ({b.seconds / 60:.1f} min) of {result.files} recordings"
          f"{skipped}{unreadable}")  # fmt: skip
    if args.dry_run:
        print("dry run: nothing saved")
        return 0
    use = (
        "the current model uses it from its next recording (a running agent need not be restarted)"
        if manifest.normalization is not None
        else "the current model does not use a hive baseline; it is kept for models with this feature config"
    )
    print(f"saved {result.path} (feature config {b.fingerprint}); {use}")
    return 0


def _loop_line(loop) -> str:  # type: ignore[no-untyped-def]  # LoopState
    parts = ["running" if loop.running else "NOT RUNNING"]
    if loop.last_ok_at:
        parts.append(f"last ok {_when(loop.last_ok_at)}")
    if loop.failing:
        parts.append(
            f"FAILING ({loop.failures} in a row, last {_when(loop.last_error_at)}): {loop.last_error}"
        )
    elif loop.last_error:
        parts.append(f"last error {_when(loop.last_error_at)}: {loop.last_error}")
    return "; ".join(parts)


def _requeue(args: argparse.Namespace) -> int:
    config = _config(args)
    if not config.outbox_path.is_file():
        print(f"no outbox at {config.outbox_path}: nothing to requeue")
        return 0
    try:
        return _requeue_in(args, config=config)
    except sqlite3.Error as exc:  # e.g. a full disk: say so in one line
        raise OSError(f"cannot change the outbox {config.outbox_path}: {exc}") from exc


def _requeue_in(args: argparse.Namespace, *, config) -> int:  # type: ignore[no-untyped-def]
    from beeaudio.device.outbox import Outbox

    filters = {
        "older_than_s": args.older_than,
        "reason_contains": args.reason,
        "status": args.status,
        "event_ids": args.event_id,
    }
    with Outbox(path=config.outbox_path, max_events=config.outbox.max_events) as outbox:
        if not args.all and all(value is None for value in filters.values()):
            groups = outbox.dead_letter_summary()
            total = sum(g["count"] for g in groups)
            print(f"{total} dead letters" + (":" if groups else ""))
            for g in groups:
                print(f"  {g['count']:6}  HTTP {g['status']}  since {_when(g['oldest'])}  {g['reason']}")
            print(
                "beeaudio device requeue: error: say which to put back: --all, or --reason TEXT, "
                "--status CODE, --older-than DURATION, --event-id ID",
                file=sys.stderr,
            )
            return EXIT_USAGE
        result = outbox.requeue(**filters)
    line = f"requeued {result.requeued} dead-lettered events to the outbox"
    extras = []
    if result.already_pending:
        extras.append(f"{result.already_pending} were pending again already")
    if result.dropped:
        extras.append(f"{result.dropped} oldest pending events dropped to keep [outbox] max_events")
    print(
        line
        + (f" ({'; '.join(extras)})" if extras else "")
        + "; a running agent sends them at its next upload"
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from beeaudio.device.modelstore import ModelStoreError

    store = _store(_config(args))
    try:
        installed = store.rollback()
    except ModelStoreError as exc:
        print(f"beeaudio device rollback: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"rolled back to {installed.describe()}")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    """Check the whole chain without a microphone: runtime, bundle (checksum + self-test), decoding, features,
    inference on a generated recording, and that the state folder takes an outbox."""
    import numpy as np

    from beeaudio.core.audio import write_wav
    from beeaudio.core.inference import RUNTIMES
    from beeaudio.device.agent import Identity, StageTimer, analyse_file
    from beeaudio.device.modelstore import ModelStoreError, verify_bundle
    from beeaudio.device.outbox import Outbox

    config = _config(args, optional=args.bundle is not None)
    # find_spec, not import: importing tensorflow just to list it would load it into this process.
    installed = [name for name in RUNTIMES if importlib.util.find_spec(name) is not None]
    print(f"python {sys.version.split()[0]}, runtimes installed: {', '.join(installed) or 'none'}")
    store = _store(config)
    try:
        path = Path(args.bundle) if args.bundle else store.current_path()
        # In a child process first: a bundle that crashes the runtime is a FAIL line, not a dead command.
        classifier = verify_bundle(
            path=path,
            runtime=config.model.runtime or None,
            recording_rate=_recording_rate(config),
            num_threads=config.model.num_threads,
            child=store.child,
        )
    except ModelStoreError as exc:
        print(f"FAIL model: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    m = classifier.manifest
    print(f"ok   model {m.model_name} {m.model_version} ({m.quantization}) on {classifier.runtime}: "
          f"checksum and self-test passed (in a child process, then here)")  # fmt: skip
    timer = StageTimer()
    with tempfile.TemporaryDirectory(prefix="beeaudio-selftest-") as tmp:
        rate = 16000
        t = np.arange(rate * 10) / rate
        rng = np.random.default_rng(0)
        signal = 0.2 * np.sin(2 * np.pi * 250 * t) + 0.05 * rng.standard_normal(t.size)
        clip = write_wav(Path(tmp) / "20240101-000000.wav", audio=signal.astype(np.float32), sample_rate=rate)
        started = time.perf_counter()
        events = analyse_file(
            path=clip,
            classifier=classifier,
            identity=Identity(device_id="selftest", hive_id="selftest"),
            source_id="selftest",
            name_time_formats=config.source.name_time_formats,
            timer=timer,
        )
        elapsed = time.perf_counter() - started
        assert events is not None
        for event in events:
            event.validate()
        with Outbox(path=Path(tmp) / "outbox.sqlite", max_events=10) as outbox:
            outbox.add_events(events)
    stage = timer.mean_ms()
    print(f"ok   analysed 10 s of audio: {len(events)} windows in {elapsed * 1e3:.0f} ms (per window: "
          f"decode {stage['decode']:.2f}, features {stage['features']:.2f}, inference "
          f"{stage['inference']:.2f} ms)")  # fmt: skip
    heavy = sorted(name for name in ("tensorflow", "librosa", "keras") if name in sys.modules)
    print(f"ok   heavy modules loaded: {heavy or 'none'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "device",
        help="the hive device agent (install-model, run, status, ...)",
        description="The agent that runs on each hive's device: it classifies recordings from a spool folder "
        "or a microphone, keeps every reading in a local outbox until the collector has it, and takes new "
        "models over the air. Every action reads the device's TOML configuration (--config, default "
        "/etc/beeaudio/device.toml; a commented example is device/device.example.toml).",
    )
    sub = parser.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="the device's TOML configuration (default /etc/beeaudio/device.toml if it exists)",
        )
        p.add_argument(
            "--state-dir",
            type=Path,
            metavar="DIR",
            help="the folder for models, outbox and spool, instead of [device] state_dir; without a "
            "configuration file, the defaults in this folder",
        )

    p = sub.add_parser(
        "install-model",
        help="verify a .beemodel (checksum, self-test) and switch to it",
        description="Check a model bundle as the agent would (format, checksum, self-test on this device's "
        "runtime, that the recorder's rate covers its band), copy it into the model store and make it the "
        "current model; the one before stays for `beeaudio device rollback`. A running agent switches at "
        "its next recording.",
    )
    p.add_argument("bundle", metavar="FILE", help="the .beemodel bundle to install")
    common(p)
    p.set_defaults(func=guarded("device install-model", _install_model))

    p = sub.add_parser(
        "run",
        help="run the agent (until SIGTERM, or --once over the backlog)",
        description="Classify recordings as they are finished, keep the events in the outbox and upload "
        "them to the collector, until SIGTERM or Ctrl-C (systemd: device/beeaudio-device.service). With "
        "--once: work off what is there, wait for the uploads, then exit (3 if the outbox did not empty).",
    )
    common(p)
    p.add_argument("--once", action="store_true", help="analyse what is there, upload it, then exit")
    p.add_argument(
        "--input", action="append", type=Path, metavar="PATH", help="analyse this file or folder (repeatable)"
    )
    p.add_argument("--drain-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="with --once: seconds to wait for the outbox to empty (default 120)")  # fmt: skip
    p.set_defaults(func=guarded("device run", _run))

    p = sub.add_parser(
        "status",
        help="agent loops, current model, outbox depth, dropped events, last upload",
        description="What the device holds: whether the agent runs and how each of its loops (analysis, "
        "upload, heartbeat, model updates, recorder) is doing, the current and previous model, the outbox "
        "(events waiting, dropped, dead letters, uploaded, the last upload) and the recordings done and "
        "quarantined.",
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=guarded("device status", _status))

    p = sub.add_parser(
        "requeue",
        help="put dead-lettered events back into the outbox",
        description="Events the collector refused one by one (e.g. 422 'in the future' from a device "
        "clock that was wrong) wait in the dead-letter table. Once the cause is fixed, put them back: the "
        "agent sends them again at its next upload (a running agent need not be stopped). Without an "
        "option, lists the dead letters by reason. Filters combine (all must match).",
    )
    common(p)
    p.add_argument("--all", action="store_true", help="every dead letter")
    p.add_argument("--reason", metavar="TEXT", help="those whose refusal contains TEXT (any case)")
    p.add_argument("--status", type=int, metavar="CODE", help="those refused with this HTTP status")
    p.add_argument("--older-than", type=parse_duration, metavar="DURATION",
                   help="those dead-lettered at least this long ago (90, 30m, 2h, 7d)")  # fmt: skip
    p.add_argument("--event-id", action="append", metavar="ID", help="this event (repeatable)")
    p.set_defaults(func=guarded("device requeue", _requeue))

    p = sub.add_parser(
        "rollback",
        help="switch back to the previous model",
        description="Make the previous model the current one again (a running agent switches at its next "
        "recording).",
    )
    common(p)
    p.set_defaults(func=guarded("device rollback", _rollback))

    p = sub.add_parser(
        "calibrate",
        help="learn the hive's baseline from recordings of a period you know was normal",
        description="Models trained with `beeaudio train --calibration cmn` hear each hive relative to its "
        "own normal sound (per-hive cepstral mean normalisation). Give this command recordings of a period "
        "you know the colony was normal (a few hours, day and night if you can): it computes the model's "
        "features of every window whose signal is fine and keeps their statistics in the state folder "
        "(calibration/baseline-<feature config>.json). The agent uses the baseline from its next recording; "
        "it survives restarts and model updates with the same feature config. Without --input, the archive "
        'folder ([source] after = "archive" keeps the analysed recordings there).',
    )
    common(p)
    p.add_argument("--input", action="append", type=Path, metavar="PATH",
                   help="a recording or a folder of them from the normal period (repeatable)")  # fmt: skip
    p.add_argument("--since", type=_parse_time, metavar="TIME",
                   help="only recordings starting at or after this time (ISO 8601; naive = UTC)")  # fmt: skip
    p.add_argument("--until", type=_parse_time, metavar="TIME",
                   help="only recordings starting before this time (ISO 8601; naive = UTC)")  # fmt: skip
    p.add_argument("--min-windows", type=int, default=None, metavar="N",
                   help="fewest usable 2 s windows (default [calibration] min_windows, 20)")  # fmt: skip
    p.add_argument("--bundle", type=Path, metavar="FILE",
                   help="use this bundle's features instead of the installed model's")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="compute and print the baseline, save nothing")
    p.add_argument("--forget", action="store_true", help="delete the hive baseline for the model's features")
    p.set_defaults(func=guarded("device calibrate", _calibrate))

    p = sub.add_parser(
        "selftest",
        help="check runtime, model and the analysis chain on generated audio",
        description="Check, without a microphone, everything the agent needs: a TF-Lite runtime, the model "
        "(checksum and self-test), decoding, features and inference on 10 s of generated audio, and that "
        "an outbox can be written. With --bundle no configuration is needed.",
    )
    common(p)
    p.add_argument(
        "--bundle", type=Path, metavar="FILE", help="check this bundle instead of the installed one"
    )
    p.set_defaults(func=guarded("device selftest", _selftest))
