"""``beeaudio experiment codec|sweep|calibration``: the WAV-vs-MP3 reproduction, the DNN size sweep, and
per-hive calibration on unseen microphones.

Thin wrappers over :func:`beeaudio.desktop.experiments.codec.run_codec` and
:func:`beeaudio.desktop.experiments.sweep.run_sweep`; TensorFlow is imported only when a handler runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.core.console import guarded, require_extra
from beeaudio.desktop.commands.adapt import register_experiment as register_adapt
from beeaudio.desktop.commands.options import (
    add_cache_options,
    add_feature_options,
    cache_dir,
    feature_config,
    feature_overrides,
    name_list,
    nonnegative_int_list,
    positive_int_list,
)
from beeaudio.desktop.feature_presets import FeatureSpecError, front_end
from beeaudio.desktop.training.train import CODEC_WEIGHTINGS

#: What the experiments import (the ``train`` extra), looked for before any audio is decoded.
EXPERIMENT_MODULES = ("tensorflow", "keras", "sklearn", "matplotlib")


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset folder (e.g. made by 'beeaudio synth')")
    p.add_argument("--out", type=Path, required=True, help="report folder (created)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the models and the MP3 draws")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of hives held out (default 0.25)")
    p.add_argument("--quick", action="store_true", help="short training, for tests and smoke runs")
    p.add_argument("--no-baselines", action="store_true", help="skip the GMM and band-energy baselines")
    add_cache_options(p)
    add_feature_options(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="reproduce the reference result: WAV vs MP3, the DNN size sweep",
        description="Experiments that write report.md, results.json and PNG plots into --out.",
    )
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")

    codec = sub.add_parser(
        "codec",
        help="train on WAV / with codec augmentation / on MP3; test on WAV and MP3 at each bitrate",
        description="The WAV-vs-MP3 experiment on one hive-grouped split, with the GMM and band-energy "
        "baselines and one random-split figure for contrast.",
    )
    _common_options(codec)
    codec.add_argument(
        "--bitrates",
        type=positive_int_list,
        default=(16, 32, 64, 128),
        help="MP3 kbps (default 16,32,64,128)",
    )
    codec.add_argument(
        "--no-matched", action="store_true", help="skip the models trained on MP3 of each bitrate"
    )
    codec.add_argument("--no-random-split", action="store_true", help="skip the random-split contrast row")
    codec.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="training seeds (--seed, --seed+1, ...) of the wav, codec-aug and codec-aug-every DNNs, "
        "reported as mean ± sd (default 1: the --seed only)",
    )
    codec.add_argument(
        "--band",
        type=name_list,
        default=None,
        metavar="FRONT_END,FRONT_END...",
        help="compare these front ends side by side in one report (presets or JSON/TOML files, e.g. "
        "default,fullband); the feature flags apply to each; instead of --features",
    )
    codec.add_argument(
        "--codec-weighting",
        choices=CODEC_WEIGHTINGS,
        default=CODEC_WEIGHTINGS[0],
        help="how codec-aug draws each recording's bitrate, as 'beeaudio train --codec-weighting' "
        "(default inverse: chance proportional to 1/kbps)",
    )
    codec.set_defaults(func=guarded("experiment codec", _codec))

    sweep = sub.add_parser(
        "sweep",
        help="the DNN depth × width grid: accuracy, parameters, int8 bundle size, inference time",
        description="Train and export (int8) one DNN per grid cell on the same hive-grouped split.",
    )
    _common_options(sweep)
    sweep.add_argument(
        "--layers", type=positive_int_list, default=(1, 2, 3, 4), help="hidden layers (default 1,2,3,4)"
    )
    sweep.add_argument(
        "--units",
        type=positive_int_list,
        default=(64, 128, 256, 512),
        help="units per layer (default 64,128,256,512)",
    )
    sweep.add_argument(
        "--no-keep-runs", action="store_true", help="delete each cell's run folder (keep the bundles)"
    )
    sweep.set_defaults(func=guarded("experiment sweep", _sweep))

    _register_calibration(sub)
    register_adapt(sub)

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_usage)


def _front_ends(args: argparse.Namespace) -> tuple:
    """The front ends of --band (each with the feature flags applied), or the one of --features."""
    if args.band is None:
        return (front_end(spec=args.features, overrides=feature_overrides(args)),)
    if args.features is not None:
        raise FeatureSpecError("give --band (several front ends) or --features (one), not both")
    return tuple(front_end(spec=spec, overrides=feature_overrides(args)) for spec in args.band)


def _codec(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=EXPERIMENT_MODULES, command="experiment codec")
    from beeaudio.desktop.experiments.codec import CodecConfig, run_codec

    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    config = CodecConfig(
        bitrates=args.bitrates,
        seed=args.seed,
        test_fraction=args.test_fraction,
        quick=args.quick,
        matched=not args.no_matched,
        baselines=not args.no_baselines,
        random_split=not args.no_random_split,
        repeats=args.repeats,
        bands=_front_ends(args),
        training={"codec_weighting": args.codec_weighting},
    )
    results = run_codec(data=args.data, out=args.out, config=config, cache_dir=cache_dir(args))
    print(f"codec experiment written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for a in results["ablation"]:
        if a["test"] == "wav" or a["bitrate_kbps"] == min(config.bitrates):
            print(
                f"  {a['band']:<10} dnn trained on {a['train']:<16} {a['test'].upper():<7} "
                f"{100 * a['mean']:.2f} ± {100 * a['sd']:.2f} % ({len(a['seeds'])} seeds)"
            )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=EXPERIMENT_MODULES, command="experiment sweep")
    from beeaudio.desktop.experiments.sweep import SweepConfig, run_sweep

    config = SweepConfig(
        layers=args.layers,
        units=args.units,
        seed=args.seed,
        test_fraction=args.test_fraction,
        quick=args.quick,
        baselines=not args.no_baselines,
        keep_runs=not args.no_keep_runs,
        training={"feature_config": feature_config(args, representation="stats")},
    )
    results = run_sweep(data=args.data, out=args.out, config=config, cache_dir=cache_dir(args))
    print(f"sweep written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for r in results["rows"]:
        kb = "export failed" if r.get("bundle_kb") is None else f"{r['bundle_kb']:.1f} KB"
        ms = "" if r.get("ms_per_window") is None else f", {r['ms_per_window']:.3f} ms/window"
        print(f"  {r['layers']}x{r['units']}: {r['params']} params, {100 * r['accuracy']:.2f} %, {kb}{ms}")
    return 0


# -- calibration ---------------------------------------------------------------------------------------------
def _register_calibration(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibration",
        help="per-hive calibration vs none, on hives with microphone families training never heard",
        description="Grouped evaluation of per-hive cepstral mean normalisation: for each seed, hold out "
        "every hive of --test-families microphone families (and, for contrast, as many hives of known "
        "families), train the default DNN on plain and on calibrated features, and score both on the same "
        "windows. Needs a manifest with a microphone column (`beeaudio synth --variation wide` writes one).",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder (e.g. 'beeaudio synth --variation wide')"
    )
    p.add_argument("--out", type=Path, required=True, help="report folder (created)")
    p.add_argument(
        "--seeds",
        type=nonnegative_int_list,
        default=(0, 1, 2, 3, 4),
        help="seeds: each draws its own splits and trains its own models (default 0,1,2,3,4)",
    )
    p.add_argument(
        "--test-families", type=int, default=3, help="microphone families held out per seed (default 3)"
    )
    p.add_argument(
        "--conditions",
        type=name_list,
        default=("none", "cmn", "feature-mean"),
        help="calibrations compared, among none, cmn, feature-mean (default all three)",
    )
    p.add_argument("--quick", action="store_true", help="short training, for tests and smoke runs")
    p.add_argument("--no-novelty", action="store_true", help="skip fitting a novelty detector per model")
    add_cache_options(p)
    p.set_defaults(func=guarded("experiment calibration", _calibration))


def _calibration(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=EXPERIMENT_MODULES, command="experiment calibration")
    from beeaudio.desktop.experiments.calibration import CalibrationConfig, run_calibration

    config = CalibrationConfig(
        seeds=args.seeds,
        test_families=args.test_families,
        conditions=args.conditions,
        quick=args.quick,
        novelty=not args.no_novelty,
    )
    results = run_calibration(data=args.data, out=args.out, config=config, cache_dir=cache_dir(args))
    print(f"calibration experiment written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for s in results["summary"]:
        print(
            f"  {s['split']:<19} {s['condition']:<5} balanced accuracy {100 * s['balanced_accuracy']:.2f} ± "
            f"{100 * s['balanced_accuracy_sd']:.2f} %, normal called swarm {100 * s['false_alarm']:.2f} ± "
            f"{100 * s['false_alarm_sd']:.2f} % ({len(s['seeds'])} seeds)"
        )
    return 0
