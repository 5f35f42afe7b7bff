"""The hive device agent's figures, on one thread: per-window times, CPU seconds and real-time factor over an
hour of audio (next to the same hour through librosa + Keras), peak memory, and the size of the edge venv.

    python bench/device.py --bundle models/hive-dnn.beemodel [--minutes 60] [--python VENV/bin/python]
        [--keras-model RUN]

1. In this process, one thread: ``--windows`` windows of synthetic hive sound (16 kHz WAV and MP3 files,
   decoded by ``beeaudio.core.audio.iter_windows``) through the agent's loop: batches of
   ``BATCH_WINDOWS`` windows, each through the signal check and ``Classifier.window_features`` (features),
   then ``Classifier.score`` (model and novelty detector: inference); mean, median and p95 milliseconds
   per window.
2. An hour (``--minutes``) of one-minute recordings, as ``arecord --max-file-time 60`` leaves them, in a spool
   folder; ``beeaudio device run --once`` (offline: events stay in the outbox) in a subprocess with one
   thread. Its CPU time is user + system from the child's rusage (``os.wait4``: its own and that of the
   children it waited for, such as the bundle check); the start-up (imports, bundle check and self-test,
   outbox) is measured apart, as the same command on an empty spool folder, and taken off, which gives CPU
   seconds per hour of audio. Its wall time gives the real-time factor, and its peak resident memory is
   VmHWM read from ``/proc/<pid>/status`` while it runs (not ``ru_maxrss``, which Linux carries over from
   the parent across fork + exec). With ``--python`` (default ``$BEEAUDIO_EDGE_PYTHON``) the agent runs in
   the edge venv. With ``--keras-model`` the same recordings then go through librosa + Keras in a
   subprocess of this interpreter (``librosa.load``, librosa's MFCC and deltas per window, the Keras model
   on each file's windows; no signal check, novelty score or outbox), its start-up measured and taken off
   the same way.
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
    """The agent's loop over ``files`` (``analyse_file``: batches of ``BATCH_WINDOWS`` windows; the signal
    check and the features, then the model and the novelty detector), as milliseconds per window of each
    batch; imports only the edge core (runs on a device)."""
    import itertools

    import numpy as np

    from beeaudio.core.audio import iter_windows
    from beeaudio.core.inference import BATCH_WINDOWS, Classifier

    classifier = Classifier.load(bundle, num_threads=1)
    config = classifier.config
    results = {}
    for kind, path in files.items():
        times: dict[str, list[float]] = {"decode": [], "features": [], "inference": []}
        stream = iter_windows(path, config=config)
        classifier.score(classifier.window_features(np.zeros((1, config.window_samples), np.float32)))
        while True:
            t0 = time.perf_counter()
            batch = list(itertools.islice(stream, BATCH_WINDOWS))
            if not batch:
                break
            t1 = time.perf_counter()
            samples = np.stack([w for _, w in batch])
            for row in samples:
                classifier.check_signal(row)
            features = classifier.window_features(samples)
            t2 = time.perf_counter()
            classifier.score(features)
            t3 = time.perf_counter()
            for stage, seconds in (("decode", t1 - t0), ("features", t2 - t1), ("inference", t3 - t2)):
                times[stage].append(seconds * 1e3 / len(batch))
        results[kind] = times
    return results


def stage_cpu(*, bundle: Path, files: list[Path]) -> dict[str, float]:
    """CPU seconds (this process's time) of each stage of the agent's loop over ``files``, timed apart,
    then of ``analyse_file`` itself (the stages and the events) and of the outbox commit; imports only the
    edge core and the agent (runs in the edge venv)."""
    import tempfile

    import numpy as np

    from beeaudio.core import audio, features
    from beeaudio.core.inference import BATCH_WINDOWS, Classifier
    from beeaudio.device.agent import Identity, analyse_file
    from beeaudio.device.config import DEFAULT_NAME_TIME_FORMATS
    from beeaudio.device.outbox import Outbox

    classifier = Classifier.load(bundle, num_threads=1)
    cpu = time.process_time
    stages = dict.fromkeys(("decode", "signal check", "features", "model + novelty", "level"), 0.0)
    for path in files:
        started = cpu()
        windows = [w for _, w in audio.iter_windows(path, config=classifier.config)]
        stages["decode"] += cpu() - started
        for first in range(0, len(windows), BATCH_WINDOWS):
            samples = np.stack(windows[first : first + BATCH_WINDOWS])
            t0 = cpu()
            for row in samples:
                classifier.check_signal(row)
            t1 = cpu()
            x = classifier.window_features(samples)
            t2 = cpu()
            classifier.score(x)
            t3 = cpu()
            for row in samples:
                features.level_dbfs(audio=row)
            t4 = cpu()
            for stage, seconds in zip(list(stages)[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[stage] += seconds
    identity = Identity(device_id="bench", hive_id="bench")
    started = cpu()
    events = [
        analyse_file(
            path=path,
            classifier=classifier,
            identity=identity,
            source_id=str(i),
            name_time_formats=DEFAULT_NAME_TIME_FORMATS,
        )
        for i, path in enumerate(files)
    ]
    stages["analyse_file (the above and the events)"] = cpu() - started
    with (
        tempfile.TemporaryDirectory() as tmp,
        Outbox(path=Path(tmp) / "o.sqlite", max_events=10**7) as outbox,
    ):
        started = cpu()
        for i, (path, file_events) in enumerate(zip(files, events, strict=True)):
            outbox.commit_file(source_id=str(i), path=str(path), events=file_events or [])
        stages["outbox commit (to_json, SQLite)"] = cpu() - started
    return stages


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
    run = [*base, "-q", "device", "run", "--config", str(config), "--once"]
    # Before the agent takes (and deletes) the recordings: its loop's stages timed apart, in the same venv
    # (not in an emulated userland, whose installed beeaudio may predate the batched loop).
    stages: dict[str, float] = {}
    if prefix is None:
        stage_command = [python, "-P", str(Path(__file__).resolve()), "--bundle", str(bundle)]
        stage_command += ["--stage-cpu", *map(str, sorted(spool.glob("*.wav")))]
        done = subprocess.run(stage_command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"stage CPU run failed: {done.stderr[-2000:]}")
        stages = json.loads(done.stdout.strip().splitlines()[-1])
    # Start-up apart: the same command on an empty spool folder (imports, bundle check and self-test,
    # outbox), in a copy of the configuration so that the real run starts from the same state.
    empty = work / "empty"
    empty.mkdir()
    idle = work / "device-idle.toml"
    idle.write_text(
        config.read_text(encoding="utf-8").replace(f'path = "{spool}"', f'path = "{empty}"'), encoding="utf-8"
    )
    startup = [run_measured([*base, "-q", "device", "run", "--config", str(idle), "--once"], env=env)]
    startup += [run_measured([*base, "-q", "device", "run", "--config", str(idle), "--once"], env=env)]
    measured = run_measured(run, env=env)
    import sqlite3

    with sqlite3.connect(state / "outbox.sqlite") as db:
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    startup_cpu = statistics.median(m["cpu_s"] for m in startup)
    return {
        "audio_s": audio_s,
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "startup_cpu_s": startup_cpu,
        "peak_rss_mb": measured["peak_rss_mb"],
        "events": events,
        "stages_cpu_s": stages,
    }


def run_measured(command: list[str], *, env: dict[str, str]) -> dict[str, float]:
    """Run ``command``; its wall time, CPU time (user + system, from the child's rusage: its own and that
    of the children it waited for, e.g. a bundle check) and peak resident memory (VmHWM, sampled)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak_kb = 0
    while True:
        peak_kb = max(peak_kb, vm_hwm_kb(process.pid) or 0)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if process.returncode != 0:
        raise SystemExit(
            f"{command[-4:]} failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}"
        )
    process.stderr.close()
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_kb / 1024}


