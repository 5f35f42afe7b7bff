"""``beeaudio experiment adapt`` (beeaudio.desktop.experiments.adapt) on the tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beeaudio.desktop.experiments import adapt, adapt_report
from beeaudio.desktop.experiments.report import parse_markdown_table

pytestmark = pytest.mark.slow


def test_the_calibration_part_and_the_scored_part_never_share_a_recording(tiny_dataset: Path) -> None:
    from beeaudio.core.features import FeatureConfig
    from beeaudio.desktop import datasets

    windows = datasets.build_windows(
        recordings=datasets.discover(root=tiny_dataset), config=FeatureConfig(), progress=False
    )
    targets = ["hive02", "hive05"]
    calibrate, scored = adapt.calibration_part(windows=windows, hives=targets, share=0.5)
    recs, hives, labels = (
        np.asarray(a).astype(str) for a in (windows.recordings, windows.hives, windows.labels)
    )
    assert not np.any(calibrate & scored)
    assert not set(recs[calibrate]) & set(recs[scored])
    assert set(hives[calibrate]) == set(hives[scored]) == set(targets)
    for hive in targets:  # every class of every target hive on both sides
        assert set(labels[calibrate & (hives == hive)]) == set(labels[scored & (hives == hive)]) == {"0", "1"}
    assert not np.any((calibrate | scored) & ~np.isin(hives, targets))


def test_adapt_writes_a_report_whose_rows_come_from_the_run(
    tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    config = adapt.AdaptConfig(
        minutes=(0.0, 0.2),
        seeds=(0,),
        strategies=("informative", "random"),
        calibration_share=0.5,
        quick=True,
    )
    out = tmp_path / "adapt"
    results = adapt.run_adapt(data=tiny_dataset, out=out, config=config, cache_dir=tiny_cache_dir)
    assert json.loads((out / adapt_report.RESULTS_FILE).read_text())["summary"] == json.loads(
        json.dumps(results["summary"])
    )
    assert (out / adapt_report.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = results["rows"]
    assert {(r["strategy"], r["minutes"]) for r in rows} == {
        ("informative", 0.0), ("random", 0.0), ("informative", 0.2), ("random", 0.2), ("scratch", 0.2),
    }  # fmt: skip
    for r in rows:
        assert r["split"] == "unseen-microphones" and len(r["target_hives"]) == 2
        assert r["labelled_windows"] == (0 if r["minutes"] == 0 else 6)
        assert sum(r["labelled_classes"].values()) == r["labelled_windows"]
    # The base is scored once per seed: every 0-minute row holds the same numbers.
    assert len({r["accuracy"] for r in rows if r["minutes"] == 0}) == 1
    report = (out / adapt_report.REPORT_FILE).read_text()
    assert "SYNTHETIC" in report and "beeaudio experiment adapt --data" in report
    table = parse_markdown_table(text=report, heading=adapt_report.SUMMARY_HEADING)
    by_row = {(t["labels from"], t["labelled minutes"]): t for t in table}
    for strategy in ("informative", "random", "scratch"):
        cell = [r for r in rows if r["strategy"] == strategy and r["minutes"] == 0.2]
        expected = adapt_report.cell(float(np.mean([r["accuracy"] for r in cell])), 0.0)
        assert by_row[(adapt_report._STRATEGY[strategy], "0.2")]["accuracy %"] == expected
    assert by_row[("— (the base model)", "0")]["balanced %"] == adapt_report.cell(
        rows[0]["balanced_accuracy"], 0.0
    )


def test_adapt_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="strategies"):
        adapt.AdaptConfig(strategies=("magic",))
    with pytest.raises(ValueError, match="calibration_share"):
        adapt.AdaptConfig(calibration_share=1.0)
    with pytest.raises(ValueError, match="minutes"):
        adapt.AdaptConfig(minutes=(-1.0,))
