"""The DNN size sweep: depth × width, with what each cell costs on a device.

Every cell is trained and exported the way a user would
(:func:`beeaudio.desktop.training.train.train_run`, then
:func:`beeaudio.desktop.training.export.export_bundle` with int8), so the cell's run folder and bundle
are real
artefacts. Per cell: held-out accuracy of the Keras model and of the int8 bundle (hive-grouped split,
the same for every cell), parameter count, bundle size, and per-window inference time of the int8 bundle
through :class:`beeaudio.core.inference.Classifier` on one thread (one window per call, as the device runs
it). The baselines are fitted on the same split for comparison. When the exporter refuses a cell (its
int8 model disagrees with the Keras model on more windows than the exporter allows), the row says so and
its size, speed and int8 accuracy are measured on the exporter's int8 conversion with its gates off.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.desktop.experiments import common, report

log = logging.getLogger(__name__)

DEFAULT_LAYERS = (1, 2, 3, 4)
DEFAULT_UNITS = (64, 128, 256, 512)
#: Windows timed per cell (after a warm-up), one inference call each.
TIMED_WINDOWS = 300
_WARMUP = 20


@dataclass(frozen=True)
class SweepConfig:
    layers: tuple[int, ...] = DEFAULT_LAYERS
    units: tuple[int, ...] = DEFAULT_UNITS
    seed: int = 0
    test_fraction: float = 0.25
    quick: bool = False
    baselines: bool = True
    keep_runs: bool = True
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides

    def __post_init__(self) -> None:
        for name in ("layers", "units"):
            values = tuple(int(v) for v in getattr(self, name))
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(dict.fromkeys(values)))


def cell_config(*, config: SweepConfig, layers: int, units: int) -> Any:  # -> TrainConfig
    from beeaudio.desktop.training.train import TrainConfig

    overrides: dict[str, Any] = {"seed": config.seed, "test_fraction": config.test_fraction}
    if config.quick:
        overrides.update(common.QUICK_TRAINING)
    overrides.update(config.training)
    overrides.update({"model": "dnn", "layers": layers, "units": units, "verbose": 0, "progress": False})
    return TrainConfig(**overrides)


def command_line(*, data: Path, out: Path, config: SweepConfig) -> list[str]:
    """The ``beeaudio experiment sweep`` command that reproduces ``config`` (written into the report
    whether the sweep was started from the CLI or from Python)."""
    features = common.feature_argument(front_end=common.front_end_of(training=config.training), out=out)
    argv = ["beeaudio", "experiment", "sweep", "--data", str(data), "--out", str(out), "--features", features]
    argv += ["--layers", ",".join(map(str, config.layers)), "--units", ",".join(map(str, config.units))]
    argv += ["--seed", str(config.seed), "--test-fraction", str(config.test_fraction)]
    argv += ["--quick"] if config.quick else []
    argv += ["--no-baselines"] if not config.baselines else []
    argv += ["--no-keep-runs"] if not config.keep_runs else []
    return argv


def _measure_bundle(
    *, bundle: Path, features: np.ndarray, labels: np.ndarray, windows: int = TIMED_WINDOWS
) -> dict[str, Any]:
    """int8 accuracy on the held-out windows, and milliseconds per window of ``bundle`` on one thread,
    one window per call (mean and median over up to ``windows`` calls after a warm-up)."""
    from beeaudio.core.inference import Classifier

    classifier = Classifier.load(bundle, num_threads=1)
    x = np.asarray(features, dtype=np.float32)
    predicted = classifier.predict(x).argmax(axis=1)
    for i in range(min(_WARMUP, len(x))):
        classifier.predict(x[i : i + 1])
    n = min(windows, len(x))
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        classifier.predict(x[i : i + 1])
        times[i] = time.perf_counter() - t0
    return {
        "int8_accuracy": float(np.mean(predicted == np.asarray(labels))),
        "ms_per_window": float(1000 * times.mean()),
        "ms_per_window_median": float(1000 * np.median(times)),
        "timed_windows": int(n),
        "runtime": classifier.runtime,
    }


def _unchecked_export(*, run_dir: Path, out: Path, name: str, seed: int) -> Path:
    """The exporter's own int8 conversion of a cell it refused, with its agreement gates off
    (``min_agreement=0``, ``max_int8_drop=1``), only to measure the cell's size, speed and int8 accuracy;
    the row is flagged as refused."""
    from beeaudio.desktop.training.export import export_bundle

    return export_bundle(
        run=run_dir,
        out=out,
        quantize="int8",
        model_name=f"sweep-{name}",
        model_version=f"seed{seed}-unchecked",
        min_agreement=0.0,
        max_int8_drop=1.0,
    )


def run_sweep(
    *,
    data: Path,
    out: Path,
    config: SweepConfig,
    cache_dir: Path | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train, export and time every cell of the grid; write ``report.md``, ``results.json`` and the plots
    into ``out`` (cell run folders and bundles under ``out/cells``); return the results dictionary.

    ``command`` overrides the reproducing command line the report prints (by default built from
    ``config`` by :func:`command_line`)."""
    from beeaudio.desktop import datasets
    from beeaudio.desktop.training.export import ExportError, export_bundle
    from beeaudio.desktop.training.train import train_run

    common.quiet_tensorflow()
    started = time.perf_counter()
    out = Path(out)
    cells_dir = out / "cells"
    reference_tc = cell_config(config=config, layers=config.layers[0], units=config.units[0])
    # Refused before any folder is made or any audio decoded when the data cannot feed the front end.
    datasets.check_band(recordings=datasets.discover(root=Path(data)), config=reference_tc.features)
    cells_dir.mkdir(parents=True, exist_ok=True)
    argv = list(command) if command is not None else command_line(data=Path(data), out=out, config=config)
    common.seed_everything(seed=config.seed)
    rows: list[dict[str, Any]] = []
    data_summary: dict[str, Any] | None = None
    for layers in config.layers:
        for units in config.units:
            tc = cell_config(config=config, layers=layers, units=units)
            name = f"dnn-{layers}x{units}"
            run_dir = cells_dir / name
            t0 = time.perf_counter()
            result = train_run(data=Path(data), out=run_dir, config=tc, cache_dir=cache_dir)
            m = result.metrics
            row: dict[str, Any] = {
                "model": "dnn",
                "layers": layers,
                "units": units,
                "params": int(m["params"]),
                "accuracy": float(m["accuracy"]),
                "balanced_accuracy": float(m["balanced_accuracy"]),
                "test_windows": int(m["windows"]),
                "epochs_run": int(m["training"]["epochs_run"]),
                "train_seconds": float(m["timing"]["train_seconds"]),
            }
            if data_summary is None:
                data_summary = {
                    **m["dataset"],
                    "train_hives": m["train_hives"],
                    "test_hives": m["test_hives"],
                }
            elif m["test_hives"] != data_summary["test_hives"]:
                raise RuntimeError(f"{name}: the split changed between cells ({m['test_hives']})")
            bundle = cells_dir / f"{name}-int8.beemodel"
            try:
                export_bundle(
                    run=run_dir,
                    out=bundle,
                    quantize="int8",
                    model_name=f"sweep-{name}",
                    model_version=f"seed{config.seed}",
                )
            except ExportError as exc:
                # The exporter's quality gates refused the cell; its size and speed are still worth a row,
                # so measure the same conversion with the gates relaxed (flagged in the table).
                log.warning("%s: int8 export refused (%s); measuring an unchecked int8 conversion", name, exc)
                row["export_error"] = str(exc)
                _unchecked_export(run_dir=run_dir, out=bundle, name=name, seed=config.seed)
            with np.load(run_dir / "heldout.npz", allow_pickle=False) as held:
                features, labels = held["features"], held["labels"]
            row.update(
                {
                    "bundle_kb": bundle.stat().st_size / 1024,
                    "bundle": str(bundle.relative_to(out)),
                    **_measure_bundle(bundle=bundle, features=features, labels=labels),
                }
            )
            row["cell_seconds"] = time.perf_counter() - t0
            if not config.keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)
            rows.append(row)
            log.info(
                "%s: %d params, accuracy %.2f %%, int8 %s, %s KB, %s ms/window",
                name, row["params"], 100 * row["accuracy"], row.get("int8_accuracy"), row.get("bundle_kb"),
                row.get("ms_per_window"),
            )  # fmt: skip

    baseline_rows: list[dict[str, Any]] = []
    if config.baselines:
        baseline_rows = _baselines(data=Path(data), config=config, tc=reference_tc, cache_dir=cache_dir)

    results: dict[str, Any] = {
        "experiment": "sweep",
        "provenance": {
            **common.provenance(command=argv),
            "library_overrides": common.unexpressed_overrides(training=config.training),
        },
        "config": {**asdict(config), "layers": list(config.layers), "units": list(config.units)},
        "train_config": {k: v for k, v in reference_tc.to_dict().items() if k not in ("layers", "units")},
        "feature_config": reference_tc.features.to_dict(),
        "data": data_summary,
        "rows": rows,
        "baselines": baseline_rows,
        "timing": {"total_seconds": time.perf_counter() - started},
    }
    report.write_sweep_report(out=out, results=results)
    log.info("sweep written to %s in %.0f s", out, results["timing"]["total_seconds"])
    return results


def _baselines(*, data: Path, config: SweepConfig, tc: Any, cache_dir: Path | None) -> list[dict[str, Any]]:
    from beeaudio.desktop.experiments import baselines

    fc = tc.features
    ds = common.load_dataset(
        data=data,
        feature_config=fc,
        cache_dir=cache_dir,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    x = np.asarray(ds.windows.features, dtype=np.float32)
    y = np.asarray(ds.windows.labels, dtype=np.int64)
    tr, te = ds.train_idx, ds.test_idx
    rows = []
    for b in (
        baselines.fit_gmm(
            features=x[tr], labels=y[tr], n_classes=len(ds.label_names), config=fc, seed=config.seed
        ),
        baselines.fit_band_logreg(features=x[tr], labels=y[tr], config=fc, seed=config.seed),
    ):
        scores = common.accuracy(y_true=y[te], probabilities=b.predict_proba(x[te]))
        rows.append({"model": b.name, "params": b.params, **scores})
    return rows
