"""The bundle runs on what a hive device installs: no TensorFlow, no librosa.

Two virtual environments built by ``.ci/edge-venvs.sh`` (``.ci/run`` builds them and exports their pythons):

* ``BEEAUDIO_EDGE_PYTHON``: ``pip install -e ".[edge]"`` (ai-edge-litert, numpy 2);
* ``BEEAUDIO_TFLITE214_PYTHON``: tflite-runtime 2.14 + numpy 1.26.4 (32-bit Raspberry Pi OS).

In each, in a subprocess, the trained int8 ``tiny_bundle`` is loaded (checksum and self-test), a WAV and an
MP3 are classified, and the probabilities must match those of this (TensorFlow-laden) process. Locally the
tests skip when the variables are unset; in CI they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import audio
from beeaudio.core.inference import Classifier
from beeaudio.desktop import codec
from tests.conftest import require
from tests.fixtures.tflite_models import synthetic_sound

# Runs inside the edge environment. Prints one JSON object.
EDGE_SCRIPT = r"""
import importlib.util, json, sys
heavy_installed = [m for m in ("tensorflow", "librosa", "keras") if importlib.util.find_spec(m) is not None]
import numpy
from beeaudio.core.inference import Classifier
bundle, clips = sys.argv[1], sys.argv[2:]
classifier = Classifier.load(bundle)
results = {}
for clip in clips:
    result = classifier.classify_file(clip)
    results[clip] = {
        "source_format": result.source_format,
        "label": result.label,
        "windows": [[w.probabilities[label] for label in classifier.labels] for w in result.windows],
    }
# Several windows per interpreter call against one call each (batching switched off), on this runtime.
from beeaudio.core.inference import ModelRunner
ModelRunner._batching_works = lambda self: False
single = Classifier.load(bundle)
rng = numpy.random.default_rng(0)
m = classifier.manifest
x = rng.normal(0.0, 1.0, size=(19, *m.feature_shape)).astype(numpy.float32)
x = x * numpy.asarray(m.feature_std or 1.0, numpy.float32)
x = x + numpy.asarray(m.feature_mean or 0.0, numpy.float32)
heavy_imported = sorted(m for m in ("tensorflow", "keras", "librosa") if m in sys.modules)
print(json.dumps({
    "batched": classifier.batched,
    "single_batched": single.batched,
    "batch_outputs": classifier.predict(x).tolist(),
    "single_outputs": single.predict(x).tolist(),
    "runtime": classifier.runtime,
    "numpy": numpy.__version__,
    "heavy_installed": heavy_installed,
    "heavy_imported": heavy_imported,
    "results": results,
}))
"""

ENVIRONMENTS = {
    "edge": ("BEEAUDIO_EDGE_PYTHON", "ai_edge_litert"),
    "tflite214": ("BEEAUDIO_TFLITE214_PYTHON", "tflite_runtime"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("edge-clips")
    signal = synthetic_sound(seconds=8.0, seed=11, sample_rate=16000)
    wav = audio.write_wav(folder / "clip.wav", audio=signal, sample_rate=16000)
    mp3 = codec.encode_mp3(audio=signal, sample_rate=16000, path=folder / "clip.mp3", bitrate_kbps=64)
    return [wav, mp3]


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, clips: list[Path]) -> dict[str, np.ndarray]:
    """Per-window probabilities computed in this process (ai_edge_litert, system numpy)."""
    classifier = Classifier.load(tiny_bundle)
    out = {}
    for clip in clips:
        windows = classifier.classify_file(clip).windows
        out[str(clip)] = np.array([[w.probabilities[label] for label in classifier.labels] for w in windows])
    return out


def edge_python(variable: str) -> Path:
    value = os.environ.get(variable, "")
    require(bool(value), f"{variable} is not set (build the environments with .ci/edge-venvs.sh DIR)")
    path = Path(value)
    require(path.is_file(), f"{variable}={value} does not exist")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_bundle_runs_in_edge_environment(
    name: str, tiny_bundle: Path, clips: list[Path], reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    variable, runtime = ENVIRONMENTS[name]
    python = edge_python(variable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # Run outside the repository so that only what the environment installed is importable.
    done = subprocess.run(
        [str(python), "-c", EDGE_SCRIPT, str(tiny_bundle), *map(str, clips)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{name} environment failed:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy_installed"] == [], f"{name} environment has {report['heavy_installed']} installed"
    assert report["heavy_imported"] == []
    assert report["runtime"] == runtime
    # One interpreter call per batch of windows, on both runtimes, and bit for bit the int8 outputs of one
    # call per window.
    assert report["batched"] and not report["single_batched"]
    np.testing.assert_array_equal(np.array(report["batch_outputs"]), np.array(report["single_outputs"]))
    if name == "tflite214":
        assert report["numpy"] == "1.26.4"
    for clip in clips:
        got = report["results"][str(clip)]
        assert got["source_format"] == ("MP3" if clip.suffix == ".mp3" else "WAV")
        probabilities = np.array(got["windows"])
        assert probabilities.shape == reference[str(clip)].shape
        # Same int8 model on another runtime (for tflite214 other numpy/soxr too): ~2 output steps at most.
        np.testing.assert_allclose(probabilities, reference[str(clip)], atol=0.01)
