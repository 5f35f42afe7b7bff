"""Session-scoped fixtures: a tiny synthetic dataset, a tiny trained run and its exported bundles.

Loaded for every test module through ``pytest_plugins`` in ``tests/conftest.py``. Each fixture is built
once per session on first use (seconds, not minutes) and only by the tests that ask for it; the heavy
imports (TensorFlow) happen inside the fixtures, so modules that do not use them never pay for them.

* ``tiny_dataset``: 6 hives × 2 classes × 2 recordings × 8 s of ``beeaudio.synth`` audio + manifest.csv.
* ``tiny_run``: a small ``dnn`` trained on it (run folder with model.keras, metrics.json, heldout.npz, ...).
* ``tiny_bundle``: the run exported as a full-integer int8 ``.beemodel`` (checked by the exporter).
* ``tiny_bundle_float32``: the same run exported as float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: Export thresholds for the tiny runs: their ~56 held-out windows cannot measure 99 % (one window is
#: 1.8 points), so a single borderline window would fail the default checks. Deployed models keep them.
TINY_MIN_AGREEMENT = 0.95
TINY_MAX_INT8_DROP = 0.05

#: Size of the tiny dataset; tests may read these to know what to expect.
TINY_HIVES = 6
TINY_RECORDINGS_PER_CLASS = 2
TINY_SECONDS = 8.0
TINY_SEED = 7


def tiny_train_config(**overrides: object):  # -> beeaudio.training.train.TrainConfig (lazy import)
    """The training configuration of ``tiny_run``: small and quick, but trained to confident outputs so
    the exporter's agreement checks are meaningful."""
    from beeaudio.training.train import TrainConfig

    settings: dict[str, object] = {
        "model": "dnn",
        "layers": 2,
        "units": 32,
        "dropout": 0.1,
        "epochs": 40,
        "batch_size": 32,
        "patience": 10,
        "seed": 3,
        "verbose": 0,
        "progress": False,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a small deterministic synthetic dataset (WAVs + manifest.csv)."""
    from beeaudio.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("tiny-synth")
    config = SynthConfig(
        hives=TINY_HIVES,
        recordings_per_class=TINY_RECORDINGS_PER_CLASS,
        seconds=TINY_SECONDS,
        seed=TINY_SEED,
    )
    generate_dataset(out=out, config=config, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature cache shared by the tiny runs of a session."""
    return tmp_path_factory.mktemp("tiny-feature-cache")


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset: Path, tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of a small dnn trained on ``tiny_dataset``."""
    from beeaudio.training.train import train_run

    out = tmp_path_factory.mktemp("tiny-run")
    train_run(data=tiny_dataset, out=out, config=tiny_train_config(), cache_dir=tiny_cache_dir)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a small trained int8 ``.beemodel`` (labels ``normal``, ``swarm``; default feature config)."""
    from beeaudio.training.export import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle") / "tiny-int8.beemodel"
    return export_bundle(
        run=tiny_run,
        out=out,
        quantize="int8",
        model_name="tiny-dnn",
        model_version="test",
        min_agreement=TINY_MIN_AGREEMENT,
        max_int8_drop=TINY_MAX_INT8_DROP,
    )


@pytest.fixture(scope="session")
def tiny_bundle_float32(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run exported as a float32 ``.beemodel``."""
    from beeaudio.training.export import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle-f32") / "tiny-float32.beemodel"
    return export_bundle(
        run=tiny_run,
        out=out,
        quantize="float32",
        model_name="tiny-dnn",
        model_version="test-f32",
        min_agreement=TINY_MIN_AGREEMENT,
    )
