"""Datasets: find labelled hive recordings on disk, cut them into analysis windows, split them by hive.

:func:`discover` understands three layouts (the first that applies wins):

1. **A manifest** — ``root/manifest.csv`` with columns ``path,label`` and optionally ``hive``,
   ``recording``, ``start_s``, ``end_s`` (extra columns are ignored; ``path`` is relative to the manifest).
   A missing ``hive`` is taken from the file name (an OSBH / NU-Hive name or a ``<hive>__`` prefix, see
   below) or else is the recording itself; a missing ``recording`` is the path without its suffix.
   This is what ``beeaudio synth`` writes.
2. **Open Source Beehives / NU-Hive file names** anywhere under ``root``:
   ``CF003 - Active - Day - (223).wav`` → hive ``CF003``, and the state mapped with :data:`STATE_LABELS`
   (``Active`` → ``normal``, ``Missing Queen`` → ``queenless``, ``Swarm`` → ``swarm``; an unknown state
   becomes its lower-case slug, e.g. ``Pre-Swarm`` → ``pre-swarm``), and the NU-Hive recordings
   ``Hive1_12_06_2018_QueenBee____15_00_00.wav`` → hive ``Hive1``, ``QueenBee`` → ``normal``,
   ``NO_QueenBee`` → ``queenless``.
3. **Class folders** — ``root/<label>/*.wav``; the hive is the file stem (each file its own hive, the
   safe assumption when nothing says which recordings share a colony) unless the name starts with
   ``<hive>__`` (``root/swarm/hiveA__2021-06-01.wav`` → hive ``hiveA``) or the file sits in a hive
   sub-folder (``root/<label>/<hive>/*.wav``).

and, for every layout, **Audacity label files** beside a recording (``name.txt`` or ``name.lab`` next to
``name.wav``; lines ``start<TAB>end<TAB>label``; the NU-Hive ``.lab`` files have the same lines):

* spans whose label names a class (:data:`LABEL_CLASSES` or any label of the dataset's recordings, in any
  case, ``Active`` read as ``normal``) are the recording's labelled segments: the recording is used only
  there, each span with its label (:attr:`Recording.start_s` / :attr:`Recording.end_s`; same hive and
  recording id). This is also a layout of its own (4.): **recordings with label files**, no manifest or
  class folders needed, the hive taken from the file name or the first folder that is not a class name
  (:func:`hive_of_file`); in such a folder, recordings without class spans are skipped unless they sit in
  a folder named like a class;
* spans labelled ``nobee`` (any case) are cut out, so the recording becomes several kept segments;
* suggestions not confirmed yet (labels ending in :data:`SUGGESTION_MARK`, as ``beeaudio label suggest``
  writes them: ``swarm?``) are ignored with a warning; other labels (NU-Hive's ``bee``) are ignored.

:func:`build_windows` turns recordings into feature windows through the one front end
(:func:`beeaudio.core.audio.load` + :func:`beeaudio.core.features.window_features`), with a disk cache
keyed by the
file's content, the feature configuration, the transform and the segment, so a second run decodes nothing.
:func:`grouped_split` splits windows so that no hive and no recording is on both sides.

Only numpy (and tqdm for progress bars) is imported at import time.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from beeaudio.core.audio import AudioError
from beeaudio.core.audio import load as load_audio
from beeaudio.core.audio import probe as probe_audio
from beeaudio.core.errors import EXIT_USAGE, BeeaudioError
from beeaudio.core.features import FeatureConfig, window_features, window_starts
from beeaudio.core.fsio import atomic_path, file_sha256

__all__ = [
    "AUDIO_SUFFIXES",
    "CACHE_FORMAT",
    "LABEL_CLASSES",
    "STATE_LABELS",
    "SUGGESTION_MARK",
    "BandTooWideError",
    "DatasetError",
    "LabelSpans",
    "Recording",
    "WindowSet",
    "build_windows",
    "check_band",
    "discover",
    "grouped_split",
    "hive_of_file",
    "label_class",
    "read_label_file",
    "read_label_spans",
]

log = logging.getLogger(__name__)

#: File suffixes taken for audio when walking a folder (decoding itself goes by content).
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff")
#: Hive states in Open Source Beehives / NU-Hive names → beeaudio labels (keys compared in lower case,
#: with runs of spaces, dashes and underscores as one space).
STATE_LABELS = {
    "active": "normal",
    "queenbee": "normal",
    "queen bee": "normal",
    "missing queen": "queenless",
    "no queenbee": "queenless",
    "no queen bee": "queenless",
    "no queen": "queenless",
    "queenless": "queenless",
    "swarm": "swarm",
    "swarming": "swarm",
}
#: Label of Audacity / NU-Hive spans that are dropped (compared case-insensitively).
NOBEE = "nobee"
#: What ends a label ``beeaudio label suggest`` wrote (``swarm?``): a guess nobody has confirmed yet.
SUGGESTION_MARK = "?"
#: Labels a label-file span may name besides those the dataset's own recordings carry: the labels of
#: :data:`STATE_LABELS`, the generator's ``piping`` and the Open Source Beehives ``pre-swarm``.
LABEL_CLASSES = tuple(sorted({*STATE_LABELS.values(), "piping", "pre-swarm"}))
#: Bumped whenever the cached arrays change meaning.
CACHE_FORMAT = 1
MANIFEST_NAME = "manifest.csv"
_REQUIRED_COLUMNS = ("path", "label")
_OPTIONAL_COLUMNS = ("hive", "recording", "start_s", "end_s")

# "CF003 - Active - Day - (223).wav", "CF001 - Missing Queen - Day -  (100).wav"
_OSBH = re.compile(r"^\s*(?P<hive>[A-Za-z]+\d+)\s+-\s+(?P<state>.+?)\s+-\s+(?P<rest>.*)$")
# "Hive1_12_06_2018_QueenBee____15_00_00.wav", "Hive3_20_07_2017_NO_QueenBee____06_10_00.wav"
_NUHIVE = re.compile(
    r"^(?P<hive>Hive\d+)_(?P<date>\d{1,2}_\d{1,2}_\d{4})_(?P<state>(?:NO_)?Queen_?Bee)_*(?P<time>[\d_]*)$",
    re.IGNORECASE,
)


class DatasetError(BeeaudioError, ValueError):
    """A dataset folder or manifest that cannot be read as described; the message says what and where."""


class BandTooWideError(DatasetError):
    """The feature configuration listens above what some recordings hold (fmax above their Nyquist
    frequency): refused before anything is decoded, naming the recordings; the command is not run (2)."""

    exit_code = EXIT_USAGE


#: Recordings named in a :class:`BandTooWideError` message before "and N more".
_NAMED_FILES = 5


@dataclass(frozen=True)
class Recording:
    """One labelled recording (or one kept segment of it: ``start_s``/``end_s``, ``None`` = to the end)."""

    path: Path
    label: str
    hive: str
    recording: str
    start_s: float = 0.0
    end_s: float | None = None


# -- discovery ---------------------------------------------------------------------------------------------
def _state_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


def _state_label(state: str) -> str:
    key = _state_key(state)
    if key in STATE_LABELS:
        return STATE_LABELS[key]
    return re.sub(r"[^a-z0-9]+", "-", state.strip().lower()).strip("-") or "unknown"


def parse_known_name(name: str) -> tuple[str, str] | None:
    """``(hive, label)`` from an Open Source Beehives or NU-Hive file name (with or without suffix)."""
    stem = Path(name).stem if Path(name).suffix.lower() in AUDIO_SUFFIXES else name
    match = _OSBH.match(stem)
    if match:
        return match["hive"].upper(), _state_label(match["state"])
    match = _NUHIVE.match(stem)
    if match:
        return match["hive"], _state_label(match["state"].replace("_", " "))
    return None


def _hive_from_name(stem: str) -> str | None:
    known = parse_known_name(stem)
    if known:
        return known[0]
    if "__" in stem:
        prefix = stem.split("__", 1)[0].strip()
        if prefix:
            return prefix
    return None


def read_label_file(path: Path) -> list[tuple[float, float, str]]:
    """Spans ``(start_s, end_s, label)`` of an Audacity label track (or NU-Hive ``.lab`` file).

    Lines that are not ``start end label`` (a header naming the file, a closing ``.``, Audacity's
    ``\\``-prefixed spectral-selection lines) are skipped. Fields may be separated by tabs or spaces.
    """
    spans: list[tuple[float, float, str]] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.strip().split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) < 2 or line.lstrip().startswith("\\"):
            continue
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        if end < start:
            raise DatasetError(f"{path}:{number}: span ends ({end}) before it starts ({start})")
        spans.append((start, end, " ".join(parts[2:]) if len(parts) > 2 else ""))
    return spans


def _label_file_for(audio_path: Path) -> Path | None:
    for suffix in (".txt", ".lab"):
        candidate = audio_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _kept_segments(
    start: float, end: float | None, drops: Iterable[tuple[float, float]]
) -> list[tuple[float, float | None]]:
    """[start, end) minus the dropped spans; ``end=None`` means "to the end of the file"."""
    segments: list[tuple[float, float | None]] = [(start, end)]
    for d0, d1 in sorted(drops):
        next_segments: list[tuple[float, float | None]] = []
        for s0, s1 in segments:
            upper = float("inf") if s1 is None else s1
            if d1 <= s0 or d0 >= upper:
                next_segments.append((s0, s1))
                continue
            if d0 > s0:
                next_segments.append((s0, d0))
            if d1 < upper:
                next_segments.append((d1, s1))
        segments = next_segments
    return [(s0, s1) for s0, s1 in segments if s1 is None or s1 > s0]


def label_class(text: str, *, classes: Iterable[str]) -> str | None:
    """The class a label-file span names (``Swarm`` → ``swarm``, ``Active`` → ``normal``, as in file names),
    or None when it names none of ``classes``. Unconfirmed suggestions (ending in ``?``) name none."""
    text = text.strip()
    if not text or text.endswith(SUGGESTION_MARK):
        return None
    label = _state_label(text)
    return label if label in set(classes) else None


@dataclass(frozen=True)
class LabelSpans:
    """What one label file says: confirmed class spans ``(start_s, end_s, label)``, ``nobee`` spans to cut
    out, how many suggestions are still unconfirmed (``swarm?``), and the other labels (notes such as the
    NU-Hive ``bee`` spans), which are ignored."""

    path: Path
    classes: tuple[tuple[float, float, str], ...] = ()
    drops: tuple[tuple[float, float], ...] = ()
    unconfirmed: int = 0
    other: tuple[str, ...] = ()


def read_label_spans(path: Path, *, classes: Iterable[str] = LABEL_CLASSES) -> LabelSpans:
    """Sort a label file's spans into class spans, ``nobee`` spans, unconfirmed suggestions and the rest.

    Two class spans that overlap with different labels are a :class:`DatasetError` naming both (a window
    in both cannot have two labels); overlapping spans of one label are merged.
    """
    known = tuple(classes)
    spans, drops, others, unconfirmed = [], [], [], 0
    for start, end, text in read_label_file(path):
        label = label_class(text, classes=known)
        if label is not None:
            spans.append((start, end, label))
        elif text.strip().lower() == NOBEE:
            drops.append((start, end))
        elif text.strip().endswith(SUGGESTION_MARK):
            unconfirmed += 1
        else:
            others.append(text.strip())
    merged: list[tuple[float, float, str]] = []
    for start, end, label in sorted(spans):
        if merged and start < merged[-1][1]:
            if merged[-1][2] != label:
                raise DatasetError(
                    f"{path}: the spans {merged[-1][0]:g}-{merged[-1][1]:g} s ({merged[-1][2]}) and"
                    f" {start:g}-{end:g} s ({label}) overlap with different labels: correct one of them"
                )
            merged[-1] = (merged[-1][0], max(merged[-1][1], end), label)
            continue
        merged.append((start, end, label))
    return LabelSpans(
        path=Path(path),
        classes=tuple(merged),
        drops=tuple(drops),
        unconfirmed=unconfirmed,
        other=tuple(others),
    )


def _apply_label_file(recording: Recording, spans: LabelSpans | None) -> list[Recording]:
    """The recording's kept segments: with class spans, exactly those spans (each with its label, clipped
    to the recording and minus ``nobee``); without, the recording minus its ``nobee`` spans."""
    if spans is None:
        return [recording]
    if spans.classes:
        upper = float("inf") if recording.end_s is None else recording.end_s
        labelled = [
            (segment, label)
            for s0, s1, label in spans.classes
            if min(s1, upper) > max(s0, recording.start_s)
            for segment in _kept_segments(max(s0, recording.start_s), min(s1, upper), spans.drops)
        ]
        if recording.label and recording.label not in {label for _, label in labelled}:
            log.info("%s: its label file's spans replace its label %r", recording.path, recording.label)
        return [
            Recording(
                path=recording.path,
                label=label,
                hive=recording.hive,
                recording=recording.recording,
                start_s=s0,
                end_s=s1,
            )
            for (s0, s1), label in labelled
        ]
    if not spans.drops:
        return [recording]
    kept = _kept_segments(recording.start_s, recording.end_s, spans.drops)
    log.debug("%s: %d nobee spans dropped, %d segments kept", recording.path, len(spans.drops), len(kept))
    return [
        Recording(
            path=recording.path,
            label=recording.label,
            hive=recording.hive,
            recording=recording.recording,
            start_s=s0,
            end_s=s1,
        )
        for s0, s1 in kept
    ]


def _optional_float(value: str | None, *, where: str, column: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{where}: column {column!r} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise DatasetError(f"{where}: column {column!r} must be a non-negative number, got {value!r}")
    return number


def _from_manifest(manifest: Path) -> list[Recording]:
    base = manifest.parent
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{manifest}: unknown column layout {columns}: need {list(_REQUIRED_COLUMNS)} and optionally"
                f" {list(_OPTIONAL_COLUMNS)}"
            )
        reader.fieldnames = columns
        recordings: list[Recording] = []
        for line, row in enumerate(reader, start=2):
            where = f"{manifest}:{line}"
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                raise DatasetError(f"{where}: empty path or label")
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            if not path.is_file():
                raise DatasetError(f"{where}: {rel!r} does not exist (looked for {path})")
            recording_id = (row.get("recording") or "").strip() or Path(rel).with_suffix("").as_posix()
            hive = (row.get("hive") or "").strip() or _hive_from_name(path.stem) or recording_id
            start = _optional_float(row.get("start_s"), where=where, column="start_s") or 0.0
            end = _optional_float(row.get("end_s"), where=where, column="end_s")
            if end is not None and end <= start:
                raise DatasetError(f"{where}: end_s {end} is not after start_s {start}")
            recordings.append(
                Recording(path=path, label=label, hive=hive, recording=recording_id, start_s=start, end_s=end)
            )
    if not recordings:
        raise DatasetError(f"{manifest}: the manifest lists no recordings")
    return recordings


def _audio_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _label_file_state(path: Path) -> tuple[bool, bool]:
    """Whether the label file beside ``path`` names a class, and whether it holds unconfirmed suggestions."""
    label_file = _label_file_for(path)
    if label_file is None:
        return False, False
    spans = read_label_spans(label_file)
    return bool(spans.classes), spans.unconfirmed > 0


def hive_of_file(*, root: Path, path: Path) -> str:
    """The hive of an audio file in a folder without a manifest: from an Open Source Beehives / NU-Hive
    name or a ``<hive>__`` prefix, else the first folder under ``root`` that is not a class name
    (``root/hiveA/x.wav`` and ``root/swarm/hiveA/x.wav`` → ``hiveA``), else the recording itself."""
    rel = Path(path).relative_to(root)
    folders = [part for part in rel.parts[:-1] if _state_label(part) not in LABEL_CLASSES]
    return _hive_from_name(Path(path).stem) or (folders[0] if folders else rel.with_suffix("").as_posix())


def _from_files(root: Path) -> list[Recording]:
    files = _audio_files(root)
    if not files:
        raise DatasetError(
            f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) and no {MANIFEST_NAME}:"
            " expected a manifest,"
            " class folders (<root>/<label>/*.wav), Open Source Beehives / NU-Hive file names, or"
            " recordings with Audacity label files naming classes"
        )
    states = {path: _label_file_state(path) for path in files}
    by_label_file = {path for path, (classes, _) in states.items() if classes}
    # Suggestions waiting to be confirmed also say the folder is laid out by label files, not class folders.
    label_layout = any(classes or pending for classes, pending in states.values())
    recordings: list[Recording] = []
    unplaced: list[Path] = []
    for path in files:
        rel = path.relative_to(root)
        recording_id = rel.with_suffix("").as_posix()
        known = parse_known_name(path.name)
        if known:
            hive, label = known
        elif path in by_label_file:
            # Labelled by its spans (set in _apply_label_file); the folder is the hive, not a class.
            hive, label = hive_of_file(root=root, path=path), ""
        elif len(rel.parts) >= 2 and (not label_layout or _state_label(rel.parts[0]) in LABEL_CLASSES):
            # With label files in use, only folders named like a class are class folders (root/hiveA/ is
            # a hive's folder, and its unlabelled recordings are not of a class called hiveA).
            label = rel.parts[0]
            hive = _hive_from_name(path.stem) or (rel.parts[1] if len(rel.parts) >= 3 else recording_id)
        else:
            unplaced.append(rel)
            continue
        recordings.append(Recording(path=path, label=label, hive=hive, recording=recording_id))
    if unplaced:
        shown = ", ".join(str(p) for p in unplaced[:5]) + (" ..." if len(unplaced) > 5 else "")
        if not recordings:
            raise DatasetError(
                f"{root}: cannot tell the label of {len(unplaced)} audio files ({shown}): put them in class"
                f" folders (<root>/<label>/), name them like 'CF003 - Active - Day - (1).wav', list them"
                f" in {MANIFEST_NAME} (columns path,label[,hive,recording,start_s,end_s]), or label spans"
                f" of them in Audacity label files beside them (name.txt; `beeaudio label suggest` writes"
                f" them; suggestions ending in {SUGGESTION_MARK!r} count once confirmed)"
            )
        pending = sum(1 for rel in unplaced if states[root / rel][1])
        log.warning(
            "%s: skipped %d audio files with no label (not in a class folder, no label file naming a class):"
            " %s%s",
            root,
            len(unplaced),
            shown,
            f"; {pending} of them have only suggestions not confirmed yet (labels ending in"
            f" {SUGGESTION_MARK!r}): correct them in Audacity to use them"
            if pending
            else "",
        )
    return recordings


def _label_spans(recordings: Sequence[Recording]) -> dict[Path, LabelSpans]:
    """The label file of every recording that has one, read once per file, with the classes it may name:
    :data:`LABEL_CLASSES` and every label the dataset's recordings carry."""
    classes = sorted({*LABEL_CLASSES, *(r.label for r in recordings if r.label)})
    spans: dict[Path, LabelSpans] = {}
    for path in dict.fromkeys(Path(r.path) for r in recordings):
        label_file = _label_file_for(path)
        if label_file is not None:
            spans[path] = read_label_spans(label_file, classes=classes)
    unconfirmed = [s for s in spans.values() if s.unconfirmed]
    if unconfirmed:
        log.warning(
            "%d suggestions in %d label files are not confirmed (their labels end in %r) and are ignored,"
            " e.g. %s: open the recording in Audacity, import the labels, correct each label to the class"
            " you hear (swarm, normal, ...) or nobee, and export the labels again",
            sum(s.unconfirmed for s in unconfirmed),
            len(unconfirmed),
            SUGGESTION_MARK,
            unconfirmed[0].path,
        )
    for s in spans.values():
        if s.other:
            log.info("%s: labels %s name no class and are ignored", s.path, sorted(set(s.other)))
    return spans


