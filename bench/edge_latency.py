"""Edge latency and memory: beeaudio's device pipeline vs a librosa + Keras baseline, on one thread.

    python bench/edge_latency.py --model models/hive-dnn.beemodel [--keras-model runs/dnn]

For a 10 s WAV and a 10 s MP3 clip (synthetic hive sound, 16 kHz) it measures, for each pipeline:
decode (+ resample + windowing), features, inference (milliseconds, median of ``--repeat`` runs after a
warm-up), the real-time factor (processing time / audio time), the peak Python/numpy heap (tracemalloc,
one extra run) and the process's peak resident memory (ru_maxrss), and prints ours / baseline ratios.

* ours: ``beeaudio.core.audio.iter_windows`` → ``Classifier.window_features`` on the clip's windows in one
  batch → ``Classifier.predict`` on them (the bundle, LiteRT/tflite-runtime: ``MODEL_BATCH`` windows per
  interpreter call where the runtime batches), the device's path; the signal check and the novelty score,
  which the device adds and the baseline has not, are timed apart and left out of the total;
* baseline: ``librosa.load`` → ``librosa.feature.mfcc`` (+ deltas, same config) per window → the Keras
  model of ``--keras-model`` (run folder or ``.keras`` file) on all windows at once; without it, a float32
  TF-Lite model (``--baseline-model``, else the bundle's own model) through ``tf.lite.Interpreter``.

Each pipeline runs in its own subprocess (so the device pipeline's memory is not inflated by TensorFlow, and
tflite-runtime never shares a process with it), with every thread pool limited to one thread.
``--edge-python`` runs our pipeline with another interpreter, e.g. a ``.ci/edge-venvs.sh`` environment.
The figures are printed, not asserted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "NUMBA_NUM_THREADS": "1",
}
STAGES = ("decode", "features", "inference")


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, MB.

    VmHWM, not ru_maxrss: Linux carries the parent's peak over fork + exec into ru_maxrss, so a worker
    started by a parent holding a long recording would report the parent's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def traced_once(run: Callable[[], object]) -> dict[str, float]:
    """Wall time and tracemalloc heap peak of one run (for the long recording)."""
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"ms": 1e3 * seconds, "heap_peak_mb": peak / 1e6}


def measure(
    run: Callable[[], dict[str, float]], *, repeat: int, traced: Callable[[], object] | None = None
) -> dict[str, Any]:
    """Median stage times of ``repeat`` runs after one warm-up, then one traced run for the heap peak.

    ``traced`` is what the heap peak is measured on (default ``run``): for our pipeline the streaming
    ``classify_file`` the device runs, since ``run`` keeps every window to time the stages apart.
    """
    run()
    samples = [run() for _ in range(repeat)]
    times = {stage: statistics.median(s[stage] for s in samples) for stage in samples[0]}
    tracemalloc.start()
    try:
        (traced or run)()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"ms": times, "heap_peak_mb": peak / 1e6}


# -- workers (run in subprocesses) ----------------------------------------------------------------------


def worker_ours(args: argparse.Namespace) -> dict[str, Any]:
    rss_start = max_rss_mb()
    from beeaudio.core import audio
    from beeaudio.core.inference import Classifier

    classifier = Classifier.load(args.model, num_threads=1)
    config = classifier.config
    rss_loaded = max_rss_mb()
    results: dict[str, Any] = {}
    for clip in args.clip:
        out: dict[str, Any] = {}

        def run(clip: Path = clip, out: dict[str, Any] = out) -> dict[str, float]:
            t0 = time.perf_counter()
            windows = np.stack([samples for _, samples in audio.iter_windows(clip, config=config)])
            t1 = time.perf_counter()
            feats = classifier.window_features(windows)  # all the clip's windows in one batch
            t2 = time.perf_counter()
            probabilities = classifier.predict(feats)  # MODEL_BATCH windows per interpreter call
            t3 = time.perf_counter()
            # What the device adds and the baseline has not: the signal check and the novelty score.
            for window in windows:
                classifier.check_signal(window)
            classifier.novelty_scores(feats)
            t4 = time.perf_counter()
            out["labels"] = [int(np.argmax(p)) for p in probabilities]
            return {
                "decode": 1e3 * (t1 - t0),
                "features": 1e3 * (t2 - t1),
                "inference": 1e3 * (t3 - t2),
                "checks": 1e3 * (t4 - t3),
            }

        measured = measure(run, repeat=args.repeat, traced=lambda clip=clip: classifier.classify_file(clip))
        results[clip.name] = {**measured, "labels": out["labels"]}
    rss_end = max_rss_mb()
    long_run = traced_once(lambda: classifier.classify_file(args.long_clip)) if args.long_clip else None
    import numpy

    return {
        "description": f"beeaudio ({classifier.runtime}, numpy {numpy.__version__}, "
        f"{'batched' if classifier.batched else 'one window per'} interpreter call)",
        "rss_start_mb": rss_start,
        "rss_loaded_mb": rss_loaded,
        "rss_end_mb": rss_end,
        "clips": results,
        "long": long_run,
    }


def librosa_window_features(window: np.ndarray, config: Any) -> np.ndarray:
    """The bundle's features computed the usual desktop way, with librosa (same parameters)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=window, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax, center=False,
    )  # fmt: skip
    cepstra = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=config.n_mfcc)
    parts = [cepstra]
    parts += [
        librosa.feature.delta(cepstra, order=o, width=9, mode="interp") for o in range(1, config.deltas + 1)
    ]
    stacked = np.concatenate(parts).T  # frames × features
    if config.representation == "stats":
        return np.concatenate([stacked.mean(axis=0), stacked.std(axis=0)]).astype(np.float32)
    return stacked.astype(np.float32)


