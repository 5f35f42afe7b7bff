"""Run a model bundle: load it (checksum, self-test), pick a TF-Lite runtime, classify windows, arrays, files.

Runtimes, in order of preference: ``ai_edge_litert`` (LiteRT, the maintained one), ``tflite_runtime`` (legacy;
the only one for 32-bit Raspberry Pi OS, numpy < 2) and ``tensorflow`` (``tf.lite``, the desktop fallback).
Exported models use builtin ops only, so each runs the same bundle. TensorFlow is imported only if neither
light runtime is installed, because tflite-runtime 2.14 crashes when TensorFlow shares its process.

Nothing here imports TensorFlow or librosa at import time: this module is what the hive device runs.
A :class:`Classifier` owns one interpreter and is not thread-safe; use one per thread.

Every window gets, besides the model's probabilities, the signal check's verdict
(:mod:`beeaudio.core.quality`) and, when the bundle has a novelty detector (:mod:`beeaudio.core.novelty`),
its novelty score and threshold. A window that is not ``ok`` or is unfamiliar is not *evidence*: its
label is what the model said, never what the recording is, and a file whose windows are mostly not
evidence is labelled by what they mostly are (``no_signal``, ``unfamiliar``, ...).

A bundle with a ``normalization`` section takes features relative to the hive's baseline
(:mod:`beeaudio.core.baseline`): the caller gives the classifier the hive's baseline
(:meth:`Classifier.set_baseline`), and every window's features are made relative to it before the model and
the novelty detector see them. Without a baseline such a model answers nothing: its windows get the quality
``uncalibrated`` and uniform probabilities, and are no evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core import audio as audio_io
from beeaudio.core import features as feats
from beeaudio.core.baseline import HiveBaseline, relative_features
from beeaudio.core.bundle import (
    Bundle,
    BundleError,
    BundleManifest,
    QuantParams,
    read_bundle,
)
from beeaudio.core.errors import BeeaudioError
from beeaudio.core.native_stderr import native_stderr_to_log
from beeaudio.core.novelty import NoveltyDetector
from beeaudio.core.quality import QualityConfig, SignalQuality, check_window
from beeaudio.core.wire import QUALITY_OK, QUALITY_UNCALIBRATED, is_unfamiliar

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")
#: Verdict of a window whose signal is fine but which the novelty detector does not know.
UNFAMILIAR = "unfamiliar"
#: A file is labelled by the model only when at least this share of its windows is evidence (a usable
#: signal the model knows); otherwise by what most of its other windows are: the collector, too, does not
#: call a hive normal or swarming from a minority of its windows.
MIN_EVIDENCE_SHARE = 0.5
#: Windows :meth:`Classifier.classify_windows` takes at a time: enough to spread the model's and the novelty
#: detector's per-call costs (~0.2 ms a call), few enough that a file of any length is classified in ~3 MB
#: (tests/core/test_inference.py: 16 windows took it to 4.3 MB, 8 to 3.3 MB).
BATCH_WINDOWS = 8


class RuntimeUnavailableError(BeeaudioError, RuntimeError):
    """The requested TF-Lite runtime (or any runtime at all) is not installed."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the interpreter sees it."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    quant: QuantParams | None


def _interpreter_class(runtime: str) -> Any:
    if runtime == "ai_edge_litert":
        return importlib.import_module("ai_edge_litert.interpreter").Interpreter
    if runtime == "tflite_runtime":
        return importlib.import_module("tflite_runtime.interpreter").Interpreter
    if runtime == "tensorflow":
        return importlib.import_module("tensorflow").lite.Interpreter
    raise RuntimeUnavailableError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")


