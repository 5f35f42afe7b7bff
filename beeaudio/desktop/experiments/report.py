"""Reports of the experiments: ``report.md`` (tables + exact configuration), ``results.json``, PNG plots.

The Markdown tables are rendered from the same rows that go into ``results.json``, so the two agree by
construction; the tests check that, and check one cell against an independent recomputation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.fsio import write_json

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CODEC_PLOT = "accuracy_vs_bitrate.png"
SWEEP_PLOT = "accuracy_vs_size.png"

#: Heading of the long codec table (one row per model × training condition × test condition).
CODEC_TABLE_HEADING = "## All conditions"
#: Heading of the codec experiment's ablation table (DNN mean ± sd over seeds, per front end and training).
ABLATION_TABLE_HEADING = "## Front ends side by side"
#: Heading of the codec experiment's account of the augmentation (draws, encoder check, validation).
AUGMENTATION_HEADING = "## Codec augmentation at the low end"
#: Heading of the sweep's grid table (one row per cell).
SWEEP_TABLE_HEADING = "## Grid"

_SYNTHETIC_NOTE = (
    "**These numbers come from SYNTHETIC audio** (`beeaudio synth`), not from bees: they measure the "
    "pipeline and the codec's effect on this generator's sounds, not field accuracy."
)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def signed_points(value: float | None) -> str:
    # + 0.0 turns a negative zero (0 points lost, negated) into +0.00 rather than -0.00.
    return "—" if value is None else f"{100 * value + 0.0:+.2f}"


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
    overrides = p.get("library_overrides") or {}
    note = (
        [
            "Set from Python with no command-line option (the command alone does not reproduce them): "
            + ", ".join(f"`{k}={v!r}`" for k, v in overrides.items())
            + ".",
            "",
        ]
        if overrides
        else []
    )
    return [
        "## Reproduce",
        "",
        "```",
        p["command"],
        "```",
        "",
        *note,
        f"Git commit: {commit}. Software: {versions}. Machine: {p.get('machine')}.",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(
            {k: results[k] for k in ("config", "train_config", "feature_config") if k in results},
            indent=2,
            default=str,
        ),
        "```",
        "",
    ]


# -- codec ---------------------------------------------------------------------------------------------------
def _test_order(bitrates: Sequence[int]) -> list[str]:
    return ["wav", *(f"mp3-{k}" for k in bitrates)]


def mean_sd(mean: float, sd: float) -> str:
    """A mean ± sd cell in percent, as the ablation table prints it."""
    return f"{100 * mean:.2f} ± {100 * sd:.2f}"


def write_codec_report(*, out: Path, results: dict[str, Any]) -> Path:
    out = Path(out)
    write_json(out / RESULTS_FILE, results)
    bitrates = results["config"]["bitrates"]
    rows, ablation = results["rows"], results["ablation"]
    plot_codec(rows=rows, ablation=ablation, bitrates=bitrates, path=out / CODEC_PLOT)
    tests = _test_order(bitrates)
    bands = results["bands"]
    seeds = results["seeds"]

    def cell(band: str, model: str, train: str, split: str, test: str) -> dict[str, Any] | None:
        for r in rows:
            if (r["band"], r["model"], r["train"], r["split"], r["test"]) == (
                band,
                model,
                train,
                split,
                test,
            ):
                return r
        return None

    names = " and ".join(f"`{b['name']}`" for b in bands)
    lines = [
        f"# Codec experiment: WAV vs MP3, front end{'s' if len(bands) > 1 else ''} {names}",
        "",
        f"Accuracy (%) of each model on the held-out hives' windows, as WAV and through a real MP3 encoder "
        f"(encode + decode of the whole recording at the front end's sample rate) at "
        f"{', '.join(map(str, bitrates))} kbps. Trained on: `wav`; `codec-aug` = WAV + one MP3 copy of each "
        "training recording at a bitrate drawn from the list (what `beeaudio train --codec-augment` does); "
        "`codec-aug-every` = WAV + a copy at every bitrate; `mp3-K` = MP3 at K kbps only (the matched "
        "condition: the most any augmentation can recover at K kbps with this front end). One hive-grouped "
        "split throughout (train and test share no hive, hence no recording), the same for every front end, "
        "except the rows marked NOT grouped.",
        "",
    ]
    data = results.get("data")
    if data and data.get("synthetic"):
        lines += [_SYNTHETIC_NOTE, ""]
    lines += [
        ABLATION_TABLE_HEADING,
        "",
        f"DNN accuracy (%) on the held-out hives, mean ± sd over training seeds {', '.join(map(str, seeds))} "
        "(sample sd; same split, same data; 0 with one seed).",
        "",
        markdown_table(
            headers=["front end", "band", "trained on", *(t.upper() for t in tests)],
            rows=_ablation_rows(ablation=ablation, bands=bands, tests=tests),
        ),
        "",
        f"![accuracy vs bitrate]({CODEC_PLOT})",
        "",
        *_augmentation_section(results=results, cell=cell),
    ]
    for band in bands:
        lines += _band_section(band=band, tests=tests, bitrates=bitrates, rows=rows, cell=cell)
    long_rows = [
        [
            r["band"],
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
    lines += ["", CODEC_TABLE_HEADING, ""]
    lines.append(
        markdown_table(
            headers=[
                "front end",
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
            headers=["front end", "model", "train", "split", "parameters", "training windows", "fit seconds"],
            rows=[
                [
                    m["band"],
                    m["model"],
                    m["train"],
                    m["split"],
                    m["params"],
                    m["train_windows"],
                    f"{m['fit_seconds']:.1f}",
                ]
                for b in bands
                for m in b["models"]
            ],
        )
    )
    lines += ["", *_data_section(data), *_provenance_section(results), *_determinism_note(), ""]
    per_band = ", ".join(f"{b['name']} {b['timing']['total_seconds']:.0f} s" for b in bands)
    lines.append(f"Timing: {results['timing']['total_seconds']:.0f} s in total ({per_band}).")
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def _ablation_rows(
    *, ablation: Sequence[dict[str, Any]], bands: Sequence[dict[str, Any]], tests: Sequence[str]
) -> list[list[Any]]:
    table = []
    describe = {b["name"]: b["describe"] for b in bands}
    for band, train in dict.fromkeys((a["band"], a["train"]) for a in ablation):
        cells = {a["test"]: a for a in ablation if (a["band"], a["train"]) == (band, train)}
        table.append(
            [
                band,
                describe.get(band, ""),
                train,
                *(mean_sd(cells[t]["mean"], cells[t]["sd"]) if t in cells else "—" for t in tests),
            ]
        )
    return table


def _augmentation_section(*, results: dict[str, Any], cell: Any) -> list[str]:
    """What the augmentation drew, whether it is the test encoder, and where its copies went."""
    bitrates = results["config"]["bitrates"]
    lowest = f"mp3-{bitrates[0]}"
    lines = [AUGMENTATION_HEADING, ""]
    for band in results["bands"]:
        aug = band["augmentation"]
        draws = "; ".join(
            f"{kbps} kbps {sum(by_label.values())} ("
            + ", ".join(f"{label} {n}" for label, n in by_label.items())
            + ")"
            for kbps, by_label in aug["draws"].items()
        )
        n = aug["recordings"]
        matched = n - len(aug["unmatched_recordings"])
        kbps = ", ".join(map(str, aug["bitrates"]))
        lines.append(
            f"- `{band['name']}`: `codec-aug` ({aug['weighting']} draw over {kbps} kbps) gave the {n} "
            f"training recordings one copy each: {draws}. {matched} of {n} copies are, window for window, "
            "the test encoder's output at the drawn bitrate (same encoder, same settings, same low-pass)."
        )
        model = next((m for m in band["models"] if m["train"] == "codec-aug" and m["model"] == "dnn"), None)
        if model and model.get("validation"):
            v = model["validation"]
            lines.append(
                f"  Early stopping on validation hives {', '.join(v['hives'])}: {v['clean_windows']} clean "
                f"+ {v['copy_windows']} copy windows (a copy keeps its recording's hive, so copies of "
                f"validation hives are validated on, never fitted; the {v['fit_copy_windows']} copy windows "
                "of the other training hives are fitted)."
            )
        matched_cell = cell(band["name"], "dnn", lowest, "grouped", lowest)
        aug_cell = cell(band["name"], "dnn", "codec-aug", "grouped", lowest)
        every_cell = cell(band["name"], "dnn", "codec-aug-every", "grouped", lowest)
        if matched_cell and aug_cell and every_cell:
            name = lowest.upper()
            best = max(aug_cell["accuracy"], every_cell["accuracy"])
            gap = matched_cell["accuracy"] - best
            verdict = (
                f"augmentation falls {100 * gap:.2f} points short of the matched model"
                if gap > 0
                else "augmentation reaches the matched model, so what is still lost at this bitrate is lost "
                "in the features themselves"
            )
            lines.append(
                f"  On {name} (seed {results['seeds'][0]} only): `codec-aug` {pct(aug_cell['accuracy'])} %, "
                f"`codec-aug-every` {pct(every_cell['accuracy'])} %, the DNN trained on {name} only (the "
                f"matched condition) {pct(matched_cell['accuracy'])} %: {verdict}."
            )
    return [*lines, ""]


def _band_section(
    *,
    band: dict[str, Any],
    tests: Sequence[str],
    bitrates: Sequence[int],
    rows: Sequence[dict[str, Any]],
    cell: Any,
) -> list[str]:
    name = band["name"]
    default = band["default_condition"]
    trainings = list(dict.fromkeys((r["model"], r["train"], r["split"]) for r in rows if r["band"] == name))
    wide = []
    for model, train, split in trainings:
        label = f"{train} ({split}, NOT grouped)" if split == "random" else train
        if model == "dnn" and train == default and split == "grouped":
            label += " — `beeaudio train` default"
        wide.append(
            [model, label, *(pct((cell(name, model, train, split, t) or {}).get("accuracy")) for t in tests)]
        )
    lines = [
        f"## Accuracy by training and test condition: `{name}` ({band['describe']})",
        "",
        "One training seed (the experiment's); the ablation table above has the spread over seeds.",
        "",
        markdown_table(headers=["model", "trained on", *(t.upper() for t in tests)], rows=wide),
        "",
    ]
    summary = band["summary"]
    for train in dict.fromkeys(("wav", "codec-aug", "codec-aug-every", default)):
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
    rs = band.get("random_split")
    if rs:
        r = cell(name, "dnn", "wav", "random", "wav")
        g = cell(name, "dnn", "wav", "grouped", "wav")
        lines.append(
            f"- A random window-level split (NOT grouped; {rs['hives_in_both']} hives on both sides) scores "
            f"{pct(r and r['accuracy'])} % on WAV, against {pct(g and g['accuracy'])} % on held-out hives: "
            "windows of one recording are near-duplicates, so a random split measures memory, not "
            "generalisation to a new hive."
        )
    for a, b in band.get("identical_test_conditions", []):
        lines.append(
            f"- `{a}` and `{b}` gave identical features: the encoder could not honour the higher bitrate "
            f"at this sample rate ({band['feature_config']['sample_rate']} Hz), so those columns are one "
            "condition."
        )
    return [*lines, ""]


def plot_codec(
    *,
    rows: Sequence[dict[str, Any]],
    ablation: Sequence[dict[str, Any]],
    bitrates: Sequence[int],
    path: Path,
) -> Path:
    """One plot: the ablation's DNNs (mean ± sd over seeds; colour = front end, line = training), and,
    with a single front end, every other model of the run (thin)."""
    plt = _pyplot()
    tests = [*(f"mp3-{k}" for k in bitrates), "wav"]
    labels = [*(f"MP3 {k}" for k in bitrates), "WAV"]
    styles = {"wav": "-", "codec-aug": "--", "codec-aug-every": ":"}
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    bands = list(dict.fromkeys(a["band"] for a in ablation))
    x = np.arange(len(tests))
    for band, train in dict.fromkeys((a["band"], a["train"]) for a in ablation):
        cells = {a["test"]: a for a in ablation if (a["band"], a["train"]) == (band, train)}
        means = [100 * cells[t]["mean"] if t in cells else np.nan for t in tests]
        sds = [100 * cells[t]["sd"] if t in cells else np.nan for t in tests]
        offset = 0.04 * (bands.index(band) - (len(bands) - 1) / 2)
        ax.errorbar(
            x + offset, means, yerr=sds, linestyle=styles.get(train, "-"), marker="o", capsize=3,
            color=f"C{bands.index(band)}", label=f"{band} / dnn {train}",
        )  # fmt: skip
    if len(bands) == 1:
        seeded = {(a["band"], a["train"]) for a in ablation}
        others = dict.fromkeys(
            (r["model"], r["train"], r["split"])
            for r in rows
            if not (r["model"] == "dnn" and r["split"] == "grouped" and (r["band"], r["train"]) in seeded)
        )
        for i, (model, train, split) in enumerate(others):
            values = []
            for t in tests:
                match = [
                    r["accuracy"]
                    for r in rows
                    if (r["model"], r["train"], r["split"], r["test"]) == (model, train, split, t)
                ]
                values.append(100 * match[0] if match else np.nan)
            name = f"{model} / {train}" + (" (random split)" if split == "random" else "")
            ax.plot(x, values, "-.", marker=".", linewidth=1, alpha=0.6, color=f"C{i + 1}", label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("test audio")
    ax.set_ylabel("accuracy on held-out hives (%)")
    seeds = len(ablation[0]["seeds"]) if ablation else 0
    ax.set_title(f"Accuracy vs MP3 bitrate (DNN: mean ± sd over {seeds} training seed{'s' * (seeds != 1)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
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
