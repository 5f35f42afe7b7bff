"""What every command shares: one error line per expected failure, JSON output, percentages, progress.

Command modules of every room (the core's, the desktop's, the device's and the collector's) use these so
that failures read and exit the same way everywhere (exit codes: :mod:`beeaudio.core.errors`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from beeaudio.core.errors import EXIT_USAGE, BeeaudioError

#: Exit code of a command whose input or options could not be used (kept for the existing commands).
EXIT_ERROR = EXIT_USAGE

Handler = Callable[[argparse.Namespace], int]


def guarded(name: str, handler: Handler) -> Handler:
    """Turn an expected failure into one ``beeaudio NAME: error: ...`` line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (BeeaudioError, ValueError, FileNotFoundError) as exc:
            print(f"beeaudio {name}: error: {exc}", file=sys.stderr)
            return EXIT_ERROR

    return run


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal unless ``-q``; ``--progress`` forces them (e.g. into a log)."""
    quiet = getattr(args, "quiet", False)
    return (not quiet and sys.stderr.isatty()) or bool(getattr(args, "progress", False))


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))
