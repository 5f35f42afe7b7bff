"""Learning from a beekeeper's labels, without TensorFlow: Audacity label files written and read back, which
windows `label suggest` picks (beeaudio.desktop.suggest), and `discover` reading corrected label files as
class labels (beeaudio.desktop.datasets)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beeaudio.core.features import FeatureConfig
from beeaudio.desktop import datasets, labels, suggest
from beeaudio.desktop.datasets import DatasetError, discover
from beeaudio.desktop.suggest import ScoredWindows, SuggestConfig, choose
from tests.fixtures.audio import hive_like

SR = 8000
WINDOW = 2.0


def write_hum(path: Path, *, seconds: float = 12.0, seed: int = 0, silent: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.zeros(round(seconds * SR), np.float32) if silent else hive_like(SR, seconds, seed=seed)
    sf.write(path, audio, SR, subtype="PCM_16")
    return path


# -- label files ---------------------------------------------------------------------------------------------
def test_label_files_are_written_as_audacity_reads_them_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "hiveA" / "0501.txt"
    kept = [labels.Span(start_s=20.0, end_s=22.5, label="nobee")]
    spans = [
        labels.Span(start_s=3.0, end_s=5.0, label="swarm?"),
        labels.Span(start_s=0.5, end_s=2.5, label="normal"),
    ]
    labels.write_label_file(path=path, spans=spans, keep=kept)
    assert path.read_text() == (
        "0.500000\t2.500000\tnormal\n3.000000\t5.000000\tswarm?\n20.000000\t22.500000\tnobee\n"
    )
    assert datasets.read_label_file(path) == [
        (0.5, 2.5, "normal"),
        (3.0, 5.0, "swarm?"),
        (20.0, 22.5, "nobee"),
    ]
    assert labels.read_spans(path) == sorted([*spans, *kept], key=lambda s: s.start_s)
    # Beside the audio under its name (what discover looks for first), or mirrored under another folder.
    audio = tmp_path / "data" / "hiveA" / "0501.wav"
    assert labels.label_path(audio=audio) == tmp_path / "data" / "hiveA" / "0501.txt"
    assert (
        labels.label_path(audio=audio, root=tmp_path / "data", out=tmp_path / "o")
        == tmp_path / "o/hiveA/0501.txt"
    )
    assert labels.suggestion_label("swarm") == "swarm?"
    with pytest.raises(ValueError, match="tabs"):
        labels.Span(start_s=0.0, end_s=1.0, label="a\tb")
    with pytest.raises(ValueError, match="start"):
        labels.Span(start_s=2.0, end_s=1.0, label="swarm")


# -- choosing suggestions --------------------------------------------------------------------------------
def scored(
    *, probs_swarm: list[float], novelty: list[float] | None = None, files: list[str] | None = None,
    hives: list[str] | None = None, starts: list[float] | None = None, usable: list[bool] | None = None,
    labelled: list[bool] | None = None, threshold: float | None = 1.0,
) -> ScoredWindows:  # fmt: skip
    n = len(probs_swarm)
    p = np.asarray(probs_swarm, dtype=np.float64)
    return ScoredWindows(
        files=np.asarray(files or ["a.wav"] * n),
        hives=np.asarray(hives or ["h1"] * n),
        starts=np.asarray(starts if starts is not None else [10.0 * i for i in range(n)], dtype=np.float64),
        probabilities=np.stack([1 - p, p], axis=1),
        novelty=np.asarray(novelty if novelty is not None else [0.1] * n, dtype=np.float64),
        threshold=threshold,
        usable=np.asarray(usable if usable is not None else [True] * n),
        labelled=np.asarray(labelled if labelled is not None else [False] * n),
        label_names=("normal", "swarm"),
        window_seconds=WINDOW,
    )


def test_unfamiliar_and_uncertain_windows_come_first_in_turn() -> None:
    # Window 3 is the most unfamiliar (novelty 3 x the threshold), 1 the most uncertain (p = 0.49).
    windows = scored(probs_swarm=[0.99, 0.49, 0.7, 0.02, 0.6, 0.95], novelty=[0.2, 0.3, 0.4, 3.0, 0.1, 1.5])
    picked = choose(windows=windows, config=SuggestConfig(n=4, min_gap_s=WINDOW))
    assert [(s.start_s, s.reason) for s in picked] == [
        (30.0, "unfamiliar"), (10.0, "uncertain"), (50.0, "unfamiliar"), (40.0, "uncertain"),
    ]  # fmt: skip
    assert [s.label for s in picked] == ["normal?", "normal?", "swarm?", "swarm?"]
    assert [s.rank for s in picked] == [1, 2, 3, 4]
    assert picked[0].end_s == 32.0 and picked[0].margin == pytest.approx(0.96)
    # Without a detector (or nothing beyond its threshold) only uncertainty ranks.
    plain = choose(windows=scored(probs_swarm=[0.99, 0.49, 0.7], threshold=None), config=SuggestConfig(n=2))
    assert [(s.start_s, s.reason) for s in plain] == [(10.0, "uncertain"), (20.0, "uncertain")]


def test_windows_without_signal_or_already_labelled_are_never_suggested() -> None:
    windows = scored(
        probs_swarm=[0.5, 0.5, 0.51, 0.9], novelty=[9.0, 5.0, 0.1, 0.1], usable=[False, True, True, True],
        labelled=[False, True, False, False],
    )  # fmt: skip
    picked = choose(windows=windows, config=SuggestConfig(n=10, min_gap_s=WINDOW))
    assert sorted(s.start_s for s in picked) == [20.0, 30.0]


def test_suggestions_respect_the_gap_and_the_per_hive_quota() -> None:
    rng = np.random.default_rng(0)
    n = 120
    windows = scored(
        probs_swarm=rng.uniform(0.3, 0.7, n).tolist(), novelty=rng.uniform(0, 2, n).tolist(),
        files=[f"h{i % 3}/rec{i % 2}.wav" for i in range(n)], hives=[f"h{i % 3}" for i in range(n)],
        starts=[float(i // 6) for i in range(n)],
    )  # fmt: skip
    for strategy in suggest.STRATEGIES:
        picked = choose(windows=windows, config=SuggestConfig(n=12, min_gap_s=4.0, strategy=strategy))
        assert len(picked) == 12, strategy
        per_hive = {h: sum(s.hive == h for s in picked) for h in ("h0", "h1", "h2")}
        assert per_hive == {"h0": 4, "h1": 4, "h2": 4}, (strategy, per_hive)
        for a in picked:
            for b in picked:
                if a is not b and a.file == b.file:
                    assert abs(a.start_s - b.start_s) >= 4.0, (strategy, a, b)
    capped = choose(windows=windows, config=SuggestConfig(n=12, min_gap_s=4.0, per_hive=1))
    assert len(capped) == 3 and len({s.hive for s in capped}) == 3
    with pytest.raises(ValueError, match="overlap"):
        choose(windows=windows, config=SuggestConfig(n=3, min_gap_s=1.0))


def test_random_strategy_is_seeded() -> None:
    windows = scored(probs_swarm=np.linspace(0.01, 0.99, 40).tolist())
    first = choose(windows=windows, config=SuggestConfig(n=5, strategy="random", seed=3))
    again = choose(windows=windows, config=SuggestConfig(n=5, strategy="random", seed=3))
    other = choose(windows=windows, config=SuggestConfig(n=5, strategy="random", seed=4))
    assert [s.start_s for s in first] == [s.start_s for s in again] != [s.start_s for s in other]
    assert {s.reason for s in first} == {"random"}


# -- `label suggest` end to end, with a scorer that needs no model --------------------------------------
def fake_scorer() -> suggest.Scorer:
    """The swarm probability rises with the window's level; novelty is high for loud windows."""
    config = FeatureConfig()

    def predict(x: np.ndarray) -> np.ndarray:
        level = x[:, 0]
        p = 1 / (1 + np.exp(-(level - np.median(level))))
        return np.stack([1 - p, p], axis=1)

    return suggest.Scorer(
        source="fake", config=config, label_names=("normal", "swarm"), predict=predict,
        novelty=lambda x: np.abs(x[:, 1]) / 10, threshold=1.0,
    )  # fmt: skip


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    write_hum(root / "hiveA" / "0501.wav", seed=1)
    write_hum(root / "hiveA" / "0502.wav", seed=2)
    write_hum(root / "hiveB" / "0501.wav", seconds=30.0, seed=3)
    write_hum(root / "hiveB" / "dead.wav", silent=True)
    (root / "hiveB" / "0501.txt").write_text("0.000000\t2.000000\tnobee\n")
    return root


