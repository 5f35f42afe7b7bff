"""Inference: runtimes, (de)quantisation against Keras, window/file classification, and import isolation."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import audio, features, inference
from beeaudio.core.bundle import QuantParams
from beeaudio.core.inference import (
    BATCH_WINDOWS,
    MODEL_BATCH,
    Classifier,
    FileResult,
    ModelRunner,
    RuntimeUnavailableError,
    WindowResult,
    dequantize,
    make_interpreter,
    quantize,
    resolve_runtime,
)
from beeaudio.desktop import codec
from tests.conftest import REPO_ROOT
from tests.fixtures.tflite_models import LABELS, built_model, synthetic_sound, write_test_bundle


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inference") / "float.beemodel"
    return write_test_bundle(path=path, built=built_model(quantization="float32"))


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-integer int8, the runtime standardising the features (feature_mean/std in the manifest)."""
    path = tmp_path_factory.mktemp("inference") / "int8.beemodel"
    return write_test_bundle(path=path, built=built_model(quantization="int8", normalize_inside=False))


@pytest.fixture(scope="module")
def clip_16k() -> np.ndarray:
    return synthetic_sound(seconds=10.0, seed=42, sample_rate=16000)


@pytest.fixture(scope="module")
def wav_and_mp3(clip_16k: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clips")
    wav = audio.write_wav(folder / "clip.wav", audio=clip_16k, sample_rate=16000)
    mp3 = codec.encode_mp3(audio=clip_16k, sample_rate=16000, path=folder / "clip.mp3", bitrate_kbps=64)
    return wav, mp3


def test_importing_the_runtime_pulls_in_no_tensorflow_or_librosa() -> None:
    code = (
        "import sys, beeaudio.core.inference, beeaudio.core.bundle\n"
        "heavy = ('tensorflow', 'keras', 'librosa', 'scipy', 'sklearn')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "", f"importing the runtime imported {done.stdout.strip()}"


# -- runtimes ------------------------------------------------------------------------------------------------


def test_runtime_preference_and_forcing(float_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Classifier.load(float_bundle).runtime == "ai_edge_litert"
    assert resolve_runtime("tensorflow")[0] == "tensorflow"
    with pytest.raises(RuntimeUnavailableError, match="unknown runtime 'onnx'"):
        resolve_runtime("onnx")
    if importlib.util.find_spec("tflite_runtime") is None:
        with pytest.raises(RuntimeUnavailableError, match="'tflite_runtime' is not available"):
            Classifier.load(float_bundle, runtime="tflite_runtime")
    # Without the light runtimes the order falls through to tf.lite.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    assert resolve_runtime()[0] == "tensorflow"
    with pytest.raises(RuntimeUnavailableError, match="'ai_edge_litert' is not available"):
        resolve_runtime("ai_edge_litert")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(RuntimeUnavailableError, match="no TF-Lite runtime installed"):
        resolve_runtime()


def test_tensorflow_runtime_gives_the_same_probabilities(float_bundle: Path, int8_bundle: Path) -> None:
    for path in (float_bundle, int8_bundle):
        windows = built_model(quantization="float32").features
        litert = Classifier.load(path, runtime="ai_edge_litert").predict(windows)
        tf_lite = Classifier.load(path, runtime="tensorflow", num_threads=2).predict(windows)
        np.testing.assert_allclose(tf_lite, litert, atol=1e-5)


def test_num_threads_must_be_positive(float_bundle: Path) -> None:
    with pytest.raises(ValueError, match="num_threads"):
        Classifier.load(float_bundle, num_threads=0)


def test_a_runtime_refusal_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's reasons span lines; a refusal printed by a CLI or sent as an HTTP detail must not."""

    class Refuses:  # stands in for an Interpreter whose prepare step fails the way ai-edge-litert's does
        def __init__(self, **_: object) -> None:
            raise RuntimeError("Tensor 1 was optional but was expected\nNode number 0 failed to prepare.\n")

    monkeypatch.setattr(inference, "resolve_runtime", lambda runtime=None: ("stand-in", Refuses))
    with pytest.raises(inference.BundleError) as refused:
        inference.make_interpreter(model_bytes=b"")
    reason = str(refused.value)
    assert "\n" not in reason and reason.endswith("was expected Node number 0 failed to prepare.")


# -- predict -------------------------------------------------------------------------------------------------


def test_float32_matches_keras(float_bundle: Path) -> None:
    built = built_model(quantization="float32")
    probabilities = Classifier.load(float_bundle).predict(built.features)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(built.features), 2)
    # The seeded model really spreads its outputs, so agreement is not trivial.
    assert built.keras_probabilities[:, 1].min() < 0.3 and built.keras_probabilities[:, 1].max() > 0.9
    np.testing.assert_allclose(probabilities, built.keras_probabilities, atol=1e-5)


def test_int8_matches_keras_within_quantisation_error(int8_bundle: Path) -> None:
    built = built_model(quantization="int8", normalize_inside=False)
    probabilities = Classifier.load(int8_bundle).predict(built.features)
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - built.keras_probabilities).max() < 0.06
    agree = np.mean(probabilities.argmax(axis=1) == built.keras_probabilities.argmax(axis=1))
    assert agree >= 0.95
    # Dequantised softmax outputs are multiples of 1/256 and still sum to about one.
    np.testing.assert_allclose((probabilities * 256) % 1, 0, atol=1e-3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)


def test_quantize_and_dequantize() -> None:
    q = QuantParams(scale=0.5, zero_point=-10)
    values = np.array([[-1000.0, -5.0, -0.25, 0.0, 0.26, 0.75, 1000.0]], dtype=np.float32)
    got = quantize(values=values, dtype="int8", quant=q)
    assert got.dtype == np.int8
    # Halves round away from zero (-0.5 -> -1, 1.5 -> 2); out-of-range values saturate instead of wrapping.
    assert got.tolist() == [[-128, -20, -11, -10, -9, -8, 127]]
    np.testing.assert_allclose(dequantize(values=got, quant=q), [[-59.0, -5.0, -0.5, 0.0, 0.5, 1.0, 68.5]])
    assert quantize(values=values, dtype="float32", quant=None).dtype == np.float32


def test_predict_checks_its_input(float_bundle: Path) -> None:
    classifier = Classifier.load(float_bundle)
    window = built_model(quantization="float32").features[0]
    np.testing.assert_array_equal(classifier.predict(window), classifier.predict(window[None]))
    assert classifier.predict(np.zeros((0, 52), dtype=np.float32)).shape == (0, 2)
    with pytest.raises(ValueError, match="this model takes"):
        classifier.predict(np.zeros((3, 40), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        classifier.predict(np.full((1, 52), np.nan, dtype=np.float32))


# -- windows, arrays, files ----------------------------------------------------------------------------------


def test_classify_file_wav(float_bundle: Path, wav_and_mp3: tuple[Path, Path]) -> None:
    wav, _ = wav_and_mp3
    classifier = Classifier.load(float_bundle)
    result = classifier.classify_file(wav)
    config = classifier.config
    assert isinstance(result, FileResult)
    assert result.source_format == "WAV" and result.path == wav
    assert result.duration_s == pytest.approx(10.0)
    assert [w.start_s for w in result.windows] == [float(s) for s in range(9)]  # 2 s windows every 1 s
    # The same numbers as the whole-file path: decode, window_features, predict.
    signal = audio.load(wav, sample_rate=config.sample_rate)
    expected = classifier.predict(features.window_features(audio=signal, config=config))
    got = np.array([[w.probabilities[label] for label in LABELS] for w in result.windows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for window, probs in zip(result.windows, expected, strict=True):
        assert window.label == LABELS[int(np.argmax(probs))]
        assert window.swarm_score == window.probabilities["swarm"]
        start = round(window.start_s * config.sample_rate)
        level = features.level_dbfs(audio=signal[start : start + config.window_samples])
        assert window.level_dbfs == pytest.approx(level, abs=1e-3)
    mean = expected.mean(axis=0)
    assert result.mean_probabilities == pytest.approx(dict(zip(LABELS, mean, strict=True)), abs=1e-5)
    assert result.label == LABELS[int(np.argmax(mean))]
    assert result.swarm_fraction == pytest.approx(np.mean(expected.argmax(axis=1) == 1))
    assert result.to_json()["windows"][0]["start_s"] == 0.0


def test_classify_file_mp3_is_close_to_wav(int8_bundle: Path, wav_and_mp3: tuple[Path, Path]) -> None:
    wav, mp3 = wav_and_mp3
    classifier = Classifier.load(int8_bundle)
    from_wav, from_mp3 = classifier.classify_file(wav), classifier.classify_file(mp3)
    assert from_mp3.source_format == "MP3"
    assert len(from_mp3.windows) == len(from_wav.windows) == 9
    swarm_wav = np.array([w.swarm_score for w in from_wav.windows])
    swarm_mp3 = np.array([w.swarm_score for w in from_mp3.windows])
    # The band-limited front end keeps 64 kbit/s MP3 close to the WAV (not equal: the codec is lossy).
    assert np.abs(swarm_mp3 - swarm_wav).max() < 0.15


def test_classify_array_matches_classify_file(float_bundle: Path, wav_and_mp3: tuple[Path, Path]) -> None:
    wav, _ = wav_and_mp3
    classifier = Classifier.load(float_bundle)
    from_file = classifier.classify_file(wav)
    signal = audio.load(wav, sample_rate=8000)
    from_array = classifier.classify_array(signal, sample_rate=8000)
    assert [w.start_s for w in from_array] == [w.start_s for w in from_file.windows]
    np.testing.assert_allclose(
        [w.swarm_score for w in from_array], [w.swarm_score for w in from_file.windows], atol=1e-5
    )
    resampled = classifier.classify_array(audio.load(wav, sample_rate=16000), sample_rate=16000)
    assert len(resampled) == 9
    with pytest.raises(ValueError, match="mono"):
        classifier.classify_array(np.zeros((2, 16000), dtype=np.float32), sample_rate=8000)


def test_file_label_is_by_mean_probability_not_by_vote(float_bundle: Path) -> None:
    classifier = Classifier.load(float_bundle)

    def window(start: float, swarm: float) -> WindowResult:
        probabilities = {"normal": 1 - swarm, "swarm": swarm}
        label = "swarm" if swarm > 0.5 else "normal"
        return WindowResult(
            start_s=start, probabilities=probabilities, label=label, swarm_score=swarm, level_dbfs=-30
        )

    windows = [window(0, 0.6), window(1, 0.6), window(2, 0.0)]
    result = classifier.summarize(path=Path("x.wav"), source_format="WAV", duration_s=4.0, windows=windows)
    assert result.swarm_fraction == pytest.approx(2 / 3)  # two of three windows say swarm ...
    assert result.mean_probabilities["swarm"] == pytest.approx(0.4)
    assert result.label == "normal"  # ... but the mean probability does not


def test_classify_file_refuses_bad_audio(float_bundle: Path, tmp_path: Path) -> None:
    classifier = Classifier.load(float_bundle)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all " * 100)
    with pytest.raises(audio.AudioError):
        classifier.classify_file(text)
    short = audio.write_wav(tmp_path / "short.wav", audio=np.zeros(8000, dtype=np.float32), sample_rate=8000)
    with pytest.raises(audio.TooShortAudioError):
        classifier.classify_file(short)


def test_classify_file_keeps_memory_bounded(float_bundle: Path, tmp_path: Path) -> None:
    """A 3-minute 16 kHz file (11.5 MB as float32) is classified in a few MB: one window at a time."""
    long_clip = np.tile(synthetic_sound(seconds=10.0, seed=5, sample_rate=16000), 18)
    path = audio.write_wav(tmp_path / "long.wav", audio=long_clip, sample_rate=16000)
    whole_file_bytes = long_clip.size * 4
    del long_clip
    classifier = Classifier.load(float_bundle)
    tracemalloc.start()
    try:
        result = classifier.classify_file(path, block_seconds=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.windows) == 179
    assert peak < whole_file_bytes / 3, f"peak {peak / 1e6:.1f} MB for a {whole_file_bytes / 1e6:.1f} MB file"


def test_real_recordings(float_bundle: Path, real_data_dir: Path) -> None:
    classifier = Classifier.load(float_bundle)
    osbh = classifier.classify_file(real_data_dir / "osbh" / "2205_unlabeled_107s.wav")
    assert osbh.source_format == "WAV" and len(osbh.windows) == 106
    buzz = classifier.classify_file(real_data_dir / "buzzdetect" / "testbuzz.mp3")
    assert buzz.source_format == "MP3" and len(buzz.windows) == 5
    for result in (osbh, buzz):
        assert all(np.isfinite(w.swarm_score) and -120 <= w.level_dbfs <= 0 for w in result.windows)
        assert sum(result.mean_probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_a_bundle_for_frames_features(tmp_path: Path) -> None:
    """The CNN-style representation (frames × coefficients) goes through the same path."""
    config = features.FeatureConfig(representation="frames")
    built = built_model(quantization="int8", config=config, normalize_inside=False)
    path = write_test_bundle(path=tmp_path / "frames.beemodel", built=built)
    classifier = Classifier.load(path)
    assert classifier.manifest.input_shape == (1, *config.feature_shape)
    assert len(classifier.manifest.feature_mean or ()) == config.features_per_frame
    probabilities = classifier.predict(built.features)
    assert np.mean(probabilities.argmax(axis=1) == built.keras_probabilities.argmax(axis=1)) >= 0.95
    with pytest.raises(ValueError, match="this model takes"):
        classifier.predict(np.zeros((1, 52), dtype=np.float32))


# -- signal checks and unfamiliar sound --------------------------------------------------------------------
@pytest.fixture(scope="module")
def novelty_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.novelty import write_novelty_bundle

    return write_novelty_bundle(tmp_path_factory.mktemp("inference") / "novelty.beemodel")


def test_digital_silence_is_no_signal_never_a_confident_normal(float_bundle: Path, tmp_path: Path) -> None:
    silent = audio.write_wav(
        tmp_path / "silent.wav", audio=np.zeros(16000 * 8, np.float32), sample_rate=16000
    )
    classifier = Classifier.load(float_bundle)
    result = classifier.classify_file(silent)
    assert {w.quality for w in result.windows} == {"no_signal"}
    assert not any(w.evidence for w in result.windows)
    assert {w.verdict for w in result.windows} == {"no_signal"}
    assert result.label == "no_signal" and result.swarm_fraction == 0.0
    assert result.evidence_windows == 0 and result.verdicts == {"no_signal": len(result.windows)}
    assert result.no_signal_windows == len(result.windows) and result.unfamiliar_windows == 0
    window = result.to_json()["windows"][0]
    assert window["quality"] == "no_signal" and window["evidence"] is False
    assert window["signal"]["level_dbfs"] == -120.0 and window["novelty"] is None


def test_a_few_bad_windows_do_not_hide_the_models_label(float_bundle: Path) -> None:
    classifier = Classifier.load(float_bundle)
    signal = synthetic_sound(seconds=10.0, seed=42)
    signal[8000 * 7 :] = 0.0  # the microphone died for the last 3 s
    windows = classifier.classify_array(signal, sample_rate=8000)
    result = classifier.summarize(path=Path("x.wav"), source_format="WAV", duration_s=10.0, windows=windows)
    good = [w for w in windows if w.evidence]
    assert 0 < result.verdicts["no_signal"] < len(windows) / 2
    assert result.label in LABELS and result.evidence_windows == len(good)
    mean = np.mean([[w.probabilities[label] for label in LABELS] for w in good], axis=0)
    assert result.mean_probabilities == pytest.approx(dict(zip(LABELS, mean, strict=True)), abs=1e-6)
    # Windows with partly dead input are dropouts or no signal, never evidence.
    assert all(w.evidence == (w.start_s + 2.0 <= 7.0) for w in windows)


def test_a_bundle_without_a_detector_gives_no_novelty(float_bundle: Path) -> None:
    classifier = Classifier.load(float_bundle)
    windows = classifier.classify_array(synthetic_sound(seconds=4.0, seed=1), sample_rate=8000)
    assert classifier.novelty is None and classifier.novelty_threshold is None
    assert all(w.novelty is None and w.novelty_threshold is None and not w.unfamiliar for w in windows)
    assert classifier.novelty_scores(built_model(quantization="float32").features) is None


def test_unfamiliar_windows_are_scored_and_not_evidence(novelty_bundle: Path) -> None:
    from tests.fixtures.signals import render

    classifier = Classifier.load(novelty_bundle)
    assert classifier.novelty is not None and classifier.novelty_threshold == classifier.novelty.threshold
    familiar = classifier.classify_array(synthetic_sound(seconds=8.0, seed=77), sample_rate=8000)
    assert all(
        w.novelty is not None and w.novelty_threshold == classifier.novelty_threshold for w in familiar
    )
    assert sum(w.unfamiliar for w in familiar) <= 1
    noise = render(kind="white_noise", seconds=8.0, level_dbfs=-30.0, seed=4)
    windows = classifier.classify_array(noise.audio, sample_rate=noise.sample_rate)
    assert all(w.quality == "ok" and w.unfamiliar and not w.evidence for w in windows)
    assert {w.verdict for w in windows} == {"unfamiliar"}
    result = classifier.summarize(path=Path("n.wav"), source_format="WAV", duration_s=8.0, windows=windows)
    assert result.label == "unfamiliar" and result.unfamiliar_windows == len(windows) and result.novelty
    first = result.to_json()["windows"][0]
    assert first["unfamiliar"] is True and first["novelty"] > first["novelty_threshold"]
    assert first["label"] in LABELS  # the model's own answer stays visible in JSON, marked not evidence
    # Scores through classify_windows are those of the detector on the same features.
    features_ = features.window_features(audio=audio.resample(noise.audio, orig_rate=16000, target_rate=8000),
                                         config=classifier.config)  # fmt: skip
    np.testing.assert_allclose([w.novelty for w in windows], classifier.novelty.score(features_), rtol=1e-6)


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beeaudio.cli", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_classify_and_info_say_what_is_no_evidence(
    novelty_bundle: Path, float_bundle: Path, tmp_path: Path
) -> None:
    from tests.fixtures.signals import render

    silent = audio.write_wav(tmp_path / "silent.wav", audio=np.zeros(8000 * 6, np.float32), sample_rate=8000)
    noise = render(kind="pink_noise", seconds=6.0, level_dbfs=-30.0, seed=2)
    noisy = audio.write_wav(tmp_path / "noise.wav", audio=noise.audio, sample_rate=noise.sample_rate)
    table = _cli("classify", "--model", novelty_bundle, silent, noisy, "--windows")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "no signal" in lines[0] and "unfamiliar" in lines[0]
    silent_row = next(line for line in lines if line.startswith(str(silent)))
    assert " no_signal " in silent_row and " normal " not in silent_row and " swarm " not in silent_row
    assert "no usable signal: 5 of 5 windows (no_signal 5)" in table.stdout
    assert "unfamiliar: 5 of 5 windows — the model has not heard audio like this" in table.stdout
    assert "unfamiliar (model: " in table.stdout  # per window: the verdict first, the model's label aside
    payload = json.loads(_cli("classify", "--model", novelty_bundle, silent, noisy, "--json").stdout)
    by_name = {Path(f["path"]).name: f for f in payload["files"]}
    assert by_name["silent.wav"]["label"] == "no_signal" and by_name["noise.wav"]["label"] == "unfamiliar"
    assert by_name["noise.wav"]["not_evidence"] == {"unfamiliar": 5}
    assert {w["quality"] for w in by_name["silent.wav"]["windows"]} == {"no_signal"}

    old = _cli("classify", "--model", float_bundle, silent)
    assert "no novelty detector" in old.stdout and " no_signal " in old.stdout
    assert "no novelty detector (an older bundle)" in _cli("info", float_bundle).stdout
    info = _cli("info", novelty_bundle).stdout
    assert "gaussian-views/1 (features, shape), threshold" in info and "flags 1.00 % of 60" in info


# -- batches of windows --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_a_batch_gives_the_outputs_of_one_call_per_window(
    kind: str, int8_bundle: Path, float_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODEL_BATCH windows per interpreter call, the last batch padded: int8 outputs equal to those of one
    call per window bit for bit, float32 to 1e-6; batches of every size around the padding."""
    path = int8_bundle if kind == "int8" else float_bundle
    batched = Classifier.load(path)
    assert batched.batched
    with monkeypatch.context() as patch:
        patch.setattr(ModelRunner, "_batching_works", lambda self: False)
        single = Classifier.load(path)
    assert not single.batched
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, size=(2 * MODEL_BATCH + 3, *batched.manifest.feature_shape)).astype(np.float32)
    x *= np.asarray(batched.manifest.feature_std or 1.0, np.float32)
    x += np.asarray(batched.manifest.feature_mean or 0.0, np.float32)
    expected = single.predict(x)
    for n in (1, MODEL_BATCH - 1, MODEL_BATCH, MODEL_BATCH + 1, len(x)):
        got = batched.predict(x[:n])
        if kind == "int8":
            np.testing.assert_array_equal(got, expected[:n])
        else:
            np.testing.assert_allclose(got, expected[:n], rtol=1e-6, atol=1e-6)


def test_a_runtime_that_cannot_resize_runs_one_window_per_call(
    int8_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batching is tried once; a runtime refusing to resize the input (or computing batches otherwise)
    leaves the runner on per-window calls, with the same results."""
    reference = Classifier.load(int8_bundle)
    x = reference.bundle.selftest.features
    real = make_interpreter

    class NoResize:
        def __init__(self, interpreter: object) -> None:
            self._interpreter = interpreter

        def __getattr__(self, name: str) -> object:
            return getattr(self._interpreter, name)

        def resize_tensor_input(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("ResizeInputTensor: fixed batch")

    def fixed(**kwargs: object) -> tuple[object, str]:
        interpreter, name = real(**kwargs)
        return NoResize(interpreter), name

    monkeypatch.setattr(inference, "make_interpreter", fixed)
    classifier = Classifier.load(int8_bundle)
    assert not classifier.batched
    np.testing.assert_array_equal(classifier.predict(x), reference.predict(x))


def test_windows_are_classified_in_batches_as_one_at_a_time(
    novelty_bundle: Path, wav_and_mp3: tuple[Path, Path]
) -> None:
    """classify_windows takes BATCH_WINDOWS windows at a time (features, model and detector in one call
    each): every window's result is the one it gets alone."""
    classifier = Classifier.load(novelty_bundle)
    windows = list(audio.iter_windows(wav_and_mp3[0], config=classifier.config))
    assert len(windows) > BATCH_WINDOWS
    together = list(classifier.classify_windows(windows))
    alone = [classifier.classify_batch([w])[0] for w in windows]
    assert [r.start_s for r in together] == [r.start_s for r in alone]
    for a, b in zip(together, alone, strict=True):
        assert (a.label, a.quality, a.signal, a.level_dbfs) == (b.label, b.quality, b.signal, b.level_dbfs)
        for label in classifier.labels:
            assert a.probabilities[label] == pytest.approx(b.probabilities[label], abs=1e-6)
        assert a.novelty == pytest.approx(b.novelty, rel=1e-6)
    short = [*windows[:3], (3.0, windows[3][1][:-1])]
    got = []
    with pytest.raises(ValueError, match="the model needs"):
        for result in classifier.classify_windows(short):
            got.append(result)
    assert len(got) == 3  # the windows before the bad one are classified
