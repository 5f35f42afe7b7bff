"""Reports of the experiments: ``report.md`` (tables + exact configuration), ``results.json``, PNG plots.

The Markdown tables are rendered from the same rows that go into ``results.json``, so the two agree by
construction; the tests check that, and check one cell against an independent recomputation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beeaudio.core.fsio import write_json

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CODEC_PLOT = "accuracy_vs_bitrate.png"
SWEEP_PLOT = "accuracy_vs_size.png"

#: Heading of the long codec table (one row per model × training condition × test condition).
CODEC_TABLE_HEADING = "## All conditions"
#: Heading of the sweep's grid table (one row per cell).
SWEEP_TABLE_HEADING = "## Grid"

_SYNTHETIC_NOTE = (
    "**These numbers come from SYNTHETIC audio** (`beeaudio synth`), not from bees: they measure the "
    "pipeline and the codec's effect on this generator's sounds, not field accuracy."
)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def signed_points(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f}"


def markdown_table(*, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_markdown_table(*, text: str, heading: str) -> list[dict[str, str]]:
    """The first table after ``heading`` in ``text`` as a list of {header: cell} (for tests and tools)."""
    lines = text.splitlines()
    start = lines.index(heading)
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    headers = [c.strip() for c in table[0].strip("|").split("|")]
    return [
        dict(zip(headers, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]
    ]


def _data_section(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["## Data", ""]
    if data.get("synthetic"):
        lines += [_SYNTHETIC_NOTE, ""]
    else:
        lines += ["Recordings supplied by the user (not synthetic).", ""]
    lines.append(
        f"`{data.get('path')}`: {data.get('recordings')} recordings, {data.get('hives')} hives, "
        f"{data.get('windows')} windows; train {data.get('train_windows')} windows "
        f"(hives {', '.join(data.get('train_hives', []))}), test {data.get('test_windows')} windows "
        f"(hives {', '.join(data.get('test_hives', []))})."
    )
    classes = data.get("class_windows") or data.get("class_counts")
    if classes:
        lines.append("Windows per class: " + ", ".join(f"{k} {v}" for k, v in classes.items()) + ".")
    lines.append("")
    return lines


def _provenance_section(results: dict[str, Any]) -> list[str]:
    p = results["provenance"]
    commit = p.get("git_commit") or "not available"
    if p.get("git_commit") and p.get("git_dirty"):
        commit += " (with uncommitted changes)"
    versions = ", ".join(f"{k} {v}" for k, v in sorted(p.get("versions", {}).items()))
    return [
        "## Reproduce",
        "",
        "```",
        p["command"],
        "```",
        "",
        f"Git commit: {commit}. Software: {versions}. Machine: {p.get('machine')}.",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(
            {k: results[k] for k in ("config", "train_config", "feature_config") if k in results}, indent=2
        ),
        "```",
        "",
    ]


# -- codec ---------------------------------------------------------------------------------------------------
def _test_order(bitrates: Sequence[int]) -> list[str]:
    return ["wav", *(f"mp3-{k}" for k in bitrates)]


def write_codec_report(*, out: Path, results: dict[str, Any]) -> Path:
    out = Path(out)
    write_json(out / RESULTS_FILE, results)
    bitrates = results["config"]["bitrates"]
    plot_codec(rows=results["rows"], bitrates=bitrates, path=out / CODEC_PLOT)
    rows = results["rows"]
    tests = _test_order(bitrates)
    summary = results["summary"]
    default = summary["default_condition"]

    def cell(model: str, train: str, split: str, test: str) -> dict[str, Any] | None:
        for r in rows:
            if (r["model"], r["train"], r["split"], r["test"]) == (model, train, split, test):
                return r
        return None

    trainings = list(dict.fromkeys((r["model"], r["train"], r["split"]) for r in rows))
    wide = []
    for model, train, split in trainings:
        label = f"{train} ({split}, NOT grouped)" if split == "random" else train
        if model == "dnn" and train == default and split == "grouped":
            label += " — `beeaudio train` default"
        wide.append(
            [model, label, *(pct((cell(model, train, split, t) or {}).get("accuracy")) for t in tests)]
        )
    long_rows = [
        [
            r["model"],
            r["train"],
            r["split"],
            r["test"],
            r["bitrate_kbps"] if r["bitrate_kbps"] is not None else "—",
            pct(r["accuracy"]),
            pct(r["balanced_accuracy"]),
            signed_points(r["delta_vs_wav"]),
            r["windows"],
        ]
        for r in rows
    ]
    lines = [
        "# Codec experiment: WAV vs MP3",
        "",
        f"Accuracy (%) of each model on the held-out hives' windows, as WAV and through a real MP3 encoder "
        f"(encode + decode of the whole recording) at {', '.join(map(str, bitrates))} kbps. Rows: the model "
        "and what it was trained on (`wav`; `codec-aug` = WAV + one MP3 copy of each training recording at a "
        "random bitrate of the list; `mp3-K` = MP3 at K kbps only). One hive-grouped split throughout "
        "(train and test share no hive, hence no recording), except the row marked NOT grouped.",
        "",
    ]
    data = results.get("data")
    if data and data.get("synthetic"):
        lines += [_SYNTHETIC_NOTE, ""]
    lines += [
        "## Accuracy by training and test condition",
        "",
        markdown_table(headers=["model", "trained on", *(t.upper() for t in tests)], rows=wide),
        "",
        f"![accuracy vs bitrate]({CODEC_PLOT})",
        "",
        "## Headline",
        "",
    ]
    for train in dict.fromkeys(("wav", "codec-aug", default)):
        s = summary.get(train)
        if not isinstance(s, dict):
            continue
        drops = ", ".join(
            f"{k} kbps {signed_points(-s[f'drop_mp3_{k}'])}" for k in bitrates if f"drop_mp3_{k}" in s
        )
        lines.append(f"- DNN trained on `{train}`: WAV {pct(s['wav'])} %; MP3 minus WAV (points): {drops}.")
    verdict = summary.get("default_mp3_32_within_2_points")
    if verdict is not None:
        lines.append(
            f"- With `beeaudio train`'s defaults (`{default}`), MP3 at 32 kbps is "
            f"{'within' if verdict else 'NOT within'} 2 points of WAV."
        )
    rs = results.get("random_split")
    if rs:
        r = cell("dnn", "wav", "random", "wav")
        g = cell("dnn", "wav", "grouped", "wav")
        lines.append(
            f"- A random window-level split (NOT grouped; {rs['hives_in_both']} hives on both sides) scores "
            f"{pct(r and r['accuracy'])} % on WAV, against {pct(g and g['accuracy'])} % on held-out hives: "
            "windows of one recording are near-duplicates, so a random split measures memory, not "
            "generalisation to a new hive."
        )
    for a, b in results.get("identical_test_conditions", []):
        lines.append(
            f"- `{a}` and `{b}` gave identical features: the encoder could not honour the higher bitrate at "
            "this sample rate (MP3 at 8 kHz tops out at 64 kbps), so those columns are one condition."
        )
    reps = results.get("repeats")
    if reps:
        lines += [
            "",
            f"### Training-seed spread (seeds {', '.join(map(str, reps['seeds']))}; same split)",
            "",
        ]
        keys = [k for k in ("wav", "mp3-32") if k in reps.get("wav", {})]
        lines.append(
            markdown_table(
                headers=["DNN trained on", *(f"{k.upper()} mean ± sd %" for k in keys)],
                rows=[
                    [
                        name,
                        *(
                            f"{100 * reps[name][k]['mean']:.2f} ± {100 * reps[name][k]['std']:.2f}"
                            for k in keys
                        ),
                    ]
                    for name in ("wav", "codec-aug")
                    if name in reps
                ],
            )
        )
    lines += ["", CODEC_TABLE_HEADING, ""]
    lines.append(
        markdown_table(
            headers=[
                "model",
                "train",
                "split",
                "test",
                "kbps",
                "accuracy %",
                "balanced %",
                "Δ vs WAV (points)",
                "windows",
            ],
            rows=long_rows,
        )
    )
    lines += ["", "## Models", ""]
    lines.append(
        markdown_table(
            headers=["model", "train", "split", "parameters", "training windows", "fit seconds"],
            rows=[
                [
                    m["model"],
                    m["train"],
                    m["split"],
                    m["params"],
                    m["train_windows"],
                    f"{m['fit_seconds']:.1f}",
                ]
                for m in results["models"]
            ],
        )
    )
    lines += ["", *_data_section(data), *_provenance_section(results), *_determinism_note(), ""]
    lines.append(f"Timing: {results['timing']['total_seconds']:.0f} s in total.")
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _determinism_note() -> list[str]:
    return [
        "## Determinism",
        "",
        "Seeds: the split, the validation hives, Keras weights and dropout (`keras.utils.set_random_seed` "
        "before every model), the MP3 bitrate drawn per recording, the GMM "
        "and logistic regression all derive from the one `--seed`, so a rerun on the same machine and "
        "software should give the same table (TensorFlow's global op-determinism switch is not set); "
        "another CPU or TensorFlow build can change the last digits (floating-point "
        "reduction order), and ffmpeg's MP3 encoder version can change the MP3 rows slightly.",
        "",
    ]


def plot_codec(*, rows: Sequence[dict[str, Any]], bitrates: Sequence[int], path: Path) -> Path:
    plt = _pyplot()
    tests = [*(f"mp3-{k}" for k in bitrates), "wav"]
    labels = [*(f"MP3 {k}" for k in bitrates), "WAV"]
    fig, ax = plt.subplots(figsize=(8, 5))
    trainings = list(dict.fromkeys((r["model"], r["train"], r["split"]) for r in rows))
    for model, train, split in trainings:
        values = []
        for t in tests:
            match = [
                r["accuracy"]
                for r in rows
                if (r["model"], r["train"], r["split"], r["test"]) == (model, train, split, t)
            ]
            values.append(100 * match[0] if match else float("nan"))
        style = "-" if model == "dnn" else "--"
        name = f"{model} / {train}" + (" (random split)" if split == "random" else "")
        ax.plot(
            range(len(tests)), values, style, marker="o", label=name, alpha=0.5 if split == "random" else 1
        )
    ax.set_xticks(range(len(tests)), labels)
    ax.set_xlabel("test audio")
    ax.set_ylabel("accuracy on held-out hives (%)")
    ax.set_title("Accuracy vs MP3 bitrate, per training condition")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- sweep ---------------------------------------------------------------------------------------------------
def write_sweep_report(*, out: Path, results: dict[str, Any]) -> Path:
    out = Path(out)
    write_json(out / RESULTS_FILE, results)
    plot_sweep(rows=results["rows"], baselines=results.get("baselines", []), path=out / SWEEP_PLOT)
    grid = [
        [
            r["layers"],
            r["units"],
            r["params"],
            pct(r["accuracy"]),
            pct(r.get("int8_accuracy")) + (" (refused)" if r.get("export_error") else ""),
            "—" if r.get("bundle_kb") is None else f"{r['bundle_kb']:.1f}",
            "—" if r.get("ms_per_window_median") is None else f"{r['ms_per_window_median']:.3f}",
            r.get("epochs_run", "—"),
        ]
        for r in results["rows"]
    ]
    lines = [
        "# DNN size sweep",
        "",
        "Each cell is `beeaudio train --model dnn --layers L --units U` + "
        "`beeaudio export --quantize int8` on the same hive-grouped split. "
        "Accuracy on the held-out hives (Keras float model and the int8 bundle); "
        "bundle size of the int8 `.beemodel`; inference time per window with "
        "`beeaudio.core.inference.Classifier` on one thread, one window per call (features excluded), "
        "median over the timed windows (the mean, "
        "in results.json, is more sensitive to other load on the machine).",
        "",
    ]
    data = results.get("data")
    if data and data.get("synthetic"):
        lines += [_SYNTHETIC_NOTE, ""]
    lines += [
        SWEEP_TABLE_HEADING,
        "",
        markdown_table(
            headers=[
                "layers",
                "units",
                "parameters",
                "accuracy %",
                "int8 accuracy %",
                "bundle KB",
                "ms/window (median)",
                "epochs",
            ],
            rows=grid,
        ),
        "",
    ]
    failed = [r for r in results["rows"] if r.get("export_error")]
    if failed:
        names = ", ".join(f"{r['layers']}×{r['units']}" for r in failed)
        lines += [
            f"(refused): `beeaudio export` refused the int8 model of {len(failed)} of {len(results['rows'])} "
            f"cells ({names}): its check that the int8 model "
            "gives the Keras model's label on enough held-out windows failed (each message is in "
            "results.json). Their size, speed and int8 accuracy come from the same conversion with that gate "
            "relaxed.",
            "",
        ]
    if results.get("baselines"):
        lines += [
            "## Baselines on the same split",
            "",
            markdown_table(
                headers=["model", "parameters", "accuracy %", "balanced %"],
                rows=[
                    [b["model"], b["params"], pct(b["accuracy"]), pct(b["balanced_accuracy"])]
                    for b in results["baselines"]
                ],
            ),
            "",
        ]
    lines += [f"![accuracy vs size]({SWEEP_PLOT})", ""]
    lines += [*_data_section(data), *_provenance_section(results), *_determinism_note()]
    lines.append(f"Timing: {results['timing']['total_seconds']:.0f} s in total.")
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_sweep(*, rows: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for layers in sorted({r["layers"] for r in rows}):
        cells = sorted((r for r in rows if r["layers"] == layers), key=lambda r: r["params"])
        ax1.plot(
            [r["params"] for r in cells],
            [100 * r["accuracy"] for r in cells],
            marker="o",
            label=f"{layers} layers",
        )
        sized = [r for r in cells if r.get("bundle_kb") is not None]
        ax2.plot(
            [r["bundle_kb"] for r in sized],
            [100 * r["int8_accuracy"] for r in sized],
            marker="s",
            label=f"{layers} layers",
        )
        for r in cells:
            ax1.annotate(str(r["units"]), (r["params"], 100 * r["accuracy"]), fontsize=7)
    for b in baselines:
        ax1.axhline(100 * b["accuracy"], linestyle=":", color="gray")
        ax1.annotate(b["model"], (ax1.get_xlim()[0], 100 * b["accuracy"]), fontsize=7, color="gray")
    ax1.set_xscale("log")
    ax1.set_xlabel("parameters")
    ax1.set_ylabel("accuracy on held-out hives (%, Keras)")
    ax1.set_title("Accuracy vs parameters (labels: units)")
    ax2.set_xscale("log")
    ax2.set_xlabel("int8 bundle size (KB)")
    ax2.set_ylabel("int8 accuracy (%)")
    ax2.set_title("int8 accuracy vs bundle size")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
