"""``beeaudio collector`` chores on the database: they go through the store, and every refusal is one
``beeaudio collector CMD: error: ...`` line with exit 1 (refused) or 2 (options that cannot work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beeaudio.core.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    from beeaudio.cli import main

    for name in ("BEEAUDIO_ENTER_SWARM", "BEEAUDIO_EXIT_SWARM", "BEEAUDIO_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    db = f"sqlite:///{tmp_path / 'c.db'}"

    def _run(*args: str) -> tuple[int, str, list[str]]:
        capsys.readouterr()
        code = main(["-q", "collector", *args, "--db", db])
        captured = capsys.readouterr()
        return code, captured.out, captured.err.strip().splitlines()

    return _run


def test_chores(run) -> None:
    code, out, _ = run(
        "add-hive", "--name", "North 3", "--hive-id", "north-3", "--params", '{"min_events": 5}'
    )
    assert (code, out.strip()) == (EXIT_OK, "north-3")
    code, out, _ = run("add-device", "--hive", "north-3", "--device-id", "pi-1")
    assert code == EXIT_OK and "token bdt_" in out
    code, out, _ = run("list-hives", "--json")
    hives = json.loads(out)
    assert [h["hive_id"] for h in hives] == ["north-3"] and hives[0]["params"]["min_events"] == 5
    assert run("revoke-device", "pi-1")[:2] == (EXIT_OK, "revoked pi-1\n")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("add-device", "--hive", "nope"), EXIT_FAILURE, "hive 'nope' does not exist"),
        (("revoke-device", "nope"), EXIT_FAILURE, "device 'nope' does not exist"),
        (("add-hive", "--name", "x", "--params", "{not json"), EXIT_USAGE, "--params is not JSON"),
        (("add-hive", "--name", "x", "--params", "[1]"), EXIT_USAGE, "JSON object"),
        (("add-hive", "--name", "x", "--params", '{"enter_swarm": 2}'), EXIT_USAGE, "enter_swarm"),
        (("add-hive", "--name", "x", "--params", '{"enter": 0.7}'), EXIT_USAGE, "unknown state parameter"),
    ],
)
def test_refusals_are_one_line_with_their_exit_code(run, args, code: int, words: str) -> None:
    got, out, err = run(*args)
    assert got == code and out == ""
    command = args[0]
    assert len(err) == 1 and err[0].startswith(f"beeaudio collector {command}: error: "), err
    assert words in err[0]


def test_conflicts_exit_1(run) -> None:
    assert run("add-hive", "--name", "a", "--hive-id", "h1")[0] == EXIT_OK
    code, _, err = run("add-hive", "--name", "again", "--hive-id", "h1")
    assert code == EXIT_FAILURE and err == ["beeaudio collector add-hive: error: hive 'h1' already exists"]
    assert run("add-device", "--hive", "h1", "--device-id", "d1")[0] == EXIT_OK
    code, _, err = run("add-device", "--hive", "h1", "--device-id", "d1")
    assert code == EXIT_FAILURE and err == [
        "beeaudio collector add-device: error: device 'd1' already exists"
    ]


def test_settings_that_cannot_work_exit_2(run, monkeypatch) -> None:
    monkeypatch.setenv("BEEAUDIO_ENTER_SWARM", "0.3")  # below exit_swarm (0.4): no hysteresis
    code, _, err = run("list-hives")
    assert code == EXIT_USAGE and len(err) == 1 and "hysteresis" in err[0]
    monkeypatch.setenv("BEEAUDIO_ENTER_SWARM", "lots")
    code, _, err = run("list-hives")
    assert code == EXIT_USAGE and len(err) == 1 and "enter_swarm" in err[0]
