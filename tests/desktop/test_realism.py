"""bench/realism.py and beeaudio.desktop.realism: the real-vs-synthetic measure runs and means it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.audio import write_wav
from beeaudio.desktop import realism
from beeaudio.desktop.feature_presets import preset
from beeaudio.desktop.synth import SynthConfig, generate_dataset
from tests.fixtures.audio import hive_like

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = preset(name="osbh-2205")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_realism", REPO_ROOT / "bench" / "realism.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("realism")
    synth = root / "synth"
    generate_dataset(
        out=synth, config=SynthConfig(hives=3, recordings_per_class=1, seconds=6.0, seed=3), progress=False
    )
    real = root / "real"
    real.mkdir()
    for i in range(3):  # "real" stand-ins at the Open Source Beehives rate
        write_wav(real / f"clip{i}.wav", audio=hive_like(2205, 8.0, seed=i), sample_rate=2205)
    return synth, real


def test_the_bench_runs_on_a_tiny_input(tiny_inputs, tmp_path: Path, capsys) -> None:
    synth, real = tiny_inputs
    out = tmp_path / "out"
    result = _bench().main(
        ["--synth", str(synth), "--real", str(real), "--block-seconds", "4", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert "grouped AUC real vs synthetic" in printed and "coverage" in printed
    saved = json.loads((out / "realism.json").read_text())
    assert saved["auc"] == result["auc"] and set(saved["auc"]) == set(realism.FEATURE_GROUPS)
    assert all(0.0 <= v <= 1.0 for v in saved["auc"].values())
    assert all(0.0 <= v <= 1.0 for v in saved["coverage"].values())
    assert saved["real_groups"] == 6 and saved["synthetic_groups"] == 3 and saved["folds"] >= 2
    assert len(saved["band_hz"]) == CONFIG.n_mels and (out / "band_levels.png").stat().st_size > 1000


def test_indistinguishable_sides_score_near_chance_and_distinct_ones_near_one() -> None:
    rng = np.random.default_rng(0)
    width = 2 * CONFIG.features_per_frame

    def side(prefix: str, shift: float, groups: int = 6) -> realism.Windows:
        x = rng.normal(0.0, 1.0, (groups * 40, width)) + shift
        return realism.Windows(features=x, groups=np.repeat([f"{prefix}{g}" for g in range(groups)], 40))

    same = realism.measure(
        synthetic=side("synth:", 0.0), real=side("real:", 0.0), config=CONFIG, realism=realism.RealismConfig()
    )
    assert abs(same["auc"]["all"] - 0.5) < 0.1 and same["coverage"]["all"] > 0.8
    apart = realism.measure(
        synthetic=side("synth:", 0.0), real=side("real:", 3.0), config=CONFIG, realism=realism.RealismConfig()
    )
    assert apart["auc"]["all"] > 0.99 and apart["coverage"]["all"] < 0.2


def test_band_levels_invert_the_mean_cepstrum() -> None:
    from beeaudio.core.features import _dct_matrix

    levels = np.random.default_rng(1).normal(-40, 5, (4, CONFIG.n_mels))
    cepstrum = levels @ _dct_matrix(CONFIG.n_mfcc, CONFIG.n_mels).T
    features = np.concatenate(
        [cepstrum, np.zeros((4, 2 * CONFIG.features_per_frame - CONFIG.n_mfcc))], axis=1
    )
    smoothed = realism.band_levels(features=features, config=CONFIG)
    assert smoothed.shape == (4, CONFIG.n_mels)
    np.testing.assert_allclose(smoothed.mean(axis=1), levels.mean(axis=1), atol=1e-9)  # c0 carries the mean
