"""The novelty detector's two figures: windows of held-out synthetic hives flagged unfamiliar (the issue
asks for at most 2 %), and windows of clearly non-hive audio flagged (at least 95 % for each kind).

    python bench/novelty.py --model M.beemodel --data SYNTH_DIR [--run RUN_DIR]
    python bench/novelty.py --fresh [--out DIR]      # synth 12 hives seed 1, train dnn, export int8

1. Held-out hives: every recording of ``--data`` from the run's *test* hives (``RUN/split.json``, else the
   bundle manifest's ``training.test_hives``), classified file by file through
   :meth:`beeaudio.core.inference.Classifier.classify_file` (decode, resample, signal check, features,
   model, novelty: the device's path). The share of windows beyond the bundle's novelty threshold, per
   hive and overall, and the share whose signal check was not ``ok``.
2. Non-hive audio: ``--per-kind`` clips of each kind of ``tests/fixtures/signals.py`` (white and pink
   noise, tones, speech-like, music-like, rain) at RMS levels spread over -55..-10 dBFS, rendered at 16 kHz
   and classified in memory (:meth:`Classifier.classify_array`), and the real outdoor flight-buzz MP3
   (``$BEEAUDIO_REAL_DATA`` or ``../shared/data/real``, ``buzzdetect/testbuzz.mp3``). Per kind: the share
   flagged unfamiliar, the share that is no evidence for any reason (unfamiliar or a failed signal
   check), and the share the model alone would have called swarm.
3. For information: the real Open Source Beehives clips (real hive audio, 2205 Hz): how many windows are
   flagged.

Figures are printed (``--json`` for a machine-readable copy); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # for tests.fixtures.signals, the non-hive generators the tests use
REAL = Path(os.environ.get("BEEAUDIO_REAL_DATA") or REPO_ROOT.parent / "shared" / "data" / "real")


def fresh_model(out: Path) -> tuple[Path, Path, Path]:
    """The default benchmark: ``beeaudio synth/train/export`` in ``out``; (bundle, data, run)."""
    data, run, bundle = out / "synth", out / "run", out / "m.beemodel"
    steps = [
        ["synth", "--out", str(data), "--hives", "12", "--seed", "1"],
        ["train", "--data", str(data), "--model", "dnn", "--out", str(run)],
        ["export", "--run", str(run), "--quantize", "int8", "--out", str(bundle)],
    ]
    for step in steps:
        print("$ beeaudio " + " ".join(step), flush=True)
        subprocess.run([sys.executable, "-m", "beeaudio.cli", *step], check=True, cwd=REPO_ROOT)
    return bundle, data, run


def test_hives(*, bundle_manifest, run: Path | None) -> list[str]:
    if run is not None and (run / "split.json").is_file():
        return list(json.loads((run / "split.json").read_text())["test_hives"])
    hives = (bundle_manifest.training or {}).get("test_hives")
    if not hives:
        raise SystemExit("no test hives: pass --run RUN (its split.json says which hives were held out)")
    return list(hives)


def share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def heldout_figures(*, classifier, data: Path, hives: list[str]) -> dict:
    from beeaudio.desktop.datasets import discover

    recordings = sorted({(r.hive, r.path) for r in discover(root=data) if r.hive in set(hives)})
    if not recordings:
        raise SystemExit(f"{data}: no recordings of the test hives {hives}")
    per_hive: dict[str, dict[str, int]] = {}
    for hive, path in recordings:
        result = classifier.classify_file(Path(path))
        counts = per_hive.setdefault(hive, {"windows": 0, "unfamiliar": 0, "not_ok": 0})
        counts["windows"] += len(result.windows)
        counts["unfamiliar"] += sum(w.unfamiliar for w in result.windows)
        counts["not_ok"] += sum(w.quality != "ok" for w in result.windows)
    total = {key: sum(c[key] for c in per_hive.values()) for key in ("windows", "unfamiliar", "not_ok")}
    return {
        "hives": hives,
        "windows": total["windows"],
        "unfamiliar": share(total["unfamiliar"], total["windows"]),
        "not_ok": share(total["not_ok"], total["windows"]),
        "per_hive": {h: share(c["unfamiliar"], c["windows"]) for h, c in sorted(per_hive.items())},
    }


def kind_figures(windows) -> dict:
    n = len(windows)
    return {
        "windows": n,
        "unfamiliar": share(sum(w.unfamiliar for w in windows), n),
        "no_evidence": share(sum(not w.evidence for w in windows), n),
        "model_swarm": share(sum(w.label == "swarm" for w in windows), n),
    }


def non_hive_figures(*, classifier, per_kind: int, seconds: float, seed: int) -> dict:
    from tests.fixtures.signals import KINDS, non_hive_clips

    windows: dict[str, list] = {kind: [] for kind in KINDS}
    for clip in non_hive_clips(per_kind=per_kind, seconds=seconds, seed=seed):
        windows[clip.kind].extend(classifier.classify_array(clip.audio, sample_rate=clip.sample_rate))
    figures = {kind: kind_figures(found) for kind, found in windows.items()}
    buzz = REAL / "buzzdetect" / "testbuzz.mp3"
    if buzz.is_file():
        figures["flight_buzz_mp3"] = kind_figures(classifier.classify_file(buzz).windows)
    else:
        print(f"(no {buzz}: the flight-buzz recording is left out)", file=sys.stderr)
    return figures


def real_hive_figures(*, classifier) -> dict:
    found = sorted((REAL / "osbh").glob("*.wav")) if (REAL / "osbh").is_dir() else []
    windows = [w for path in found for w in classifier.classify_file(path).windows]
    return {**kind_figures(windows), "files": len(found)} if windows else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help=".beemodel bundle with a novelty detector")
    parser.add_argument("--data", type=Path, help="the synthetic dataset the bundle's run was trained on")
    parser.add_argument("--run", type=Path, help="the run folder (its split.json names the test hives)")
    parser.add_argument("--fresh", action="store_true", help="make the default benchmark model first")
    parser.add_argument("--out", type=Path, help="folder for --fresh (default: a temporary one)")
    parser.add_argument("--per-kind", type=int, default=8, help="non-hive clips per kind (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the non-hive clips (default 0)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)

    from beeaudio.core.inference import Classifier

    if args.fresh:
        out = args.out or Path(tempfile.mkdtemp(prefix="bench-novelty-"))
        args.model, args.data, args.run = fresh_model(out)
    if args.model is None or args.data is None:
        parser.error("give --model and --data (and --run), or --fresh")
    classifier = Classifier.load(args.model)
    if classifier.novelty is None:
        raise SystemExit(f"{args.model} has no novelty detector (export the run with this beeaudio)")
    hives = test_hives(bundle_manifest=classifier.manifest, run=args.run)
    report = {
        "model": str(args.model),
        "threshold": classifier.novelty.threshold,
        "heldout": heldout_figures(classifier=classifier, data=args.data, hives=hives),
        "non_hive": non_hive_figures(
            classifier=classifier, per_kind=args.per_kind, seconds=args.seconds, seed=args.seed
        ),
        "real_hive_osbh": real_hive_figures(classifier=classifier),
    }

    held = report["heldout"]
    print(f"novelty detector of {args.model}: threshold {report['threshold']:.3f}")
    print(
        f"held-out synthetic hives ({', '.join(held['hives'])}; {held['windows']} windows): "
        f"{100 * held['unfamiliar']:.2f} % flagged unfamiliar (target <= 2 %); "
        f"{100 * held['not_ok']:.2f} % failed the signal check"
    )
    print("  per hive: " + ", ".join(f"{h} {100 * v:.2f} %" for h, v in held["per_hive"].items()))
    print(f"non-hive audio ({args.per_kind} clips × {args.seconds:g} s per kind, -55..-10 dBFS):")
    print(f"  {'kind':<16} {'windows':>7} {'unfamiliar':>11} {'no evidence':>12} {'model: swarm':>13}")
    for kind, f in report["non_hive"].items():
        print(
            f"  {kind:<16} {f['windows']:>7} {100 * f['unfamiliar']:>9.1f} % "
            f"{100 * f['no_evidence']:>10.1f} % {100 * f['model_swarm']:>11.1f} %"
        )
    worst = min(f["unfamiliar"] for f in report["non_hive"].values())
    print(f"  lowest share flagged unfamiliar over the kinds: {100 * worst:.1f} % (target >= 95 %)")
    osbh = report["real_hive_osbh"]
    if osbh:
        print(
            f"real hive audio (Open Source Beehives, {osbh['files']} files, {osbh['windows']} windows): "
            f"{100 * osbh['unfamiliar']:.1f} % unfamiliar, {100 * osbh['no_evidence']:.1f} % no evidence"
        )
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
