"""The desktop pipeline commands: ``synth``, ``train``, ``export``, ``classify``, ``evaluate``, ``info``.

Each handler is a thin wrapper over a keyword-only library function and imports what it needs when it
runs, so ``beeaudio --help`` does not load TensorFlow. Expected failures (bad audio, a bad bundle, an
export that fails its checks, a wrong option value) print one ``beeaudio CMD: error: ...`` line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beeaudio.commands.options import add_cache_options, cache_dir, positive_int_list

EXIT_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_synth(subparsers)
    _register_train(subparsers)
    _register_export(subparsers)
    _register_classify(subparsers)
    _register_evaluate(subparsers)
    _register_info(subparsers)


# -- helpers -----------------------------------------------------------------------------------------------
def _expected_errors() -> tuple[type[BaseException], ...]:
    from beeaudio.audio import AudioError
    from beeaudio.bundle import BundleError
    from beeaudio.inference import RuntimeUnavailableError
    from beeaudio.training.export import ExportError

    return (AudioError, BundleError, ExportError, RuntimeUnavailableError, ValueError, FileNotFoundError)


def _guarded(name: str, handler: Handler) -> Handler:
    """Turn an expected failure into one clear line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except Exception as exc:
            if isinstance(exc, _expected_errors()):
                print(f"beeaudio {name}: error: {exc}", file=sys.stderr)
                return EXIT_ERROR
            raise

    return run


def _progress(args: argparse.Namespace) -> bool:
    quiet = getattr(args, "quiet", False)
    return (not quiet and sys.stderr.isatty()) or bool(getattr(args, "progress", False))


def _quiet_tensorflow() -> None:
    # TensorFlow's start-up chatter (CPU features, oneDNN, "Assets written to") says nothing to a beekeeper.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _name_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if len(values) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated names, got {text!r}")
    return values


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str))


# -- synth -------------------------------------------------------------------------------------------------
def _register_synth(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic hive-sound dataset (WAVs + manifest.csv)",
        description="Write a deterministic synthetic dataset: for each hive, recordings of each class "
        "(normal, swarm, ...) with per-hive and per-microphone variation and background noise, plus a "
        "manifest.csv. The audio is synthetic: it tests the pipeline, it does not replace real recordings.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--hives", type=int, default=12, help="number of hives (default 12)")
    p.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed gives the same files (default 1)"
    )
    p.add_argument(
        "--seconds", type=float, default=30.0, help="length of each recording in seconds (default 30)"
    )
    p.add_argument("--recordings", type=int, default=4, help="recordings per hive and class (default 4)")
    p.add_argument(
        "--classes",
        type=_name_list,
        default=("normal", "swarm"),
        help="comma-separated classes (default normal,swarm)",
    )
    p.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the WAVs (default 16000)")
    p.set_defaults(func=_guarded("synth", _synth))


def _synth(args: argparse.Namespace) -> int:
    from beeaudio.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        hives=args.hives,
        recordings_per_class=args.recordings,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        classes=tuple(args.classes),
        seed=args.seed,
    )
    manifest = generate_dataset(out=args.out, config=config, progress=_progress(args))
    n = config.hives * config.recordings_per_class * len(config.classes)
    print(
        f"wrote {n} synthetic recordings ({config.hives} hives × {len(config.classes)} classes × "
        f"{config.recordings_per_class} × {config.seconds:g} s) to {args.out}; manifest {manifest}"
    )
    return 0


