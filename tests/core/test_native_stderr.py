"""What compiled code writes to file descriptor 2: routine lines to the debug log, nothing else lost."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from beeaudio.core.native_stderr import native_stderr_to_log

LOGGER = "beeaudio.core.native_stderr"


def native_write(text: str) -> None:
    """As a C library does: straight to the descriptor, past Python's sys.stderr."""
    os.write(2, text.encode())


def test_routine_lines_go_to_the_debug_log_and_the_others_back_to_stderr_unchanged(
    capfdbinary: pytest.CaptureFixture[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        native_stderr_to_log(routine=("[src/libmpg123/",), source="x.mp3", others="keep"),
    ):
        native_write("[src/libmpg123/layer3.c:1774] error: part2_3_length (2208) too large\n")
        native_write("another thread's line\n")
        os.write(2, b"\xff\xfe not UTF-8\n")
        native_write("and one without its newline")
    said = capfdbinary.readouterr().err
    assert said == b"another thread's line\n\xff\xfe not UTF-8\nand one without its newline\n"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "x.mp3: [src/libmpg123/layer3.c:1774] error: part2_3_length (2208) too large")
    ]


def test_with_others_logged_nothing_reaches_stderr_and_the_unknown_is_a_warning(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        native_stderr_to_log(routine=("INFO: ",), source="runtime"),
    ):
        native_write("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n\nsomething new\n")
    assert capfd.readouterr().err == ""
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "runtime: INFO: Created TensorFlow Lite XNNPACK delegate for CPU."),
        (logging.WARNING, "runtime: something new"),
    ]


def test_stderr_is_restored_after_an_exception_and_after_nesting(capfd: pytest.CaptureFixture[str]) -> None:
    with (
        pytest.raises(RuntimeError, match="native call failed"),
        native_stderr_to_log(routine=("quiet",), source="outer", others="keep"),
    ):
        with native_stderr_to_log(routine=("quiet",), source="inner", others="keep"):
            native_write("quiet inner\nloud inner\n")
        raise RuntimeError("native call failed")
    native_write("after\n")
    assert capfd.readouterr().err == "loud inner\nafter\n"


def test_two_threads_never_leave_stderr_pointing_at_a_capture(capfd: pytest.CaptureFixture[str]) -> None:
    """Descriptor 2 is the process's: swaps from two threads that overlapped would restore each other's
    temporary file. They take turns."""

    def decode(name: str) -> None:
        for i in range(50):
            with native_stderr_to_log(routine=("routine",), source=name, others="keep"):
                native_write(f"routine {name} {i}\n")
                native_write(f"{name} {i}\n")

    threads = [threading.Thread(target=decode, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    native_write("the end\n")
    lines = capfd.readouterr().err.splitlines()
    assert lines[-1] == "the end"
    assert sorted(lines[:-1]) == sorted(f"{name} {i}" for name in ("a", "b") for i in range(50))
