"""``beeaudio label suggest``: the windows of a beekeeper's recordings most worth a listen, as labels.

A thin wrapper over :func:`beeaudio.desktop.suggest.suggest`. The corrected label files are read by
``beeaudio train --data DIR`` (``beeaudio.desktop.datasets.discover``), and ``--init-from`` fine-tunes the
model they were suggested with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.core.console import guarded, print_json, progress_enabled


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label",
        help="learn from a beekeeper's labels: suggest the windows most worth a listen",
        description="Help a beekeeper label their own recordings: 'label suggest' writes Audacity label "
        "files with the windows most worth a listen; correct them in Audacity, then 'beeaudio train "
        "--data DIR --init-from MODEL' fine-tunes on them.",
    )
    sub = parser.add_subparsers(dest="label_command", metavar="ACTION")
    p = sub.add_parser(
        "suggest",
        help="write Audacity label files with the windows most worth a listen",
        description="Score every window of the recordings under --data with --model and pick up to --n of "
        "them: the most unfamiliar (novelty beyond the model's threshold) and the most uncertain (the two "
        "most probable labels closest) in turn, never a window without a usable signal or one already "
        "labelled, at least --min-gap seconds apart in a recording and at most --per-hive per hive. Each is "
        "written as a span labelled with the model's guess and a question mark (swarm?) into the "
        "recording's label file (name.txt), with suggestions.csv and LABELLING.md (how to correct them in "
        "Audacity) in --out.",
    )
    p.add_argument(
        "--model", type=Path, required=True, help="a .beemodel bundle or a 'beeaudio train' run folder"
    )
    p.add_argument(
        "--data", type=Path, required=True, help="folder of recordings (any layout; labels not needed)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the label files (the recordings' folders mirrored), suggestions.csv and "
        "LABELLING.md; the same as --data writes the label files beside the recordings",
    )
    p.add_argument("--n", type=int, default=40, help="how many windows to suggest at most (default 40)")
    p.add_argument(
        "--min-gap",
        type=float,
        default=10.0,
        help="seconds between two suggestions in one recording, start to start (default 10; at least "
        "one window)",
    )
    p.add_argument(
        "--per-hive",
        type=int,
        default=None,
        help="most suggestions from one hive (default: --n shared evenly among the hives)",
    )
    p.add_argument(
        "--strategy",
        choices=("informative", "uncertain", "unfamiliar", "random"),
        default="informative",
        help="how windows are ranked: informative (unfamiliar and uncertain in turn; the default), "
        "uncertain or unfamiliar alone, or random",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random strategy and of ties (default 0)")
    p.add_argument("--runtime", default=None, help="TF-Lite runtime for a bundle (default: first found)")
    p.add_argument("--json", action="store_true", help="print the suggestions as JSON")
    p.set_defaults(func=guarded("label suggest", _suggest))

    def _usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_usage)


def _suggest(args: argparse.Namespace) -> int:
    from beeaudio.desktop.suggest import SuggestConfig, suggest

    if args.model.is_dir():
        from beeaudio.desktop.training import quiet_tensorflow

        quiet_tensorflow()
    config = SuggestConfig(
        n=args.n, min_gap_s=args.min_gap, per_hive=args.per_hive, strategy=args.strategy, seed=args.seed
    )
    result = suggest(
        model=args.model,
        data=args.data,
        out=args.out,
        config=config,
        runtime=args.runtime,
        progress=progress_enabled(args) and not args.json,
    )
    if args.json:
        print_json(
            {
                "suggestions": [{**vars(s), "label": s.label} for s in result.suggestions],
                "label_files": [str(p) for p in result.label_files],
                "windows": result.windows,
                "no_signal": result.no_signal,
                "already_labelled": result.already_labelled,
                "skipped_files": list(result.skipped_files),
            }
        )
        return 0
    print(
        f"{len(result.suggestions)} windows worth a listen in {len(result.label_files)} recordings "
        f"({result.windows} windows scored, {result.no_signal} without a usable signal, "
        f"{result.already_labelled} already labelled)"
    )
    for s in result.suggestions[:10]:
        print(f"  {s.rank:>3}. {s.file} {s.start_s:.1f}-{s.end_s:.1f} s  {s.label:<12} {s.reason}")
    if len(result.suggestions) > 10:
        print(f"  ... {len(result.suggestions) - 10} more in {result.table}")
    print(f"how to correct them in Audacity: {result.readme}")
    return 0
