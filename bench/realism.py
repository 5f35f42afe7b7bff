"""How far the SYNTHETIC generator's windows are from real recordings (issue 9, part 6).

    python bench/realism.py                                   # default generator vs ../shared/data/real
    python bench/realism.py --variation wide                  # the widened generator
    python bench/realism.py --synth DIR --real DIR_OR_FILE... # any synthetic dataset, any real recordings

Prints the grouped AUC of a logistic regression telling real windows from synthetic ones (0.5: it cannot
tell them apart; 1.0: it always can), on all features and on the spectral shape, the level and the
temporal texture separately (:mod:`beeaudio.desktop.realism`), and the median band levels of both sides;
writes ``band_levels.png`` (per-band level distributions side by side) and ``realism.json`` into ``--out``.

Both sides go through the same front end (``--features``, default ``osbh-2205``: 100-1000 Hz at 2205 Hz,
which the 2205 Hz Open Source Beehives clips and 16 kHz synthetic audio can both feed). Without
``--synth``, a synthetic dataset of ``--hives`` hives is generated into ``--out/synth`` (``beeaudio synth``
with ``--variation``, ``--seed``, ``--seconds``, ``--recordings``). By default the real side is every
in-hive recording under ``$BEEAUDIO_REAL_DATA`` or ``../shared/data/real`` (the outdoor flight-buzz clip is
not in-hive sound and is left out unless ``--real`` names it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("BEEAUDIO_REAL_DATA") or REPO_ROOT.parent / "shared" / "data" / "real")
#: Real recordings that are not in-hive sound, left out of the default real side.
NOT_IN_HIVE = ("buzzdetect",)


def default_real() -> list[Path]:
    if not REAL.is_dir():
        raise SystemExit(f"no real recordings at {REAL}: pass --real DIR_OR_FILE (or set BEEAUDIO_REAL_DATA)")
    return [p for p in sorted(REAL.iterdir()) if p.is_dir() and p.name not in NOT_IN_HIVE]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, nargs="+", default=None, help="real recordings (files/folders)")
    parser.add_argument("--synth", type=Path, default=None, help="a synthetic dataset folder (manifest.csv)")
    parser.add_argument("--variation", default="default", help="generator variation when generating")
    parser.add_argument("--hives", type=int, default=12, help="hives to generate (default 12)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per recording (default 30)")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per hive and class (default 2)")
    parser.add_argument(
        "--features", default="osbh-2205", help="front end preset or file (default osbh-2205)"
    )
    parser.add_argument("--block-seconds", type=float, default=20.0, help="real recordings cut into blocks")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: none)")
    parser.add_argument("--out", type=Path, default=Path("reports/realism"), help="output folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from beeaudio.desktop import realism
    from beeaudio.desktop.datasets import discover
    from beeaudio.desktop.feature_presets import resolve
    from beeaudio.desktop.synth import SynthConfig, generate_dataset

    started = time.perf_counter()
    config = resolve(spec=args.features, overrides={}, representation="stats")
    settings = realism.RealismConfig(block_seconds=args.block_seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    synth = args.synth
    if synth is None:
        synth = args.out / "synth"
        synth_config = SynthConfig(
            hives=args.hives,
            recordings_per_class=args.recordings,
            seconds=args.seconds,
            seed=args.seed,
            variation=args.variation,
        )
        generate_dataset(out=synth, config=synth_config, progress=False)
    real = realism.real_windows(
        paths=args.real or default_real(), config=config, realism=settings, cache_dir=args.cache
    )
    synthetic = realism.synthetic_windows(
        recordings=discover(root=synth), config=config, realism=settings, cache_dir=args.cache
    )
    result = realism.measure(synthetic=synthetic, real=real, config=config, realism=settings)
    result["synthetic_dataset"] = str(synth)
    result["command"] = " ".join(["python", "bench/realism.py", *(sys.argv[1:] if argv is None else argv)])
    result["seconds"] = round(time.perf_counter() - started, 1)
    realism.plot_band_levels(
        sides={f"SYNTHETIC ({synth.name})": synthetic.features, "real": real.features},
        config=config,
        path=args.out / "band_levels.png",
        title=f"SYNTHETIC vs real, {config.fmin:g}-{config.fmax:g} Hz at {config.sample_rate} Hz; "
        f"grouped AUC {result['auc']['all']:.3f}",
    )
    (args.out / "realism.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    auc = result["auc"]
    print(
        f"SYNTHETIC {synth} ({result['synthetic_windows']} windows, {result['synthetic_groups']} hives) vs "
        f"real ({result['real_windows']} windows, {result['real_groups']} groups from "
        f"{len(result['real_sources'])} recordings), {result['folds']} grouped folds"
    )
    print(
        f"grouped AUC real vs synthetic: all {auc['all']:.3f} | shape {auc['shape']:.3f} | "
        f"level {auc['level']:.3f} | texture {auc['texture']:.3f}   (0.5 = indistinguishable)"
    )
    cov, ratio = result["coverage"], result["distance_ratio"]
    print(
        "coverage (share of real windows within the synthetic hives' reach; 1 = like one more synthetic "
        f"hive): all {cov['all']:.2f} | shape {cov['shape']:.2f} | level {cov['level']:.2f} | texture "
        f"{cov['texture']:.2f}; median distance / reach: all {ratio['all']:.2f} | shape {ratio['shape']:.2f}"
    )
    peak = result["peak_band_hz"]
    print(
        f"loudest band (median, IQR): synthetic {peak['synthetic']['median']:.0f} Hz "
        f"({peak['synthetic']['q25']:.0f}-{peak['synthetic']['q75']:.0f}), "
        f"real {peak['real']['median']:.0f} Hz "
        f"({peak['real']['q25']:.0f}-{peak['real']['q75']:.0f}); median level "
        f"{result['median_level_db']['synthetic']:.1f} vs {result['median_level_db']['real']:.1f} dB"
    )
    print(f"wrote {args.out / 'band_levels.png'} and {args.out / 'realism.json'} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
