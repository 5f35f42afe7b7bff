"""Per-hive calibration on the device: `calibrate`, the baseline in the state folder, restarts, model updates,
the relative features the model sees, and what an uncalibrated baseline model reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import wire
from beeaudio.core.audio import iter_windows
from beeaudio.core.baseline import baseline_path, fit_baseline, load_baseline, relative_features
from beeaudio.core.bundle import read_bundle
from beeaudio.core.features import window_features
from beeaudio.core.inference import Classifier
from beeaudio.device.agent import Agent, Identity, analyse_file
from beeaudio.device.calibration import CalibrationError, calibrate
from beeaudio.device.config import load_config
from beeaudio.device.modelstore import ModelStore
from beeaudio.device.outbox import Outbox
from tests.fixtures.calibration import baseline_bundle
from tests.fixtures.device import run_cli, write_config, write_recordings

START = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cmn_bundles(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny int8 bundle declared as a CMN model; a second version with the same features; one whose
    feature config differs (another fingerprint, same shapes)."""
    folder = tmp_path_factory.mktemp("cmn-bundles")
    return {
        "cmn": baseline_bundle(source=bundle, target=folder / "cmn.beemodel", version="cmn-1"),
        "same-features": baseline_bundle(source=bundle, target=folder / "cmn2.beemodel", version="cmn-2"),
        "other-features": baseline_bundle(
            source=bundle,
            target=folder / "cmn-950.beemodel",
            version="cmn-950",
            feature_changes={"fmax": 950.0},
        ),
    }


@pytest.fixture
def keep_signal_handlers():
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def device(tmp_path: Path, bundle: Path) -> Path:
    config_path = write_config(
        tmp_path / "device.toml",
        {
            "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(tmp_path / "state")},
            "source": {"path": str(tmp_path / "spool"), "after": "archive", "settle_seconds": 0.0},
        },
    )
    ModelStore(root=load_config(config_path).model_dir).install(source=bundle)
    return config_path


def events_of(config_path: Path) -> list[dict]:
    config = load_config(config_path)
    with Outbox(path=config.outbox_path, max_events=10_000) as outbox:
        return [p.body for p in outbox.pending(limit=10_000)]


