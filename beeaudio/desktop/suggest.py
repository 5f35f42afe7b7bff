"""Which windows a beekeeper should listen to: score every window with a model, pick the few most worth it.

The shape is perch-hoplite's agile modeling: embed, search, label a few windows, train a small classifier
in minutes. Here the model scores every analysis window of the recordings (:func:`score_files`: the signal
check, the probabilities, the novelty score), and :func:`choose` picks up to ``n`` windows:

* never a window without a usable signal (silence, a dropout, clipping: nothing to hear, and never
  evidence on a device either), nor one inside a span that is already labelled (a class, ``nobee``, or a
  suggestion not confirmed yet);
* ranked (strategy ``informative``) by taking in turn the most **unfamiliar** window (novelty score beyond
  the model's threshold, highest first: the model has not heard audio like it) and the most **uncertain**
  one (the smallest margin between the two most probable labels: the model cannot decide). Labels where the
  model is unsure or out of its depth teach it most; a confidently right window teaches it nothing;
* spread over time and hives: no two suggestions in one recording closer than ``min_gap_s`` (start to
  start), and at most ``per_hive`` per hive (by default ``n`` shared evenly among the hives), so one odd
  hour of one hive does not take every suggestion.

``random`` (a seeded shuffle under the same rules) is the baseline ``beeaudio experiment adapt`` compares
against. :func:`suggest` is what ``beeaudio label suggest`` runs: it writes the suggestions as Audacity label
files (:mod:`beeaudio.desktop.labels`), a ``suggestions.csv`` and the instructions.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.errors import EXIT_USAGE, BeeaudioError
from beeaudio.core.features import FeatureConfig, window_features
from beeaudio.core.fsio import write_text_atomic
from beeaudio.core.quality import QualityConfig, check_window
from beeaudio.core.wire import QUALITY_OK
from beeaudio.desktop import datasets, labels

__all__ = [
    "STRATEGIES",
    "FileToLabel",
    "ScoredWindows",
    "Scorer",
    "ScorerError",
    "SuggestConfig",
    "SuggestResult",
    "Suggestion",
    "choose",
    "files_to_label",
    "load_scorer",
    "score_files",
    "suggest",
]

log = logging.getLogger(__name__)

#: How windows are ranked: ``informative`` (unfamiliar and uncertain in turn, the default), ``uncertain``
#: or ``unfamiliar`` alone (unfamiliar falls back to uncertain once no window is beyond the threshold), and
#: ``random``.
STRATEGIES = ("informative", "uncertain", "unfamiliar", "random")
SUGGESTIONS_CSV = "suggestions.csv"
_CSV_COLUMNS = (
    "rank", "file", "hive", "start_s", "end_s", "label", "guess", "reason", "margin", "novelty", "threshold",
)  # fmt: skip


class ScorerError(BeeaudioError):
    """A ``--model`` that cannot score windows here (not a bundle or run, or one that needs a hive baseline);
    the command is not run (exit 2)."""

    exit_code = EXIT_USAGE


# -- configuration and results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SuggestConfig:
    """``n`` windows at most; ``min_gap_s`` between suggestions in one recording (at least one window, so
    suggestions never overlap); ``per_hive`` cap (None: ``ceil(n / hives)``); ``strategy`` (see
    :data:`STRATEGIES`); ``seed`` for ``random`` and for breaking ties."""

    n: int = 40
    min_gap_s: float = 10.0
    per_hive: int | None = None
    strategy: str = "informative"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not (math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise ValueError(f"min_gap_s must be a non-negative number of seconds, got {self.min_gap_s}")
        if self.per_hive is not None and self.per_hive < 1:
            raise ValueError(f"per_hive must be at least 1, got {self.per_hive}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")


@dataclass(frozen=True)
class ScoredWindows:
    """Every window the model scored, as arrays (one entry per window).

    ``files`` and ``hives`` name the window's audio file and hive; ``starts`` its start in the file (s);
    ``probabilities`` ``(n, labels)`` (NaN where the window was not scored); ``novelty`` ``(n,)`` scores
    (NaN without a detector) against ``threshold``; ``usable``: a signal worth hearing (quality ``ok``);
    ``labelled``: inside a span that is already labelled.
    """

    files: np.ndarray
    hives: np.ndarray
    starts: np.ndarray
    probabilities: np.ndarray
    novelty: np.ndarray
    threshold: float | None
    usable: np.ndarray
    labelled: np.ndarray
    label_names: tuple[str, ...]
    window_seconds: float
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))

    def __post_init__(self) -> None:
        n = len(self.starts)
        for name in ("files", "hives", "novelty", "usable", "labelled"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ScoredWindows.{name} has {len(getattr(self, name))} entries, starts {n}")
        if self.probabilities.shape != (n, len(self.label_names)):
            raise ValueError(f"probabilities of shape {self.probabilities.shape}, expected ({n}, labels)")

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def margin(self) -> np.ndarray:
        """Top probability minus the second (0: on the decision boundary); NaN where not scored."""
        ordered = np.sort(self.probabilities, axis=1)
        return ordered[:, -1] - ordered[:, -2]

    @property
    def novelty_ratio(self) -> np.ndarray:
        """Novelty score over the threshold (above 1: unfamiliar); NaN without a detector."""
        if self.threshold is None or not self.threshold > 0:
            return np.full(len(self), np.nan)
        return self.novelty / self.threshold


@dataclass(frozen=True)
class Suggestion:
    """One window worth a listen: where, the model's guess, and why it was picked."""

    file: str
    hive: str
    start_s: float
    end_s: float
    guess: str
    reason: str
    margin: float
    novelty: float | None
    rank: int

    @property
    def label(self) -> str:
        return labels.suggestion_label(self.guess)

    def span(self) -> labels.Span:
        return labels.Span(start_s=self.start_s, end_s=self.end_s, label=self.label)


