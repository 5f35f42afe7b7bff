"""``beeaudio experiment adapt``: accuracy on unseen hives against the minutes a beekeeper labels.

A thin wrapper over :func:`beeaudio.desktop.experiments.adapt.run_adapt`, registered under ``beeaudio
experiment`` by :mod:`beeaudio.desktop.commands.experiments`; TensorFlow is imported only when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.core.console import guarded, progress_enabled, require_extra
from beeaudio.desktop.commands.options import (
    add_cache_options,
    cache_dir,
    name_list,
    nonnegative_int_list,
    nonnegative_number_list,
)

#: What the experiment imports (the ``train`` extra), looked for before any audio is decoded.
EXPERIMENT_MODULES = ("tensorflow", "keras", "matplotlib")


def register_experiment(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt`` to the ``beeaudio experiment`` sub-commands."""
    p = sub.add_parser(
        "adapt",
        help="accuracy on unseen hives against labelled minutes (0, 1, 2, 5, 10), fine-tuning from a base",
        description="For each seed: train a base DNN on all hives but the target hives (the hives of "
        "--test-families microphone families when the manifest has a microphone column, else a hive-grouped "
        "test split), pick --minutes of windows from the first --calibration-share of each target hive's "
        "recordings as 'beekeeper label suggest' would (or at random), label them from the ground truth, "
        "fine-tune the base on them and score the rest of the target hives' recordings. Writes report.md, "
        "results.json and adapt.png into --out.",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder (e.g. 'beeaudio synth --variation wide')"
    )
    p.add_argument("--out", type=Path, required=True, help="report folder (created)")
    p.add_argument(
        "--minutes",
        type=nonnegative_number_list,
        default=(0.0, 1.0, 2.0, 5.0, 10.0),
        help="labelled minutes (default 0,1,2,5,10)",
    )
    p.add_argument(
        "--seeds",
        type=nonnegative_int_list,
        default=(0, 1, 2),
        help="seeds, each with its own target hives (default 0,1,2)",
    )
    p.add_argument(
        "--strategies",
        type=name_list,
        default=("informative", "random"),
        help="how the labelled windows are picked: informative (as label suggest), uncertain, unfamiliar, "
        "random (default informative,random)",
    )
    p.add_argument(
        "--test-families", type=int, default=2, help="microphone families held out as target (default 2)"
    )
    p.add_argument(
        "--calibration-share",
        type=float,
        default=0.75,
        help="share of each target hive's recordings (per class) a beekeeper labels from; the rest are "
        "scored "
        "(default 0.75)",
    )
    p.add_argument(
        "--no-scratch",
        action="store_true",
        help="skip the DNN trained from scratch on the same labels (the contrast to fine-tuning)",
    )
    p.add_argument("--quick", action="store_true", help="short training, for tests and smoke runs")
    add_cache_options(p)
    p.set_defaults(func=guarded("experiment adapt", _adapt))


def _adapt(args: argparse.Namespace) -> int:
    require_extra(extra="train", modules=EXPERIMENT_MODULES, command="experiment adapt")
    from beeaudio.desktop.experiments.adapt import AdaptConfig, run_adapt

    config = AdaptConfig(
        minutes=args.minutes,
        seeds=args.seeds,
        strategies=args.strategies,
        test_families=args.test_families,
        calibration_share=args.calibration_share,
        scratch=not args.no_scratch,
        quick=args.quick,
    )
    results = run_adapt(
        data=args.data,
        out=args.out,
        config=config,
        cache_dir=cache_dir(args),
        progress=progress_enabled(args),
    )
    print(f"adapt experiment written to {args.out} ({results['timing']['total_seconds']:.0f} s)")
    for s in results["summary"]:
        print(
            f"  {s['strategy']:<12} {s['minutes']:>4g} min ({s['labelled_windows']:.0f} windows): balanced "
            f"accuracy {100 * s['balanced_accuracy']:.1f} ± {100 * s['balanced_accuracy_sd']:.1f} %"
        )
    return 0
