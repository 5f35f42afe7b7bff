"""The desktop pipeline commands: ``synth``, ``train``, ``export``, ``evaluate``.

Each handler is a thin wrapper over a keyword-only library function and imports what it needs when it
runs, so ``beeaudio --help`` does not load TensorFlow. Expected failures (bad audio, a bad bundle, an
export that fails its checks, a wrong option value) print one ``beeaudio CMD: error: ...`` line and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from beeaudio.core.bundle import QUANTIZATIONS
from beeaudio.core.console import guarded, pct, print_json, progress_enabled, require_extra
from beeaudio.desktop.commands.options import (
    add_cache_options,
    add_feature_options,
    cache_dir,
    feature_config,
    name_list,
    positive_int_list,
)
from beeaudio.desktop.training import quiet_tensorflow
from beeaudio.desktop.training.train import CODEC_BITRATES, CODEC_WEIGHTINGS

#: What training and export import (the ``train`` extra), looked for before any audio is decoded.
TRAIN_MODULES = ("tensorflow", "keras", "matplotlib")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_synth(subparsers)
    _register_train(subparsers)
    _register_export(subparsers)
    _register_evaluate(subparsers)


def _class_list(text: str) -> tuple[str, ...]:
    values = name_list(text)
    if len(values) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated names, got {text!r}")
    return values


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
        type=_class_list,
        default=("normal", "swarm"),
        help="comma-separated classes (default normal,swarm)",
    )
    p.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the WAVs (default 16000)")
    p.add_argument(
        "--variation",
        choices=("default", "wide"),
        default="default",
        help="default: the benchmark's hives and microphones; wide: microphone families with distinct "
        "responses (recorded in manifest.csv's microphone column), hive bodies, wider colonies, recorders "
        "set with headroom (see data/README.md)",
    )
    p.set_defaults(func=guarded("synth", _synth))


def _synth(args: argparse.Namespace) -> int:
    from beeaudio.desktop.synth import SynthConfig, generate_dataset

    config = SynthConfig(
        hives=args.hives,
        recordings_per_class=args.recordings,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        classes=tuple(args.classes),
        seed=args.seed,
        variation=args.variation,
    )
    manifest = generate_dataset(out=args.out, config=config, progress=progress_enabled(args))
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
    p.add_argument(
        "--model",
        choices=("dnn", "cnn"),
        default=None,
        help="model family (default dnn; with --init-from, the base's)",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="RUN_OR_BUNDLE",
        help="fine-tune this model (a run folder, or a float32 dnn .beemodel) on --data instead of training "
        "a new one: its features, architecture and labels are kept; lower learning rate, fewer epochs",
    )
    p.add_argument(
        "--layers", type=int, default=None, help="hidden layers (dnn, default 3) or conv blocks (cnn, 2)"
    )
    p.add_argument(
        "--units", type=int, default=None, help="units per layer (dnn, default 128) or filters (cnn, 32)"
    )
    p.add_argument("--dropout", type=float, default=0.2, help="dropout rate (default 0.2)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="maximum epochs (default 60, 30 with --init-from; early stopping)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default 64, 16 with --init-from)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience in epochs (default 8, 10 with --init-from)",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="Adam learning rate (default 0.001, 0.0005 with --init-from)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
    p.add_argument(
        "--test-fraction", type=float, default=0.25, help="share of hives held out for test (0.25)"
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="share of train hives for early stopping (default 0.2; 0 with --init-from: the few labels all "
        "train, and a validation hive of them stops too early)",
    )
    add_feature_options(p)
    p.add_argument(
        "--codec-augment",
        action="store_true",
        help="also train on one MP3 re-encoding of every training recording (multi-condition training; "
        "the test hives stay clean)",
    )
    p.add_argument(
        "--codec-bitrates",
        type=positive_int_list,
        default=CODEC_BITRATES,
        help="MP3 kbps for --codec-augment, one drawn per recording "
        f"(default {','.join(map(str, CODEC_BITRATES))})",
    )
    p.add_argument(
        "--codec-weighting",
        choices=CODEC_WEIGHTINGS,
        default=CODEC_WEIGHTINGS[0],
        help="how --codec-augment draws the bitrate: inverse (chance proportional to 1/kbps, so the low "
        "bitrates that change the features most are drawn most; the default) or uniform",
    )
    p.add_argument(
        "--calibration",
        choices=("none", "cmn", "feature-mean"),
        default="none",
        help="none (default): plain features; cmn: the cepstral means relative to each hive's baseline "
        "learnt from its normal recordings (per-hive cepstral mean normalisation); feature-mean: every "
        "feature relative to it. Devices then need `beeaudio device calibrate` before their readings count",
    )
    add_cache_options(p)
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the summary")
    p.set_defaults(func=guarded("train", _train))


def _train(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=TRAIN_MODULES, command="train")
    quiet_tensorflow()
    from beeaudio.desktop.training.train import REPRESENTATION, TrainConfig, train_run

    settings = {"model": args.model or "dnn", "layers": args.layers, "units": args.units}
    tuning = ("epochs", "patience", "learning_rate", "batch_size", "validation_fraction")
    settings.update({k: getattr(args, k) for k in tuning})
    if args.init_from is not None:
        settings.update(_fine_tune_settings(args))
    else:
        settings["feature_config"] = feature_config(args, representation=REPRESENTATION[settings["model"]])
    defaults = {"epochs": 60, "patience": 8, "learning_rate": 1e-3}
    defaults.update({"batch_size": 64, "validation_fraction": 0.2})
    settings.update({k: v for k, v in defaults.items() if settings.get(k) is None})
    config = TrainConfig(
        **settings,
        dropout=args.dropout,
        seed=args.seed,
        test_fraction=args.test_fraction,
        init_from=None if args.init_from is None else str(args.init_from),
        codec_augment=args.codec_augment,
        codec_bitrates=args.codec_bitrates,
        codec_weighting=args.codec_weighting,
        calibration=args.calibration,
        verbose=0 if args.quiet or args.json else (1 if sys.stdout.isatty() else 2),
        progress=progress_enabled(args),
    )
    features_cache = cache_dir(args)
    result = train_run(data=args.data, out=args.out, config=config, cache_dir=features_cache)
    m = result.metrics
    if args.json:
        print_json(m)
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
    if m.get("init_from"):
        print(f"fine-tuned from {m['init_from']['path']} ({m['init_from']['kind']})")
    for warning in m.get("warnings") or ():
        print(f"warning: {warning}")
    grouped = m.get("split", "").endswith("(hive-grouped)")
    where = "held-out hives" if grouped else "same hive, other recordings"
    print(f"test accuracy ({where}, {m['windows']} windows): {pct(m['accuracy'])}")
    _print_per_class(m)
    return 0


def _fine_tune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig values of a fine-tuning: the base's architecture and features (an explicit option that
    contradicts them is refused), and the fine-tuning defaults where no option was given."""
    from beeaudio.desktop.commands.options import feature_overrides
    from beeaudio.desktop.finetune import (
        FINE_TUNE_DEFAULTS,
        BaseError,
        base_architecture,
        base_feature_config,
        feature_difference,
    )

    kind, layers, units = base_architecture(source=args.init_from)
    for option, given, base in (("--model", args.model, kind), ("--layers", args.layers, layers),
                                ("--units", args.units, units)):  # fmt: skip
        if given is not None and base is not None and given != base:
            raise BaseError(f"{option} {given}: the base {args.init_from} has {base}; fine-tuning keeps it")
    features = base_feature_config(source=args.init_from)
    if args.features is not None or feature_overrides(args):
        asked = feature_config(args, representation=features.representation)
        if asked != features:
            raise BaseError(
                f"the feature options differ from {args.init_from}'s features:"
                f" {feature_difference(asked=asked, base=features)}; fine-tuning keeps the base's features"
                " (leave those options out)"
            )
    settings: dict[str, Any] = {"model": kind, "layers": layers, "units": units, "feature_config": features}
    settings.update({k: v for k, v in FINE_TUNE_DEFAULTS.items() if getattr(args, k) is None})
    return settings


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
        "check it against the Keras model on every held-out window (same label on >= 99 %; int8 within "
        "1 point of float32 accuracy) and write the bundle with its manifest and self-test. Writes nothing "
        "if a check fails.",
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by 'beeaudio train'")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="int8", help="model precision (default int8)")
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
    p.set_defaults(func=guarded("export", _export))