@dataclass(frozen=True)
class SuggestResult:
    suggestions: tuple[Suggestion, ...]
    label_files: tuple[Path, ...]
    readme: Path
    table: Path
    windows: int
    no_signal: int
    already_labelled: int
    skipped_files: tuple[str, ...]


# -- ranking and choosing ----------------------------------------------------------------------------------
def _ranked(windows: ScoredWindows, *, strategy: str, seed: int) -> list[tuple[int, str]]:
    """Candidate windows in the order they are considered, each with the reason it would be picked."""
    scored = np.all(np.isfinite(windows.probabilities), axis=1)
    candidates = np.flatnonzero(windows.usable & ~windows.labelled & scored)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return [(int(i), "random") for i in rng.permutation(candidates)]
    # A seeded shuffle first, then stable sorts: equal scores are broken at random, not by file order.
    candidates = candidates[rng.permutation(candidates.size)]
    margin = windows.margin[candidates]
    uncertain = [int(i) for i in candidates[np.argsort(margin, kind="stable")]]
    ratio = windows.novelty_ratio[candidates]
    beyond = np.isfinite(ratio) & (ratio > 1.0)
    unfamiliar = [int(i) for i in candidates[beyond][np.argsort(-ratio[beyond], kind="stable")]]
    if strategy == "uncertain":
        return [(i, "uncertain") for i in uncertain]
    if strategy == "unfamiliar":
        queues = [(unfamiliar, "unfamiliar"), (uncertain, "uncertain")]
        order = [(i, reason) for queue, reason in queues for i in queue]
    else:  # informative: the most unfamiliar and the most uncertain in turn
        order = []
        for pair in zip(unfamiliar, uncertain[: len(unfamiliar)], strict=False):
            order += [(pair[0], "unfamiliar"), (pair[1], "uncertain")]
        order += [(i, "unfamiliar") for i in unfamiliar[len(uncertain) :]]
        order += [(i, "uncertain") for i in uncertain[len(unfamiliar) :]]
    seen: set[int] = set()
    return [(i, reason) for i, reason in order if not (i in seen or seen.add(i))]


