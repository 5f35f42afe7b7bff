"""``beeaudio collector ...``: serve, migrate, and the admin chores that are handier offline.

The chores call the store (:mod:`beeaudio.collector.store`) directly, as the HTTP routes do. A refusal
(unknown hive, id in use) prints one ``beeaudio collector CMD: error: ...`` line and exits 1; options or
settings that cannot work (bad ``--params``, a weak admin token) exit 2. Handlers import FastAPI and
SQLAlchemy only when they run, so ``beeaudio --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beeaudio.core.console import guarded
from beeaudio.core.errors import EXIT_OK, EXIT_USAGE, BeeaudioError
from beeaudio.core.fsio import write_text_atomic


class OptionError(BeeaudioError):
    """A command-line option that cannot be used; the message names it."""

    exit_code = EXIT_USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    # Alembic announces every plugin and step at INFO when it is first imported; a user wants the result.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    parser = subparsers.add_parser(
        "collector",
        help="the collector service: serve, hives, devices, migrate",
        description="The collector: every hive's readings in, a steady hive state and alerts out. Every "
        "command works on the database of --db, else of $BEEAUDIO_DATABASE_URL (default "
        "sqlite:///beeaudio-collector.db in the current folder): give the admin commands the same database "
        "as `serve`. Settings are BEEAUDIO_* environment variables (docs/collector.md).",
    )
    parser.add_argument(
        "--db", default=None, metavar="URL", help="database URL (default: $BEEAUDIO_DATABASE_URL or sqlite)"
    )
    sub = parser.add_subparsers(dest="collector_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    def command(name: str, handler: Callable[[argparse.Namespace], int], **kwargs: Any) -> Any:
        sub_parser = sub.add_parser(name, **kwargs)
        _db_option(sub_parser)
        sub_parser.set_defaults(func=guarded(f"collector {name}", handler))
        return sub_parser

    serve = command(
        "serve",
        _serve,
        help="run the HTTP API with uvicorn",
        description="Serve the REST API, the dashboard (/) and the OpenAPI docs (/docs) until Ctrl-C or "
        "SIGTERM. Needs BEEAUDIO_ADMIN_TOKEN set to a random secret (or --local for a demo). Migrates the "
        "database to the latest schema first.",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for the network, behind "
        "a TLS proxy)",
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument(
        "--local", action="store_true", help="local/demo mode: generate an admin token if unset"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level (default info)",
    )

    command(
        "migrate",
        _migrate,
        help="bring the database schema to the latest revision",
        description="Upgrade the database schema to the latest revision, keeping all data (serve does it "
        "too; run it alone before starting several servers).",
    )

    prune = command(
        "prune",
        _prune,
        help="remove raw events older than the retention (rollups, states, alerts stay)",
        description="Remove the raw events dated more than --days (default $BEEAUDIO_RETENTION_DAYS) days "
        "ago, as the collector's own retention job does every BEEAUDIO_RETENTION_INTERVAL_SECONDS: whole "
        "weeks by dropping their partition on PostgreSQL, batched deletes on SQLite (refused while a "
        "collector serves that SQLite file: it prunes by itself). History, states and alerts are kept. "
        "On PostgreSQL it also creates the coming weeks' partitions.",
    )
    prune.add_argument(
        "--days", type=_positive_days, default=None, metavar="DAYS", help="keep this many days of raw events"
    )

    add_hive = command(
        "add-hive",
        _add_hive,
        help="create a hive; prints its id",
        description="Create a hive and print its id (generated unless --hive-id). Devices are registered "
        "to a hive with add-device.",
    )
    add_hive.add_argument(
        "--name", required=True, help='the hive\'s name as people call it, e.g. "Apiary North / Hive 3"'
    )
    add_hive.add_argument(
        "--hive-id", default=None, metavar="ID", help="the hive's id (default: generated, e.g. hive-1a2b3c4d)"
    )
    add_hive.add_argument(
        "--params",
        default=None,
        metavar="JSON",
        help='hive-state parameter overrides as JSON, e.g. {"enter_swarm": 0.7} (docs/collector.md)',
    )

    add_device = command(
        "add-device",
        _add_device,
        help="register a device of a hive; prints its token once",
        description="Register a device of a hive and issue its token. The token is shown (or written to "
        "--token-file) only this once: the collector keeps only its hash.",
    )
    add_device.add_argument("--hive", required=True, metavar="HIVE_ID", help="the hive the device listens to")
    add_device.add_argument(
        "--device-id",
        default=None,
        metavar="ID",
        help="the device's id (default: generated, e.g. dev-1a2b3c4d)",
    )
    add_device.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the token to FILE (mode 0600) instead of printing it: the device's [collector] "
        "token_file",
    )

    revoke = command(
        "revoke-device",
        _revoke,
        help="revoke a device's token",
        description="Revoke a device's token: its next request gets 401. Its stored readings stay.",
    )
    revoke.add_argument("device_id", metavar="DEVICE_ID", help="the device whose token to revoke")

    rotate = command(
        "rotate-device-token",
        _rotate,
        help="issue a device a new token; the old one stops working",
        description="Issue the device a new token and print it (or write it to --token-file) this once: its "
        "old token gets 401 from now on (a revoked device is admitted again). Put the new token on the "
        "device (its [collector] token_file) and restart its agent. Same as POST /api/v1/devices/ID/token.",
    )
    rotate.add_argument("device_id", metavar="DEVICE_ID", help="the device whose token to replace")
    rotate.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the new token to FILE (mode 0600) instead of printing it",
    )

    list_hives = command(
        "list-hives",
        _list_hives,
        help="hives with their current state",
        description="Every hive with its state, when it was last heard from, and its name.",
    )
    list_hives.add_argument("--json", action="store_true", help="print the full status of each hive as JSON")


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="database URL (overrides BEEAUDIO_DATABASE_URL), e.g. sqlite:///hives.db",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _settings(args: argparse.Namespace, *, local: bool = False) -> Any:
    """The settings from the environment and the options; :class:`SettingsError` (one line) if they are
    not valid."""
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from beeaudio.collector.settings import Settings, SettingsError

    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["database_url"] = args.db
    if local:
        overrides["mode"] = "local"
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings (BEEAUDIO_* or options): {problems}") from exc
    try:
        make_url(settings.database_url)
    except ArgumentError as exc:
        raise SettingsError(f"the database URL is not one SQLAlchemy can use: {exc}") from exc
    return settings


def _context(args: argparse.Namespace) -> Any:
    """An app context for offline chores; these never need the admin secret, so local rules apply."""
    from beeaudio.collector import migrate
    from beeaudio.collector.app import build_context

    context = build_context(_settings(args), offline=True)
    migrate.upgrade(engine=context.engine)
    return context


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from beeaudio.collector.app import create_app
    from beeaudio.collector.leases import sqlite_writer_lock
    from beeaudio.collector.settings import resolve_admin_token

    settings = _settings(args, local=args.local)
    token, generated = resolve_admin_token(settings)
    if settings.mode == "local":
        where = settings.admin_token_file()
        if generated or where.is_file():
            print(f"local mode: admin token {token} (kept in {where})", flush=True)
    # SQLite is one collector process (PostgreSQL replicas coordinate in the database): refuse a second.
    lock = sqlite_writer_lock(database_url=settings.database_url, command="collector serve")
    try:
        app = create_app(settings)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        if lock is not None:
            lock.release()
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from beeaudio.collector import migrate
    from beeaudio.collector.db import make_engine
    from beeaudio.collector.store.hive_state import rederive_stale
    from beeaudio.collector.timeutil import wall_clock_ms

    settings = _settings(args)
    defaults = settings.state_defaults()
    engine = make_engine(settings.database_url)
    revision = migrate.upgrade(engine=engine)
    # Done here, once, rather than by each of several processes started afterwards.
    rederived = rederive_stale(
        engine=engine, defaults=defaults, webhook_urls=settings.webhook_urls(), now_ms=wall_clock_ms()
    )
    engine.dispose()
    print(f"database at revision {revision}")
    if rederived:
        print(f"re-derived the state of {len(rederived)} hive(s) with the current rules")
    return EXIT_OK


def _positive_days(text: str) -> float:
    days = float(text)
    if not days > 0:
        raise argparse.ArgumentTypeError("must be a number of days above 0")
    return days


class JobBusy(BeeaudioError):
    """Another process is running the same background job right now."""


def _prune(args: argparse.Namespace) -> int:
    from beeaudio.collector.leases import (
        RETENTION_JOB,
        claim_job,
        process_holder,
        release_job,
        sqlite_writer_lock,
    )
    from beeaudio.collector.retention import prune
    from beeaudio.collector.timeutil import wall_clock_ms

    settings = _settings(args)
    days = args.days if args.days is not None else settings.retention_days
    # A second writer process on SQLite is refused, as for serve (which prunes by itself).
    lock = sqlite_writer_lock(database_url=settings.database_url, command="collector prune")
    try:
        context = _context(args)
        holder, now_ms = process_holder(), wall_clock_ms()
        # The lease of the replicas' own retention job: never two passes at once.
        if not claim_job(
            engine=context.engine,
            name=RETENTION_JOB,
            holder=holder,
            now_ms=now_ms,
            every_ms=0,
            lease_ms=3_600_000,
        ):
            raise JobBusy("a collector is running the retention job right now; try again when it is done")
        try:
            result = prune(
                engine=context.engine,
                retention_days=days,
                now_ms=now_ms,
                batch_rows=settings.retention_batch_rows,
            )
        finally:
            release_job(engine=context.engine, name=RETENTION_JOB, holder=holder, now_ms=wall_clock_ms())
        context.engine.dispose()
    finally:
        if lock is not None:
            lock.release()
    if days is None:
        print("no retention set (--days or BEEAUDIO_RETENTION_DAYS): every raw event is kept")
    else:
        print(
            f"kept {days:g} days of raw events: dropped {len(result.dropped_partitions)} partition(s), "
            f"deleted {result.deleted_rows} event(s)"
        )
    if result.created_partitions:
        print(f"created partition(s): {', '.join(result.created_partitions)}")
    return EXIT_OK


def _params(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OptionError(f"--params is not JSON ({exc}); e.g. --params '{{\"enter_swarm\": 0.7}}'") from exc
    if not isinstance(params, dict):
        raise OptionError(f"--params must be a JSON object of state parameters, got {params!r}")
    return params


def _new_id(option: str, value: str | None) -> str | None:
    """An id for a new hive or device: held to the pattern the HTTP API holds them to."""
    from beeaudio.core import wire

    if value is not None and not wire.ID_RE.match(value):
        raise OptionError(
            f"{option} {value!r} is not an id the API accepts: 1..{wire.MAX_ID} letters, digits and . _ : -, "
            "starting with a letter or digit"
        )
    return value


def _existing_id(option: str, value: str) -> str:
    """An id to look up: any id stored so far, but nothing no database can compare (a NUL, or a lone
    surrogate, which is how Python hands over argument bytes that are not UTF-8)."""
    from beeaudio.core import wire

    reason = wire.unclean_reason(value, where=option)
    if reason:
        raise OptionError(reason)
    return value


def _show_token(*, token: str, token_file: Path | None) -> None:
    if token_file is not None:
        write_text_atomic(token_file, token + "\n", mode=0o600, durable=True)
        print(f"token written to {token_file} (the collector keeps only its hash)", flush=True)
        return
    print(f"token {token}")
    print("(the token is shown only this once; the collector keeps only its hash)", flush=True)


def _add_hive(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.hives import create_hive

    hive_id = _new_id("--hive-id", args.hive_id)
    overrides = _params(args.params)
    context = _context(args)
    status = create_hive(
        engine=context.engine,
        defaults=context.defaults,
        name=args.name,
        hive_id=hive_id,
        overrides=overrides,
        now_ms=context.clock_ms(),
    )
    print(status["hive_id"])
    return EXIT_OK


def _add_device(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.devices import create_device

    hive_id = _existing_id("--hive", args.hive)
    device_id = _new_id("--device-id", args.device_id)
    context = _context(args)
    device = create_device(
        engine=context.engine, hive_id=hive_id, device_id=device_id, now_ms=context.clock_ms()
    )
    print(f"device_id {device.device_id}")
    _show_token(token=device.token, token_file=args.token_file)
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.devices import revoke_device

    device_id = _existing_id("DEVICE_ID", args.device_id)
    context = _context(args)
    revoke_device(engine=context.engine, device_id=device_id, now_ms=context.clock_ms())
    print(f"revoked {device_id}")
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.devices import rotate_device_token

    device_id = _existing_id("DEVICE_ID", args.device_id)
    context = _context(args)
    device = rotate_device_token(engine=context.engine, device_id=device_id, now_ms=context.clock_ms())
    print(
        f"device_id {device.device_id} (hive {device.hive_id}): new token, the old one is refused from now on"
    )
    _show_token(token=device.token, token_file=args.token_file)
    return EXIT_OK


def _list_hives(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.queries import all_statuses

    context = _context(args)
    statuses = all_statuses(engine=context.engine, defaults=context.defaults, now_ms=context.clock_ms())
    if args.json:
        print(json.dumps(statuses, indent=2))
        return EXIT_OK
    for status in statuses:
        print(
            f"{status['hive_id']:<24} {status['state']:<8} {status['last_seen'] or '-':<26} {status['name']}"
        )
    return EXIT_OK
