"""``beeaudio device ...`` as a user types it: a missing or bad configuration is one line and exit 2, never a
traceback, and nothing is created behind the user's back."""

from __future__ import annotations

from pathlib import Path

import pytest

from beeaudio.core.errors import EXIT_FAILURE, EXIT_USAGE
from beeaudio.device.config import DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR
from tests.fixtures.device import run_cli

ACTIONS = (
    ("install-model", "x.beemodel"),
    ("run", "--once"),
    ("status",),
    ("rollback",),
    ("selftest",),
)


def each_command(actions: tuple[tuple[str, ...], ...], *, fast: int) -> list:
    """One parameter per command; all but ``fast`` marked slow: each is a ~0.4 s subprocess, so the fast
    loop checks one command per test (a different one in each) and the full suite every one."""
    return [
        pytest.param(action, id=action[0], marks=() if i == fast else pytest.mark.slow)
        for i, action in enumerate(actions)
    ]


def one_line(result, *, code: int, needle: str) -> None:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and needle in errors[0], result.stderr


@pytest.mark.parametrize("action", each_command(ACTIONS, fast=0))
def test_a_missing_configuration_file_is_one_line(action: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "device.toml"
    result = run_cli("device", *action, "--config", str(missing), cwd=tmp_path)
    one_line(result, code=EXIT_USAGE, needle="no such configuration file")


@pytest.mark.parametrize("action", each_command(ACTIONS, fast=1))
def test_a_broken_configuration_file_is_one_line(action: tuple[str, ...], tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text("[device\nhive_id = 3\n")
    one_line(
        run_cli("device", *action, "--config", str(config), cwd=tmp_path), code=EXIT_USAGE, needle="TOML"
    )


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason=f"{DEFAULT_CONFIG_PATH} exists on this machine")
@pytest.mark.parametrize("action", each_command(ACTIONS[:4], fast=2))
def test_no_configuration_at_all_creates_nothing(action: tuple[str, ...], tmp_path: Path) -> None:
    existed = DEFAULT_STATE_DIR.exists()
    result = run_cli("device", *action, cwd=tmp_path)
    one_line(result, code=EXIT_USAGE, needle="--state-dir")
    assert DEFAULT_STATE_DIR.exists() == existed, f"{DEFAULT_STATE_DIR} was created"


def test_a_refused_bundle_is_a_failure_not_a_usage_error(tmp_path: Path) -> None:
    bundle = tmp_path / "broken.beemodel"
    bundle.write_bytes(b"not a zip")
    result = run_cli(
        "device", "install-model", str(bundle), "--state-dir", str(tmp_path / "state"), cwd=tmp_path
    )
    one_line(result, code=EXIT_FAILURE, needle="not a model bundle")
    assert not (tmp_path / "state" / "models" / "current").exists()
