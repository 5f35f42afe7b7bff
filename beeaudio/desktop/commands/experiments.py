"""``beeaudio experiment codec|sweep``: the WAV-vs-MP3 reproduction and the DNN size sweep.

Thin wrappers over :func:`beeaudio.desktop.experiments.codec.run_codec` and
:func:`beeaudio.desktop.experiments.sweep.run_sweep`; TensorFlow is imported only when a handler runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.core.console import guarded, require_extra
from beeaudio.desktop.commands.options import add_cache_options, cache_dir, positive_int_list

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
        help="also retrain the wav and codec-aug DNNs with this many training seeds (same split) and "
        "report mean ± sd (default 1: no repeats)",
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

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_usage)


def _codec(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=EXPERIMENT_MODULES, command="experiment codec")
    from beeaudio.desktop.experiments.codec import CodecConfig, run_codec

    config = CodecConfig(
        bitrates=args.bitrates,
        seed=args.seed,
        test_fraction=args.test_fraction,
        quick=args.quick,
        matched=not args.no_matched,
        baselines=not args.no_baselines,
        random_split=not args.no_random_split,
        repeats=args.repeats,
    )
    results = run_codec(
        data=args.data, out=args.out, config=config, cache_dir=cache_dir(args), command=_reconstruct(args)
    )
    summary = results["summary"]
    print(f"codec experiment written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for train in ("wav", "codec-aug"):
        s = summary.get(train)
        if isinstance(s, dict):
            drops = ", ".join(
                f"{k}: {100 * -s[f'drop_mp3_{k}']:+.2f}" for k in config.bitrates if f"drop_mp3_{k}" in s
            )
            print(f"  dnn trained on {train}: WAV {100 * s['wav']:.2f} %; MP3 minus WAV (points) {drops}")
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
    )
    results = run_sweep(
        data=args.data, out=args.out, config=config, cache_dir=cache_dir(args), command=_reconstruct(args)
    )
    print(f"sweep written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for r in results["rows"]:
        kb = "export failed" if r.get("bundle_kb") is None else f"{r['bundle_kb']:.1f} KB"
        ms = "" if r.get("ms_per_window") is None else f", {r['ms_per_window']:.3f} ms/window"
        print(f"  {r['layers']}x{r['units']}: {r['params']} params, {100 * r['accuracy']:.2f} %, {kb}{ms}")
    return 0


def _reconstruct(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this run (from the parsed options, so it works from Python too)."""
    argv = ["beeaudio", "experiment", args.experiment, "--data", str(args.data), "--out", str(args.out)]
    if args.experiment == "codec":
        argv += ["--bitrates", ",".join(map(str, args.bitrates))]
        argv += ["--no-matched"] if args.no_matched else []
        argv += ["--no-random-split"] if args.no_random_split else []
        argv += ["--repeats", str(args.repeats)] if args.repeats > 1 else []
    else:
        argv += ["--layers", ",".join(map(str, args.layers)), "--units", ",".join(map(str, args.units))]
    argv += ["--seed", str(args.seed), "--test-fraction", str(args.test_fraction)]
    argv += ["--quick"] if args.quick else []
    argv += ["--no-baselines"] if args.no_baselines else []
    return argv