def choose(*, windows: ScoredWindows, config: SuggestConfig) -> list[Suggestion]:
    """Up to ``config.n`` suggestions, best first, under the gap and per-hive rules (module docstring)."""
    if config.min_gap_s < windows.window_seconds:
        raise ValueError(
            f"min_gap_s {config.min_gap_s:g} s is shorter than one {windows.window_seconds:g} s window:"
            " suggestions would overlap"
        )
    ranked = _ranked(windows, strategy=config.strategy, seed=config.seed)
    hives_with_candidates = {str(windows.hives[i]) for i, _ in ranked}
    quota = config.per_hive or max(1, math.ceil(config.n / max(1, len(hives_with_candidates))))
    per_hive: Counter[str] = Counter()
    taken: dict[str, list[float]] = {}
    picked: list[Suggestion] = []
    margin, novelty = windows.margin, windows.novelty
    for i, reason in ranked:
        if len(picked) >= config.n:
            break
        hive, file, start = str(windows.hives[i]), str(windows.files[i]), float(windows.starts[i])
        if per_hive[hive] >= quota:
            continue
        # A small tolerance: starts are multiples of the hop, computed in floating point.
        if any(abs(start - other) < config.min_gap_s - 1e-6 for other in taken.get(file, ())):
            continue
        per_hive[hive] += 1
        taken.setdefault(file, []).append(start)
        picked.append(
            Suggestion(
                file=file,
                hive=hive,
                start_s=round(start, 6),
                end_s=round(start + windows.window_seconds, 6),
                guess=windows.label_names[int(np.argmax(windows.probabilities[i]))],
                reason=reason,
                margin=float(margin[i]),
                novelty=None if not np.isfinite(novelty[i]) else float(novelty[i]),
                rank=len(picked) + 1,
            )
        )
    if len(picked) < config.n:
        log.info(
            "%d of %d suggestions: no more windows with a signal outside labelled spans within the gap (%g s)"
            " and per-hive (%d) rules",
            len(picked), config.n, config.min_gap_s, quota,
        )  # fmt: skip
    return picked


# -- the model ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scorer:
    """What scores windows: a bundle (through the device's inference code) or a training run (its Keras
    model and novelty detector). ``predict(features) -> probabilities``; ``novelty(features) -> scores``
    or None without a detector."""

    source: str
    config: FeatureConfig
    label_names: tuple[str, ...]
    predict: Callable[[np.ndarray], np.ndarray]
    novelty: Callable[[np.ndarray], np.ndarray] | None
    threshold: float | None
    quality: QualityConfig = field(default_factory=QualityConfig)


def load_scorer(*, model: Path, runtime: str | None = None) -> Scorer:
    """A :class:`Scorer` for a ``.beemodel`` bundle or a ``beeaudio train`` run folder. Models whose
    features are relative to a hive's baseline are refused: their windows cannot be scored without one."""
    from beeaudio.desktop.training import train as training

    model = Path(model)
    if model.is_dir():
        if not (model / training.MODEL_FILE).is_file():
            raise ScorerError(f"{model}: neither a bundle nor a run folder (no {training.MODEL_FILE})")
        return _run_scorer(model)
    from beeaudio.core.inference import Classifier

    classifier = Classifier.load(model, runtime=runtime)
    if classifier.needs_baseline:
        raise ScorerError(
            f"{model}: this bundle takes features relative to each hive's baseline, which label suggest"
            " does not have: give the run folder of a model trained without --calibration"
        )
    return Scorer(
        source=str(model),
        config=classifier.config,
        label_names=tuple(classifier.labels),
        predict=classifier.predict,
        novelty=classifier.novelty_scores if classifier.novelty is not None else None,
        threshold=classifier.novelty_threshold,
    )


def _run_scorer(run: Path) -> Scorer:
    from beeaudio.desktop.training import novelty_fit
    from beeaudio.desktop.training import train as training
    from beeaudio.desktop.training.models import load_model

    train_config = training.read_json(run / training.TRAIN_CONFIG_FILE)
    if train_config.get("calibration", "none") != "none":
        raise ScorerError(
            f"{run}: trained on features relative to each hive's baseline (calibration"
            f" {train_config['calibration']!r}), which label suggest does not have: use a model trained"
            " without --calibration"
        )
    config = FeatureConfig.from_dict(training.read_json(run / training.FEATURE_CONFIG_FILE))
    names = tuple(str(x) for x in training.read_json(run / training.METRICS_FILE)["labels"])
    keras_model = load_model(run / training.MODEL_FILE)
    fitted = novelty_fit.load_fit(run=run, config=config, n_classes=len(names))
    detector = fitted[0] if fitted is not None else None
    return Scorer(
        source=str(run),
        config=config,
        label_names=names,
        predict=lambda x: np.asarray(keras_model.predict(np.asarray(x, np.float32), verbose=0)),
        novelty=detector.score if detector is not None else None,
        threshold=detector.threshold if detector is not None else None,
    )


