"""``beeaudio device ...``: install-model, run, status, rollback, selftest (a thin layer over the agent).

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
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from beeaudio.core.console import guarded
from beeaudio.core.errors import EXIT_FAILURE

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


def _install_model(args: argparse.Namespace) -> int:
    from beeaudio.device.modelstore import ModelStore, ModelStoreError

    config = _config(args)
    store = ModelStore(root=config.model_dir)
    try:
        installed = store.install(
            source=Path(args.bundle),
            runtime=config.model.runtime or None,
            recording_rate=_recording_rate(config),
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
    from beeaudio.device.modelstore import ModelStore, ModelStoreError
    from beeaudio.device.outbox import Outbox

    config = _config(args)
    store = ModelStore(root=config.model_dir)
    try:
        current = store.current()
        previous = store.previous()
    except ModelStoreError as exc:
        current = previous = None
        print(f"warning: {exc}", file=sys.stderr)
    report: dict[str, object] = {
        "device_id": config.device.device_id,
        "hive_id": config.device.hive_id,
        "model": current.describe() if current else None,
        "previous_model": previous.describe() if previous else None,
    }
    if config.outbox_path.is_file():
        with Outbox(path=config.outbox_path, max_events=config.outbox.max_events) as outbox:
            status = outbox.status()
        last = status.last_upload_at
        report.update(
            outbox_depth=status.depth,
            dropped_events=status.dropped_events,
            dead_lettered=status.dead_lettered,
            uploaded_events=status.uploaded_events,
            last_upload=datetime.fromtimestamp(last, tz=UTC).isoformat() if last else None,
            files_done=status.files_done,
            files_quarantined=status.files_quarantined,
        )
    else:
        report["outbox"] = f"none yet at {config.outbox_path}"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:18} {value}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from beeaudio.device.modelstore import ModelStore, ModelStoreError

    store = ModelStore(root=_config(args).model_dir)
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
    from beeaudio.device.modelstore import ModelStore, ModelStoreError, verify_bundle
    from beeaudio.device.outbox import Outbox

    config = _config(args, optional=args.bundle is not None)
    # find_spec, not import: importing tensorflow just to list it would load it into this process.
    installed = [name for name in RUNTIMES if importlib.util.find_spec(name) is not None]
    print(f"python {sys.version.split()[0]}, runtimes installed: {', '.join(installed) or 'none'}")
    try:
        path = Path(args.bundle) if args.bundle else ModelStore(root=config.model_dir).current_path()
        classifier = verify_bundle(
            path=path, runtime=config.model.runtime or None, recording_rate=_recording_rate(config)
        )
    except ModelStoreError as exc:
        print(f"FAIL model: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    m = classifier.manifest
    print(f"ok   model {m.model_name} {m.model_version} ({m.quantization}) on {classifier.runtime}: "
          f"checksum and self-test passed")  # fmt: skip
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
        help="current model, outbox depth, dropped events, last upload",
        description="What the device holds: the current and previous model, the outbox (events waiting, "
        "dropped, dead-lettered, uploaded, the last upload) and the recordings done and quarantined.",
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=guarded("device status", _status))

    p = sub.add_parser(
        "rollback",
        help="switch back to the previous model",
        description="Make the previous model the current one again (a running agent switches at its next "
        "recording).",
    )
    common(p)
    p.set_defaults(func=guarded("device rollback", _rollback))

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
