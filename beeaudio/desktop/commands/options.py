"""Options shared by several sub-commands, so they read and behave the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.desktop.datasets import default_cache_dir


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"16,32,64"`` → ``(16, 32, 64)``: bitrates, layer counts and widths are all positive."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache", type=Path, default=None, help=f"feature cache folder (default {default_cache_dir()})"
    )
    cache.add_argument("--no-cache", action="store_true", help="do not cache features")


def cache_dir(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else (args.cache or default_cache_dir())