def library_floor(config: Any) -> Callable[[Path], dict[str, float]]:
    """The calls into compiled libraries that any numpy pipeline like either of ours makes for a clip, and
    nothing else: the decode at the recording's rate (libsndfile: libmpg123 for MP3), soxr's resampling to
    the model's rate (``librosa.load``'s default, ``soxr_hq``) and numpy's FFT of every frame of every
    window. No framing, mel, logarithm, DCT, deltas or model. A pipeline built on these libraries cannot
    be faster than this, so ``baseline / floor`` bounds the speed-up they allow."""
    import soundfile
    import soxr

    from beeaudio.core.features import _frame_view, window_start_samples

    def floor(clip: Path) -> dict[str, float]:
        t0 = time.perf_counter()
        with soundfile.SoundFile(clip) as handle:
            # 16-bit PCM read as integers is libsndfile's fastest read; the scaling is one numpy pass.
            pcm = handle.subtype == "PCM_16"
            samples = handle.read(dtype="int16" if pcm else "float32", always_2d=True)[:, 0]
            rate = handle.samplerate
        signal = samples * np.float32(2.0**-15) if pcm else samples
        signal = soxr.resample(signal, rate, config.sample_rate, quality="HQ")
        t1 = time.perf_counter()
        wide = signal.astype(np.float64)
        count = window_start_samples(n_samples=wide.size, config=config).size
        # The front end's own view of every window's frames (no copy), as the device's FFT reads them.
        np.fft.rfft(_frame_view(wide, 0, count, config.hop_samples, config), axis=-1)
        t2 = time.perf_counter()
        return {"decode": 1e3 * (t1 - t0), "features": 1e3 * (t2 - t1), "inference": 0.0}

    return floor


def _keras_file(path: Path) -> Path:
    if path.is_dir():
        candidates = sorted(path.glob("*.keras"))
        if not candidates:
            raise SystemExit(f"--keras-model {path}: no .keras file in that folder")
        return candidates[0]
    return path