def discover(*, root: Path) -> list[Recording]:
    """All labelled recordings under ``root`` (see the module docstring for the layouts), with the spans
    of Audacity label files applied: spans naming a class are the recording's labelled segments, ``nobee``
    spans are cut out, unconfirmed suggestions (``swarm?``) are ignored with a warning. ``root`` may also
    be a manifest CSV file itself.

    Raises :class:`DatasetError` (a ``ValueError``) for a missing or empty folder, a manifest with an
    unknown column layout or a row pointing to a missing file, audio files whose label cannot be told,
    and label files whose class spans overlap with different labels.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        recordings = _from_manifest(root)
    elif not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    elif (root / MANIFEST_NAME).is_file():
        recordings = _from_manifest(root / MANIFEST_NAME)
    else:
        recordings = _from_files(root)
    spans = _label_spans(recordings)
    out = [
        segment
        for recording in recordings
        for segment in _apply_label_file(recording, spans.get(recording.path))
    ]
    if not out:
        raise DatasetError(f"{root}: the label files leave no labelled span of any recording")
    log.info(
        "%s: %d recordings (%d segments), %d hives, labels %s",
        root,
        len({r.recording for r in out}),
        len(out),
        len({r.hive for r in out}),
        sorted({r.label for r in out}),
    )
    return out


# -- windows and the feature cache -------------------------------------------------------------------------
@dataclass
class WindowSet:
    """Feature windows with, for each, its label, hive, recording and start time in its file.

    ``load_seconds``: decoding and resampling; ``compute_seconds``: transforms and features; ``cache_hits``:
    recordings (segments) served from the cache; ``decoded``: segments decoded from audio in this call;
    ``skipped``: files that could not be decoded (listed in ``skipped_files``) or segments too short for a
    window.
    """

    features: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    hives: np.ndarray
    recordings: np.ndarray
    starts: np.ndarray
    load_seconds: float
    compute_seconds: float
    cache_hits: int
    decoded: int = 0
    skipped: int = 0
    skipped_files: tuple[str, ...] = field(default=())
    hash_seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> WindowSet:
        """The windows at ``idx`` (indices or a boolean mask); timings and counts are carried over."""
        idx = np.asarray(idx)
        return WindowSet(
            features=self.features[idx],
            labels=self.labels[idx],
            label_names=self.label_names,
            hives=self.hives[idx],
            recordings=self.recordings[idx],
            starts=self.starts[idx],
            load_seconds=self.load_seconds,
            compute_seconds=self.compute_seconds,
            cache_hits=self.cache_hits,
            decoded=self.decoded,
            skipped=self.skipped,
            skipped_files=self.skipped_files,
            hash_seconds=self.hash_seconds,
        )


def default_cache_dir() -> Path:
    """Where ``beeaudio train`` and the experiments keep computed features (``$BEEAUDIO_CACHE`` overrides)."""
    return Path(os.environ.get("BEEAUDIO_CACHE", Path.home() / ".cache" / "beeaudio")) / "features"


def _cache_key(
    content_sha: str, config: FeatureConfig, transform_key: str, start_s: float, end_s: float | None
) -> str:
    parts = (
        f"v{CACHE_FORMAT}",
        content_sha,
        config.fingerprint(),
        transform_key,
        f"{start_s:.6f}",
        "end" if end_s is None else f"{end_s:.6f}",
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.npz"


def _read_cache(path: Path, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            features, starts = cached["features"], cached["starts"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as error:  # a damaged entry is recomputed, never trusted
        log.warning("ignoring unreadable feature cache entry %s: %s", path, error)
        return None
    if features.shape[1:] != tuple(config.feature_shape) or starts.shape[0] != features.shape[0]:
        log.warning("ignoring feature cache entry %s with shape %s", path, features.shape)
        return None
    return features, starts


def _write_cache(path: Path, features: np.ndarray, starts: np.ndarray) -> None:
    """Atomic: a crash or a parallel run never leaves a half-written entry under the final name."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, features=features, starts=starts)