def test_suggest_writes_label_files_readme_and_table_and_skips_silence(
    recordings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suggest, "load_scorer", lambda **_: fake_scorer())
    out = tmp_path / "out"
    result = suggest.suggest(
        model=Path("m.beemodel"),
        data=recordings,
        out=out,
        config=SuggestConfig(n=8, min_gap_s=3.0),
        progress=False,
    )
    assert len(result.suggestions) == 8
    assert result.no_signal == 11  # every window of the dead microphone's recording
    assert not any("dead" in s.file for s in result.suggestions)
    assert {s.hive for s in result.suggestions} == {"hiveA", "hiveB"}
    assert sum(s.hive == "hiveA" for s in result.suggestions) == 4
    # hiveB/0501 already had a nobee span at 0-2 s: kept in its file, and no suggestion overlaps it.
    assert not any(s.file.endswith("hiveB/0501.wav") and s.start_s < 2.0 for s in result.suggestions)
    written = sorted(p.relative_to(out).as_posix() for p in result.label_files)
    assert written == ["hiveA/0501.txt", "hiveA/0502.txt", "hiveB/0501.txt"]
    assert (out / "hiveB" / "0501.txt").read_text().startswith("0.000000\t2.000000\tnobee\n")
    for path in result.label_files:
        for start, end, text in datasets.read_label_file(path):
            assert text == "nobee" or (text in ("normal?", "swarm?") and end - start == WINDOW)
    readme = (out / labels.README_NAME).read_text()
    assert "File → Import → Labels" in readme and "Export Labels" in readme and "--init-from" in readme
    table = (out / suggest.SUGGESTIONS_CSV).read_text().splitlines()
    assert table[0].startswith("rank,file,hive,start_s") and len(table) == 9
    # Nothing was written beside the recordings: --out is another folder.
    assert not (recordings / "hiveA" / "0501.txt").exists()


