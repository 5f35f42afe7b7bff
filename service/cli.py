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
from typing import Any

from beeaudio.core.console import guarded
from beeaudio.core.errors import EXIT_OK, EXIT_USAGE, BeeaudioError


class OptionError(BeeaudioError):
    """A command-line option that cannot be used; the message names it."""

    exit_code = EXIT_USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collector", help="the collector service: serve, hives, devices, migrate")
    parser.add_argument("--db", default=None, help="database URL (default: $BEEAUDIO_DATABASE_URL or sqlite)")
    sub = parser.add_subparsers(dest="collector_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    def command(name: str, handler: Callable[[argparse.Namespace], int], **kwargs: Any) -> Any:
        sub_parser = sub.add_parser(name, **kwargs)
        _db_option(sub_parser)
        sub_parser.set_defaults(func=guarded(f"collector {name}", handler))
        return sub_parser

    serve = command("serve", _serve, help="run the HTTP API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--local", action="store_true", help="local/demo mode: generate an admin token if unset"
    )
    serve.add_argument("--log-level", default="info")

    command("migrate", _migrate, help="bring the database schema to the latest revision")

    add_hive = command("add-hive", _add_hive, help="create a hive; prints its id")
    add_hive.add_argument("--name", required=True)
    add_hive.add_argument("--hive-id", default=None)
    add_hive.add_argument(
        "--params", default=None, help='state-parameter overrides as JSON, e.g. {"enter_swarm": 0.7}'
    )

    add_device = command("add-device", _add_device, help="register a device of a hive; prints its token once")
    add_device.add_argument("--hive", required=True, help="hive id")
    add_device.add_argument("--device-id", default=None)

    revoke = command("revoke-device", _revoke, help="revoke a device's token")
    revoke.add_argument("device_id")

    list_hives = command("list-hives", _list_hives, help="hives with their current state")
    list_hives.add_argument("--json", action="store_true")


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=argparse.SUPPRESS, help="database URL (overrides BEEAUDIO_DATABASE_URL)"
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

    # Alembic logs every step at INFO; the user wants the result, which beeaudio.collector.migrate logs.
    logging.getLogger("alembic").setLevel(logging.WARNING)

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
    from beeaudio.collector.settings import resolve_admin_token

    settings = _settings(args, local=args.local)
    token, generated = resolve_admin_token(settings)
    if settings.mode == "local":
        where = settings.admin_token_file()
        if generated or where.is_file():
            print(f"local mode: admin token {token} (kept in {where})", flush=True)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from beeaudio.collector import migrate
    from beeaudio.collector.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.database_url)
    revision = migrate.upgrade(engine=engine)
    engine.dispose()
    print(f"database at revision {revision}")
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


def _add_hive(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.hives import create_hive

    overrides = _params(args.params)
    context = _context(args)
    status = create_hive(
        engine=context.engine,
        defaults=context.defaults,
        name=args.name,
        hive_id=args.hive_id,
        overrides=overrides,
        now_ms=context.clock_ms(),
    )
    print(status["hive_id"])
    return EXIT_OK


def _add_device(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.devices import create_device

    context = _context(args)
    device = create_device(
        engine=context.engine, hive_id=args.hive, device_id=args.device_id, now_ms=context.clock_ms()
    )
    print(f"device_id {device.device_id}")
    print(f"token {device.token}")
    print("(the token is shown only this once; the collector keeps only its hash)", flush=True)
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from beeaudio.collector.store.devices import revoke_device

    context = _context(args)
    revoke_device(engine=context.engine, device_id=args.device_id, now_ms=context.clock_ms())
    print(f"revoked {args.device_id}")
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