# -- train -------------------------------------------------------------------------------------------------
def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a classifier on a dataset folder (hive-grouped split)",
        description="Train a dnn (MFCC statistics, feed-forward; the reference paper's model) or a cnn "
        "(MFCC × time) on the recordings under --data. Train and test never share a hive; early stopping "
        "uses a hive-grouped validation split of the train hives. Writes the run folder: model.keras, "
        "metrics.json, split.json, heldout.npz, plots. Features are cached (--cache), so a second run "
        "does not decode the audio again.",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder (manifest.csv, class folders, OSBH names)"
    )
    p.add_argument("--model", choices=("dnn", "cnn"), default="dnn", help="model family (default dnn)")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument(
        "--layers", type=int, default=None, help="hidden layers (dnn, default 3) or conv blocks (cnn, 2)"
    )
    p.add_argument(
        "--units", type=int, default=None, help="units per layer (dnn, default 128) or filters (cnn, 32)"
    )
    p.add_argument("--dropout", type=float, default=0.2, help="dropout rate (default 0.2)")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (default 60; early stopping)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience in epochs (default 8)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
    p.add_argument(
        "--test-fraction", type=float, default=0.25, help="share of hives held out for test (0.25)"
    )
    p.add_argument(
        "--validation-fraction", type=float, default=0.2, help="share of train hives for early stopping"
    )
    p.add_argument(
        "--window-seconds", type=float, default=None, help="analysis window in seconds (default 2)"
    )
    p.add_argument(
        "--hop-seconds", type=float, default=None, help="hop between windows in seconds (default 1)"
    )
    p.add_argument(
        "--codec-augment",
        action="store_true",
        help="also train on MP3 re-encodings of the training recordings",
    )
    p.add_argument(
        "--codec-bitrates",
        type=positive_int_list,
        default=(16, 24, 32, 48, 64),
        help="MP3 kbps for --codec-augment",
    )
    add_cache_options(p)
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the summary")
    p.set_defaults(func=_guarded("train", _train))


def _train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from beeaudio.features import FeatureConfig
    from beeaudio.training.train import REPRESENTATION, TrainConfig, train_run

    overrides = {
        k: v
        for k, v in (("window_seconds", args.window_seconds), ("hop_seconds", args.hop_seconds))
        if v is not None
    }
    feature_config = (
        FeatureConfig(representation=REPRESENTATION[args.model], **overrides) if overrides else None
    )
    config = TrainConfig(
        model=args.model,
        layers=args.layers,
        units=args.units,
        dropout=args.dropout,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        learning_rate=args.learning_rate,
        seed=args.seed,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        feature_config=feature_config,
        codec_augment=args.codec_augment,
        codec_bitrates=args.codec_bitrates,
        verbose=0 if args.quiet or args.json else (1 if sys.stdout.isatty() else 2),
        progress=_progress(args),
    )
    features_cache = cache_dir(args)
    result = train_run(data=args.data, out=args.out, config=config, cache_dir=features_cache)
    m = result.metrics
    if args.json:
        _print_json(m)
        return 0
    timing, dataset = m["timing"], m["dataset"]
    print(f"\nrun {result.run}: {m['model_summary']}")
    print(
        f"data: {dataset['recordings']} recordings, {dataset['hives']} hives, {dataset['windows']} windows"
        f"{' (synthetic)' if dataset.get('synthetic') else ''}; train hives {', '.join(m['train_hives'])}; "
        f"test hives {', '.join(m['test_hives'])}"
    )
    print(
        f"time: data loading {timing['load_seconds']:.1f} s + features {timing['compute_seconds']:.1f} s "
        f"(cache hits {timing['cache_hits']}), training {timing['train_seconds']:.1f} s "
        f"({m['training']['epochs_run']} epochs, best {m['training']['best_epoch']})"
    )
    print(f"test accuracy (held-out hives, {m['windows']} windows): {_pct(m['accuracy'])}")
    _print_per_class(m)
    return 0


def _print_per_class(m: dict[str, Any]) -> None:
    print(f"  {'label':<14} {'precision':>9} {'recall':>8} {'f1':>8} {'windows':>8}")
    for label, c in m["per_class"].items():
        print(f"  {label:<14} {c['precision']:>9.3f} {c['recall']:>8.3f} {c['f1']:>8.3f} {c['support']:>8}")
    if m.get("per_hive"):
        hives = ", ".join(f"{h} {100 * v['accuracy']:.1f} %" for h, v in m["per_hive"].items())
        print(f"  per hive: {hives}")


