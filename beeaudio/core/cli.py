"""The edge core's own commands: ``classify`` and ``info`` (they run on a hive device as on a desktop).

Each handler is a thin wrapper over the library and imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beeaudio.core.console import guarded, pct, print_json
from beeaudio.core.errors import EXIT_FAILURE


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_classify(subparsers)
    _register_info(subparsers)


# -- classify ----------------------------------------------------------------------------------------------
def _register_classify(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classify",
        help="classify audio files with a bundle",
        description="Classify WAV/MP3/FLAC/OGG files window by window and print, per file, the label (of "
        "the mean probabilities over the usable windows), the share of them labelled swarm, the number of "
        "windows, and how many had no usable signal (silence, dropouts, clipping, DC offset) or were "
        "unfamiliar to the model (beyond the bundle's novelty threshold). Such windows are no evidence: a "
        "file that is mostly such windows is labelled no_signal, unfamiliar, ... instead of a class. Files "
        "that cannot be read get an error line; the exit status is 1 if any file failed.",
    )
    p.add_argument("--model", type=Path, required=True, help=".beemodel bundle")
    p.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="audio files, or folders (every .wav/.mp3/.flac/.ogg file inside them)",
    )
    p.add_argument("--json", action="store_true", help="JSON output with per-window probabilities")
    p.add_argument("--windows", action="store_true", help="also print every window (table output)")
    p.add_argument(
        "--runtime", default=None, help="ai_edge_litert, tflite_runtime or tensorflow (default: first found)"
    )
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.set_defaults(func=guarded("classify", _classify))


def _classify(args: argparse.Namespace) -> int:
    from beeaudio.core.audio import AudioError, audio_files
    from beeaudio.core.inference import Classifier
    from beeaudio.core.sandbox import check_bundle_in_child, default_check_cache

    files = audio_files(paths=args.files)
    if not files:
        raise FileNotFoundError(
            f"no audio files (.wav, .mp3, .flac, .ogg) in {', '.join(map(str, args.files))}"
        )
    # First in a child process: a model that crashes the TF-Lite runtime (SIGSEGV) is one error line here,
    # not a dead command. A pass is remembered in the user's cache: only a bundle's first run pays (~0.5 s).
    check_bundle_in_child(
        path=args.model, runtime=args.runtime, num_threads=args.threads, cache_dir=default_check_cache()
    )
    classifier = Classifier.load(args.model, runtime=args.runtime, num_threads=args.threads)
    swarm = classifier.manifest.swarm_label
    results, errors = [], []
    for path in files:
        try:
            results.append(classifier.classify_file(path))
        except (AudioError, OSError, ValueError) as exc:
            message = str(exc) if isinstance(exc, AudioError) else f"{path}: {exc}"
            errors.append({"path": str(path), "error": message, "type": type(exc).__name__})
            if not args.json:
                print(f"beeaudio classify: error: {message}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "model": {
                    "name": classifier.manifest.model_name,
                    "version": classifier.manifest.model_version,
                    "runtime": classifier.runtime,
                    "labels": list(classifier.labels),
                    "swarm_label": swarm,
                },
                "files": [r.to_json() for r in results],
                "errors": errors,
            }
        )
        return EXIT_FAILURE if errors else 0
    if results:
        width = max(len(str(r.path)) for r in results)
        print(
            f"{'file':<{width}}  {'format':<6} {'seconds':>8} {'windows':>7}  "
            f"{'label':<12} {swarm + ' share':>12} {'no signal':>9} {'unfamiliar':>10}"
        )
        for r in results:
            unfamiliar = f"{r.unfamiliar_windows:>10}" if r.novelty else f"{'-':>10}"
            # The swarm share is of the usable windows: without any, there is none to show.
            share = f"{100 * r.swarm_fraction:>10.1f} %" if r.evidence_windows else f"{'-':>12}"
            print(
                f"{r.path!s:<{width}}  {r.source_format:<6} {r.duration_s:>8.1f} {len(r.windows):>7}  "
                f"{r.label:<12} {share} {r.no_signal_windows:>9} {unfamiliar}"
            )
            for note in _file_notes(r):
                print(f"    {note}")
            if args.windows:
                for w in r.windows:
                    probs = "  ".join(f"{k} {v:.3f}" for k, v in w.probabilities.items())
                    novelty = "" if w.novelty is None else f"  novelty {w.novelty:.2f}"
                    shown = w.verdict if w.evidence else f"{w.verdict} (model: {w.label})"
                    level = f"level {w.level_dbfs:.1f} dBFS"
                    print(f"    {w.start_s:>8.1f} s  {shown:<12} {probs}  {level}{novelty}")
            if args.windows and r.novelty:
                print(f"    (unfamiliar above novelty {classifier.novelty_threshold:.2f})")
        if classifier.novelty is None:
            print(
                "note: this bundle has no novelty detector, so audio unlike its training data is not "
                "flagged (re-export the run with this beeaudio to add one)"
            )
    return EXIT_FAILURE if errors else 0


def _file_notes(result) -> list[str]:  # result: beeaudio.core.inference.FileResult
    """What a beekeeper should know about a file's windows that were no evidence."""
    total = len(result.windows)
    notes = []
    problems = {v: n for v, n in result.verdicts.items() if v != "unfamiliar"}
    if problems:
        kinds = ", ".join(f"{v} {n}" for v, n in sorted(problems.items(), key=lambda item: -item[1]))
        notes.append(
            f"no usable signal: {sum(problems.values())} of {total} windows ({kinds}) — "
            "check the microphone and the recorder's gain"
        )
    if result.unfamiliar_windows:
        notes.append(
            f"unfamiliar: {result.unfamiliar_windows} of {total} windows — the model has not heard audio "
            "like this; train on your hives (see docs)"
        )
    if notes and result.label in result.verdicts:
        notes.append("the model's label is not shown: fewer than half of the windows are usable evidence")
    return notes