def test_corrected_suggestions_train_as_class_labels(
    recordings: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(suggest, "load_scorer", lambda **_: fake_scorer())
    result = suggest.suggest(
        model=Path("m.beemodel"), data=recordings, out=recordings, config=SuggestConfig(n=6, min_gap_s=4.0),
        progress=False,
    )  # fmt: skip
    # --out = --data: the label files are beside the recordings, and the nobee span already there is kept.
    assert (recordings / "hiveB" / "0501.txt").read_text().startswith("0.000000\t2.000000\tnobee\n")
    with caplog.at_level(logging.WARNING), pytest.raises(DatasetError, match="ending in '\\?'"):
        discover(root=recordings)  # nothing confirmed yet: no labelled span at all
    # The beekeeper confirms every suggestion on hiveA/0501 but one, and corrects it to swarm.
    path = recordings / "hiveA" / "0501.txt"
    lines = path.read_text().splitlines()
    fixed = [line.replace("?", "") for line in lines]
    fixed[0] = fixed[0].rsplit("\t", 1)[0] + "\tSwarm"
    path.write_text("\n".join(fixed) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        found = discover(root=recordings)
    spans = [(r.start_s, r.end_s, r.label, r.hive) for r in found]
    expected = [(a, b, t.lower() or "", "hiveA") for a, b, t in datasets.read_label_file(path)]
    assert spans == expected and spans[0][2] == "swarm"
    assert all(r.recording == "hiveA/0501" for r in found)
    assert "not confirmed" in caplog.text  # the other files still hold suggestions
    windows = datasets.build_windows(recordings=found, config=FeatureConfig(), progress=False)
    assert len(windows) == len(expected) and sorted(windows.starts.tolist()) == [a for a, _, _, _ in spans]
    assert result.suggestions


# -- discover: class spans ------------------------------------------------------------------------------
def test_discover_reads_class_spans_cuts_nobee_and_ignores_unconfirmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wav = write_hum(tmp_path / "apiary" / "hiveC" / "day1.wav", seconds=20.0)
    wav.with_suffix(".txt").write_text(
        "0.0\t4.0\tSwarm\n3.0\t6.0\tswarm\n8.0\t14.0\tActive\n10.0\t11.0\tnobee\n15.0\t17.0\tnormal?\n17\t19\tbee\n"
    )
    with caplog.at_level(logging.WARNING):
        found = discover(root=tmp_path)
    assert [(r.start_s, r.end_s, r.label) for r in found] == [
        (0.0, 6.0, "swarm"),  # overlapping spans of one label are merged
        (8.0, 10.0, "normal"),  # OSBH's "Active" is normal; the nobee span is cut out of it
        (11.0, 14.0, "normal"),
    ]
    # The hive is the first folder that is not a class name; the unconfirmed suggestion is ignored, loudly.
    assert {r.hive for r in found} == {"apiary"} and {r.recording for r in found} == {"apiary/hiveC/day1"}
    assert "1 suggestions in 1 label files are not confirmed" in caplog.text
    spans = datasets.read_label_spans(wav.with_suffix(".txt"))
    assert spans.unconfirmed == 1 and spans.other == ("bee",) and spans.drops == ((10.0, 11.0),)


def test_conflicting_class_spans_are_refused(tmp_path: Path) -> None:
    wav = write_hum(tmp_path / "hiveA" / "x.wav", seconds=10.0)
    wav.with_suffix(".txt").write_text("0\t4\tswarm\n3\t6\tnormal\n")
    with pytest.raises(DatasetError, match="overlap with different labels"):
        discover(root=tmp_path)


def test_class_spans_replace_a_manifest_label_and_unlabelled_files_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = write_hum(tmp_path / "hiveA" / "a.wav", seconds=10.0)
    write_hum(tmp_path / "hiveA" / "b.wav", seconds=10.0)
    a.with_suffix(".txt").write_text("2\t4\tswarm\n")
    (tmp_path / "hiveA" / "b.txt").write_text("2\t4\tswarm?\n")
    with caplog.at_level(logging.WARNING):
        found = discover(root=tmp_path)
    # In the label-file layout, hiveA/ is a hive's folder: b.wav (only a suggestion) is no class "hiveA".
    assert [(r.path.name, r.label, r.hive, r.start_s, r.end_s) for r in found] == [
        ("a.wav", "swarm", "hiveA", 2.0, 4.0)
    ]
    assert "hiveA/b.wav" in caplog.text and "suggestions not confirmed yet" in caplog.text
    (tmp_path / "manifest.csv").write_text("path,label,hive\nhiveA/a.wav,normal,H1\nhiveA/b.wav,normal,H1\n")
    found = discover(root=tmp_path)
    assert [(r.path.name, r.label, r.start_s, r.end_s) for r in found] == [
        ("a.wav", "swarm", 2.0, 4.0),  # the spans replace the manifest's label for that file
        ("b.wav", "normal", 0.0, None),  # an unconfirmed suggestion changes nothing
    ]
    # A class the dataset's own recordings carry counts too (a class folder named "robbing").
    c = write_hum(tmp_path / "other" / "robbing" / "c.wav", seconds=6.0)
    c.with_suffix(".txt").write_text("1\t3\tRobbing\n")
    assert [(r.label, r.start_s) for r in discover(root=tmp_path / "other")] == [("robbing", 1.0)]


# -- with real models (slow: they train) ----------------------------------------------------------------
def test_label_suggest_command_with_a_bundle_and_a_run(
    tiny_bundle: Path, tiny_run: Path, recordings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from beeaudio.cli import main

    for model in (tiny_bundle, tiny_run):
        out = tmp_path / model.name
        argv = ["-q", "label", "suggest", "--model", str(model), "--data", str(recordings), "--out", str(out)]
        assert main([*argv, "--n", "5", "--min-gap", "4", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert len(shown["suggestions"]) == 5 and shown["no_signal"] == 11
        assert all(s["label"].endswith("?") and "dead" not in s["file"] for s in shown["suggestions"])
        assert (out / labels.README_NAME).is_file() and len(shown["label_files"]) >= 2
    assert (
        main(["-q", "label", "suggest", "--model", str(tmp_path), "--data", str(recordings), "--out", "x"])
        == 2
    )
    assert "neither a bundle nor a run folder" in capsys.readouterr().err
