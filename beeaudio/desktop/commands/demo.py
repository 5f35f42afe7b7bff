"""``beeaudio demo``: a synthetic apiary, a trained model, a collector and one device agent per hive."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from beeaudio.core.console import exit_code_of, guarded, require_extra

if TYPE_CHECKING:
    from beeaudio.desktop.demo.report import DemoResult

#: The logger the demo narrates its steps on (its modules log on children of it).
DEMO_LOGGER = "beeaudio.desktop.demo"


#: The demo trains a model and runs the collector: the ``train`` and ``collector`` extras.
DEMO_MODULES = ("tensorflow", "keras", "fastapi", "uvicorn", "sqlalchemy", "alembic")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system on a synthetic apiary and show every hive's state",
        description="Generate a small synthetic apiary (one hive starts to swarm), train and export a model "
        "(cached in --out), start the collector on SQLite, run one device agent per hive over its recordings "
        "and print the hive status table. With --serve the collector keeps running for the dashboard.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("beeaudio-demo"), help="working folder (default: %(default)s)"
    )
    parser.add_argument("--hives", type=int, default=4, help="number of hives (default: %(default)s)")
    parser.add_argument(
        "--swarming", type=int, default=1, help="how many of them swarm (default: %(default)s)"
    )
    parser.add_argument(
        "--hours", type=float, default=6.0, help="hours of history to generate (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the synthetic apiary (default: %(default)s)"
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep the collector running and print the dashboard URL"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="collector port (default: 8000 with --serve, else any)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=guarded("demo", _handle))


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_ready(result: DemoResult) -> None:
    from beeaudio.desktop.demo.report import format_notes, format_status_table

    print()
    print(format_status_table(result))
    print()
    print(format_notes(result))
    print()
    print(f"Dashboard:  {result.dashboard_url}")
    print(f"REST API:   {result.api_url}/docs   (admin token in {result.out}/run/tokens.json)")
    print("The collector keeps running; press Ctrl-C to stop it.", flush=True)


def _handle(args: argparse.Namespace) -> int:
    require_extra(extra="all", modules=DEMO_MODULES, command="demo")
    # Imported here: `beeaudio --help` does not pay for the demo's imports.
    from beeaudio.desktop.demo.errors import DemoError
    from beeaudio.desktop.demo.report import format_notes, format_status_table
    from beeaudio.desktop.demo.run import run_demo

    # Progress lines read as a narrative, not as log records.
    demo_log = logging.getLogger(DEMO_LOGGER)
    if demo_log.getEffectiveLevel() <= logging.INFO:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        demo_log.addHandler(handler)
        demo_log.setLevel(logging.INFO)
        demo_log.propagate = False
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_demo(
            out=args.out,
            hives=args.hives,
            swarming=args.swarming,
            seed=args.seed,
            serve=args.serve,
            port=args.port,
            progress=not args.no_progress and sys.stderr.isatty(),
            hours=args.hours,
            on_ready=_print_ready,
        )
    except (DemoError, ValueError) as exc:
        print(f"beeaudio demo failed: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        print("\nstopped; the collector is down.")
        return 0
    if not args.serve:
        print()
        print(format_status_table(result))
        print()
        print(format_notes(result))
        print()
        summary = f"{result.events_received} of {result.events_expected} events reached the collector"
        print(
            f"{summary} in {result.seconds.get('total', 0):.0f} s; details in {result.out}/demo-result.json"
        )
        print(f"To look at the dashboard: beeaudio demo --serve --out {args.out}")
    if result.events_received != result.events_expected:
        print(
            f"Only {result.events_received} of {result.events_expected} events reached the collector; "
            f"the device logs are in {result.out}/run/logs",
            file=sys.stderr,
        )
    if not result.ok:
        return 1
    return 0
