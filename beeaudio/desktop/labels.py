"""Audacity label files for a beekeeper's labels: write them, and say how to correct them.

A label file is what Audacity's *File → Export → Export Labels* writes and *File → Import → Labels* reads:
one span per line, ``start<TAB>end<TAB>label``, times in seconds from the start of the file. beeaudio looks
for it beside the recording under the recording's name with ``.txt`` (``hiveA/0501.wav`` →
``hiveA/0501.txt``; :func:`label_path`), which is where :func:`beeaudio.desktop.datasets.discover` reads it.

``beeaudio label suggest`` writes its suggestions as spans labelled with the model's guess and the
suggestion mark (``swarm?``); the beekeeper listens, corrects each label to what they hear (``swarm``,
``normal``, ``nobee`` to cut the span out) and exports the labels again. Reading them back is
:func:`beeaudio.desktop.datasets.read_label_spans`. Only the standard library and numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from beeaudio.core.fsio import write_text_atomic
from beeaudio.desktop.datasets import SUGGESTION_MARK, read_label_file

__all__ = [
    "LABEL_SUFFIX",
    "README_NAME",
    "Span",
    "format_label_file",
    "label_path",
    "readme_text",
    "suggestion_label",
    "write_label_file",
]

#: The suffix of the label file beside a recording: the first one ``discover`` looks for.
LABEL_SUFFIX = ".txt"
#: The instructions ``beeaudio label suggest`` leaves in its output folder (not a ``.txt``: in a dataset
#: folder a ``.txt`` beside a ``README.wav`` would be read as that recording's labels).
README_NAME = "LABELLING.md"


@dataclass(frozen=True)
class Span:
    """One labelled span of a recording, in seconds from the start of its file."""

    start_s: float
    end_s: float
    label: str

    def __post_init__(self) -> None:
        if not self.end_s >= self.start_s >= 0:
            raise ValueError(f"a span needs 0 <= start <= end, got {self.start_s}-{self.end_s}")
        if "\t" in self.label or "\n" in self.label:
            raise ValueError(f"a label cannot hold tabs or line breaks: {self.label!r}")


def label_path(*, audio: Path, root: Path | None = None, out: Path | None = None) -> Path:
    """Where the label file of ``audio`` goes: beside it (``name.txt``), or, with ``root`` and ``out``, at the
    same relative place under ``out`` (to be copied beside the recordings later)."""
    audio = Path(audio)
    if root is None or out is None:
        return audio.with_suffix(LABEL_SUFFIX)
    return Path(out) / audio.relative_to(root).with_suffix(LABEL_SUFFIX)


def suggestion_label(guess: str) -> str:
    """The label of a suggestion: the model's guess with the mark (``swarm?``) that keeps it out of training
    until someone confirms it."""
    return f"{guess.strip()}{SUGGESTION_MARK}"


def format_label_file(spans: Iterable[Span]) -> str:
    """Audacity's label-track text: ``start<TAB>end<TAB>label`` per line, six decimals as Audacity writes."""
    ordered = sorted(spans, key=lambda s: (s.start_s, s.end_s, s.label))
    return "".join(f"{s.start_s:.6f}\t{s.end_s:.6f}\t{s.label}\n" for s in ordered)


def read_spans(path: Path) -> list[Span]:
    """The spans of an existing label file (every label, as written)."""
    return [Span(start_s=a, end_s=b, label=text) for a, b, text in read_label_file(Path(path))]


def write_label_file(*, path: Path, spans: Sequence[Span], keep: Sequence[Span] = ()) -> Path:
    """Write ``keep`` (e.g. the spans of the label file already there) and ``spans`` as one label file,
    atomically (a crash never leaves a half-written file where the beekeeper's labels were)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, format_label_file([*keep, *spans]))
    return path


def readme_text(
    *,
    data: Path,
    out: Path,
    model: str,
    suggested: int,
    files: int,
    beside_audio: bool,
    reasons: dict[str, int],
    window_seconds: float,
) -> str:
    """The instructions left in the output folder: what was suggested and how to correct it in Audacity."""
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or "none"
    where = (
        "The label files are beside the recordings (name.txt next to name.wav)."
        if beside_audio
        else f"The label files are under `{out}`, in the same folders as the recordings under `{data}`. Copy "
        f"them beside the recordings before training (e.g. `cp -r {out}/. {data}/`), or run "
        f"`beeaudio label suggest` with `--out {data}` next time to write them there directly."
    )
    return f"""# Windows worth a listen

`beeaudio label suggest` picked {suggested} windows in {files} recordings under `{data}` for you to listen
to, with the model `{model}`: {why}. Each is a span labelled with the model's guess and a question mark
(`swarm?`, `normal?`): a suggestion, not a label. `suggestions.csv` lists them, best first, with why each
was picked (`unfamiliar`: the model has not heard audio like it; `uncertain`: it cannot decide).

{where}

## Correct them in Audacity

1. Open the recording (File → Open, e.g. `hiveA/0501.wav`).
2. File → Import → Labels…, and choose its label file (`hiveA/0501.txt`). The suggestions appear as a label
   track; click a label to select its span, and press Space to hear it.
3. For every suggestion, edit the label's text to what you hear: `swarm`, `normal`, `queenless`, `piping`
   (any class the model knows), or `nobee` to cut the span out (no bees to hear, a knock, a voice). Remove
   the question mark: a label that still ends in `?` is ignored, with a warning. Delete a label you cannot
   tell; you may also add your own spans (at least one analysis window, {window_seconds:g} s, long).
4. File → Export → Export Labels…, and save it under the same name, replacing the file (`hiveA/0501.txt`).

## Then fine-tune

```sh
beeaudio train --data {data} --init-from {model} --out runs/my-hives
```

trains on exactly the spans you labelled (recordings whose label files name a class use only those spans),
starting from the model you listened with (from an int8 bundle it cannot: give the run folder it was
exported from, or a float32 export of it). With two or more hives labelled, it is checked on hives it did not
train on; with one hive, the accuracy it prints is on other windows of the same hive and says little.
"""