def worker_baseline(args: argparse.Namespace) -> dict[str, Any]:
    rss_start = max_rss_mb()
    import librosa
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from beeaudio.core.bundle import read_bundle
    from beeaudio.core.features import window_start_samples

    bundle = read_bundle(args.model)
    config = bundle.manifest.feature_config
    mean, std = bundle.manifest.feature_mean, bundle.manifest.feature_std

    if args.keras_model:
        import keras

        # Registers the trainer's custom layers so that its run folder's model deserialises.
        with contextlib.suppress(ImportError):
            import beeaudio.desktop.training.models  # noqa: F401
        keras_path = _keras_file(args.keras_model)
        model = keras.saving.load_model(keras_path, compile=False)
        description = f"librosa {librosa.__version__} + Keras {keras.__version__} ({keras_path})"

        def infer(x: np.ndarray) -> np.ndarray:
            return np.asarray(model.predict_on_batch(x))
    else:
        source = args.baseline_model or args.model
        if source.suffix == ".tflite":
            model_bytes = source.read_bytes()
        else:
            with zipfile.ZipFile(source) as archive:
                model_bytes = archive.read("model.tflite")
        interpreter = tf.lite.Interpreter(model_content=model_bytes, num_threads=1)
        interpreter.allocate_tensors()
        inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        kind = np.dtype(inp["dtype"]).name
        description = f"librosa {librosa.__version__} + tf.lite {tf.__version__} ({source.name}, {kind})"
        from beeaudio.core.bundle import QuantParams
        from beeaudio.core.inference import dequantize, quantize

        def quant(detail: dict[str, Any]) -> QuantParams | None:
            scale, zero = detail["quantization"]
            return QuantParams(scale=float(scale), zero_point=int(zero)) if scale else None

        def infer(x: np.ndarray) -> np.ndarray:
            rows = []
            q = quantize(values=x, dtype=kind, quant=quant(inp))
            for i in range(len(q)):
                interpreter.set_tensor(inp["index"], q[i : i + 1])
                interpreter.invoke()
                rows.append(dequantize(values=interpreter.get_tensor(outp["index"])[0], quant=quant(outp)))
            return np.asarray(rows)

    rss_loaded = max_rss_mb()
    results: dict[str, Any] = {}
    floor = library_floor(config)

    def pipeline(clip: Path, out: dict[str, Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        signal, _ = librosa.load(clip, sr=config.sample_rate, mono=True)
        starts = window_start_samples(n_samples=len(signal), config=config)
        windows = [signal[s : s + config.window_samples] for s in starts]
        t1 = time.perf_counter()
        feats = np.stack([librosa_window_features(w, config) for w in windows])
        if mean is not None:  # the bundle's model (and its Keras original) takes standardised features
            feats = (feats - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
        t2 = time.perf_counter()
        probabilities = infer(feats)
        t3 = time.perf_counter()
        out["labels"] = [int(i) for i in np.argmax(probabilities, axis=1)]
        # The floor in the same round as the baseline, so that a busy machine slows both alike.
        return {
            "decode": 1e3 * (t1 - t0), "features": 1e3 * (t2 - t1), "inference": 1e3 * (t3 - t2),
            **{f"floor_{stage}": ms for stage, ms in floor(clip).items()},
        }  # fmt: skip

    for clip in args.clip:
        out: dict[str, Any] = {}
        measured = measure(lambda clip=clip, out=out: pipeline(clip, out), repeat=args.repeat)
        results[clip.name] = {**measured, "labels": out["labels"]}
    rss_end = max_rss_mb()
    long_run = traced_once(lambda: pipeline(args.long_clip, {})) if args.long_clip else None
    return {
        "description": description,
        "rss_start_mb": rss_start,
        "rss_loaded_mb": rss_loaded,
        "rss_end_mb": rss_end,
        "clips": results,
        "long": long_run,
    }


# -- the parent: clips, subprocesses, table ------------------------------------------------------------


def make_clips(*, folder: Path, seconds: float, sample_rate: int, mp3_kbps: int) -> tuple[list[Path], str]:
    from beeaudio.core import audio
    from beeaudio.desktop import codec  # here, not at the top: the workers may run in an edge venv without it

    try:
        from beeaudio.desktop.synth import render_timeline

        half = seconds / 2
        signal = render_timeline(
            hive_seed=1, segments=[("normal", half), ("swarm", half)], sample_rate=sample_rate, seed=1
        )
        source = "beeaudio.desktop.synth (5 s normal + 5 s swarm)"
    except ImportError:
        rng = np.random.default_rng(1)
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        signal = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((0.3, 240.0), (0.15, 480.0), (0.08, 720.0)))
        signal = signal + 0.05 * rng.standard_normal(t.size)
        source = "numpy (hum harmonics + noise)"
    signal = (0.8 * np.asarray(signal) / np.max(np.abs(signal)))[: round(seconds * sample_rate)].astype(
        np.float32
    )
    wav = audio.write_wav(folder / "clip.wav", audio=signal, sample_rate=sample_rate)
    mp3 = codec.encode_mp3(
        audio=signal, sample_rate=sample_rate, path=folder / "clip.mp3", bitrate_kbps=mp3_kbps
    )
    return [wav, mp3], source


def run_worker(
    *, python: str, role: str, args: argparse.Namespace, clips: list[Path], long_clip: Path | None
) -> dict[str, Any]:
    command = [python, str(Path(__file__).resolve()), "--worker", role, "--model", str(args.model)]
    command += ["--repeat", str(args.repeat)]
    for clip in clips:
        command += ["--clip", str(clip)]
    if long_clip:
        command += ["--long-clip", str(long_clip)]
    if args.keras_model:
        command += ["--keras-model", str(args.keras_model)]
    if args.baseline_model:
        command += ["--baseline-model", str(args.baseline_model)]
    env = {**os.environ, **ONE_THREAD_ENV}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{role} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(*, ours: dict[str, Any], base: dict[str, Any], clips: list[Path], seconds: float) -> None:
    header = (
        f"{'clip':<5} {'pipeline':<9} {'decode ms':>10} {'features ms':>12} {'inference ms':>13} "
        f"{'total ms':>9} {'RTF':>8} {'heap peak MB':>13} {'max RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for clip in clips:
        rows = {}
        for name, report in (("beeaudio", ours), ("baseline", base)):
            result = report["clips"][clip.name]
            ms = result["ms"]
            total = sum(ms[s] for s in STAGES)
            rows[name] = [*(ms[s] for s in STAGES), total, total / 1e3 / seconds, result["heap_peak_mb"],
                          report["rss_end_mb"]]  # fmt: skip
        fmt = "{:>10.2f} {:>12.2f} {:>13.2f} {:>9.2f} {:>8.5f} {:>13.2f} {:>11.1f}"
        for name, values in rows.items():
            print(f"{clip.suffix[1:].upper():<5} {name:<9} " + fmt.format(*values))
        ratio = [
            a / b if b else float("nan") for a, b in zip(rows["beeaudio"], rows["baseline"], strict=True)
        ]
        print(
            f"{'':<5} {'ratio':<9} "
            + " ".join(f"{r:>{w}.3f}" for r, w in zip(ratio, (10, 12, 13, 9, 8, 13, 11), strict=True))
        )
        floor_ms = base["clips"][clip.name]["ms"]
        if "floor_decode" in floor_ms:
            values = [floor_ms[f"floor_{s}"] for s in STAGES]
            floor_total = sum(values)
            print(
                f"{'':<5} {'floor':<9} "
                + " ".join(
                    f"{v:>{w}.2f}" for v, w in zip([*values, floor_total], (10, 12, 13, 9), strict=True)
                )
            )
            print(
                f"{'':<5} the libraries' floor (decode + soxr + the FFT of every frame, nothing else, in the "
                f"baseline's rounds): {floor_total / rows['baseline'][3]:.3f} of the baseline's total, so "
                f"these libraries allow at most {rows['baseline'][3] / floor_total:.1f}x; beeaudio is "
                f"{rows['baseline'][3] / rows['beeaudio'][3]:.1f}x, {rows['beeaudio'][3] / floor_total:.2f}x "
                "the floor"
            )
        agree = np.mean(
            np.array(ours["clips"][clip.name]["labels"]) == np.array(base["clips"][clip.name]["labels"])
        )
        print(f"{'':<5} window labels, beeaudio vs baseline: {100 * agree:.0f} % agree")
        checks = ours["clips"][clip.name]["ms"].get("checks")
        if checks is not None:
            print(
                f"{'':<5} beeaudio's signal check + novelty score (not in the baseline, not in the total): "
                f"{checks:.2f} ms"
            )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the (int8) .beemodel to measure")
    parser.add_argument("--keras-model", type=Path, help="baseline Keras model: run folder or .keras file")
    parser.add_argument(
        "--baseline-model", type=Path, help="baseline float32 .beemodel/.tflite (no --keras-model)"
    )
    parser.add_argument(
        "--repeat", type=int, default=7, help="measurements per figure (the median is printed)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--sample-rate", type=int, default=16000, help="the clips' recording rate")
    parser.add_argument("--mp3-kbps", type=int, default=64)
    parser.add_argument("--edge-python", default=sys.executable, help="interpreter for our pipeline")
    parser.add_argument("--worker", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--long-minutes", type=float, default=5.0, help="also trace one run on a WAV this long (0: skip)"
    )
    parser.add_argument("--clip", type=Path, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--long-clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    if args.worker:
        worker = worker_ours if args.worker == "ours" else worker_baseline
        print(json.dumps(worker(args)))
        return 0

    with tempfile.TemporaryDirectory(prefix="beeaudio-bench-") as tmp:
        clips, source = make_clips(
            folder=Path(tmp), seconds=args.seconds, sample_rate=args.sample_rate, mp3_kbps=args.mp3_kbps
        )
        long_clip = None
        if args.long_minutes > 0:
            from beeaudio.core import audio

            clip = audio.load(clips[0], sample_rate=args.sample_rate)
            repeats = int(np.ceil(args.long_minutes * 60 / args.seconds))
            long_clip = audio.write_wav(
                Path(tmp) / "long.wav", audio=np.tile(clip, repeats), sample_rate=args.sample_rate
            )
        ours = run_worker(python=args.edge_python, role="ours", args=args, clips=clips, long_clip=long_clip)
        base = run_worker(python=sys.executable, role="baseline", args=args, clips=clips, long_clip=long_clip)

    with zipfile.ZipFile(args.model) as archive:
        model_kb = archive.getinfo("model.tflite").file_size / 1024
        quantization = json.loads(archive.read("manifest.json")).get("quantization", "?")
    print(
        f"beeaudio edge latency: {args.seconds:g} s clips at {args.sample_rate} Hz from {source}; "
        f"MP3 at {args.mp3_kbps} kbit/s; one thread; median of {args.repeat} runs"
    )
    print(f"model    {args.model} ({quantization}): bundle {args.model.stat().st_size / 1024:.1f} KB, "
          f"model.tflite {model_kb:.1f} KB")  # fmt: skip
    print(f"ours     {ours['description']}")
    print(f"baseline {base['description']}")
    print("RTF = processing time / audio time (lower is faster); heap peak = tracemalloc (Python + numpy);")
    print(
        "max RSS = the worker process's peak resident memory (VmHWM: interpreter, libraries, model, data).\n"
    )
    print_table(ours=ours, base=base, clips=clips, seconds=args.seconds)
    if ours.get("long") and base.get("long"):
        o, b = ours["long"], base["long"]
        print(
            f"{args.long_minutes:g}-minute WAV, one traced run: beeaudio {o['ms'] / 1e3:.2f} s, heap peak "
            f"{o['heap_peak_mb']:.1f} MB; baseline {b['ms'] / 1e3:.2f} s, "
            f"heap peak {b['heap_peak_mb']:.1f} MB; "
            f"heap ratio {o['heap_peak_mb'] / b['heap_peak_mb']:.3f}\n"
            "  (ours decodes in blocks of 60 s, librosa.load the whole file)"
        )
    print(
        f"resident memory after imports + model load: beeaudio {ours['rss_loaded_mb']:.1f} MB, "
        f"baseline {base['rss_loaded_mb']:.1f} MB (ratio {ours['rss_loaded_mb'] / base['rss_loaded_mb']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
