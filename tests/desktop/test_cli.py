"""The pipeline commands end to end, each in its own process, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.console import MissingExtraError, require_extra
from beeaudio.core.errors import EXIT_FAILURE, EXIT_USAGE
from tests.fixtures.bundles import TINY_MAX_INT8_DROP, TINY_MIN_AGREEMENT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def beeaudio(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "BEEAUDIO_CACHE": os.environ.get("BEEAUDIO_CACHE", "")}
    env.pop("BEEAUDIO_CACHE")
    return subprocess.run(
        [sys.executable, "-P", "-m", "beeaudio.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def one_clear_error(
    result: subprocess.CompletedProcess[str], *needles: str, code: int = EXIT_FAILURE
) -> None:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors, result.stderr
    for needle in needles:
        assert any(needle in line for line in errors), (needle, result.stderr)


def test_help_lists_the_pipeline_and_does_not_load_tensorflow() -> None:
    result = ok(beeaudio("--help"))
    for command in ("synth", "train", "export", "classify", "evaluate", "info"):
        assert command in result.stdout
    for command in ("train", "export", "classify"):
        assert "usage: beeaudio " + command in ok(beeaudio(command, "--help")).stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, beeaudio.cli as c; c.build_parser(); print('tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"


def test_synth_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = ok(beeaudio("synth", "--out", out, "--hives", 2, "--seed", 3, "--seconds", 3, "--recordings", 1))
    assert str(out) in result.stdout
    assert (out / "manifest.csv").is_file()
    assert len(list(out.rglob("*.wav"))) == 2 * 2 * 1


def test_pipeline_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    # The training options and export thresholds are tiny_run's (tests/fixtures_bundle.py).
    run, bundle, cache = tmp_path / "run", tmp_path / "models" / "hive.beemodel", tmp_path / "cache"

    trained = ok(
        beeaudio(
            "train", "--data", tiny_dataset, "--model", "dnn", "--out", run, "--layers", 2, "--units", 32,
            "--dropout", 0.1, "--batch-size", 32, "--epochs", 40, "--patience", 10, "--seed", 3,
            "--cache", cache, "--json",
        )
    )  # fmt: skip
    metrics = json.loads(trained.stdout)
    assert metrics["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    assert (run / "model.keras").is_file()

    exported = ok(
        beeaudio(
            "export", "--run", run, "--quantize", "int8", "--out", bundle, "--version", "t1", "--json",
            "--min-agreement", TINY_MIN_AGREEMENT, "--max-int8-drop", TINY_MAX_INT8_DROP,
        )
    )  # fmt: skip
    checks = json.loads(exported.stdout)
    for said in (trained.stderr, exported.stderr):  # TensorFlow's start-up says nothing to a beekeeper
        assert "oneDNN" not in said and "absl" not in said, said
    assert "fully_quantize" not in exported.stderr, exported.stderr  # nor does the int8 calibrator
    assert checks["agreement"] >= TINY_MIN_AGREEMENT and bundle.is_file()
    assert checks["bytes"] < 100 * 1024

    info = json.loads(ok(beeaudio("info", bundle, "--json")).stdout)
    assert info["manifest"]["model_version"] == "t1"
    assert info["manifest"]["quantization"] == "int8"
    text = ok(beeaudio("info", bundle)).stdout
    assert "normal, swarm" in text and "int8" in text

    # classify: two real files and a corrupt one; the good ones are still classified.
    wavs = sorted(tiny_dataset.rglob("*.wav"))[:2]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(8))
    result = beeaudio("classify", "--model", bundle, *wavs, corrupt, "--json")
    assert result.returncode == EXIT_FAILURE, result.stderr
    payload = json.loads(result.stdout)
    assert [Path(f["path"]) for f in payload["files"]] == wavs
    for f in payload["files"]:
        assert f["label"] in ("normal", "swarm") and 0.0 <= f["swarm_fraction"] <= 1.0 and f["windows"]
    assert [Path(e["path"]) for e in payload["errors"]] == [corrupt]
    table = beeaudio("classify", "--model", bundle, *wavs, corrupt)
    one_clear_error(table, "corrupt.wav")
    assert all(str(w) in table.stdout for w in wavs)
    assert ok(beeaudio("classify", "--model", bundle, wavs[0])).stdout.count("\n") == 2

    evaluated = json.loads(
        ok(
            beeaudio(
                "evaluate", "--model", bundle, "--data", tiny_dataset, "--run", run, "--split", "test",
                "--cache", cache, "--json",
            )
        ).stdout
    )  # fmt: skip
    assert evaluated["windows"] == metrics["windows"]
    assert evaluated["accuracy"] == pytest.approx(checks["int8_accuracy"])
    assert np.array(evaluated["confusion_matrix"]).sum() == evaluated["windows"]
    assert (
        "accuracy"
        in ok(beeaudio("evaluate", "--model", bundle, "--data", tiny_dataset, "--cache", cache)).stdout
    )


def test_errors_are_one_line_with_the_documented_exit_codes(tmp_path: Path) -> None:
    not_a_bundle = tmp_path / "broken.beemodel"
    not_a_bundle.write_bytes(b"this is not a zip")
    one_clear_error(beeaudio("info", not_a_bundle), "not a model bundle")
    one_clear_error(beeaudio("classify", "--model", not_a_bundle, not_a_bundle), "not a model bundle")
    one_clear_error(
        beeaudio("export", "--run", tmp_path / "no-run", "--out", tmp_path / "x.beemodel"),
        "no such run folder",
    )
    assert not (tmp_path / "x.beemodel").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_clear_error(beeaudio("train", "--data", empty, "--out", tmp_path / "run", "--no-cache"), str(empty))
    # Options that cannot work are usage errors (2), whether argparse or the library refuses them.
    one_clear_error(beeaudio("train", "--data", empty, "--out", tmp_path / "run", "--model", "rnn"), code=2)
    one_clear_error(
        beeaudio("train", "--data", empty, "--out", tmp_path / "run", "--test-fraction", "2"),
        "test_fraction",
        code=EXIT_USAGE,
    )
    one_clear_error(beeaudio("classify", "--model", not_a_bundle, tmp_path / "nowhere"), "nowhere")
    help_text = ok(beeaudio("--help")).stdout
    assert "exit codes:" in help_text and "130" in help_text


def test_a_missing_extra_is_named_before_any_work() -> None:
    with pytest.raises(MissingExtraError, match=r'pip install "beeaudio\[train\]"') as caught:
        require_extra(extra="train", modules=("json", "no_such_module_for_beeaudio"), command="train")
    assert caught.value.exit_code == EXIT_USAGE
    assert "no_such_module_for_beeaudio" in str(caught.value) and "json," not in str(caught.value)
    require_extra(extra="train", modules=("json",), command="train")  # present: nothing happens


# -- the feature configuration from the command line ------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--features", "fullband"],
            {"sample_rate": 16000, "fmin": 0.0, "fmax": 8000.0, "n_mels": 40, "n_mfcc": 13},
        ),
        (
            ["--n-mfcc", "40", "--n-mels", "40", "--sample-rate", "16000"],
            {"sample_rate": 16000, "fmin": 100.0, "fmax": 1000.0, "n_mels": 40, "n_mfcc": 40},
        ),
    ],
    ids=["fullband", "40-mfcc-16k"],
)
def test_a_front_end_chosen_on_the_command_line_is_trained_exported_and_run_by_the_device(
    tiny_dataset: Path, tmp_path: Path, options: list[str], expected: dict[str, float]
) -> None:
    """Train with a feature config from the CLI, export it, and run it as a device would: the config is in
    the run, in the bundle's manifest, and the device's self-test and classify compute it."""
    run, bundle = tmp_path / "run", tmp_path / "wide.beemodel"
    ok(
        beeaudio(
            "train", "--data", tiny_dataset, "--out", run, "--layers", 2, "--units", 32, "--dropout", 0.1,
            "--batch-size", 32, "--epochs", 40, "--patience", 10, "--seed", 3, "--no-cache", "--json",
            *options,
        )
    )  # fmt: skip
    trained = json.loads((run / "feature_config.json").read_text())
    assert {k: trained[k] for k in expected} == expected
    assert json.loads((run / "train_config.json").read_text())["feature_config"] == trained
    ok(
        beeaudio(
            "export", "--run", run, "--out", bundle, "--min-agreement", TINY_MIN_AGREEMENT,
            "--max-int8-drop", TINY_MAX_INT8_DROP,
        )
    )  # fmt: skip
    info = json.loads(ok(beeaudio("info", bundle, "--json")).stdout)
    assert info["manifest"]["feature_config"] == trained
    selftest = ok(beeaudio("device", "selftest", "--bundle", bundle))
    assert "checksum and self-test passed" in selftest.stdout and "analysed 10 s of audio" in selftest.stdout
    wav = sorted(tiny_dataset.rglob("*.wav"))[0]
    classified = json.loads(ok(beeaudio("classify", "--model", bundle, wav, "--json")).stdout)
    assert classified["files"][0]["label"] in ("normal", "swarm") and classified["files"][0]["windows"]


def test_feature_options_that_cannot_work_are_one_line_usage_errors(tmp_path: Path) -> None:
    """Refused before anything is decoded: an unknown preset, a field the bundle rules refuse, and a band
    the recordings cannot feed (2205 Hz files under a 0–8000 Hz front end), naming the files."""
    import soundfile as sf

    data = tmp_path / "osbh"
    rng = np.random.default_rng(0)
    for hive in ("CF001", "CF002"):
        for state in ("Active", "Swarm"):
            path = data / f"{hive} - {state} - Day - (1).wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.1 * rng.standard_normal(2205 * 4)).astype(np.float32), 2205, subtype="PCM_16")
    out = tmp_path / "run"
    one_clear_error(
        beeaudio("train", "--data", data, "--out", out, "--features", "fulband"),
        "unknown feature preset 'fulband'",
        code=EXIT_USAGE,
    )
    one_clear_error(
        beeaudio("train", "--data", data, "--out", out, "--fmax", "5000"),
        "fmax 5000.0 Hz is above the Nyquist frequency 4000.0 Hz",
        code=EXIT_USAGE,
    )
    refused = beeaudio("train", "--data", data, "--out", out, "--features", "fullband", "--no-cache")
    one_clear_error(refused, "4 of 4 recordings", "CF001 - Active - Day - (1).wav (2205 Hz)", code=EXIT_USAGE)
    assert not out.exists()
    codec = beeaudio(
        "experiment", "codec", "--data", data, "--out", tmp_path / "codec", "--band", "osbh-2205,fullband",
        "--no-cache",
    )  # fmt: skip
    one_clear_error(codec, "listens up to 8000 Hz", code=EXIT_USAGE)
    assert not (tmp_path / "codec").exists()
    sweep = beeaudio(
        "experiment",
        "sweep",
        "--data",
        data,
        "--out",
        tmp_path / "sweep",
        "--features",
        "fullband",
        "--no-cache",
    )
    one_clear_error(sweep, "CF002 - Swarm - Day - (1).wav (2205 Hz)", code=EXIT_USAGE)
    assert not (tmp_path / "sweep").exists()
