"""The calibration experiment's ``report.md``, ``results.json`` and ``calibration.png``.

The tables are rendered from ``results["summary"]`` (itself computed from ``results["rows"]``, one row per
seed × split × condition), so the report and the JSON agree by construction; the tests recompute a cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.fsio import write_json, write_text_atomic
from beeaudio.desktop.experiments.report import markdown_table

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "calibration.png"
#: Heading of the summary table (mean ± sd over seeds per split × condition).
SUMMARY_HEADING = "## Mean ± sd over seeds"
#: Heading of the per-seed table.
ROWS_HEADING = "## Every seed"

_LABELS = {
    "none": "none (plain features)",
    "cmn": "cmn (cepstral means relative to the hive's)",
    "feature-mean": "feature-mean (every feature relative to the hive's)",
}


def cell(value: float | None, sd: float | None = None) -> str:
    """A share as percent with two decimals, ``mean ± sd`` when an sd is given; ``—`` when absent."""
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if sd is None else f"{100 * value:.2f} ± {100 * sd:.2f}"


def summary_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            s["split"],
            _LABELS.get(s["condition"], s["condition"]),
            str(len(s["seeds"])),
            cell(s["accuracy"], s["accuracy_sd"]),
            cell(s["balanced_accuracy"], s["balanced_accuracy_sd"]),
            cell(s["false_alarm"], s["false_alarm_sd"]),
            cell(s["swarm_recall"], s["swarm_recall_sd"]),
            cell(s["unfamiliar"], s["unfamiliar_sd"]),
        ]
        for s in summary
    ]


SUMMARY_HEADERS = (
    "split", "calibration", "seeds", "accuracy %", "balanced %", "normal called swarm %", "swarm recall %",
    "unfamiliar %",
)  # fmt: skip


def gain(
    summary: list[dict[str, Any]], *, split: str, condition: str, metric: str = "balanced_accuracy"
) -> float | None:
    """``condition`` minus ``none`` in ``metric`` on ``split`` (None when either is missing)."""
    by = {(s["split"], s["condition"]): s for s in summary}
    if (split, "none") not in by or (split, condition) not in by:
        return None
    return by[(split, condition)][metric] - by[(split, "none")][metric]


def write_report(*, out: Path, results: dict[str, Any]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS_FILE, results)
    plot(results=results, path=out / PLOT_FILE)
    data, summary = results["data"], results["summary"]
    training = {k: v for k, v in results["train_config"].items() if k != "feature_config"}
    prov = results["provenance"]
    lines = [
        "# Per-hive calibration on unseen microphones",
        "",
        (
            "**These numbers come from SYNTHETIC audio** (`beeaudio synth`), not from bees: they say what "
            "per-hive cepstral mean normalisation does against this generator's microphones and colonies."
            if data.get("synthetic")
            else "Dataset: real recordings (the manifest does not say synthetic)."
        ),
        "",
        "```",
        prov["command"],
        "```",
        "",
        *(
            [f"Training overrides given from Python (not in the command): {prov['library_overrides']}", ""]
            if prov.get("library_overrides")
            else []
        ),
        f"Data: `{data['path']}`: {data['recordings']} recordings, {data['hives']} hives, {data['windows']} "
        f"windows; microphone families: "
        + ", ".join(f"{f} ({len(h)} hives)" for f, h in data["families"].items())
        + ".",
        "",
        "Per seed, two grouped splits: **unseen-microphones** holds out every hive of "
        f"{results['config']['test_families']} microphone families (no training hive has a microphone of "
        "those families); **unseen-hives** holds out as many hives, each from a family that keeps training "
        "hives. On each, the `beeaudio train` DNN trained on plain features (`none`) and on features "
        "relative to each hive's baseline (`cmn`): a training hive's baseline from its normal windows, a "
        "test hive's from its first normal recording, which is then left out of the scores of *both* "
        "conditions. 'normal called swarm' is the share of normal windows labelled swarm (false alarms); "
        "'unfamiliar' the share of scored windows the novelty detector fitted on the same training windows "
        "flags.",
        "",
        SUMMARY_HEADING,
        "",
        markdown_table(headers=SUMMARY_HEADERS, rows=summary_rows(summary)),
        "",
    ]
    for split in ("unseen-microphones", "unseen-hives"):
        for condition in ("cmn", "feature-mean"):
            change = gain(summary, split=split, condition=condition)
            alarms = gain(summary, split=split, condition=condition, metric="false_alarm")
            if change is not None and alarms is not None:
                lines.append(
                    f"- {split}, {condition} vs none: balanced accuracy {100 * change:+.2f} points, "
                    f"normal windows called swarm {100 * alarms:+.2f} points."
                )
    lines += [
        "",
        f"![accuracy and false alarms per split and calibration]({PLOT_FILE})",
        "",
        ROWS_HEADING,
        "",
        markdown_table(
            headers=(
                "seed",
                "split",
                "calibration",
                "test families",
                "accuracy %",
                "balanced %",
                "normal called swarm %",
                "unfamiliar %",
                "test windows",
            ),
            rows=[
                [
                    r["seed"],
                    r["split"],
                    r["condition"],
                    ", ".join(r["test_families"]),
                    cell(r["accuracy"]),
                    cell(r["balanced_accuracy"]),
                    cell(r["false_alarm"]),
                    cell(r.get("unfamiliar")),
                    r["test_windows"],
                ]
                for r in results["rows"]
            ],
        ),
        "",
        "## Configuration",
        "",
        f"- git commit {prov.get('git_commit')} (uncommitted changes: {prov.get('git_dirty')}); "
        f"versions {json.dumps(prov.get('versions'))}",
        f"- training: {json.dumps(training)}",
        f"- features: {json.dumps(results['feature_config'])}",
        f"- wall time {results['timing']['total_seconds']:.0f} s (data: decode {data['load_seconds']:.1f} s, "
        f"features {data['compute_seconds']:.1f} s, {data['cache_hits']} cache hits)",
        "",
    ]
    path = out / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))
    return path


def plot(*, results: dict[str, Any], path: Path) -> Path:
    """Balanced accuracy and false alarms per split and condition: bars are means, dots are seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, rows = results["summary"], results["rows"]
    splits = list(dict.fromkeys(s["split"] for s in summary))
    conditions = list(dict.fromkeys(s["condition"] for s in summary))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(conditions))
    for ax, metric, title in (
        (axes[0], "balanced_accuracy", "balanced accuracy on test hives"),
        (axes[1], "false_alarm", "normal windows called swarm"),
    ):
        for j, condition in enumerate(conditions):
            xs = np.arange(len(splits)) + (j - (len(conditions) - 1) / 2) * width
            by = {s["split"]: 100 * s[metric] for s in summary if s["condition"] == condition}
            means = [by.get(sp, 0.0) for sp in splits]
            ax.bar(xs, means, width=width * 0.9, label=_LABELS.get(condition, condition), alpha=0.75)
            for x, sp in zip(xs, splits, strict=True):
                seeds = [100 * r[metric] for r in rows if r["split"] == sp and r["condition"] == condition]
                ax.plot([x] * len(seeds), seeds, "k.", markersize=4)
        ax.set_xticks(np.arange(len(splits)), splits)
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    synthetic = " (SYNTHETIC)" if results["data"].get("synthetic") else ""
    fig.suptitle(f"Per-hive calibration{synthetic}: {len({r['seed'] for r in rows})} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
