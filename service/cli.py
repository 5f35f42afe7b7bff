"""``beeaudio collector ...``: serve, migrate, and the admin chores that are handier offline.

Handlers import FastAPI/SQLAlchemy only when they run, so ``beeaudio --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collector", help="the collector service: serve, hives, devices, migrate")
    parser.add_argument("--db", default=None, help="database URL (default: $BEEAUDIO_DATABASE_URL or sqlite)")
    sub = parser.add_subparsers(dest="collector_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    serve = sub.add_parser("serve", help="run the HTTP API with uvicorn")
    _db_option(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--local", action="store_true", help="local/demo mode: generate an admin token if unset"
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema to the latest revision")
    _db_option(migrate)
    migrate.set_defaults(func=_migrate)

    add_hive = sub.add_parser("add-hive", help="create a hive; prints its id")
    _db_option(add_hive)
    add_hive.add_argument("--name", required=True)
    add_hive.add_argument("--hive-id", default=None)
    add_hive.add_argument(
        "--params", default=None, help='state-parameter overrides as JSON, e.g. {"enter_swarm": 0.7}'
    )
    add_hive.set_defaults(func=_add_hive)

    add_device = sub.add_parser("add-device", help="register a device of a hive; prints its token once")
    _db_option(add_device)
    add_device.add_argument("--hive", required=True, help="hive id")
    add_device.add_argument("--device-id", default=None)
    add_device.set_defaults(func=_add_device)

    revoke = sub.add_parser("revoke-device", help="revoke a device's token")
    _db_option(revoke)
    revoke.add_argument("device_id")
    revoke.set_defaults(func=_revoke)

    list_hives = sub.add_parser("list-hives", help="hives with their current state")
    _db_option(list_hives)
    list_hives.add_argument("--json", action="store_true")
    list_hives.set_defaults(func=_list_hives)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=argparse.SUPPRESS, help="database URL (overrides BEEAUDIO_DATABASE_URL)"
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace, *, local: bool = False) -> Any:
    from beeaudio.collector.settings import Settings

    # Alembic logs every step at INFO; the user wants the result, which beeaudio.collector.migrate logs.
    logging.getLogger("alembic").setLevel(logging.WARNING)

    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["database_url"] = args.db
    if local:
        overrides["mode"] = "local"
    return Settings(**overrides)


def _context(args: argparse.Namespace) -> Any:
    """An app context for offline chores; these never need the admin secret, so local rules apply."""
    from beeaudio.collector import migrate
    from beeaudio.collector.app import build_context

    context = build_context(_settings(args), offline=True)
    migrate.upgrade(engine=context.engine)
    return context


def _fail(exc: Exception) -> int:
    detail = getattr(exc, "detail", None) or str(exc)
    log.error("%s", detail)
    return 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from beeaudio.collector.app import create_app
    from beeaudio.collector.settings import SettingsError, resolve_admin_token

    settings = _settings(args, local=args.local)
    try:
        token, generated = resolve_admin_token(settings)
    except SettingsError as exc:
        return _fail(exc)
    if settings.mode == "local":
        where = settings.admin_token_file()
        if generated or where.is_file():
            print(f"local mode: admin token {token} (kept in {where})", flush=True)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from beeaudio.collector import migrate
    from beeaudio.collector.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.database_url)
    revision = migrate.upgrade(engine=engine)
    engine.dispose()
    print(f"database at revision {revision}")
    return 0


def _add_hive(args: argparse.Namespace) -> int:
    from beeaudio.collector.routes_admin import create_hive
    from fastapi import HTTPException

    try:
        params = json.loads(args.params) if args.params else None
        status = create_hive(
            context=_context(args), name=args.name, hive_id=args.hive_id, state_params=params
        )
    except (HTTPException, json.JSONDecodeError) as exc:
        return _fail(exc)
    print(status["hive_id"])
    return 0


def _add_device(args: argparse.Namespace) -> int:
    from beeaudio.collector.routes_admin import create_device
    from fastapi import HTTPException

    try:
        device = create_device(context=_context(args), hive_id=args.hive, device_id=args.device_id)
    except HTTPException as exc:
        return _fail(exc)
    print(f"device_id {device['device_id']}")
    print(f"token {device['token']}")
    print("(the token is shown only this once; the collector keeps only its hash)", flush=True)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from beeaudio.collector.routes_admin import revoke_device
    from fastapi import HTTPException

    try:
        revoke_device(context=_context(args), device_id=args.device_id)
    except HTTPException as exc:
        return _fail(exc)
    print(f"revoked {args.device_id}")
    return 0


def _list_hives(args: argparse.Namespace) -> int:
    from beeaudio.collector.db import read_transaction
    from beeaudio.collector.queries import all_statuses

    context = _context(args)
    with read_transaction(context.engine) as conn:
        statuses = all_statuses(conn, defaults=context.defaults, now_ms=context.clock_ms())
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    for status in statuses:
        print(
            f"{status['hive_id']:<24} {status['state']:<8} {status['last_seen'] or '-':<26} {status['name']}"
        )
    return 0