# Runs in a subprocess with the desktop stack: the same hour through librosa + Keras, as bench/edge_latency.py
# measures them (librosa.load at the model's rate, librosa's MFCC and deltas per window, the Keras model on
# each file's windows at once). With no files it is the start-up alone.
BASELINE_SCRIPT = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, librosa, tensorflow as tf, keras
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import beeaudio.desktop.training.models  # noqa: F401  (the trainer's layers, for the Keras file)
from beeaudio.core.bundle import read_bundle
from beeaudio.core.features import window_start_samples
from edge_latency import _keras_file, librosa_window_features
bundle = read_bundle(Path(sys.argv[2]))
config, m = bundle.manifest.feature_config, bundle.manifest
model = keras.saving.load_model(_keras_file(Path(sys.argv[3])), compile=False)
mean = np.asarray(m.feature_mean if m.feature_mean is not None else 0.0, np.float32)
std = np.asarray(m.feature_std if m.feature_std is not None else 1.0, np.float32)
model.predict_on_batch(np.zeros((1, *config.feature_shape), np.float32))
for path in sys.argv[4:]:
    signal, _ = librosa.load(path, sr=config.sample_rate, mono=True)
    starts = window_start_samples(n_samples=len(signal), config=config)
    x = np.stack([librosa_window_features(signal[s : s + config.window_samples], config) for s in starts])
    model.predict_on_batch((x - mean) / std)
