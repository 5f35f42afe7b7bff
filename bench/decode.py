"""Decoding alone, in one process: the streaming reader, whole-file loading and librosa, interleaved.

    python bench/decode.py [--repeat 300] [--seconds 10]

For a WAV and an MP3 clip (the clips of ``bench/edge_latency.py``: synthetic hive sound, 16 kHz, MP3 at
64 kbit/s) it times, round after round so that a loaded machine slows all three alike:

* ``iter_windows``: ``beeaudio.core.audio.iter_windows`` to the model's rate, every window (what the device
  runs);
* ``load``: ``beeaudio.core.audio.load`` of the whole file to the model's rate;
* ``librosa``: ``librosa.load(sr=...)`` and the windows sliced from it (the baseline's decode stage);

and prints the medians in milliseconds with the ratios to librosa and of the streaming reader to ``load``.
Needs the ``train`` extra (librosa). Figures are printed, nothing is asserted; see bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

WIDTHS = (12, 8, 8, 13, 10)


def medians(runs: dict[str, Callable[[], object]], *, repeat: int) -> dict[str, float]:
    """Median milliseconds of each callable over ``repeat`` interleaved rounds, after one warm-up each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="interleaved rounds (the median is printed)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    args = parser.parse_args(argv)
    import librosa

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edge_latency import make_clips

    from beeaudio.core import audio
    from beeaudio.core.features import FeatureConfig, window_start_samples

    config = FeatureConfig()
    with tempfile.TemporaryDirectory(prefix="beeaudio-bench-decode-") as tmp:
        clips, source = make_clips(folder=Path(tmp), seconds=args.seconds, sample_rate=16000, mp3_kbps=64)
        print(f"{args.seconds:g} s clips at 16000 Hz from {source}, to {config.sample_rate} Hz; median of "
              f"{args.repeat} interleaved rounds, ms")  # fmt: skip
        header = ("clip", "iter_windows", "load", "librosa", "iter/librosa", "iter/load")
        print(f"{header[0]:<5} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], WIDTHS, strict=True)))
        for clip in clips:

            def baseline(clip: Path = clip) -> list[np.ndarray]:
                signal, _ = librosa.load(clip, sr=config.sample_rate, mono=True)
                starts = window_start_samples(n_samples=len(signal), config=config)
                return [signal[s : s + config.window_samples] for s in starts]

            ms = medians(
                {
                    "iter_windows": lambda clip=clip: list(audio.iter_windows(clip, config=config)),
                    "load": lambda clip=clip: audio.load(clip, sample_rate=config.sample_rate),
                    "librosa": baseline,
                },
                repeat=args.repeat,
            )
            row = (ms["iter_windows"], ms["load"], ms["librosa"])
            row += (ms["iter_windows"] / ms["librosa"], ms["iter_windows"] / ms["load"])
            print(
                f"{clip.suffix[1:].upper():<5} "
                + " ".join(f"{v:>{w}.3f}" for v, w in zip(row, WIDTHS, strict=True))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