def _segment(audio: np.ndarray, sample_rate: int, start_s: float, end_s: float | None) -> np.ndarray:
    a = round(start_s * sample_rate)
    b = audio.size if end_s is None else min(audio.size, round(end_s * sample_rate))
    return audio[a:b]


def check_band(*, recordings: Sequence[Recording], config: FeatureConfig) -> None:
    """Refuse a feature configuration these recordings cannot feed: :class:`BandTooWideError` naming the
    files whose Nyquist frequency (read from their headers, nothing decoded) is below ``config.fmax``.

    Resampling up does not add what a recorder never captured: a 2205 Hz recording holds nothing above
    1102.5 Hz, and a model listening to 0–8000 Hz would be fed silence there. Refusing the whole set at
    once, before minutes of decoding, beats skipping those files one by one and training on the rest.
    A file whose header cannot be read is left to decoding, which reports and skips it as before.
    """
    narrow: dict[Path, int] = {}
    for path in dict.fromkeys(Path(r.path) for r in recordings):
        try:
            info = probe_audio(path)
        except AudioError:
            continue
        if info.sample_rate / 2 < config.fmax:
            narrow[path] = info.sample_rate
    if not narrow:
        return
    files = sorted(narrow.items(), key=lambda item: (item[1], str(item[0])))
    named = ", ".join(f"{path} ({rate} Hz)" for path, rate in files[:_NAMED_FILES])
    more = f" and {len(files) - _NAMED_FILES} more" if len(files) > _NAMED_FILES else ""
    lowest = files[0][1] / 2
    total = len({Path(r.path) for r in recordings})
    raise BandTooWideError(
        f"the feature config listens up to {config.fmax:g} Hz (fmax), but {len(files)} of {total} recordings"
        f" hold nothing above half their sample rate: {named}{more}. Use a feature config whose fmax is at"
        f" most {lowest:g} Hz (e.g. --fmax {lowest:g}; --features osbh-2205 is made for 2205 Hz recorders),"
        " or leave those recordings out"
    )