def test_an_uncalibrated_baseline_model_reports_nothing_confident(
    tmp_path, cmn_bundles, keep_signal_handlers
):
    config_path = device(tmp_path, cmn_bundles["cmn"])
    write_recordings(folder=tmp_path / "spool", count=2, seconds=5.0, start=START)
    assert Agent(config=load_config(config_path), once=True).run() == 0
    events = events_of(config_path)
    assert events and {e["quality"] for e in events} == {wire.QUALITY_UNCALIBRATED}
    for body in events:
        event = wire.ClassificationEvent.from_json(body)
        assert not event.is_evidence and event.novelty is None
        assert set(event.probabilities.values()) == {0.5}  # uniform: no class is preferred
    status = run_cli("device", "status", "--config", str(config_path), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["calibration"].startswith("UNCALIBRATED")


def test_calibrate_then_restart_uses_the_baseline_and_a_model_update_keeps_it(
    tmp_path, cmn_bundles, keep_signal_handlers
):
    config_path = device(tmp_path, cmn_bundles["cmn"])
    config = load_config(config_path)
    normal = write_recordings(folder=tmp_path / "normal", count=3, seconds=8.0, start=START)
    done = run_cli("device", "calibrate", "--config", str(config_path), "--input", str(tmp_path / "normal"))
    assert done.returncode == 0, done.stderr
    assert "uses it from its next recording" in done.stdout
    features = read_bundle(cmn_bundles["cmn"]).manifest.feature_config
    path = baseline_path(state_dir=config.state_dir, config=features)
    assert path.is_file() and features.fingerprint() in path.name
    saved = load_baseline(state_dir=config.state_dir, config=features)
    assert (
        saved is not None
        and saved.hive_id == "hive-1"
        and sorted(saved.sources) == sorted(p.name for p in normal)
    )

    # A restart (a new agent process) finds it: its windows are ok, and evidence.
    write_recordings(
        folder=tmp_path / "spool", count=1, seconds=6.0, start=START + timedelta(hours=2), seed=9
    )
    assert Agent(config=config, once=True).run() == 0
    assert {e["quality"] for e in events_of(config_path)} == {wire.QUALITY_OK}
    status = json.loads(run_cli("device", "status", "--config", str(config_path), "--json").stdout)
    assert (
        status["calibration"].startswith("baseline from")
        and "the current model uses it" in status["calibration"]
    )

    # A model update computing its features the same way keeps the baseline ...
    ModelStore(root=config.model_dir).install(source=cmn_bundles["same-features"])
    agent = Agent(config=config, once=True)
    agent._load_model()
    assert agent.classifier is not None and agent.classifier.baseline == saved
    # ... one with another feature configuration does not use it, and says so.
    ModelStore(root=config.model_dir).install(source=cmn_bundles["other-features"])
    agent = Agent(config=config, once=True)
    agent._load_model()
    assert (
        agent.classifier is not None and agent.classifier.baseline is None and not agent.classifier.calibrated
    )
    status = json.loads(run_cli("device", "status", "--config", str(config_path), "--json").stdout)
    assert status["calibration"].startswith("UNCALIBRATED") and "950" not in path.name


def test_the_device_applies_the_baseline_as_training_computes_it(tmp_path, cmn_bundles):
    """Calibrating on the device and training's per-hive baseline give the same numbers to the model."""
    from beeaudio.core.audio import load

    bundle = cmn_bundles["cmn"]
    config = read_bundle(bundle).manifest.feature_config
    normal = write_recordings(folder=tmp_path / "normal", count=2, seconds=8.0, start=START)
    result = calibrate(
        paths=[tmp_path / "normal"], config=config, state_dir=tmp_path / "state", min_windows=5
    )
    # Training side: the recordings decoded whole, cut into windows by the front end, one baseline over them.
    training_windows = np.concatenate(
        [window_features(audio=load(p, sample_rate=config.sample_rate), config=config) for p in normal]
    )
    training = fit_baseline(features=training_windows, config=config)
    np.testing.assert_allclose(result.baseline.mean, training.mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(result.baseline.std, training.std, rtol=0, atol=1e-4)

    classifier = Classifier.load(bundle)
    classifier.set_baseline(result.baseline)
    (later,) = write_recordings(folder=tmp_path / "later", count=1, seconds=5.0, start=START, seed=4)
    events = analyse_file(
        path=later,
        classifier=classifier,
        identity=Identity(device_id="d", hive_id="h"),
        source_id="s",
        name_time_formats=("%Y%m%d-%H%M%S",),
    )
    raw = np.stack(
        [window_features(audio=w, config=config)[0] for _, w in iter_windows(later, config=config)]
    )
    expected = classifier.predict(relative_features(features=raw, baseline=training, kind="cmn/1"))
    got = np.array([[e.probabilities[label] for label in classifier.labels] for e in events])
    np.testing.assert_allclose(got, expected, atol=2e-2)  # two int8 output steps: features equal to 1e-4
    assert all(e.quality == wire.QUALITY_OK for e in events)
    np.testing.assert_allclose(
        classifier.model_input(raw),
        relative_features(features=raw, baseline=training, kind="cmn/1"),
        atol=1e-3,
    )


def test_calibration_leaves_out_bad_windows_and_needs_enough_of_them(tmp_path, cmn_bundles):
    from beeaudio.core.audio import write_wav

    config = read_bundle(cmn_bundles["cmn"]).manifest.feature_config
    folder = tmp_path / "normal"
    write_recordings(folder=folder, count=1, seconds=8.0, start=START)
    write_wav(folder / "20260501-070000.wav", audio=np.zeros(16000 * 6, dtype=np.float32), sample_rate=16000)
    result = calibrate(paths=[folder], config=config, state_dir=tmp_path / "s", min_windows=5, save=False)
    assert result.baseline.skipped == {wire.QUALITY_NO_SIGNAL: 5} and result.files == 1
    assert not (tmp_path / "s").exists()
    with pytest.raises(CalibrationError, match="needs at least 100"):
        calibrate(paths=[folder], config=config, state_dir=tmp_path / "s", min_windows=100)
    # Only recordings of the declared period, by the time in their names.
    with pytest.raises(CalibrationError, match="0 usable windows"):
        calibrate(
            paths=[folder], config=config, state_dir=tmp_path / "s", min_windows=5,
            name_time_formats=("%Y%m%d-%H%M%S",), since=START + timedelta(days=1),
        )  # fmt: skip
    missing = run_cli("device", "calibrate", "--state-dir", str(tmp_path / "empty"), "--input", str(folder))
    assert missing.returncode == 2 and "install one first" in missing.stderr


def test_a_baseline_from_another_hive_is_not_used(tmp_path, cmn_bundles):
    from beeaudio.device.calibration import attach_baseline

    config = read_bundle(cmn_bundles["cmn"]).manifest.feature_config
    write_recordings(folder=tmp_path / "normal", count=1, seconds=8.0, start=START)
    calibrate(
        paths=[tmp_path / "normal"],
        config=config,
        state_dir=tmp_path / "state",
        hive_id="hive-A",
        min_windows=5,
    )
    classifier = Classifier.load(cmn_bundles["cmn"])
    status = attach_baseline(classifier=classifier, state_dir=tmp_path / "state", hive_id="hive-B")
    assert classifier.baseline is None and "learnt on hive 'hive-A'" in status.problem
    assert attach_baseline(classifier=classifier, state_dir=tmp_path / "state", hive_id="hive-A").calibrated
    with pytest.raises(ValueError, match="calibrate again"):
        Classifier.load(cmn_bundles["other-features"]).set_baseline(classifier.baseline)
