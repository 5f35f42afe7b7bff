"""The adapt experiment's ``report.md``, ``results.json`` and ``adapt.png``.

Every table is rendered from ``results["summary"]`` and ``results["rows"]`` (one row per seed × strategy ×
budget), so the report and the JSON agree by construction; the tests recompute a cell from the rows.
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
PLOT_FILE = "adapt.png"
#: Heading of the curve table (mean ± sd over seeds per strategy × labelled minutes).
SUMMARY_HEADING = "## Accuracy against labelled minutes (mean ± sd over seeds)"
ROWS_HEADING = "## Every seed"
SUMMARY_HEADERS = (
    "labels from", "labelled minutes", "windows", "seeds", "accuracy %", "balanced %",
    "normal called swarm %", "swarm recall %",
)  # fmt: skip
_STRATEGY = {
    "informative": "suggestions (unfamiliar + uncertain), fine-tuned",
    "uncertain": "suggestions (uncertain), fine-tuned",
    "unfamiliar": "suggestions (unfamiliar first), fine-tuned",
    "random": "random windows, fine-tuned",
    "scratch": "same labels, trained from scratch",
}


def cell(value: float | None, sd: float | None = None) -> str:
    """A share as percent with one decimal, ``mean ± sd`` when an sd is given; ``—`` when absent."""
    if value is None or not np.isfinite(value):
        return "—"
    return f"{100 * value:.1f}" if sd is None else f"{100 * value:.1f} ± {100 * sd:.1f}"


def summary_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            _STRATEGY.get(s["strategy"], s["strategy"]) if s["minutes"] > 0 else "— (the base model)",
            f"{s['minutes']:g}",
            f"{s['labelled_windows']:.0f}",
            str(len(s["seeds"])),
            cell(s["accuracy"], s["accuracy_sd"]),
            cell(s["balanced_accuracy"], s["balanced_accuracy_sd"]),
            cell(s["false_alarm"], s["false_alarm_sd"]),
            cell(s["swarm_recall"], s["swarm_recall_sd"]),
        ]
        for s in summary
        # The base (0 minutes) is the same model for every strategy: shown once.
        if s["minutes"] > 0 or s["strategy"] == summary[0]["strategy"]
    ]


def write_report(*, out: Path, results: dict[str, Any]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS_FILE, results)
    plot(results=results, path=out / PLOT_FILE)
    data, summary, rows, prov = results["data"], results["summary"], results["rows"], results["provenance"]
    splits = sorted({r["split"] for r in rows})
    first = rows[0]
    share = results["config"]["calibration_share"]
    unfamiliar = float(np.mean([r["test_unfamiliar"] for r in rows]))
    families = results["config"]["test_families"]
    what = (
        f"hives of {families} microphone families no base hive has (unseen-microphones)"
        if splits == ["unseen-microphones"]
        else "hives the base was not trained on, microphone families not told apart (unseen-hives)"
    )
    lines = [
        "# Learning from a beekeeper's labels: accuracy against labelled minutes",
        "",
        (
            "**These numbers come from SYNTHETIC audio** (`beeaudio synth`), not from bees, and the "
            "'beekeeper' is simulated: labels are the generator's ground truth, never wrong."
            if data.get("synthetic")
            else "Dataset: real recordings (the manifest does not say synthetic); the 'beekeeper' is "
            "simulated from the dataset's labels."
        ),
        "",
        "```",
        prov["command"],
        "```",
        "",
        f"Data: `{data['path']}`: {data['recordings']} recordings, {data['hives']} hives, {data['windows']} "
        f"windows. Target: {what}; per seed {len(first['target_hives'])} target hives, the base trained on "
        f"the other hives ({first['base_train_windows']} windows in seed {first['seed']}).",
        "",
        f"Of each target hive's recordings of each class, the first {100 * share:.0f} % are the part a "
        f"beekeeper labels ({first['pool_windows']} windows, {first['pool_minutes']:g} minutes of distinct "
        f"audio in seed {first['seed']}); the others are scored ({first['test_windows']} windows): no "
        "labelled window, nor any window of a labelled recording, is ever scored. For each budget, that "
        "many minutes of windows (one window apart, shared evenly among the target hives) are picked as "
        "`beeaudio label suggest` picks them — the base model's most unfamiliar and most uncertain windows "
        "in turn — or at random under the same rules, labelled from the ground truth, and the base is "
        "fine-tuned on them with the `beeaudio train --init-from` defaults. 0 minutes is the base model "
        f"itself. The base's novelty detector flags {100 * unfamiliar:.0f} % of the scored windows "
        "unfamiliar (mean over seeds).",
        "",
        SUMMARY_HEADING,
        "",
        markdown_table(headers=SUMMARY_HEADERS, rows=summary_rows(summary)),
        "",
        f"![accuracy against labelled minutes]({PLOT_FILE})",
        "",
        ROWS_HEADING,
        "",
        markdown_table(
            headers=(
                "seed",
                "labels from",
                "minutes",
                "windows",
                "labelled classes",
                "accuracy %",
                "balanced %",
                "normal called swarm %",
                "swarm recall %",
                "target hives",
                "seconds",
            ),
            rows=[_seed_row(r) for r in rows],
        ),
        "",
        "## Configuration",
        "",
        f"- git commit {prov.get('git_commit')} (uncommitted changes: {prov.get('git_dirty')}); "
        f"versions {json.dumps(prov.get('versions'))}",
        f"- base training: {json.dumps(_without_features(results['base_train_config']))}",
        f"- fine-tuning: {json.dumps(_without_features(results['fine_tune_config']))}",
        f"- features: {json.dumps(results['feature_config'])}",
        f"- wall time {results['timing']['total_seconds']:.0f} s (data: decode {data['load_seconds']:.1f} s, "
        f"features {data['compute_seconds']:.1f} s, {data['cache_hits']} cache hits)",
        "",
    ]
    if prov.get("library_overrides"):
        lines.insert(8, f"Overrides given from Python (not in the command): {prov['library_overrides']}")
    path = out / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))
    return path


def _seed_row(r: dict[str, Any]) -> list[Any]:
    classes = ", ".join(f"{k} {v}" for k, v in r["labelled_classes"].items()) or "—"
    return [
        r["seed"], r["strategy"], f"{r['minutes']:g}", r["labelled_windows"], classes, cell(r["accuracy"]),
        cell(r["balanced_accuracy"]), cell(r["false_alarm"]), cell(r["swarm_recall"]),
        ", ".join(r["target_hives"]), f"{r['seconds']:.1f}",
    ]  # fmt: skip


def _without_features(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("feature_config", "verbose", "progress")}


def plot(*, results: dict[str, Any], path: Path) -> Path:
    """Balanced accuracy against labelled minutes, one line per strategy (mean ± sd over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    base = [s for s in summary if s["minutes"] == 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in (
        (axes[0], "balanced_accuracy", "balanced accuracy on the target hives' unlabelled recordings"),
        (axes[1], "false_alarm", "normal windows called swarm"),
    ):
        for strategy in dict.fromkeys(s["strategy"] for s in summary):
            points = [s for s in summary if s["strategy"] == strategy and s[metric] is not None]
            if strategy != "scratch":
                points = base[:1] + [s for s in points if s["minutes"] > 0]
            if not points:
                continue
            xs = [s["minutes"] for s in points]
            ys = [100 * s[metric] for s in points]
            sd = [100 * (s[f"{metric}_sd"] or 0.0) for s in points]
            ax.errorbar(xs, ys, yerr=sd, marker="o", capsize=3, label=_STRATEGY.get(strategy, strategy))
        ax.set_xlabel("labelled minutes")
        ax.set_ylabel("%")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    synthetic = "SYNTHETIC, " if results["data"].get("synthetic") else ""
    seeds = len({r["seed"] for r in results["rows"]})
    fig.suptitle(f"Fine-tuning on a beekeeper's labels ({synthetic}{seeds} seeds)", fontsize=10)
    fig.text(0.5, 0.005, results["provenance"]["command"], ha="center", fontsize=6, family="monospace")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
