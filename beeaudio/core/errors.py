"""One base for the errors beeaudio raises on purpose, and the exit codes every command ends with.

A command that fails for a reason the user can act on (a file that is not audio, a refused bundle, a
configuration that cannot work) prints one line and exits with the code of that kind of failure; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

#: The command did what was asked.
EXIT_OK = 0
#: The command ran and failed on its input: bad audio, a refused bundle, an export that failed its checks.
EXIT_FAILURE = 1
#: The command was not run: wrong options, a configuration that cannot work, a missing optional extra.
EXIT_USAGE = 2
#: A deadline passed before the work was done (e.g. ``device run --once`` could not upload everything).
EXIT_TIMEOUT = 3
#: Stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


class BeeaudioError(Exception):
    """Base of every error beeaudio raises for a reason the user can act on; the message says what to do."""

    exit_code: int = EXIT_FAILURE