def build_windows(
    *,
    recordings: Sequence[Recording],
    config: FeatureConfig,
    cache_dir: Path | None = None,
    label_names: Sequence[str] | None = None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
    transform_key: str = "",
    progress: bool = True,
) -> WindowSet:
    """Cut every recording (segment) into analysis windows and compute their features.

    ``label_names`` fixes the label order (index = class id); by default the sorted labels present; a
    recording whose label is not in it is an error. ``transform(audio, sample_rate) -> audio`` is applied
    to each decoded segment before the features (e.g. an MP3 round trip for augmentation); it is cached
    under ``transform_key``, and a transform without a key is never cached (its output cannot be named).

    With ``cache_dir``, per-segment feature arrays are stored as ``.npz`` keyed by (sha256 of the file's
    content, ``config.fingerprint()``, ``transform_key``, segment bounds): a second run decodes nothing
    (``decoded == 0``, ``cache_hits`` = number of segments). Files that fail to decode
    (:class:`beeaudio.core.audio.AudioError`) are logged and skipped (``skipped``, ``skipped_files``).
    Raises ``ValueError`` when no window at all could be made, and :class:`BandTooWideError` before any
    decoding when a recording's Nyquist frequency is below ``config.fmax`` (:func:`check_band`).
    """
    from tqdm.auto import tqdm

    recordings = list(recordings)
    names = tuple(label_names) if label_names is not None else tuple(sorted({r.label for r in recordings}))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({r.label for r in recordings} - set(index))
    if unknown:
        raise ValueError(f"recordings labelled {unknown} are not among label_names {list(names)}")
    check_band(recordings=recordings, config=config)
    use_cache = cache_dir is not None and (transform is None or bool(transform_key))
    if cache_dir is not None and not use_cache:
        log.warning("a transform without transform_key is not cached: give it a key to cache its features")
    cache_root = Path(cache_dir) if cache_dir is not None else None

    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    hives: list[str] = []
    recs: list[str] = []
    starts: list[np.ndarray] = []
    load_seconds = compute_seconds = hash_seconds = 0.0
    cache_hits = decoded = skipped = 0
    skipped_files: list[str] = []
    failed: dict[Path, str] = {}
    hashes: dict[Path, str] = {}
    loaded: tuple[Path, np.ndarray] | None = None  # segments of one file come together: decode it once

    for rec in tqdm(recordings, desc="features", unit="rec", disable=not progress):
        path = Path(rec.path)
        if path in failed:
            continue
        result: tuple[np.ndarray, np.ndarray] | None = None
        entry: Path | None = None
        if use_cache and cache_root is not None:
            t0 = time.perf_counter()
            try:
                if path not in hashes:
                    hashes[path] = file_sha256(path)
            except OSError as error:
                failed[path] = str(error)
                skipped += 1
                skipped_files.append(str(path))
                log.warning("skipping %s: cannot read it: %s", path, error)
                continue
            hash_seconds += time.perf_counter() - t0
            entry = _cache_path(
                cache_root, _cache_key(hashes[path], config, transform_key, rec.start_s, rec.end_s)
            )
            result = _read_cache(entry, config)
            if result is not None:
                cache_hits += 1
        if result is None:
            t0 = time.perf_counter()
            try:
                if loaded is None or loaded[0] != path:
                    loaded = (path, load_audio(path, sample_rate=config.sample_rate, max_band_hz=config.fmax))
            except AudioError as error:
                failed[path] = error.reason
                skipped += 1
                skipped_files.append(str(path))
                log.warning("skipping %s", error)
                continue
            load_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            audio = _segment(loaded[1], config.sample_rate, rec.start_s, rec.end_s)
            if transform is not None:
                audio = np.asarray(transform(audio, config.sample_rate), dtype=np.float32)
            window_feats = window_features(audio=audio, config=config)
            window_start = rec.start_s + window_starts(n_samples=audio.size, config=config)
            compute_seconds += time.perf_counter() - t0
            decoded += 1
            result = (window_feats, window_start)
            if entry is not None:
                _write_cache(entry, *result)
        window_feats, window_start = result
        if window_feats.shape[0] == 0:
            skipped += 1
            log.info(
                "%s [%.2f-%s s]: shorter than one %.1f s window, no windows",
                path,
                rec.start_s,
                "end" if rec.end_s is None else f"{rec.end_s:.2f}",
                config.window_seconds,
            )
            continue
        n = window_feats.shape[0]
        feats.append(window_feats)
        starts.append(np.asarray(window_start, dtype=np.float64))
        labels.append(np.full(n, index[rec.label], dtype=np.int64))
        hives.extend([rec.hive] * n)
        recs.extend([rec.recording] * n)

    if failed:
        log.warning(
            "%d of %d files could not be decoded and were skipped",
            len(failed),
            len({Path(r.path) for r in recordings}),
        )
    if not feats:
        raise ValueError(
            f"no analysis windows from {len(recordings)} recordings ({len(failed)} failed to decode, the rest"
            f" shorter than one {config.window_seconds:g} s window)"
            + (f"; first failure: {next(iter(failed))}: {next(iter(failed.values()))}" if failed else "")
        )
    log.info(
        "%d windows from %d segments: decode %.2f s, features %.2f s, hashing %.2f s, %d cache hits,"
        " %d decoded,"
        " %d skipped",
        sum(f.shape[0] for f in feats),
        len(recordings),
        load_seconds,
        compute_seconds,
        hash_seconds,
        cache_hits,
        decoded,
        skipped,
    )
    return WindowSet(
        features=np.concatenate(feats).astype(np.float32, copy=False),
        labels=np.concatenate(labels),
        label_names=names,
        hives=np.asarray(hives, dtype=str),
        recordings=np.asarray(recs, dtype=str),
        starts=np.concatenate(starts),
        load_seconds=load_seconds,
        compute_seconds=compute_seconds,
        cache_hits=cache_hits,
        decoded=decoded,
        skipped=skipped,
        skipped_files=tuple(skipped_files),
        hash_seconds=hash_seconds,
    )


