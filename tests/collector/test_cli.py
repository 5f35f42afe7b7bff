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
        # Ids the HTTP API refuses are refused here too (issue 14, item 14).
        (("add-hive", "--name", "x", "--hive-id", "north 3"), EXIT_USAGE, "--hive-id 'north 3'"),
        (("add-hive", "--name", "x", "--hive-id", "_north"), EXIT_USAGE, "not an id the API accepts"),
        (("add-hive", "--name", "x", "--hive-id", "h" * 65), EXIT_USAGE, "not an id the API accepts"),
        (("add-hive", "--name", "x", "--hive-id", "a/b"), EXIT_USAGE, "not an id the API accepts"),
        (("add-device", "--hive", "h", "--device-id", "pi 1"), EXIT_USAGE, "--device-id 'pi 1'"),
        (("add-device", "--hive", "h", "--device-id", "pi\udcff"), EXIT_USAGE, "not an id the API accepts"),
        (("add-device", "--hive", "h\udcff"), EXIT_USAGE, "surrogate"),
        (("add-hive", "--name", "North\udcff"), EXIT_USAGE, "surrogate"),
        (("rotate-device-token", "nope"), EXIT_FAILURE, "device 'nope' does not exist"),
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


def test_rotate_device_token(run, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from beeaudio.collector.db import devices, make_engine
    from beeaudio.collector.tokens import token_digest

    assert run("add-hive", "--name", "North", "--hive-id", "north-3")[0] == EXIT_OK
    code, out, _ = run("add-device", "--hive", "north-3", "--device-id", "pi-1")
    old = next(line.split()[1] for line in out.splitlines() if line.startswith("token "))
    token_file = tmp_path / "pi-1.token"
    code, out, err = run("rotate-device-token", "pi-1", "--token-file", str(token_file))
    assert code == EXIT_OK and err == [] and str(token_file) in out
    new = token_file.read_text().strip()
    assert new.startswith("bdt_") and new != old and oct(token_file.stat().st_mode & 0o777) == "0o600"
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(devices.c.token_sha256).where(devices.c.device_id == "pi-1")).scalar()
    engine.dispose()
    assert stored == token_digest(new) != token_digest(old)
    code, out, _ = run("rotate-device-token", "pi-1")
    assert code == EXIT_OK and "token bdt_" in out
