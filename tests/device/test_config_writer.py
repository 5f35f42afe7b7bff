"""The device configuration writer: what ``write_config`` writes, ``load_config`` reads back unchanged."""

from __future__ import annotations

import dataclasses
import stat
import tomllib
from pathlib import Path

import pytest

from beeaudio.device.config import (
    CollectorSection,
    ConfigError,
    DeviceConfig,
    DeviceSection,
    MicrophoneSection,
    ModelSection,
    OutboxSection,
    SourceSection,
    config_to_toml,
    load_config,
    write_config,
)
from tests.fixtures.device import REPO_ROOT

EXAMPLE = REPO_ROOT / "device" / "device.example.toml"

#: Text a TOML writer gets wrong when it borrows JSON's escaping or forgets one of TOML's rules.
AWKWARD_TEXT = (
    'say "hi"',
    "C:\\beeaudio\\spool\\",
    "Bienenstock Nr. 3 – Süd 🐝",
    "tab\there, newline\nthere, cr\r, bell\x07, nul\x00, del\x7f, unit sep\x1f",
    "'''single quotes''' and \"\"\"triple\"\"\"",
    "# not a comment = [not, a, list]",
    "\\u00e9 stays six characters",
    "",
)


def every_option_changed(tmp_path: Path) -> DeviceConfig:
    """A config in which no option has its default value (each of the types the options have)."""
    return DeviceConfig(
        device=DeviceSection(device_id="dev-1", hive_id="hive-1", state_dir=tmp_path / "state"),
        source=SourceSection(
            kind="files",
            path=tmp_path / "in",
            after="keep",
            archive_dir=tmp_path / "archive",
            quarantine_dir=tmp_path / "quarantine",
            patterns=("*.wav",),
            settle_seconds=0.0,
            poll_seconds=0.25,
            name_time_formats=(),
            name_timezone="local",
            windows_per_file=7,
        ),
        microphone=MicrophoneSection(
            alsa_device="plughw:1,0",
            sample_rate=48000,
            channels=2,
            file_seconds=30,
            command=("rec", "{spool}/%Y.wav"),
            restart_initial_s=0.5,
            restart_max_s=1e-3,
        ),
        collector=CollectorSection(
            url="https://hives.example.org",
            token="bdt_s3cret",
            token_file=tmp_path / "token",
            timeout_s=2.5,
            batch_size=1,
            upload_interval_s=0.1,
            backoff_initial_s=1e-05,
            backoff_max_s=1e16,
            heartbeat_interval_s=0.3,
            ota_poll_interval_s=0.0,
            transport="mqtt",
            mqtt_url="mqtts://broker.example.org:8884",
            mqtt_username="dev-1",
            mqtt_password="s3cret",
            mqtt_ca_file=tmp_path / "broker-ca.pem",
        ),
        outbox=OutboxSection(path=tmp_path / "outbox.sqlite", max_events=2**62, keep_files_days=0.1),
        model=ModelSection(store_dir=tmp_path / "models", runtime="tflite_runtime", num_threads=4),
    )


def test_the_default_config_round_trips(tmp_path: Path) -> None:
    path = write_config(path=tmp_path / "device.toml", config=DeviceConfig())
    assert load_config(path) == DeviceConfig()
    text = path.read_text(encoding="utf-8")
    for section in dataclasses.fields(DeviceConfig):
        assert f"[{section.name}]" in text
    # Only the defaults: nothing to write, and an empty file is the default config too.
    assert config_to_toml(config=DeviceConfig(), include_defaults=False) == ""
    empty = write_config(path=tmp_path / "empty.toml", config=DeviceConfig(), include_defaults=False)
    assert load_config(empty) == DeviceConfig()