# -- the recordings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileToLabel:
    """An audio file to score, its hive, and the spans its label file already has (kept when writing)."""

    path: Path
    hive: str
    existing: tuple[labels.Span, ...] = ()

    def labelled(self, *, classes: Sequence[str]) -> list[tuple[float, float]]:
        """The spans already labelled: a class, ``nobee`` or an unconfirmed suggestion (not notes)."""
        return [
            (s.start_s, s.end_s)
            for s in self.existing
            if datasets.label_class(s.label, classes=classes) is not None
            or s.label.strip().lower() == datasets.NOBEE
            or s.label.strip().endswith(datasets.SUGGESTION_MARK)
        ]


def files_to_label(*, root: Path) -> list[FileToLabel]:
    """Every recording under ``root`` with its hive (the manifest's, when there is one, else from the file
    name or folder, :func:`beeaudio.desktop.datasets.hive_of_file`) and its label file's spans. No label is
    needed: these are the recordings to label."""
    from beeaudio.core.audio import audio_files

    root = Path(root)
    if not root.is_dir():
        raise datasets.DatasetError(f"{root}: no such folder of recordings")
    if (root / datasets.MANIFEST_NAME).is_file():
        hive_of = {Path(r.path): r.hive for r in datasets.discover(root=root)}
        paths = sorted(hive_of)
    else:
        paths = [p for p in audio_files(paths=[root]) if p.suffix.lower() in datasets.AUDIO_SUFFIXES]
        hive_of = {p: datasets.hive_of_file(root=root, path=p) for p in paths}
    if not paths:
        raise datasets.DatasetError(f"{root}: no recordings ({', '.join(datasets.AUDIO_SUFFIXES)})")
    out = []
    for path in paths:
        label_file = labels.label_path(audio=path)
        existing = tuple(labels.read_spans(label_file)) if label_file.is_file() else ()
        out.append(FileToLabel(path=path, hive=hive_of[path], existing=existing))
    return out


def score_files(
    *, scorer: Scorer, files: Sequence[FileToLabel], progress: bool = True
) -> tuple[ScoredWindows, list[str]]:
    """Every window of every file: the signal check (on the samples the device would see), then the model
    and the detector on the windows with a usable signal. Files that cannot be decoded (or are shorter
    than a window, or narrower than the model's band) are logged and skipped; their names are returned."""
    from tqdm.auto import tqdm

    from beeaudio.core.audio import AudioError, iter_windows

    config = scorer.config
    classes = sorted({*datasets.LABEL_CLASSES, *scorer.label_names})
    columns: dict[str, list[Any]] = {k: [] for k in ("files", "hives", "starts", "quality", "labelled")}
    features, rows = [], []
    skipped: list[str] = []
    for item in tqdm(files, desc="scoring", unit="file", disable=not progress):
        taken = item.labelled(classes=classes)
        try:
            windows = list(iter_windows(item.path, config=config))
        except AudioError as error:
            log.warning("skipping %s", error)
            skipped.append(str(item.path))
            continue
        for start, samples in windows:
            quality = check_window(samples=samples, sample_rate=config.sample_rate, config=scorer.quality)
            verdict = quality.verdict
            end = start + config.window_seconds
            columns["files"].append(str(item.path))
            columns["hives"].append(item.hive)
            columns["starts"].append(float(start))
            columns["quality"].append(verdict)
            columns["labelled"].append(any(a < end and start < b for a, b in taken))
            if verdict == QUALITY_OK:
                rows.append(len(columns["starts"]) - 1)
                features.append(window_features(audio=samples, config=config)[0])
    n = len(columns["starts"])
    probabilities = np.full((n, len(scorer.label_names)), np.nan)
    novelty = np.full(n, np.nan)
    if rows:
        x = np.stack(features).astype(np.float32)
        probabilities[rows] = scorer.predict(x)
        if scorer.novelty is not None:
            novelty[rows] = scorer.novelty(x)
    quality = np.asarray(columns["quality"], dtype=str)
    scored = ScoredWindows(
        files=np.asarray(columns["files"], dtype=str),
        hives=np.asarray(columns["hives"], dtype=str),
        starts=np.asarray(columns["starts"], dtype=np.float64),
        probabilities=probabilities,
        novelty=novelty,
        threshold=scorer.threshold,
        usable=quality == QUALITY_OK,
        labelled=np.asarray(columns["labelled"], dtype=bool),
        label_names=scorer.label_names,
        window_seconds=config.window_seconds,
        quality=quality,
    )
    return scored, skipped