# -- export ------------------------------------------------------------------------------------------------
def _register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a training run as a verified .beemodel bundle",
        description="Convert a run's Keras model to TF-Lite (int8 full-integer or float32, builtin ops), "
        "check it against the Keras model on every held-out window (same label on >= 99 %%; int8 within "
        "1 point of float32 accuracy) and write the bundle with its manifest and self-test. Writes nothing "
        "if a check fails.",
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by 'beeaudio train'")
    p.add_argument(
        "--quantize", choices=("int8", "float32"), default="int8", help="model precision (default int8)"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="bundle file to write, e.g. models/hive-dnn.beemodel"
    )
    p.add_argument("--name", default=None, help="model name in the manifest (default hive-<model>)")
    p.add_argument("--version", default=None, help="model version in the manifest (default <date>-<sha>)")
    p.add_argument("--runtime", default=None, help="TF-Lite runtime for the checks (default: as on a device)")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="share of held-out windows where the export must give the Keras label (default 0.99; lower it "
        "only for tiny test sets, where one window is more than a point)",
    )
    p.add_argument(
        "--max-int8-drop",
        type=float,
        default=0.01,
        help="accuracy int8 may lose against float32 (default 0.01)",
    )
    p.add_argument("--json", action="store_true", help="print the export checks as JSON")
    p.set_defaults(func=_guarded("export", _export))


def _export(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from beeaudio.bundle import read_bundle
    from beeaudio.training.export import export_bundle

    path = export_bundle(
        run=args.run,
        out=args.out,
        quantize=args.quantize,
        model_name=args.name,
        model_version=args.version,
        runtime=args.runtime,
        min_agreement=args.min_agreement,
        max_int8_drop=args.max_int8_drop,
    )
    manifest = read_bundle(path).manifest
    checks = manifest.training["export_checks"]
    if args.json:
        _print_json({"bundle": str(path), "bytes": path.stat().st_size, **checks})
        return 0
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.1f} KB): {manifest.model_name} {manifest.model_version}"
    )
    line = f"held-out windows {checks['heldout_windows']}: Keras {_pct(checks['keras_accuracy'])}, "
    line += f"TF-Lite float32 {_pct(checks['float32_accuracy'])}"
    if args.quantize == "int8":
        line += f", int8 {_pct(checks['int8_accuracy'])}"
    print(line + f"; same label as Keras on {_pct(checks['agreement'])} (runtime {checks['runtime']})")
    return 0


# -- classify ----------------------------------------------------------------------------------------------
def _register_classify(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classify",
        help="classify audio files with a bundle",
        description="Classify WAV/MP3/FLAC/OGG files window by window and print, per file, the label (of "
        "the mean probabilities), the share of windows labelled swarm and the number of windows. Files that "
        "cannot be read get an error line; the exit status is 2 if any file failed.",
    )
    p.add_argument("--model", type=Path, required=True, help=".beemodel bundle")
    p.add_argument("files", type=Path, nargs="+", help="audio files")
    p.add_argument("--json", action="store_true", help="JSON output with per-window probabilities")
    p.add_argument("--windows", action="store_true", help="also print every window (table output)")
    p.add_argument(
        "--runtime", default=None, help="ai_edge_litert, tflite_runtime or tensorflow (default: first found)"
    )
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.set_defaults(func=_guarded("classify", _classify))