"""


def run_baseline(*, bundle: Path, keras_model: Path, files: list[Path]) -> dict[str, float]:
    """CPU seconds of the same recordings through librosa + Keras, and of its start-up alone."""
    env = dict(os.environ, **ONE_THREAD_ENV, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    base = [
        sys.executable,
        "-c",
        BASELINE_SCRIPT,
        str(Path(__file__).resolve().parent),
        str(bundle),
        str(keras_model),
    ]
    startup = statistics.median(run_measured(base, env=env)["cpu_s"] for _ in range(2))
    total = run_measured([*base, *map(str, files)], env=env)
    return {"cpu_s": total["cpu_s"], "startup_cpu_s": startup, "wall_s": total["wall_s"]}


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
        "--keras-model",
        type=Path,
        help="also run the hour through librosa + Keras (run folder or .keras file)",
    )
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
    parser.add_argument("--stage-cpu", nargs="+", type=Path, help=argparse.SUPPRESS)  # the stages' worker
    args = parser.parse_args()
    for key, value in ONE_THREAD_ENV.items():
        os.environ.setdefault(key, value)
    if args.stage_cpu:  # in the agent's venv: CPU seconds per stage of the agent's loop, as JSON
        print(json.dumps(stage_cpu(bundle=args.bundle, files=args.stage_cpu)))
        return 0
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
        per_hour = 3600.0 / run["audio_s"]
        work_cpu = run["cpu_s"] - run["startup_cpu_s"]
        print(
            f"   CPU (user + system, the child's rusage): {run['cpu_s']:.2f} s in all, start-up "
            f"{run['startup_cpu_s']:.2f} s (run --once on an empty folder, median of 2), so "
            f"{work_cpu * per_hour:.2f} CPU s per hour of audio{label}"
        )
        if run["stages_cpu_s"]:
            stages = ", ".join(f"{name} {sec * per_hour:.2f}" for name, sec in run["stages_cpu_s"].items())
            print(f"   the agent's loop by stage, CPU s per hour of audio (timed apart, same venv): {stages}")
        if args.keras_model and not emulated:
            files = sorted((work / "agent").glob("source-*.wav"))
            hour = [files[i % len(files)] for i in range(round(run["audio_s"] / 60))]
            baseline = run_baseline(bundle=args.bundle, keras_model=args.keras_model, files=hour)
            base_cpu = baseline["cpu_s"] - baseline["startup_cpu_s"]
            print(
                f"   the same {minutes:.0f} min through librosa + Keras (decode, features, model; no signal "
                f"check, novelty or outbox): {baseline['cpu_s']:.2f} s CPU, start-up "
                f"{baseline['startup_cpu_s']:.2f} s, so {base_cpu * per_hour:.2f} CPU s per hour of audio "
                f"({base_cpu / work_cpu:.1f}x the agent's)"
            )
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
