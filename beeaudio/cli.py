"""The ``beeaudio`` command: a thin layer over the library's keyword-only functions.

Each room contributes its own sub-commands through a ``register(subparsers)`` function: the library's own
modules are listed here, the device agent and the collector announce theirs through the
``beeaudio.commands`` entry-point group, so this package never imports them. Handlers import heavy
dependencies (TensorFlow, FastAPI) only when they run, so ``beeaudio --help`` stays fast on a hive device.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from beeaudio import __version__
from beeaudio.core.console import EXIT_CODES_HELP, MissingExtraError, error_line
from beeaudio.core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

_BUILTIN_COMMAND_MODULES = (
    "beeaudio.core.cli",
    "beeaudio.desktop.commands.pipeline",
    "beeaudio.desktop.commands.experiments",
    "beeaudio.desktop.commands.label",
    "beeaudio.desktop.commands.demo",
)

log = logging.getLogger("beeaudio")


def _register_all(subparsers: argparse._SubParsersAction) -> None:
    for module_name in _BUILTIN_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Not installed (the desktop tools on a hive device): leave its commands out. A module that is
            # there but misses a dependency raises on.
            if not exc.name or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise
            continue
        module.register(subparsers)
    seen: set[str] = set()
    for entry in entry_points(group="beeaudio.commands"):
        # The same room can be announced twice (an installed wheel and a checkout's egg-info on sys.path).
        if entry.name in seen:
            continue
        seen.add(entry.name)
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            # A room whose optional dependencies are not installed (e.g. the collector on a hive device)
            # still shows up, with a message saying what to install.
            _register_unavailable(subparsers, name=entry.name, missing=exc.name or "?")
            continue
        register(subparsers)


def _register_unavailable(subparsers: argparse._SubParsersAction, *, name: str, missing: str) -> None:
    extra = {"collector": "collector", "device": "edge"}.get(name, "all")
    parser = subparsers.add_parser(name, help=f"(unavailable: install beeaudio[{extra}])")

    def _fail(_args: argparse.Namespace) -> int:
        error = MissingExtraError(
            f"'beeaudio {name}' needs the module {missing!r}, which is not installed: "
            f'pip install "beeaudio[{extra}]" (in a checkout: pip install -e ".[{extra}]")'
        )
        print(error_line(command=name, exc=error), file=sys.stderr)
        return error.exit_code

    parser.set_defaults(func=_fail)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beeaudio",
        description="Acoustic hive monitor: train a bee-sound classifier, run it on hive devices, "
        "collect every hive's state.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"beeaudio {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_all(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `beeaudio classify ... --json | head`: the reader has gone, which is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