# -- info --------------------------------------------------------------------------------------------------
def _register_info(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a bundle's manifest",
        description="Read a .beemodel bundle (checksum and format verified) and summarise its manifest: "
        "model, labels, feature config, tensors, quantisation and the training figures.",
    )
    p.add_argument("file", type=Path, help=".beemodel bundle")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=guarded("info", _info))


def _info(args: argparse.Namespace) -> int:
    from beeaudio.core.bundle import read_bundle

    bundle = read_bundle(args.file)
    m = bundle.manifest
    if args.json:
        print_json({"path": str(bundle.path), "bytes": bundle.path.stat().st_size, "manifest": m.to_json()})
        return 0
    fc = m.feature_config
    training = m.training or {}
    checks = training.get("export_checks", {})
    print(
        f"{bundle.path} ({bundle.path.stat().st_size / 1024:.1f} KB, "
        f"model {len(bundle.model_bytes) / 1024:.1f} KB)"
    )
    print(
        f"  model        {m.model_name} {m.model_version}, format {m.format_version}, created {m.created_at}"
    )
    print(f"  labels       {', '.join(m.labels)} (swarm label: {m.swarm_label})")
    print(f"  quantization {m.quantization}: input {list(m.input_shape)} {m.input_dtype}, "
          f"output {list(m.output_shape)} {m.output_dtype}")  # fmt: skip
    print(
        f"  features     {fc.representation}, {fc.n_mfcc} MFCC + {fc.deltas} delta(s), {fc.n_mels} mel bands "
        f"{fc.fmin:g}-{fc.fmax:g} Hz at {fc.sample_rate} Hz, "
        f"window {fc.window_seconds:g} s / hop {fc.hop_seconds:g} s"
    )
    print(f"  sha256       {m.model_sha256}")
    print(f"  content      {_content_line(bundle)}")
    print(f"  self-test    {len(bundle.selftest.features)} windows, atol {bundle.selftest.atol:.3g}")
    if training:
        dataset = training.get("dataset") or {}
        print(
            f"  training     {training.get('model')} {training.get('layers')}×{training.get('units')}, "
            f"{training.get('params')} parameters; data {dataset.get('path')} "
            f"({'synthetic, ' if dataset.get('synthetic') else ''}{dataset.get('hives')} hives, "
            f"{dataset.get('windows')} windows)"
        )
    if checks:
        line = f"  held-out     {checks.get('heldout_windows')} windows: accuracy {pct(checks['accuracy'])}"
        line += f" (Keras {pct(checks['keras_accuracy'])}, float32 {pct(checks['float32_accuracy'])})"
        print(line + f", agreement with Keras {pct(checks['agreement'])}")
    print(f"  novelty      {_novelty_line(bundle)}")
    return 0


def _content_line(bundle) -> str:  # bundle: beeaudio.core.bundle.Bundle
    digest = bundle.manifest.content_sha256
    if digest is None:
        return (
            "no content digest (an older bundle): an edit of its manifest or self-test is not detected; "
            "re-export the run to add one"
        )
    covered = "manifest, model, self-test" + (", novelty detector" if bundle.manifest.novelty else "")
    return f"sha256 {digest} (verified: {covered}; integrity, not a signature)"


def _novelty_line(bundle) -> str:  # bundle: beeaudio.core.bundle.Bundle
    spec = bundle.manifest.novelty
    if spec is None:
        return "no novelty detector (an older bundle): unfamiliar audio is not flagged"
    if bundle.novelty is None:
        views = ", ".join(spec.views)
        return f"detector {spec.kind!r} ({views}), which this beeaudio does not compute: not used"
    line = f"{spec.kind} ({', '.join(spec.views)}), threshold {spec.threshold:.3g}"
    fitted = spec.info.get("fitted_on") or {}
    if fitted:
        line += f"; fitted on {fitted.get('windows')} windows of {fitted.get('hives')} hives"
    flagged = spec.info.get("heldout_flagged")
    if flagged is not None:
        line += f"; flags {pct(flagged)} of {spec.info.get('heldout_windows')} held-out test-hive windows"
    return line