# -- the command -------------------------------------------------------------------------------------------
def _table(suggestions: Sequence[Suggestion], *, threshold: float | None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for s in suggestions:
        novelty = "" if s.novelty is None else f"{s.novelty:.3f}"
        limit = "" if threshold is None else f"{threshold:.3f}"
        writer.writerow(
            [s.rank, s.file, s.hive, f"{s.start_s:.3f}", f"{s.end_s:.3f}", s.label, s.guess, s.reason,
             f"{s.margin:.3f}", novelty, limit]
        )  # fmt: skip
    return buffer.getvalue()


def suggest(
    *,
    model: Path,
    data: Path,
    out: Path,
    config: SuggestConfig = SuggestConfig(),
    runtime: str | None = None,
    progress: bool = True,
) -> SuggestResult:
    """Score the recordings under ``data`` with ``model`` (a bundle or a run folder), choose the windows
    most worth a listen (:func:`choose`) and write, for every recording with a suggestion, its Audacity
    label file (the spans already there, then the suggestions) into ``out`` — beside the recordings when
    ``out`` is ``data`` — plus ``suggestions.csv`` and ``LABELLING.md`` (how to correct them)."""
    data, out = Path(data), Path(out)
    scorer = load_scorer(model=model, runtime=runtime)
    files = files_to_label(root=data)
    windows, skipped = score_files(scorer=scorer, files=files, progress=progress)
    if not len(windows):
        raise datasets.DatasetError(f"{data}: no recording could be cut into windows for {model}")
    chosen = choose(windows=windows, config=config)
    beside = out.resolve() == data.resolve()
    out.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[Suggestion]] = {}
    for s in chosen:
        by_file.setdefault(s.file, []).append(s)
    existing = {str(f.path): f.existing for f in files}
    written = [
        labels.write_label_file(
            path=labels.label_path(audio=Path(file))
            if beside
            else labels.label_path(audio=Path(file), root=data, out=out),
            spans=[s.span() for s in items],
            keep=existing[file],
        )
        for file, items in sorted(by_file.items())
    ]
    table = write_text_atomic(out / SUGGESTIONS_CSV, _table(chosen, threshold=windows.threshold))
    readme = write_text_atomic(
        out / labels.README_NAME,
        labels.readme_text(
            data=data,
            out=out,
            model=str(model),
            suggested=len(chosen),
            files=len(by_file),
            beside_audio=beside,
            reasons=dict(Counter(s.reason for s in chosen)),
            window_seconds=scorer.config.window_seconds,
        ),
    )
    no_signal = int(np.sum(~windows.usable))
    log.info(
        "%d suggestions in %d recordings (%d windows scored, %d without a usable signal, %d labelled)",
        len(chosen), len(by_file), len(windows), no_signal, int(np.sum(windows.labelled)),
    )  # fmt: skip
    return SuggestResult(
        suggestions=tuple(chosen),
        label_files=tuple(written),
        readme=readme,
        table=table,
        windows=len(windows),
        no_signal=no_signal,
        already_labelled=int(np.sum(windows.labelled & windows.usable)),
        skipped_files=tuple(skipped),
    )