def test_the_example_config_round_trips(tmp_path: Path) -> None:
    example = load_config(EXAMPLE)
    path = write_config(path=tmp_path / "device.toml", config=example)
    assert load_config(path) == example
    # The same options and values as the example (its commented-out ones are the ones left out).
    assert tomllib.loads(path.read_text(encoding="utf-8")) == tomllib.loads(
        EXAMPLE.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("include_defaults", [True, False])
def test_every_option_and_type_round_trips(tmp_path: Path, include_defaults: bool) -> None:
    config = every_option_changed(tmp_path)
    path = write_config(path=tmp_path / "device.toml", config=config, include_defaults=include_defaults)
    assert load_config(path) == config


def test_only_what_differs_from_the_defaults_is_written(tmp_path: Path) -> None:
    config = DeviceConfig(
        device=DeviceSection(device_id="d", hive_id="h", state_dir=tmp_path),
        collector=CollectorSection(url="http://127.0.0.1:8000", token="t", ota_poll_interval_s=0.0),
    )
    text = config_to_toml(config=config, include_defaults=False, header="line one\nline two")
    assert text.splitlines()[:2] == ["# line one", "# line two"]
    data = tomllib.loads(text)
    assert data == {
        "device": {"device_id": "d", "hive_id": "h", "state_dir": str(tmp_path)},
        "collector": {"url": "http://127.0.0.1:8000", "token": "t", "ota_poll_interval_s": 0.0},
    }
    assert (
        load_config(write_config(path=tmp_path / "d.toml", config=config, include_defaults=False)) == config
    )


@pytest.mark.parametrize("text", AWKWARD_TEXT)
def test_strings_with_quotes_backslashes_control_characters_and_unicode(tmp_path: Path, text: str) -> None:
    config = DeviceConfig(
        device=DeviceSection(
            device_id=text, hive_id=text, state_dir=tmp_path / f"state {text}".replace("\x00", "")
        ),
        source=SourceSection(patterns=(text, "*.wav"), name_time_formats=(text,)),
        collector=CollectorSection(token=text),
    )
    path = write_config(path=tmp_path / "device.toml", config=config)
    assert load_config(path) == config
    assert path.read_bytes().decode("utf-8")  # written as UTF-8, characters beyond the BMP included


def test_json_escaping_would_not_do() -> None:
    """What the old string-concatenation writers got wrong: TOML refuses DEL and surrogate escapes."""
    text = config_to_toml(config={"device": {"hive_id": "🐝\x7f"}})
    assert "\\ud83d" not in text and "\\u007F" in text
    assert tomllib.loads(text)["device"]["hive_id"] == "🐝\x7f"


def test_sections_are_written_as_given_and_relative_paths_stay_relative(tmp_path: Path) -> None:
    path = write_config(
        path=tmp_path / "device.toml",
        config={
            "device": {"device_id": "d", "hive_id": "h", "state_dir": Path("state")},
            "source": {"after": "archive", "settle_seconds": 0, "archive_dir": None},
            "outbox": {},
        },
    )
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {
        "device": {"device_id": "d", "hive_id": "h", "state_dir": "state"},
        "source": {"after": "archive", "settle_seconds": 0},
        "outbox": {},
    }
    config = load_config(path)
    assert config.state_dir == tmp_path / "state"
    assert config.source.settle_seconds == 0.0 and config.archive_dir == tmp_path / "state" / "archive"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"devise": {}}, r"unknown section\(s\) \['devise'\]"),
        ({"collector": {"urll": "x"}}, r"unknown key\(s\) \['urll'\]"),
        ({"collector": {"batch_size": "10"}}, r"batch_size must be an integer"),
        ({"source": {"after": "shred"}}, r"after must be one of"),
        ({"collector": {"batch_size": 2**64}}, r"64-bit"),
        ({"device": {"hive_id": "bad\udcff"}}, r"lone surrogate"),
        ({"device": {"hive_id": {"nested": 1}}}, r"cannot write a dict"),
        ({"device": "not a table"}, r"must be a table"),
    ],
)
def test_what_the_agent_would_refuse_is_refused_before_writing(
    tmp_path: Path, sections: dict, message: str
) -> None:
    target = tmp_path / "device.toml"
    with pytest.raises(ConfigError, match=message):
        write_config(path=target, config=sections)
    assert not target.exists()


def test_a_header_that_is_no_comment_is_refused() -> None:
    with pytest.raises(ConfigError, match="valid TOML"):
        config_to_toml(config=DeviceConfig(), header="a NUL \x00 in a comment")


def test_the_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text("# an older, world-readable config\n", encoding="utf-8")
    path.chmod(0o644)
    config = DeviceConfig(collector=CollectorSection(url="http://x", token="bdt_s3cret"))

    assert write_config(path=path, config=config) == path

    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the device token
    assert load_config(path) == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.toml"]  # no temporary file left behind
    fresh = write_config(path=tmp_path / "sub" / "new.toml", config=config)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