# -- grouped split -----------------------------------------------------------------------------------------
def _groups(hives: np.ndarray, recordings: np.ndarray) -> np.ndarray:
    """Group id per window: hives joined whenever they share a recording id (union-find), so that putting
    whole groups on one side keeps every hive and every recording on one side."""
    hive_ids, hive_of = np.unique(hives, return_inverse=True)
    parent = list(range(len(hive_ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_hive: dict[str, int] = {}
    for rec, h in zip(recordings.tolist(), hive_of.tolist(), strict=True):
        other = first_hive.setdefault(rec, h)
        a, b = find(other), find(h)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(hive_ids))])
    return roots[hive_of]


#: Up to this many groups the split is chosen among all subsets (exact); above it, greedily.
_EXACT_GROUPS = 14


def _choose_test_groups(
    *, label_sets: list[set[int]], n_test: int, rng: np.random.Generator, names: Sequence[str]
) -> list[int]:
    """Indices of the test groups: as close to ``n_test`` as possible such that every label carried by at
    least two groups is on both sides; random among the equally good choices."""
    n = len(label_sets)
    all_labels = sorted(set().union(*label_sets))
    carriers = {lab: sum(lab in s for s in label_sets) for lab in all_labels}
    for lab, count in carriers.items():
        if count < 2:
            log.warning(
                "label %r is in one hive only: it cannot be in both train and test",
                names[lab] if lab < len(names) else lab,
            )
    multi = [lab for lab in all_labels if carriers[lab] >= 2]
    has = np.array([[lab in s for lab in multi] for s in label_sets], dtype=bool).reshape(n, len(multi))
    if n <= _EXACT_GROUPS:
        masks = ((np.arange(1, 2**n - 1)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
        test_cov = (masks.astype(np.int64) @ has) > 0
        train_cov = ((~masks).astype(np.int64) @ has) > 0
        valid = np.all(test_cov & train_cov, axis=1)
        if not valid.any():  # no split covers every label on both sides: the best size only
            valid[:] = True
        sizes = masks.sum(axis=1)
        distance = np.where(valid, np.abs(sizes - n_test), n + 1)
        best = np.flatnonzero(distance == distance.min())
        return np.flatnonzero(masks[best[rng.integers(best.size)]]).tolist()
    # Many hives: one test group per label first (the group covering most uncovered labels), then random.
    order = rng.permutation(n).tolist()
    test: list[int] = []

    def keeps_train(candidate: int) -> bool:
        rest = [g for g in range(n) if g not in test and g != candidate]
        return bool(np.all(has[rest].any(axis=0))) if rest else False

    while True:
        uncovered = ~has[test].any(axis=0) if test else np.ones(len(multi), dtype=bool)
        if not uncovered.any():
            break
        options = [g for g in order if g not in test and has[g][uncovered].any() and keeps_train(g)]
        if not options:
            break
        test.append(max(options, key=lambda g: int(has[g][uncovered].sum())))
    for g in order:
        if len(test) >= n_test:
            break
        if g not in test and keeps_train(g):
            test.append(g)
    return test


def grouped_split(
    *, windows: WindowSet, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test window indices with no hive (hence no recording) on both sides.

    About ``test_fraction`` of the hives go to test, chosen at random (``seed``), but stratified: every
    label present in at least two hives gets at least one test hive and keeps at least one training hive
    (with few hives, each label's hives are picked within that label's stratum). Labels found in one hive
    only cannot be on both sides; that is logged. Deterministic for a given window set and seed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups = _groups(np.asarray(windows.hives), np.asarray(windows.recordings))
    group_ids = np.unique(groups)
    if group_ids.size < 2:
        raise ValueError(
            f"a grouped split needs at least two hives, got {group_ids.size}"
            f" ({sorted(set(windows.hives.tolist()))})"
        )
    labels = np.asarray(windows.labels)
    label_sets = {int(g): set(np.unique(labels[groups == g]).tolist()) for g in group_ids}
    rng = np.random.default_rng(seed)
    n_test = min(group_ids.size - 1, max(1, round(test_fraction * group_ids.size)))

    test = _choose_test_groups(
        label_sets=[label_sets[int(g)] for g in group_ids], n_test=n_test, rng=rng, names=windows.label_names
    )
    test = [int(group_ids[i]) for i in test]

    test_mask = np.isin(groups, test)
    train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    hives = np.asarray(windows.hives)
    recs = np.asarray(windows.recordings)
    shared_hives = set(hives[train_idx].tolist()) & set(hives[test_idx].tolist())
    shared_recs = set(recs[train_idx].tolist()) & set(recs[test_idx].tolist())
    assert not shared_hives and not shared_recs, (
        f"split leaks hives {shared_hives} / recordings {shared_recs}"
    )
    missing = set(labels[train_idx].tolist()) ^ set(labels[test_idx].tolist())
    if missing:
        log.warning(
            "labels %s are only on one side of the split", sorted(windows.label_names[i] for i in missing)
        )
    return train_idx, test_idx