def _classify(args: argparse.Namespace) -> int:
    from beeaudio.audio import AudioError
    from beeaudio.inference import Classifier

    classifier = Classifier.load(args.model, runtime=args.runtime, num_threads=args.threads)
    swarm = classifier.manifest.swarm_label
    results, errors = [], []
    for path in args.files:
        try:
            results.append(classifier.classify_file(path))
        except (AudioError, OSError, ValueError) as exc:
            message = str(exc) if isinstance(exc, AudioError) else f"{path}: {exc}"
            errors.append({"path": str(path), "error": message, "type": type(exc).__name__})
            if not args.json:
                print(f"beeaudio classify: error: {message}", file=sys.stderr)
    if args.json:
        _print_json(
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
        return EXIT_ERROR if errors else 0
    if results:
        width = max(len(str(r.path)) for r in results)
        print(
            f"{'file':<{width}}  {'format':<6} {'seconds':>8} {'windows':>7}  "
            f"{'label':<12} {swarm + ' share':>12}"
        )
        for r in results:
            print(
                f"{r.path!s:<{width}}  {r.source_format:<6} {r.duration_s:>8.1f} {len(r.windows):>7}  "
                f"{r.label:<12} {100 * r.swarm_fraction:>10.1f} %"
            )
            if args.windows:
                for w in r.windows:
                    probs = "  ".join(f"{k} {v:.3f}" for k, v in w.probabilities.items())
                    print(f"    {w.start_s:>8.1f} s  {w.label:<12} {probs}  level {w.level_dbfs:.1f} dBFS")
    return EXIT_ERROR if errors else 0


# -- evaluate ----------------------------------------------------------------------------------------------
def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a bundle on a dataset folder",
        description="Run a bundle (with the device's inference code) on every window of the recordings "
        "under --data and report accuracy, per-class precision/recall/F1, per-hive accuracy and the "
        "confusion matrix. With --run RUN --split test, only the hives that run held out are used.",
    )
    p.add_argument("--model", type=Path, required=True, help=".beemodel bundle")
    p.add_argument("--data", type=Path, required=True, help="dataset folder")
    p.add_argument("--run", type=Path, default=None, help="training run folder (for --split)")
    p.add_argument(
        "--split", choices=("all", "test", "train"), default="all", help="which hives (default all)"
    )
    add_cache_options(p)
    p.add_argument("--runtime", default=None, help="TF-Lite runtime (default: first found)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_guarded("evaluate", _evaluate))


def _evaluate(args: argparse.Namespace) -> int:
    from beeaudio.training.evaluate import evaluate_bundle

    m = evaluate_bundle(
        model=args.model,
        data=args.data,
        run=args.run,
        split=args.split,
        cache_dir=cache_dir(args),
        runtime=args.runtime,
        progress=_progress(args) and not args.json,
    )
    if args.json:
        _print_json(m)
        return 0
    print(f"{m['model_name']} {m['model_version']} ({m['quantization']}, {m['runtime']}) on {m['data']}")
    print(
        f"split {m['split']}: {m['windows']} windows, {len(m['hives'])} hives, "
        f"{m['recordings']['count']} recordings"
    )
    print(f"accuracy {_pct(m['accuracy'])} (per recording {_pct(m['recordings']['accuracy'])})")
    _print_per_class(m)
    labels = m["labels"]
    print("  confusion (rows true, columns predicted): " + "  ".join(labels))
    for label, row in zip(labels, m["confusion_matrix"], strict=True):
        print(f"    {label:<14} " + " ".join(f"{v:>7}" for v in row))
    return 0


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
    p.set_defaults(func=_guarded("info", _info))


def _info(args: argparse.Namespace) -> int:
    from beeaudio.bundle import read_bundle

    bundle = read_bundle(args.file)
    m = bundle.manifest
    if args.json:
        _print_json({"path": str(bundle.path), "bytes": bundle.path.stat().st_size, "manifest": m.to_json()})
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
        line = f"  held-out     {checks.get('heldout_windows')} windows: accuracy {_pct(checks['accuracy'])}"
        line += f" (Keras {_pct(checks['keras_accuracy'])}, float32 {_pct(checks['float32_accuracy'])})"
        print(line + f", agreement with Keras {_pct(checks['agreement'])}")
    return 0
