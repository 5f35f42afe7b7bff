"""``beeaudio device ...``: install-model, run, status, rollback, selftest (a thin layer over ``device.*``).

Found by ``beeaudio.cli`` through the ``beeaudio.desktop.commands`` entry point. Everything heavy is
imported inside
the handlers so that ``beeaudio --help`` stays quick on a Pi.
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

log = logging.getLogger("beeaudio.device")


def _config(args: argparse.Namespace):  # -> DeviceConfig
    from dataclasses import replace

    from beeaudio.device.config import DEFAULT_CONFIG_PATH, DeviceConfig, load_config

    if args.config is not None:
        config = load_config(Path(args.config))
    elif DEFAULT_CONFIG_PATH.is_file():
        config = load_config(DEFAULT_CONFIG_PATH)
    else:
        config = DeviceConfig()
    if getattr(args, "state_dir", None):
        config = replace(config, device=replace(config.device, state_dir=Path(args.state_dir).resolve()))
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
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"installed {installed.describe()} in {store.root}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from beeaudio.device.agent import Agent
    from beeaudio.device.config import ConfigError

    try:
        config = _config(args)
        config.check_for_run()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.once and config.source.kind == "microphone" and not args.input:
        print("error: --once works off a spool folder or files, not a live microphone", file=sys.stderr)
        return 2
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
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rolled back to {installed.describe()}")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    """Check the whole chain without a microphone: runtime, bundle (checksum + self-test), decoding, features,
    inference on a generated recording, and that the state folder takes an outbox."""
    import numpy as np
    from beeaudio.device.agent import Identity, StageTimer, analyse_file
    from beeaudio.device.modelstore import ModelStore, ModelStoreError, verify_bundle
    from beeaudio.device.outbox import Outbox

    from beeaudio.core.audio import write_wav
    from beeaudio.core.inference import RUNTIMES

    config = _config(args)
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
        return 1
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
    parser = subparsers.add_parser("device", help="the hive device agent (install-model, run, status, ...)")
    sub = parser.add_subparsers(dest="device_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", type=Path, help="device TOML (default /etc/beeaudio/device.toml if present)"
        )
        p.add_argument("--state-dir", type=Path, help="override [device] state_dir")

    p = sub.add_parser("install-model", help="verify a .beemodel (checksum, self-test) and switch to it")
    p.add_argument("bundle", metavar="FILE")
    common(p)
    p.set_defaults(func=_install_model)

    p = sub.add_parser("run", help="run the agent (until SIGTERM, or --once over the backlog)")
    common(p)
    p.add_argument("--once", action="store_true", help="analyse what is there, upload it, then exit")
    p.add_argument("--input", action="append", type=Path, help="analyse this file or folder (repeatable)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="with --once: seconds to wait for the outbox to empty (default 120)")  # fmt: skip
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="current model, outbox depth, dropped events, last upload")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = sub.add_parser("rollback", help="switch back to the previous model")
    common(p)
    p.set_defaults(func=_rollback)

    p = sub.add_parser("selftest", help="check runtime, model and the analysis chain on generated audio")
    common(p)
    p.add_argument("--bundle", type=Path, help="check this bundle instead of the installed one")
    p.set_defaults(func=_selftest)
