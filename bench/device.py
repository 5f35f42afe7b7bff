"""The hive device agent's figures, on one thread: per-window times, real-time factor, peak memory over an
hour of audio, and the size of the edge virtual environment.

    python bench/device.py --bundle models/hive-dnn.beemodel [--minutes 60] [--python VENV/bin/python]

1. In this process, one thread: ``--windows`` windows of synthetic hive sound (16 kHz WAV and MP3 files,
   decoded by ``beeaudio.core.audio.iter_windows``) through ``beeaudio.core.features.window_features`` and
   ``Classifier.predict``, exactly the agent's per-window path; median and p95 milliseconds per stage.
2. An hour (``--minutes``) of one-minute recordings, as ``arecord --max-file-time 60`` leaves them, in a spool
   folder; ``beeaudio device run --once`` (offline: events stay in the outbox) in a subprocess with one
   thread; its wall time gives the real-time factor, and its peak resident memory is VmHWM read from
   ``/proc/<pid>/status`` while it runs (not ``ru_maxrss``, which Linux carries over from the parent across
   fork + exec). With ``--python`` (default ``$BEEAUDIO_EDGE_PYTHON``) the agent runs in the edge venv.
3. The size on disk of that virtual environment (``du``, symlinks not followed).

``--emulated arm64`` (or ``armhf``) runs parts 1 and 2 inside the emulated Raspberry Pi OS userland that
``.ci/arm64.sh`` builds (``BEEAUDIO_ARM64_ENTER``/``_ROOT``/``_PYTHON``; the audio is made here and bound
in): the ARM wheels and kernels, run by qemu-user, which translates every ARM instruction into several x86
ones. Those figures are labelled "emulated (qemu-user): not Pi timings": they say what runs and how the
stages compare, not how fast a Pi is (a Pi 4 core is a few times faster than its qemu emulation here, and
qemu's own translation cache counts in the peak memory).

The audio is made of a few distinct synthetic minutes (``beeaudio.desktop.synth``) copied under
successive names:
the agent's cost does not depend on what the sound is. Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
RATE = 16000
EMULATED = "emulated (qemu-user): not Pi timings"


def emulator(*, arch: str, bundle: Path) -> tuple[list[str], str, Path]:
    """The command prefix that runs in the emulated userland of ``arch`` (with the repository, the temporary
    folder and the bundle's folder bound in, one thread), its venv's python and its root."""
    prefix = {"arm64": "BEEAUDIO_ARM64", "armhf": "BEEAUDIO_ARMHF"}[arch]
    enter, python, root = (os.environ.get(f"{prefix}_{key}", "") for key in ("ENTER", "PYTHON", "ROOT"))
    if not (enter and python and root):
        raise SystemExit(f"--emulated {arch}: set {prefix}_ENTER/_PYTHON/_ROOT (.ci/arm64.sh --arch {arch})")
    command = [enter]
    for folder in (REPO_ROOT, Path(tempfile.gettempdir()), bundle.resolve().parent):
        command += ["--bind", str(folder)]
    for key, value in ONE_THREAD_ENV.items():  # the userland starts from a clean environment
        command += ["--env", f"{key}={value}"]
    return [*command, "--"], python, Path(root)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def per_window(
    *, bundle: Path, folder: Path, windows: int, emulated: tuple[list[str], str] | None = None
) -> dict[str, dict[str, list[float]]]:
    from beeaudio.core.audio import write_wav
    from beeaudio.core.bundle import read_bundle
    from beeaudio.desktop.codec import encode_mp3
    from beeaudio.desktop.synth import render_timeline

    config = read_bundle(bundle).manifest.feature_config
    seconds = windows * config.hop_seconds + config.window_seconds
    audio = render_timeline(hive_seed=3, segments=[("normal", seconds)], sample_rate=RATE, seed=4)
    files = {
        "WAV": write_wav(folder / "clip.wav", audio=audio, sample_rate=RATE),
        "MP3": encode_mp3(audio=audio, sample_rate=RATE, path=folder / "clip.mp3", bitrate_kbps=64),
    }
    if emulated is None:
        return measure_windows(bundle=bundle, files=files)
    prefix, python = emulated
    command = [*prefix, python, "-P", str(Path(__file__).resolve()), "--bundle", str(bundle), "--measure"]
    done = subprocess.run(
        [*command, *(f"{kind}={path}" for kind, path in files.items())],
        capture_output=True,
        text=True,
        env=dict(os.environ, **ONE_THREAD_ENV),
    )
    if done.returncode != 0:
        raise SystemExit(f"per-window run in the userland failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_windows(*, bundle: Path, files: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """The per-window loop of the agent over ``files``; imports only the edge core (runs on a device)."""
    import numpy as np

    from beeaudio.core.audio import iter_windows
    from beeaudio.core.features import window_features
    from beeaudio.core.inference import Classifier

    classifier = Classifier.load(bundle, num_threads=1)
    config = classifier.config
    results = {}
    for kind, path in files.items():
        times: dict[str, list[float]] = {"decode": [], "features": [], "inference": []}
        stream = iter_windows(path, config=config)
        classifier.predict(window_features(audio=np.zeros(config.window_samples, np.float32), config=config))
        while True:
            t0 = time.perf_counter()
            try:
                _, samples = next(stream)
            except StopIteration:
                break
            t1 = time.perf_counter()
            features = window_features(audio=samples, config=config)
            t2 = time.perf_counter()
            classifier.predict(features)
            t3 = time.perf_counter()
            times["decode"].append((t1 - t0) * 1e3)
            times["features"].append((t2 - t1) * 1e3)
            times["inference"].append((t3 - t2) * 1e3)
        results[kind] = times
    return results


def write_hour(*, spool: Path, minutes: int, distinct: int) -> float:
    """``minutes`` one-minute WAVs named like arecord's strftime recipe; returns the seconds of audio."""
    from beeaudio.core.audio import write_wav
    from beeaudio.desktop.synth import render_timeline

    sources = []
    for i in range(min(distinct, minutes)):
        state = "swarm" if i % 3 == 2 else "normal"
        audio = render_timeline(hive_seed=i, segments=[(state, 60.0)], sample_rate=RATE, seed=100 + i)
        sources.append(write_wav(spool.parent / f"source-{i}.wav", audio=audio, sample_rate=RATE))
    start = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    for minute in range(minutes):
        name = (start + timedelta(minutes=minute)).strftime("%Y%m%d-%H%M%S") + ".wav"
        shutil.copyfile(sources[minute % len(sources)], spool / name)
    return minutes * 60.0


def vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run_agent(
    *, python: str, bundle: Path, work: Path, minutes: int, distinct: int, prefix: list[str] | None = None
) -> dict[str, float]:
    spool, state = work / "spool", work / "state"
    spool.mkdir(parents=True)
    audio_s = write_hour(spool=spool, minutes=minutes, distinct=distinct)
    config = work / "device.toml"
    config.write_text(
        "[device]\n"
        f'device_id = "bench"\nhive_id = "bench"\nstate_dir = "{state}"\n'
        "[source]\n"
        f'path = "{spool}"\nafter = "delete"\n'
        "[outbox]\nmax_events = 1000000\n",
        encoding="utf-8",
    )
    env = dict(os.environ, **ONE_THREAD_ENV)
    base = [*(prefix or []), python, "-P", "-m", "beeaudio.cli"]
    install = [*base, "device", "install-model", str(bundle), "--config", str(config)]
    subprocess.run(install, check=True, env=env, cwd=REPO_ROOT, capture_output=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*base, "-q", "device", "run", "--config", str(config), "--once"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak_kb = 0
    while process.poll() is None:
        peak_kb = max(peak_kb, vm_hwm_kb(process.pid) or 0)
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"agent failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
    import sqlite3

    with sqlite3.connect(state / "outbox.sqlite") as db:
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return {"audio_s": audio_s, "wall_s": wall, "peak_rss_mb": peak_kb / 1024, "events": events}


def du_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a .beemodel (see bench/README.md)")
    parser.add_argument("--windows", type=int, default=300, help="windows for the per-window figures")
    parser.add_argument("--minutes", type=int, default=60, help="minutes of audio for the agent run")
    parser.add_argument("--distinct", type=int, default=6, help="distinct synthetic minutes to render")
    parser.add_argument(
        "--python",
        default=os.environ.get("BEEAUDIO_EDGE_PYTHON") or sys.executable,
        help="interpreter for the agent run (default $BEEAUDIO_EDGE_PYTHON, else this one)",
    )
    parser.add_argument(
        "--emulated",
        choices=("arm64", "armhf"),
        help="run in the emulated Raspberry Pi OS userland of .ci/arm64.sh (figures are not Pi timings)",
    )
    parser.add_argument("--measure", nargs="+", metavar="KIND=FILE", help=argparse.SUPPRESS)  # the worker
    args = parser.parse_args()
    for key, value in ONE_THREAD_ENV.items():
        os.environ.setdefault(key, value)
    if args.measure:  # inside the userland: per-window figures of these files, as JSON
        files = dict(item.split("=", 1) for item in args.measure)
        print(json.dumps(measure_windows(bundle=args.bundle, files={k: Path(v) for k, v in files.items()})))
        return 0
    emulated = emulator(arch=args.emulated, bundle=args.bundle) if args.emulated else None
    label = f"  [{EMULATED}, {args.emulated}]" if emulated else ""
    if emulated:
        args.python = emulated[1]

    with tempfile.TemporaryDirectory(prefix="beeaudio-bench-device-") as tmp:
        work = Path(tmp)
        print(f"bundle {args.bundle} ({args.bundle.stat().st_size / 1024:.1f} KB), one thread")
        if emulated:
            print(f"{EMULATED}: {args.emulated} userland {emulated[2]} under qemu-user")
        print(f"\n1. per window ({args.windows} windows of 16 kHz synthetic hive sound), ms{label}")
        # decode: iter_windows decodes 60 s blocks, so most windows cost nothing and the mean is the cost.
        print(f"   {'file':5} {'stage':10} {'mean':>8} {'median':>8} {'p95':>8}")
        measured = per_window(
            bundle=args.bundle, folder=work, windows=args.windows, emulated=emulated[:2] if emulated else None
        )
        for kind, times in measured.items():
            rows = dict(times)
            rows["total"] = [sum(t) for t in zip(*times.values(), strict=True)]
            for stage, values in rows.items():
                mean, median, p95 = (
                    statistics.fmean(values),
                    statistics.median(values),
                    percentile(values, 0.95),
                )
                print(f"   {kind:5} {stage:10} {mean:8.3f} {median:8.3f} {p95:8.3f}")
            share = statistics.fmean(rows["total"]) / 10  # ms per 1 s hop, as a percentage
            print(f"   {kind:5} one window a second takes {share:.3f} % of one core{label}")

        print(
            f"\n2. agent run --once over {args.minutes} min of one-minute WAVs (python: {args.python}){label}"
        )
        run = run_agent(
            python=args.python,
            bundle=args.bundle,
            work=work / "agent",
            minutes=args.minutes,
            distinct=args.distinct,
            prefix=emulated[0] if emulated else None,
        )
        minutes = run["audio_s"] / 60
        print(f"   events {run['events']}, wall {run['wall_s']:.1f} s for {minutes:.0f} min of audio{label}")
        rtf = run["wall_s"] / run["audio_s"]
        speed = f"{1 / rtf:.0f}x real time"
        print(f"   real-time factor {rtf:.4f} (processing / audio, incl. start-up: {speed}){label}")
        qemu = " of the qemu process: the agent plus qemu's translation cache" if emulated else ""
        print(f"   peak RSS{qemu} {run['peak_rss_mb']:.1f} MB (VmHWM){label}")

    venv = Path(args.python).parent.parent  # not resolve(): a venv's python links to the base interpreter
    if emulated:
        venv = emulated[2] / venv.relative_to("/")
    if (venv / "pyvenv.cfg").is_file():
        real = " (the ARM wheels: a size, not a timing, the same on a Pi)" if emulated else ""
        print(f"\n3. edge venv {venv}: {du_bytes(venv) / 1e6:.1f} MB on disk{real}")
    else:
        print("\n3. edge venv: set BEEAUDIO_EDGE_PYTHON (bash .ci/edge-venvs.sh DIR) to measure it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
