"""What compiled libraries write straight to file descriptor 2, sorted out.

The TF-Lite runtimes announce their delegate on every start, TF-Lite's converter prints its settings, and
libsndfile's libmpg123 prints "error: part2_3_length ..." at some block boundaries of MP3s it decodes
correctly. None of it passes through Python's ``sys.stderr`` or logging, so none of it can be filtered
there: :func:`native_stderr_to_log` points descriptor 2 at an anonymous file for the length of the native
call, then sends the lines it recognises as routine to the debug log. The other lines are logged as
warnings (``others="log"``) or written back to the real stderr as they were (``others="keep"``, for calls
during which another thread may write there). Imports only the standard library: a hive device runs this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import BinaryIO, Literal

__all__ = ["native_stderr_to_log"]

log = logging.getLogger(__name__)

#: Descriptor 2 belongs to the whole process: one thread at a time points it elsewhere (the same thread
#: may nest). A lock, not state: it guards the descriptor, which is the state.
_DESCRIPTOR_2 = threading.RLock()


@contextlib.contextmanager
def native_stderr_to_log(
    *, routine: tuple[str, ...], source: str, others: Literal["log", "keep"] = "log"
) -> Iterator[None]:
    """Capture descriptor 2 meanwhile: lines starting with one of ``routine`` go to the debug log as
    ``"<source>: <line>"``; the others to the log at WARNING (``"log"``) or back to stderr unchanged
    (``"keep"``). Nothing is lost either way."""
    with _DESCRIPTOR_2:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon): nothing to tidy
            yield
            return
        try:
            with _capture_file() as capture:
                _flush_python_stderr()
                os.dup2(capture.fileno(), 2)
                try:
                    yield
                finally:
                    _flush_python_stderr()
                    os.dup2(saved, 2)
                    capture.seek(0)
                    _sort_out(capture.read(), routine=routine, source=source, others=others)
        finally:
            os.close(saved)


def _capture_file() -> BinaryIO:
    """An anonymous file in memory where Linux has them (memfd: ~10 µs, where a temporary file on disk
    took 60-90 µs, and this wraps every MP3 block the device decodes), else a temporary file."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return open(os.memfd_create("beeaudio-stderr", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


def _sort_out(
    captured: bytes, *, routine: tuple[str, ...], source: str, others: Literal["log", "keep"]
) -> None:
    kept = []
    for line in captured.splitlines(keepends=True):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            continue
        if text.startswith(routine):
            log.debug("%s: %s", source, text)
        elif others == "log":
            log.warning("%s: %s", source, text)
        else:  # the very bytes, back where they were written
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    data = b"".join(kept)
    while data:
        data = data[os.write(2, data) :]


def _flush_python_stderr() -> None:
    """What Python buffered for stderr goes out before the descriptor moves (there may be no sys.stderr
    at all, in a service started without one)."""
    if sys.stderr is not None:
        sys.stderr.flush()
