"""What every command shares: one error line and one exit code per kind of failure, JSON output, progress.

Command modules of every room (the core's, the desktop's, the device's and the collector's) wrap their
handlers with :func:`guarded`, so that failures read and exit the same way everywhere (the codes are in
:mod:`beeaudio.core.errors` and in ``beeaudio --help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from beeaudio.core.errors import EXIT_FAILURE, EXIT_USAGE, BeeaudioError

Handler = Callable[[argparse.Namespace], int]

#: The exit codes, as ``beeaudio --help`` and the README list them.
EXIT_CODES_HELP = """exit codes:
  0    done
  1    failed on its input: a file that is not audio, a refused bundle, an export that failed its checks,
       a collector that refused the operation
  2    not run: wrong options, a configuration that cannot work, a missing optional extra
  3    a deadline passed (device run --once could not upload everything in time)
  130  interrupted (Ctrl-C)"""


class MissingExtraError(BeeaudioError):
    """A command needs an optional part of beeaudio that is not installed; the message says what to run."""

    exit_code = EXIT_USAGE


def require_extra(*, extra: str, modules: Sequence[str], command: str) -> None:
    """Refuse at once, before any work, when ``modules`` of the ``extra`` are not installed.

    ``find_spec`` only looks: nothing is imported (TensorFlow takes seconds to import).
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"'beeaudio {command}' needs {', '.join(missing)}, which is not installed: "
            f'pip install "beeaudio[{extra}]" (in a checkout: pip install -e ".[{extra}]")'
        )


def error_line(*, command: str, exc: BaseException) -> str:
    return f"beeaudio {command}: error: {exc}"


def exit_code_of(exc: BaseException) -> int:
    """:class:`BeeaudioError` carries its code; a bad value is usage (2); anything else on disk failed (1)."""
    if isinstance(exc, BeeaudioError):
        return exc.exit_code
    if isinstance(exc, ValueError):
        return EXIT_USAGE
    return EXIT_FAILURE


def guarded(name: str, handler: Handler) -> Handler:
    """Turn an expected failure into one ``beeaudio NAME: error: ...`` line and its exit code.

    Expected: any :class:`BeeaudioError`, a ``ValueError`` from an option value, an ``OSError`` on a file the
    user named. Anything else is a bug and keeps its traceback.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:
            raise  # the reader of our output went away (`| head`): beeaudio.cli ends quietly
        except (BeeaudioError, ValueError, OSError) as exc:
            print(error_line(command=name, exc=exc), file=sys.stderr)
            return exit_code_of(exc)

    return run


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal unless ``-q``; ``--progress`` forces them (e.g. into a log)."""
    quiet = getattr(args, "quiet", False)
    return (not quiet and sys.stderr.isatty()) or bool(getattr(args, "progress", False))


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))