def _export(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=TRAIN_MODULES, command="export")
    quiet_tensorflow()
    from beeaudio.core.bundle import read_bundle
    from beeaudio.desktop.training.export import export_bundle

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
        print_json({"bundle": str(path), "bytes": path.stat().st_size, **checks})
        return 0
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.1f} KB): {manifest.model_name} {manifest.model_version}"
    )
    line = f"held-out windows {checks['heldout_windows']}: Keras {pct(checks['keras_accuracy'])}, "
    line += f"TF-Lite float32 {pct(checks['float32_accuracy'])}"
    if args.quantize == "int8":
        line += f", int8 {pct(checks['int8_accuracy'])}"
    print(line + f"; same label as Keras on {pct(checks['agreement'])} (runtime {checks['runtime']})")
    return 0


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
    p.set_defaults(func=guarded("evaluate", _evaluate))


def _evaluate(args: argparse.Namespace) -> int:
    from beeaudio.desktop.training.evaluate import evaluate_bundle

    m = evaluate_bundle(
        model=args.model,
        data=args.data,
        run=args.run,
        split=args.split,
        cache_dir=cache_dir(args),
        runtime=args.runtime,
        progress=progress_enabled(args) and not args.json,
    )
    if args.json:
        print_json(m)
        return 0
    print(f"{m['model_name']} {m['model_version']} ({m['quantization']}, {m['runtime']}) on {m['data']}")
    print(
        f"split {m['split']}: {m['windows']} windows, {len(m['hives'])} hives, "
        f"{m['recordings']['count']} recordings"
    )
    print(f"accuracy {pct(m['accuracy'])} (per recording {pct(m['recordings']['accuracy'])})")
    _print_per_class(m)
    labels = m["labels"]
    print("  confusion (rows true, columns predicted): " + "  ".join(labels))
    for label, row in zip(labels, m["confusion_matrix"], strict=True):
        print(f"    {label:<14} " + " ".join(f"{v:>7}" for v in row))
    return 0
