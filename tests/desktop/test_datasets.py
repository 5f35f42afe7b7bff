"""Dataset discovery, the feature cache and the grouped split (beeaudio.desktop.datasets), on layouts in
tmp_path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beeaudio.core.features import FeatureConfig
from beeaudio.desktop import datasets as data
from beeaudio.desktop.datasets import (
    DatasetError,
    Recording,
    WindowSet,
    build_windows,
    discover,
    grouped_split,
)

SR = 8000
CONFIG = FeatureConfig()


def write_tone(
    path: Path, *, seconds: float = 3.0, freq: float = 250.0, seed: int = 0, rate: int = SR
) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    y = 0.2 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y.astype(np.float32), rate, subtype="PCM_16")
    return path


# -- discovery -----------------------------------------------------------------------------------------
def test_manifest_with_all_columns(tmp_path: Path) -> None:
    write_tone(tmp_path / "a" / "one.wav")
    write_tone(tmp_path / "b" / "two.wav")
    (tmp_path / "manifest.csv").write_text(
        "path,label,hive,recording,start_s,end_s,synthetic,seed\n"
        "a/one.wav,normal,H1,r1,0.0,3.0,true,1\n"
        "b/two.wav,swarm,H2,r2,0.5,,true,2\n"
    )
    recs = discover(root=tmp_path)
    assert recs == [
        Recording(
            path=tmp_path / "a" / "one.wav", label="normal", hive="H1", recording="r1", start_s=0.0, end_s=3.0
        ),
        Recording(
            path=tmp_path / "b" / "two.wav", label="swarm", hive="H2", recording="r2", start_s=0.5, end_s=None
        ),
    ]
    assert discover(root=tmp_path / "manifest.csv") == recs  # the manifest file itself is accepted too


def test_manifest_derives_hive_and_recording(tmp_path: Path) -> None:
    write_tone(tmp_path / "x" / "CF003 - Active - Day - (223).wav")
    write_tone(tmp_path / "x" / "hiveZ__morning.wav")
    write_tone(tmp_path / "x" / "plain.wav")
    (tmp_path / "manifest.csv").write_text(
        "label,path\nnormal,x/CF003 - Active - Day - (223).wav\n"
        "swarm,x/hiveZ__morning.wav\nswarm,x/plain.wav\n"
    )
    recs = discover(root=tmp_path)
    assert [(r.hive, r.recording, r.label) for r in recs] == [
        ("CF003", "x/CF003 - Active - Day - (223)", "normal"),  # the manifest's label wins over the name
        ("hiveZ", "x/hiveZ__morning", "swarm"),
        ("x/plain", "x/plain", "swarm"),
    ]


def test_manifest_errors_are_clear(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav")
    (tmp_path / "manifest.csv").write_text("file,class\na.wav,normal\n")
    with pytest.raises(DatasetError, match=r"unknown column layout \['file', 'class'\]"):
        discover(root=tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\na.wav,normal\nmissing.wav,swarm\n")
    with pytest.raises(DatasetError, match=r"manifest.csv:3: 'missing.wav' does not exist"):
        discover(root=tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label,start_s,end_s\na.wav,normal,2,1\n")
    with pytest.raises(DatasetError, match="not after start_s"):
        discover(root=tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match="lists no recordings"):
        discover(root=tmp_path)


def test_osbh_and_nuhive_file_names(tmp_path: Path) -> None:
    names = {
        "CF003 - Active - Day - (223).wav": ("CF003", "normal"),
        "CF001 - Missing Queen - Night -  (100).wav": ("CF001", "queenless"),
        "GH001 - Swarm - Day - (7).wav": ("GH001", "swarm"),
        "CF002 - Pre-Swarm - Day - (1).wav": ("CF002", "pre-swarm"),
        "Hive1_12_06_2018_QueenBee____15_00_00.wav": ("Hive1", "normal"),
        "Hive3_20_07_2017_NO_QueenBee____06_10_00.wav": ("Hive3", "queenless"),
    }
    for i, name in enumerate(names):
        write_tone(tmp_path / "some" / "folder" / name, seed=i)
    found = {r.path.name: (r.hive, r.label) for r in discover(root=tmp_path)}
    assert found == names
    assert data.parse_known_name("random.wav") is None


def test_class_folders(tmp_path: Path) -> None:
    write_tone(tmp_path / "normal" / "a.wav")
    write_tone(tmp_path / "swarm" / "hiveB__2021-06-01.wav")
    write_tone(tmp_path / "swarm" / "hiveC" / "c1.mp3.wav")
    write_tone(tmp_path / "swarm" / ".hidden" / "x.wav")  # hidden folders are ignored
    (tmp_path / "normal" / "notes.md").write_text("not audio")
    recs = discover(root=tmp_path)
    assert [(r.label, r.hive, r.recording) for r in recs] == [
        ("normal", "normal/a", "normal/a"),
        ("swarm", "hiveB", "swarm/hiveB__2021-06-01"),
        ("swarm", "hiveC", "swarm/hiveC/c1.mp3"),
    ]


def test_empty_missing_and_unlabelled_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset folder"):
        discover(root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        discover(root=tmp_path / "empty")
    write_tone(tmp_path / "flat" / "x.wav")
    with pytest.raises(DatasetError, match="cannot tell the label of 1 audio files"):
        discover(root=tmp_path / "flat")


def test_audacity_nobee_spans_are_cut_out(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "normal" / "hiveA__rec.wav", seconds=12.0)
    wav.with_suffix(".txt").write_text("0.0\t1.5\tbee\n3.0\t5.0\tNoBee\n\\\t200\t800\n9.5\t10.0\tnobee\n")
    recs = discover(root=tmp_path)
    assert [(r.start_s, r.end_s) for r in recs] == [(0.0, 3.0), (5.0, 9.5), (10.0, None)]
    assert {r.recording for r in recs} == {"normal/hiveA__rec"} and {r.hive for r in recs} == {"hiveA"}
    windows = build_windows(recordings=recs, config=CONFIG, progress=False)
    # Each kept segment is windowed on its own: no window overlaps a dropped span.
    for start in windows.starts:
        end = start + CONFIG.window_seconds
        assert not (start < 5.0 and end > 3.0) and not (start < 10.0 and end > 9.5), start
    assert windows.starts.tolist() == [0.0, 1.0, 5.0, 6.0, 7.0, 10.0]
    assert windows.decoded == 3 and windows.skipped == 0


def test_nuhive_lab_file_with_header_line(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "Hive1_12_06_2018_QueenBee____15_00_00.wav", seconds=8.0)
    wav.with_suffix(".lab").write_text(
        "Hive1_12_06_2018_QueenBee____15_00_00\n0\t2.5\tbee\n2.5\t4.0\tnobee\n4.0\t8.0\tbee\n.\n"
    )
    assert data.read_label_file(wav.with_suffix(".lab")) == [
        (0.0, 2.5, "bee"),
        (2.5, 4.0, "nobee"),
        (4.0, 8.0, "bee"),
    ]
    assert [(r.start_s, r.end_s) for r in discover(root=tmp_path)] == [(0.0, 2.5), (4.0, None)]


# -- windows and cache ---------------------------------------------------------------------------------
def _recordings(tmp_path: Path) -> list[Recording]:
    out = []
    for h in range(3):
        for label, freq in (("normal", 220.0), ("swarm", 480.0)):
            path = write_tone(tmp_path / f"h{h}" / f"{label}.wav", seconds=4.0, freq=freq, seed=h)
            out.append(Recording(path=path, label=label, hive=f"h{h}", recording=f"h{h}/{label}"))
    return out


def test_build_windows_and_cache(tmp_path: Path) -> None:
    recs = _recordings(tmp_path / "audio")
    cache = tmp_path / "cache"
    first = build_windows(recordings=recs, config=CONFIG, cache_dir=cache, progress=False)
    assert first.features.shape == (6 * 3, *CONFIG.feature_shape) and first.features.dtype == np.float32
    assert first.label_names == ("normal", "swarm")
    assert first.decoded == 6 and first.cache_hits == 0 and first.load_seconds > 0
    assert sorted(set(first.hives.tolist())) == ["h0", "h1", "h2"]
    assert first.starts.tolist()[:3] == [0.0, 1.0, 2.0]
    assert not list(cache.rglob("*.part")), "cache writes are atomic, no temporary files remain"

    second = build_windows(recordings=recs, config=CONFIG, cache_dir=cache, progress=False)
    assert second.decoded == 0 and second.cache_hits == 6 and second.load_seconds == 0.0
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.starts, first.starts)

    changed = FeatureConfig(n_mfcc=12)
    third = build_windows(recordings=recs, config=changed, cache_dir=cache, progress=False)
    assert third.decoded == 6 and third.cache_hits == 0 and third.features.shape[1:] == changed.feature_shape

    # A transform is cached under its key; a different key (or changed content) is a miss.
    def louder(audio: np.ndarray, rate: int) -> np.ndarray:
        return audio * 2.0

    aug = build_windows(
        recordings=recs, config=CONFIG, cache_dir=cache, transform=louder, transform_key="x2", progress=False
    )
    assert aug.decoded == 6 and not np.allclose(aug.features, first.features)
    again = build_windows(
        recordings=recs, config=CONFIG, cache_dir=cache, transform=louder, transform_key="x2", progress=False
    )
    assert again.decoded == 0
    write_tone(recs[0].path, seconds=4.0, freq=300.0, seed=9)  # new content under the same name
    edited = build_windows(recordings=recs, config=CONFIG, cache_dir=cache, progress=False)
    assert edited.decoded == 1 and edited.cache_hits == 5


def test_undecodable_files_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recs = _recordings(tmp_path)
    bad = tmp_path / "h0" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    text = tmp_path / "h1" / "text.wav"
    text.write_text("this is not audio at all")
    recs += [
        Recording(path=bad, label="swarm", hive="h0", recording="h0/broken"),
        Recording(path=text, label="normal", hive="h1", recording="h1/text"),
    ]
    with caplog.at_level(logging.WARNING, logger="beeaudio.desktop.datasets"):
        windows = build_windows(recordings=recs, config=CONFIG, cache_dir=tmp_path / "cache", progress=False)
    assert windows.skipped == 2 and set(windows.skipped_files) == {str(bad), str(text)}
    assert len(windows) == 18
    assert "2 of 8 files could not be decoded" in caplog.text
    with pytest.raises(ValueError, match="no analysis windows"):
        build_windows(recordings=recs[-2:], config=CONFIG, progress=False)


def test_label_names_fix_the_order_and_reject_unknown_labels(tmp_path: Path) -> None:
    recs = _recordings(tmp_path)
    windows = build_windows(
        recordings=recs, config=CONFIG, label_names=["swarm", "normal", "queenless"], progress=False
    )
    assert windows.label_names == ("swarm", "normal", "queenless")
    assert set(windows.labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="not among label_names"):
        build_windows(recordings=recs, config=CONFIG, label_names=["normal"], progress=False)
    sub = windows.subset(np.flatnonzero(windows.hives == "h1"))
    assert isinstance(sub, WindowSet) and len(sub) == 6 and set(sub.hives.tolist()) == {"h1"}


def test_a_band_the_recordings_cannot_feed_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fmax above a recording's Nyquist frequency: one error naming the files, read from the headers
    alone (decoding is made to fail loudly, and nothing reaches the cache)."""
    recs = _recordings(tmp_path / "wide")  # 8 kHz: Nyquist 4 kHz
    narrow = [
        Recording(
            path=write_tone(tmp_path / "osbh" / f"CF00{i} - Active - Day - ({i}).wav", rate=2205, seed=i),
            label="normal",
            hive=f"CF00{i}",
            recording=f"osbh-{i}",
        )
        for i in range(7)
    ]
    fullband = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=40, fmin=0, fmax=8000)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded before the band check")

    monkeypatch.setattr(data, "load_audio", no_decoding)
    cache = tmp_path / "cache"
    with pytest.raises(data.BandTooWideError) as caught:
        build_windows(recordings=recs + narrow, config=fullband, cache_dir=cache, progress=False)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in message
    assert "13 of 13 recordings" in message and "8000 Hz (fmax)" in message
    assert str(narrow[0].path) in message and "(2205 Hz)" in message and "and 8 more" in message
    assert "at most 1102.5 Hz" in message
    assert not cache.exists() or not list(cache.rglob("*.npz"))
    # The default band (100–1000 Hz) fits under 1102.5 Hz: the same 2205 Hz files pass the check.
    data.check_band(recordings=narrow, config=CONFIG)
    monkeypatch.undo()
    windows = build_windows(recordings=narrow, config=CONFIG, progress=False)
    assert len(windows) == 7 * 2