def resolve_runtime(runtime: str | None = None) -> tuple[str, Any]:
    """The runtime's name and Interpreter class: the one asked for, else the first one installed."""
    candidates = (runtime,) if runtime else RUNTIMES
    errors = []
    for name in candidates:
        try:
            return name, _interpreter_class(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    if runtime:
        raise RuntimeUnavailableError(f"TF-Lite runtime {runtime!r} is not available ({errors[0]})")
    raise RuntimeUnavailableError(
        "no TF-Lite runtime installed; install ai-edge-litert (pip install 'beeaudio[edge]'), or "
        f"tflite-runtime on 32-bit ARM ({'; '.join(errors)})"
    )


def available_runtimes() -> list[str]:
    """The runtimes importable in this process (importing ``tensorflow`` to find out if it must)."""
    found = []
    for name in RUNTIMES:
        try:
            _interpreter_class(name)
        except ImportError:
            continue
        found.append(name)
    return found


def make_interpreter(
    *, model_bytes: bytes, runtime: str | None = None, num_threads: int = 1
) -> tuple[Any, str]:
    """An allocated interpreter for ``model_bytes`` and the name of the runtime that made it."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    name, interpreter_class = resolve_runtime(runtime)
    try:
        with runtime_stderr_to_log():
            interpreter = interpreter_class(model_content=model_bytes, num_threads=num_threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        # The runtime's reason spans lines ("... Node number 0 (FULLY_CONNECTED) failed to prepare."); a
        # refusal is one line wherever it is shown (a CLI error, a log line, an HTTP detail).
        reason = " ".join(str(exc).split())
        raise BundleError(f"{name} cannot load the model: {reason}") from exc
    return interpreter, name


#: What the TF-Lite runtimes print from C++ on every start ("INFO: Created TensorFlow Lite XNNPACK delegate
#: for CPU."): routine, so it goes to the debug log instead of a beekeeper's terminal.
ROUTINE_RUNTIME_LINES = ("INFO: ",)


def runtime_stderr_to_log() -> contextlib.AbstractContextManager[None]:
    """What a TF-Lite runtime prints from C++ meanwhile, into the log (routine lines at DEBUG)."""
    return native_stderr_to_log(routine=ROUTINE_RUNTIME_LINES, source="runtime")


def _tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = QuantParams(scale=float(scale), zero_point=int(zero_point)) if scale else None
    return TensorSpec(
        index=int(detail["index"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        quant=quant,
    )


def _signature(interpreter: Any) -> dict[str, TensorSpec]:
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise BundleError(
            f"a hive model has one input and one output; this one has {len(inputs)} and {len(outputs)}"
        )
    return {"input": _tensor_spec(inputs[0]), "output": _tensor_spec(outputs[0])}


def describe_model(*, model_bytes: bytes, runtime: str | None = None) -> dict[str, TensorSpec]:
    """``{"input": TensorSpec, "output": TensorSpec}`` of a TF-Lite model, read by an interpreter."""
    interpreter, _ = make_interpreter(model_bytes=model_bytes, runtime=runtime)
    return _signature(interpreter)


def quantize(*, values: np.ndarray, dtype: str, quant: QuantParams | None) -> np.ndarray:
    """Float features to the model's input dtype: ``q = round(x / scale) + zero_point``, saturated."""
    if dtype == "float32":
        return np.asarray(values, dtype=np.float32)
    if quant is None:
        raise BundleError(f"{dtype} input without quantisation parameters")
    info = np.iinfo(np.dtype(dtype))
    scaled = np.asarray(values, dtype=np.float64) / quant.scale
    # Round half away from zero, as TF-Lite's own QUANTIZE op does (numpy rounds half to even).
    q = np.trunc(scaled + np.copysign(0.5, scaled)) + quant.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def standardize(
    *, features: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
    """``(x - mean) / std`` along the last axis, or ``x`` unchanged when the bundle has no statistics."""
    x = np.asarray(features, dtype=np.float32)
    if mean is None or std is None:
        return x
    return ((x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)).astype(np.float32)


def dequantize(*, values: np.ndarray, quant: QuantParams | None) -> np.ndarray:
    if quant is None:
        return np.asarray(values, dtype=np.float32)
    return ((np.asarray(values, dtype=np.float32) - quant.zero_point) * quant.scale).astype(np.float32)


#: Windows per interpreter call where the runtime batches (:attr:`ModelRunner.batched`).
MODEL_BATCH = 8


class ModelRunner:
    """One allocated interpreter that runs a model on batches of windows, with int8 (de)quantisation.

    Where the runtime and model allow it, the input is resized once to :data:`MODEL_BATCH` windows and every
    call takes that many (fewer are padded with zeros, more are split): one ``invoke`` instead of one per
    window (2.3 µs of call overhead each on LiteRT), and no reallocation per call (``allocate_tensors``
    after a resize costs ~0.3 ms). Batching is checked once, when the runner is made, and kept only if it
    gives exactly the per-window outputs (float32 models: to 1e-6); :attr:`batched` says which. Otherwise
    every window is its own call, as before.
    """

    def __init__(self, *, model_bytes: bytes, runtime: str | None = None, num_threads: int = 1) -> None:
        self._interpreter, self.runtime = make_interpreter(
            model_bytes=model_bytes, runtime=runtime, num_threads=num_threads
        )
        signature = _signature(self._interpreter)
        self.input, self.output = signature["input"], signature["output"]
        self._outputs = math.prod(self.output.shape[1:])
        self._batch = self.input.shape[0]  # the batch the interpreter's tensors are allocated for
        self._resize(1)
        #: Whether several windows share one interpreter call (see the class docstring).
        self.batched = self._batching_works()
        self._resize(MODEL_BATCH if self.batched else 1)
        self._padded = np.zeros((self._batch, *self.input.shape[1:]), dtype=self.input.dtype)

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self._interpreter.resize_tensor_input(self.input.index, [n, *self.input.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = n

    def _call(self, q: np.ndarray) -> np.ndarray:
        """Raw outputs ``(batch, n_out)`` of exactly one allocated batch of quantised inputs."""
        interpreter = self._interpreter
        interpreter.set_tensor(self.input.index, q)
        interpreter.invoke()
        return interpreter.get_tensor(self.output.index).reshape(self._batch, self._outputs)

    def _batching_works(self) -> bool:
        """Two windows in a padded batch against one at a time; any error or difference: per-window calls."""
        shape = (2, *self.input.shape[1:])
        probe = np.linspace(-2.0, 2.0, num=math.prod(shape), dtype=np.float32).reshape(shape)
        probe[0] = 0.0
        q = quantize(values=probe, dtype=self.input.dtype, quant=self.input.quant)
        try:
            single = np.concatenate([self._call(q[i : i + 1]) for i in range(2)])
            self._resize(MODEL_BATCH)
            padded = np.zeros((MODEL_BATCH, *q.shape[1:]), dtype=q.dtype)
            padded[:2] = q
            together = self._call(padded)[:2]
        except (ValueError, RuntimeError) as exc:
            log.debug("%s cannot batch this model (%s): one window per call", self.runtime, exc)
            return False
        finally:
            self._resize(1)
        if np.issubdtype(single.dtype, np.integer):
            works = bool(np.array_equal(single, together))
        else:
            works = bool(np.allclose(single, together, rtol=1e-6, atol=1e-6))
        if not works:
            log.debug("%s computes batches differently for this model: one window per call", self.runtime)
        return works

    def run(self, features: np.ndarray) -> np.ndarray:
        """Dequantised outputs ``(n, n_out)`` float32 for float inputs ``(n, *input_shape[1:])``."""
        q = quantize(values=features, dtype=self.input.dtype, quant=self.input.quant)
        out = np.empty((len(q), self._outputs), dtype=np.float32)
        for first in range(0, len(q), self._batch):
            chunk = q[first : first + self._batch]
            if len(chunk) < self._batch:  # the last, short batch: padded (rows are independent)
                self._padded[: len(chunk)] = chunk
                self._padded[len(chunk) :] = 0
                chunk = self._padded
            raw = self._call(chunk)[: min(self._batch, len(q) - first)]
            out[first : first + len(raw)] = dequantize(values=raw, quant=self.output.quant)
        return out


@dataclass(frozen=True)
class WindowScores:
    """What the model and the detector say about feature windows: probabilities ``(n, n_labels)``, novelty
    scores ``(n,)`` or None (no detector, or no baseline to compute them against), and whether the hive's
    baseline was there when the model needs one (``calibrated`` False: the probabilities are uniform)."""

    probabilities: np.ndarray
    novelty: np.ndarray | None
    calibrated: bool = True


@dataclass(frozen=True)
class WindowResult:
    """One window: the model's output, the signal check and (with a detector) the novelty score.

    ``label`` is the model's argmax whatever the window holds; :attr:`verdict` is what to show a user:
    the label for evidence, else why the window is not evidence.
    """

    start_s: float
    probabilities: dict[str, float]
    label: str
    swarm_score: float
    level_dbfs: float
    quality: str = QUALITY_OK
    signal: SignalQuality | None = None
    novelty: float | None = None
    novelty_threshold: float | None = None

    @property
    def unfamiliar(self) -> bool:
        """Beyond the bundle's novelty threshold (the rule of ``ClassificationEvent.unfamiliar``)."""
        return is_unfamiliar(novelty=self.novelty, threshold=self.novelty_threshold)

    @property
    def evidence(self) -> bool:
        """A usable signal the model knows: the only windows whose label says something about the hive."""
        return self.quality == QUALITY_OK and not self.unfamiliar

    @property
    def verdict(self) -> str:
        """The label for evidence; otherwise the quality problem, or ``unfamiliar``."""
        if self.quality != QUALITY_OK:
            return self.quality
        return UNFAMILIAR if self.unfamiliar else self.label

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "probabilities": self.probabilities,
            "label": self.label,
            "swarm_score": self.swarm_score,
            "level_dbfs": self.level_dbfs,
            "quality": self.quality,
            "signal": self.signal.to_json() if self.signal is not None else None,
            "novelty": self.novelty,
            "novelty_threshold": self.novelty_threshold,
            "unfamiliar": self.unfamiliar,
            "evidence": self.evidence,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class FileResult:
    """A recording's windows and their summary.

    ``label``: the argmax of ``mean_probabilities`` when at least :data:`MIN_EVIDENCE_SHARE` of the windows
    are evidence, else the most common verdict of the others (``no_signal``, ``clipped``, ``unfamiliar``,
    ...). ``mean_probabilities`` are over the evidence windows (over all windows when none is);
    ``swarm_fraction`` is the share of evidence windows labelled swarm (0 without evidence).
    ``verdicts`` counts the windows that are not evidence by why; ``novelty`` says whether the bundle
    had a detector (without one nothing is ever unfamiliar).
    """

    path: Path
    source_format: str
    duration_s: float
    windows: list[WindowResult]
    label: str
    mean_probabilities: dict[str, float]
    swarm_fraction: float
    evidence_windows: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    novelty: bool = False

    @property
    def unfamiliar_windows(self) -> int:
        return self.verdicts.get(UNFAMILIAR, 0)

    @property
    def no_signal_windows(self) -> int:
        """Windows whose signal check failed, whatever the problem."""
        return sum(
            n for verdict, n in self.verdicts.items() if verdict not in (UNFAMILIAR, QUALITY_UNCALIBRATED)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source_format": self.source_format,
            "duration_s": self.duration_s,
            "label": self.label,
            "mean_probabilities": self.mean_probabilities,
            "swarm_fraction": self.swarm_fraction,
            "evidence_windows": self.evidence_windows,
            "not_evidence": self.verdicts,
            "novelty_detector": self.novelty,
            "windows": [w.to_json() for w in self.windows],
        }


class Classifier:
    """A loaded, verified bundle with its interpreter (allocated once; MODEL_BATCH windows per call where the
    runtime batches, see :class:`ModelRunner`)."""

    def __init__(self, *, bundle: Bundle, runner: ModelRunner, quality: QualityConfig | None = None) -> None:
        self.bundle = bundle
        self.manifest: BundleManifest = bundle.manifest
        self.runtime = runner.runtime
        self.quality = quality or QualityConfig()
        #: The bundle's novelty detector, or None (an older bundle: nothing is ever unfamiliar).
        self.novelty: NoveltyDetector | None = bundle.novelty
        #: The hive's baseline, for a bundle whose features are relative to one (see set_baseline).
        self.baseline: HiveBaseline | None = None
        self._runner = runner
        # Frames and spectra reused from one batch of windows to the next (a Classifier is one thread's).
        self._workspace = feats.FeatureWorkspace()
        self._check_signature()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        runtime: str | None = None,
        num_threads: int = 1,
        selftest: bool = True,
        quality: QualityConfig | None = None,
    ) -> Classifier:
        """Read and verify the bundle, make the interpreter, and (by default) run the bundle's self-test."""
        return cls.from_bundle(
            read_bundle(Path(path)),
            runtime=runtime,
            num_threads=num_threads,
            selftest=selftest,
            quality=quality,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        runtime: str | None = None,
        num_threads: int = 1,
        selftest: bool = True,
        quality: QualityConfig | None = None,
    ) -> Classifier:
        runner = ModelRunner(model_bytes=bundle.model_bytes, runtime=runtime, num_threads=num_threads)
        classifier = cls(bundle=bundle, runner=runner, quality=quality)
        if selftest:
            delta = classifier.run_selftest()
            log.debug(
                "bundle %s passed its self-test on %s (max |Δ| %.3g)", bundle.path, runner.runtime, delta
            )
        return classifier

    @property
    def path(self) -> Path:
        return self.bundle.path

    @property
    def batched(self) -> bool:
        """Several windows per interpreter call (:attr:`ModelRunner.batched`), else one each."""
        return self._runner.batched

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def config(self) -> feats.FeatureConfig:
        return self.manifest.feature_config

    def _check_signature(self) -> None:
        m, inp, out = self.manifest, self._runner.input, self._runner.output
        problems = []
        if inp.shape[1:] != m.feature_shape or inp.dtype != m.input_dtype:
            problems.append(
                f"input {list(inp.shape)} {inp.dtype} vs manifest {list(m.input_shape)} {m.input_dtype}"
            )
        if out.shape[1:] != (len(m.labels),) or out.dtype != m.output_dtype:
            problems.append(
                f"output {list(out.shape)} {out.dtype} vs manifest {list(m.output_shape)} {m.output_dtype}"
            )
        for name, spec, declared in (("input", inp, m.input_quant), ("output", out, m.output_quant)):
            if spec.dtype != "float32" and (
                declared is None
                or spec.quant is None
                or declared.zero_point != spec.quant.zero_point
                or not np.isclose(declared.scale, spec.quant.scale, rtol=1e-6)
            ):
                problems.append(f"{name} quantisation {spec.quant} vs manifest {declared}")
        if problems:
            raise BundleError(
                f"{self.bundle.path}: the model does not match its manifest: {'; '.join(problems)}"
            )

    def run_selftest(self) -> float:
        """Run the bundle's self-test windows; return the max |Δ|, raise BundleError beyond the tolerance."""
        test = self.bundle.selftest
        got = self.predict(test.features)
        delta = float(np.max(np.abs(got - test.expected)))
        if not delta <= test.atol:
            raise BundleError(
                f"{self.bundle.path}: self-test failed: max |Δ| {delta:.4g} > atol {test.atol:.4g} over "
                f"{len(test.features)} windows on runtime {self.runtime} — wrong model for these features, "
                "or a runtime that computes it differently"
            )
        return delta

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, n_labels)`` float32 for windows ``(n, *feature_shape)`` or one window."""
        x = np.asarray(features, dtype=np.float32)
        shape = self.manifest.feature_shape
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape:
            raise ValueError(
                f"features of shape {x.shape}; this model takes (n, {', '.join(map(str, shape))})"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or infinity")
        m = self.manifest
        return self._runner.run(standardize(features=x, mean=m.feature_mean, std=m.feature_std))

    @property
    def novelty_threshold(self) -> float | None:
        return self.novelty.threshold if self.novelty is not None else None

    # -- the hive's baseline ---------------------------------------------------------------------------
    @property
    def needs_baseline(self) -> bool:
        """The bundle's features are relative to a hive baseline (a ``normalization`` section)."""
        return self.manifest.normalization is not None

    @property
    def calibrated(self) -> bool:
        """Windows can be judged: the model needs no baseline, or it has the hive's."""
        return not self.needs_baseline or self.baseline is not None

    def set_baseline(self, baseline: HiveBaseline | None) -> None:
        """Give the classifier the hive's baseline (None: forget it). A baseline made for another feature
        configuration is refused (ValueError): its statistics are in other units."""
        if baseline is not None and baseline.feature_config != self.config:
            raise ValueError(
                f"the baseline was made for feature config {baseline.fingerprint}; this model computes "
                f"{self.config.fingerprint()}: calibrate again for this model"
            )
        self.baseline = baseline

    def model_input(self, features: np.ndarray) -> np.ndarray | None:
        """The features the model and the detector take: relative to the baseline when the bundle says so
        (None when it has none yet), else the window features themselves."""
        spec = self.manifest.normalization
        if spec is None:
            return np.asarray(features, dtype=np.float32)
        if self.baseline is None:
            return None
        return relative_features(features=features, baseline=self.baseline, kind=spec.kind)

    def score(self, features: np.ndarray) -> WindowScores:
        """Probabilities and novelty scores of window features ``(n, *feature_shape)``, through the hive's
        baseline when the model takes one. Uncalibrated: uniform probabilities and no novelty score."""
        x = np.asarray(features, dtype=np.float32)
        if x.shape == self.manifest.feature_shape:
            x = x[None]
        relative = self.model_input(x)
        if relative is None:
            uniform = np.full((len(x), len(self.labels)), 1.0 / len(self.labels), dtype=np.float32)
            return WindowScores(probabilities=uniform, novelty=None, calibrated=False)
        return WindowScores(probabilities=self.predict(relative), novelty=self.novelty_scores(relative))

    def check_signal(self, samples: np.ndarray) -> SignalQuality:
        """The signal check of one window of samples at the model's rate (before the model)."""
        return check_window(samples=samples, sample_rate=self.config.sample_rate, config=self.quality)

    def window_features(self, windows: np.ndarray) -> np.ndarray:
        """Features ``(n, *feature_shape)`` of windows of samples ``(n, window_samples)`` at the model's
        rate, in one batch (:func:`beeaudio.core.features.features_of_windows`)."""
        return feats.features_of_windows(windows=windows, config=self.config, workspace=self._workspace)

    def novelty_scores(self, features: np.ndarray) -> np.ndarray | None:
        """Novelty scores ``(n,)`` of feature windows, or None when the bundle has no detector."""
        if self.novelty is None:
            return None
        return self.novelty.score(np.asarray(features, dtype=np.float32))

    def _window_result(
        self,
        *,
        start_s: float,
        probabilities: np.ndarray,
        level_dbfs: float,
        signal: SignalQuality | None = None,
        novelty: float | None = None,
    ) -> WindowResult:
        labels = self.manifest.labels
        probs = {label: float(p) for label, p in zip(labels, probabilities, strict=True)}
        return WindowResult(
            start_s=float(start_s),
            probabilities=probs,
            label=labels[int(np.argmax(probabilities))],
            swarm_score=probs[self.manifest.swarm_label],
            level_dbfs=float(level_dbfs),
            quality=signal.verdict if signal is not None else QUALITY_OK,
            signal=signal,
            novelty=None if novelty is None else float(novelty),
            novelty_threshold=self.novelty_threshold if novelty is not None else None,
        )

    def classify_windows(self, windows: Iterable[tuple[float, np.ndarray]]) -> Iterator[WindowResult]:
        """Classify ``(start_s, samples)`` windows (mono float32 at the model's rate): the signal check, the
        model and (with a detector) the novelty score of each. Up to :data:`BATCH_WINDOWS` windows are
        taken at a time and go through the features, the model and the detector together (the same
        results as one at a time, at a fraction of the per-call cost)."""
        batch: list[tuple[float, np.ndarray]] = []
        for start_s, samples in windows:
            if len(samples) != self.config.window_samples:
                yield from self.classify_batch(batch)  # the windows before it are fine
                raise ValueError(
                    f"window at {start_s:.2f} s has {len(samples)} samples; "
                    f"the model needs {self.config.window_samples}"
                )
            batch.append((start_s, samples))
            if len(batch) == BATCH_WINDOWS:
                yield from self.classify_batch(batch)
                batch = []
        yield from self.classify_batch(batch)

    def classify_batch(self, windows: Sequence[tuple[float, np.ndarray]]) -> list[WindowResult]:
        """:meth:`classify_windows` of a few windows at once: one feature batch, one model call per
        :data:`MAX_BATCH` windows (where the runtime allows it), one detector call."""
        if not windows:
            return []
        config = self.config
        for start_s, w in windows:
            if len(w) != config.window_samples:
                raise ValueError(
                    f"window at {start_s:.2f} s has {len(w)} samples; the model needs {config.window_samples}"
                )
        samples = np.stack([np.asarray(w, dtype=np.float32) for _, w in windows])
        signals = [self.check_signal(row) for row in samples]
        scores = self.score(self.window_features(samples))
        results = []
        for i, (start_s, _) in enumerate(windows):
            result = self._window_result(
                start_s=start_s,
                probabilities=scores.probabilities[i],
                level_dbfs=feats.level_dbfs(audio=samples[i]),
                signal=signals[i],
                novelty=None if scores.novelty is None else float(scores.novelty[i]),
            )
            if not scores.calibrated and result.quality == QUALITY_OK:
                result = dataclasses.replace(result, quality=QUALITY_UNCALIBRATED)
            results.append(result)
        return results

    def classify_array(self, audio: np.ndarray, *, sample_rate: int) -> list[WindowResult]:
        """Classify a mono signal already in memory (resampled to the model's rate if needed)."""
        config = self.config
        signal = np.asarray(audio, dtype=np.float32)
        if signal.ndim != 1:
            raise ValueError(f"expected mono audio (1-D), got shape {signal.shape}")
        if sample_rate != config.sample_rate:
            signal = audio_io.resample(signal, orig_rate=sample_rate, target_rate=config.sample_rate)
        starts = feats.window_starts(n_samples=len(signal), config=config)
        windows = (
            (
                float(s),
                signal[round(s * config.sample_rate) : round(s * config.sample_rate) + config.window_samples],
            )
            for s in starts
        )
        return list(self.classify_windows(windows))

    def classify_file(self, path: Path, *, block_seconds: float = 60.0) -> FileResult:
        """Classify a recording window by window (bounded memory) and summarise it (:class:`FileResult`
        says how the label and ``swarm_fraction`` are made). Audio problems raise
        :class:`beeaudio.core.audio.AudioError`.
        ``block_seconds`` is how much audio is decoded at a time (memory: about that much, whatever the
        file's length).
        """
        path = Path(path)
        info = audio_io.probe(path)
        windows = list(
            self.classify_windows(
                audio_io.iter_windows(path, config=self.config, block_seconds=block_seconds)
            )
        )
        if not windows:
            raise audio_io.TooShortAudioError(path, f"shorter than one {self.config.window_seconds} s window")
        return self.summarize(
            path=path, source_format=info.container, duration_s=info.duration_s, windows=windows
        )

    def summarize(
        self, *, path: Path, source_format: str, duration_s: float, windows: list[WindowResult]
    ) -> FileResult:
        labels = self.manifest.labels
        evidence = [w for w in windows if w.evidence]
        verdicts = Counter(w.verdict for w in windows if not w.evidence)
        basis = evidence or windows
        mean = np.mean([[w.probabilities[label] for label in labels] for w in basis], axis=0)
        if evidence and len(evidence) >= MIN_EVIDENCE_SHARE * len(windows):
            label = labels[int(np.argmax(mean))]
        else:
            # Most common first; ties go to the worse reason (quality problems before unfamiliar).
            label = max(verdicts, key=lambda v: (verdicts[v], v != UNFAMILIAR))
        swarm = sum(1 for w in evidence if w.label == self.manifest.swarm_label)
        return FileResult(
            path=path,
            source_format=source_format,
            duration_s=float(duration_s),
            windows=windows,
            label=label,
            mean_probabilities={label: float(p) for label, p in zip(labels, mean, strict=True)},
            swarm_fraction=swarm / len(evidence) if evidence else 0.0,
            evidence_windows=len(evidence),
            verdicts=dict(verdicts),
            novelty=self.novelty is not None,
        )