# -- grouped split -------------------------------------------------------------------------------------
def fake_windows(hive_labels: list[list[int]], per_recording: int = 3) -> WindowSet:
    hives, recs, labels = [], [], []
    for h, labs in enumerate(hive_labels):
        for r, lab in enumerate(labs):
            hives += [f"hive{h}"] * per_recording
            recs += [f"hive{h}/rec{r}"] * per_recording
            labels += [lab] * per_recording
    n = len(labels)
    n_labels = max(labels) + 1
    return WindowSet(
        features=np.zeros((n, 2), np.float32),
        labels=np.array(labels),
        label_names=tuple(f"l{i}" for i in range(n_labels)),
        hives=np.array(hives),
        recordings=np.array(recs),
        starts=np.zeros(n),
        load_seconds=0.0,
        compute_seconds=0.0,
        cache_hits=0,
    )


def _a_split_covers_every_shared_label(hive_labels: list[list[int]]) -> bool:
    """Brute force: some split of the hives puts every label of two or more hives on both sides."""
    sets = [set(labs) for labs in hive_labels]
    shared = {lab for lab in set().union(*sets) if sum(lab in s for s in sets) >= 2}
    for mask in range(1, 2 ** len(sets) - 1):
        test = set().union(*(s for i, s in enumerate(sets) if mask >> i & 1))
        train = set().union(*(s for i, s in enumerate(sets) if not mask >> i & 1))
        if shared <= test and shared <= train:
            return True
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hive_labels=st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=3), min_size=2, max_size=12),
    fraction=st.floats(0.1, 0.6),
    seed=st.integers(0, 2**16),
)
def test_grouped_split_properties(hive_labels: list[list[int]], fraction: float, seed: int) -> None:
    windows = fake_windows(hive_labels)
    train, test = grouped_split(windows=windows, test_fraction=fraction, seed=seed)
    assert len(train) and len(test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(windows)))
    assert not set(windows.hives[train].tolist()) & set(windows.hives[test].tolist())
    assert not set(windows.recordings[train].tolist()) & set(windows.recordings[test].tolist())
    # Every label carried by at least two hives is on both sides, whenever some split of the hives allows
    # it (hives {0,1}, {0,2}, {1,2} allow none: each side would need all three labels).
    if _a_split_covers_every_shared_label(hive_labels):
        for lab in set(windows.labels.tolist()):
            carriers = sum(lab in set(labs) for labs in hive_labels)
            if carriers >= 2:
                assert lab in windows.labels[train] and lab in windows.labels[test], (lab, hive_labels)
    again = grouped_split(windows=windows, test_fraction=fraction, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again, strict=True))


def test_grouped_split_with_one_label_per_hive_picks_within_strata() -> None:
    # OSBH-like: each hive in one state only; 3 normal hives, 2 queenless, 2 swarm.
    windows = fake_windows([[0], [0], [0], [1], [1], [2], [2]])
    for seed in range(20):
        train, test = grouped_split(windows=windows, test_fraction=0.3, seed=seed)
        assert set(windows.labels[train].tolist()) == {0, 1, 2} == set(windows.labels[test].tolist())


def test_grouped_split_joins_hives_that_share_a_recording_id() -> None:
    windows = fake_windows([[0, 1], [0, 1], [0, 1], [0, 1]])
    recs = windows.recordings.copy()
    recs[windows.hives == "hive1"] = np.char.replace(recs[windows.hives == "hive1"], "hive1", "hive0")
    windows.recordings = recs  # hive0 and hive1 now share recording ids: they must stay together
    for seed in range(10):
        train, test = grouped_split(windows=windows, test_fraction=0.25, seed=seed)
        assert not set(recs[train].tolist()) & set(recs[test].tolist())


def test_grouped_split_refuses_a_single_hive() -> None:
    with pytest.raises(ValueError, match="at least two hives"):
        grouped_split(windows=fake_windows([[0, 1]]), seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        grouped_split(windows=fake_windows([[0], [1]]), test_fraction=1.0)


# -- learnability of the synthetic data ------------------------------------------------------------------
def test_synthetic_states_need_the_whole_pattern_not_one_band() -> None:
    """On hives it has not seen, a one-band level threshold does clearly worse than a logistic regression
    on MFCC statistics: the synthetic data are learnable, but not by the shortcut real data do not allow."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from beeaudio.desktop import synth
    from beeaudio.desktop.separability import band_levels, best_band_rule, synthetic_features

    x, bands, y, hives = synthetic_features(seed=11, hives=10, recordings=1, seconds=10.0)
    test = np.isin(hives, [0, 1, 2])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[~test], y[~test])
    lr_accuracy = model.score(x[test], y[test])
    rule = best_band_rule(bands[~test], y[~test])
    rule_accuracy = float(np.mean(rule(bands[test]) == y[test]))
    assert lr_accuracy >= 0.9, lr_accuracy
    assert rule_accuracy <= lr_accuracy - 0.1, (rule_accuracy, lr_accuracy)
    assert band_levels is not None and synth.CLASSES[0] == "normal"
