"""The WAV-versus-MP3 experiment: does MP3 cost accuracy, does codec augmentation buy it back, and how does
that depend on the front end (the band the features listen to)?

One hive-grouped split (``beeaudio.desktop.datasets.grouped_split`` with the seed) is used for every
condition and every front end. The test hives are scored on their WAV audio and on the same audio through
a real MP3 encoder at each bitrate (:func:`beeaudio.desktop.codec.mp3_roundtrip` over the whole recording
at the front end's sample rate, once per bitrate, then cut into the same windows; the feature cache keys
them ``mp3-<kbps>``). For each front end (``CodecConfig.bands``, e.g. the ``default`` and ``fullband``
presets of :mod:`beeaudio.desktop.feature_presets`) the models trained are:

* ``wav`` — the DNN of ``beeaudio train`` (its default size and training) on the WAV training windows;
* ``codec-aug`` — the same on the WAV windows plus one MP3 copy of every training recording at a bitrate
  drawn per recording from the list (:func:`beeaudio.desktop.training.train.codec_transform`, with
  ``beeaudio train``'s default draw), i.e. what ``beeaudio train --codec-augment --codec-bitrates <list>``
  does;
* ``codec-aug-every`` — the WAV windows plus a copy at *every* bitrate of the list (what one copy per
  recording can at best approach; it costs one feature pass per bitrate);
* ``default`` — what ``beeaudio train`` does with no options, when that is not one of the above;
* ``mp3-<kbps>`` (matched conditions) — the DNN trained on the MP3 windows of that bitrate only: the
  ceiling of what any augmentation can recover at that bitrate with this front end;
* the baselines (:mod:`beeaudio.desktop.experiments.baselines`) trained on ``wav`` and on ``codec-aug``;
* once per front end, the ``wav`` DNN on a random window-level split (NOT grouped), to show what such a
  split claims.

Every model is scored on every test condition. The DNNs ``wav``, ``codec-aug`` and ``codec-aug-every``
are trained again with training seeds ``seed+1 .. seed+repeats-1`` (same split, same data): the ablation
table reports their mean ± sd, so a difference between front ends can be told from seed noise.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.desktop.experiments import common, report
from beeaudio.desktop.feature_presets import FrontEnd, front_end

log = logging.getLogger(__name__)

DEFAULT_BITRATES = (16, 32, 64, 128)
#: The DNN conditions trained with every training seed (the rows of the ablation table).
SEEDED_CONDITIONS = ("wav", "codec-aug", "codec-aug-every")


@dataclass(frozen=True)
class CodecConfig:
    """The codec experiment's settings (``results.json`` records them).

    ``bands``: the front ends compared (each a :class:`~beeaudio.desktop.feature_presets.FrontEnd`, or a
    preset name or JSON/TOML file that :func:`~beeaudio.desktop.feature_presets.front_end` resolves);
    empty: the one of ``training["feature_config"]``, else the ``default`` preset. ``repeats``: training
    seeds of the ablation's DNNs (1: the experiment's seed only).
    """

    bitrates: tuple[int, ...] = DEFAULT_BITRATES
    seed: int = 0
    test_fraction: float = 0.25
    quick: bool = False
    matched: bool = True
    baselines: bool = True
    random_split: bool = True
    repeats: int = 1
    bands: tuple[FrontEnd, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides

    def __post_init__(self) -> None:
        rates = tuple(int(b) for b in self.bitrates)
        if not rates or any(b <= 0 for b in rates):
            raise ValueError(f"bitrates must be positive kbps values, got {self.bitrates!r}")
        object.__setattr__(self, "bitrates", tuple(sorted(set(rates))))
        if int(self.repeats) < 1:
            raise ValueError(f"repeats must be at least 1 (the experiment's own seed), got {self.repeats}")
        object.__setattr__(self, "repeats", int(self.repeats))
        bands = tuple(b if isinstance(b, FrontEnd) else front_end(spec=b) for b in self.bands)
        names = [b.name for b in bands]
        if len(set(names)) != len(names):
            raise ValueError(f"front-end names must differ, got {names}")
        if bands and "feature_config" in self.training:
            raise ValueError("give the front ends as bands or as training['feature_config'], not both")
        object.__setattr__(self, "bands", bands)

    def front_ends(self) -> tuple[FrontEnd, ...]:
        return self.bands or (common.front_end_of(training=self.training),)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.repeats)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bitrates"] = list(self.bitrates)
        d["bands"] = [{"name": b.name, "feature_config": b.config.to_dict()} for b in self.front_ends()]
        d["training"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.training.items()}
        return d


@dataclass
class _Trained:
    model: str  # "dnn", "gmm", "band-logreg"
    train: str  # training condition
    split: str  # "grouped" or "random"
    predict: Any  # features -> probabilities
    params: int
    train_windows: int
    seconds: float
    validation: dict[str, Any] = field(default_factory=dict)


def train_config(*, config: CodecConfig, feature_config: Any = None) -> Any:  # -> TrainConfig
    """``beeaudio train``'s defaults, with the experiment's seed (and ``--quick``'s short training) and
    the front end's feature configuration."""
    from beeaudio.desktop.training.train import TrainConfig

    overrides: dict[str, Any] = {"seed": config.seed, "test_fraction": config.test_fraction}
    if config.quick:
        overrides.update(common.QUICK_TRAINING)
    overrides.update(config.training)
    if feature_config is not None:
        overrides["feature_config"] = feature_config
    overrides.update({"verbose": 0, "progress": False, "codec_augment": False})
    return TrainConfig(**overrides)


def command_line(*, data: Path, out: Path, config: CodecConfig) -> list[str]:
    """The ``beeaudio experiment codec`` command that reproduces ``config`` (written into the report
    whether the experiment was started from the CLI or from Python); front ends that are not an unchanged
    preset are written to ``out/features/<name>.json`` and named by that file."""
    from beeaudio.desktop.training.train import TrainConfig

    specs = [common.feature_argument(front_end=b, out=out) for b in config.front_ends()]
    argv = ["beeaudio", "experiment", "codec", "--data", str(data), "--out", str(out)]
    argv += ["--band", ",".join(specs)] if len(specs) > 1 else ["--features", specs[0]]
    argv += ["--bitrates", ",".join(map(str, config.bitrates))]
    argv += ["--repeats", str(config.repeats)] if config.repeats > 1 else []
    argv += ["--no-matched"] if not config.matched else []
    argv += ["--no-random-split"] if not config.random_split else []
    weighting = config.training.get("codec_weighting", TrainConfig.codec_weighting)
    argv += ["--codec-weighting", weighting] if weighting != TrainConfig.codec_weighting else []
    argv += ["--seed", str(config.seed), "--test-fraction", str(config.test_fraction)]
    argv += ["--quick"] if config.quick else []
    argv += ["--no-baselines"] if not config.baselines else []
    return argv


def _mp3(kbps: int) -> common.Transform:
    from beeaudio.desktop.codec import mp3_roundtrip

    def transform(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return mp3_roundtrip(audio=audio, sample_rate=sample_rate, bitrate_kbps=kbps)

    return transform


def _fit_dnn(*, x: np.ndarray, y: np.ndarray, hives: np.ndarray, n_classes: int, tc: Any) -> tuple[Any, Any]:
    from beeaudio.desktop.training.train import fit_model

    fit = fit_model(features=x, labels=y, hives=np.asarray(hives).astype(str), n_classes=n_classes, config=tc)
    return fit.model, fit


class _Fits:
    """DNN fits of one front end, kept by (training data, seed): two conditions with the very same windows
    (``codec-aug`` and ``codec-aug-every`` with a single bitrate) are trained once, not twice."""

    def __init__(self, *, n_classes: int, tc: Any) -> None:
        self._n_classes, self._tc = n_classes, tc
        self._done: dict[tuple[str, int], tuple[Any, Any]] = {}

    def fit(self, *, x: np.ndarray, y: np.ndarray, hives: np.ndarray, seed: int) -> tuple[Any, Any]:
        digest = hashlib.sha256()
        for part in (np.ascontiguousarray(x), np.asarray(y), np.asarray(hives).astype(str)):
            digest.update(part.tobytes())
        key = (digest.hexdigest(), seed)
        if key not in self._done:
            tc = self._tc if seed == self._tc.seed else replace(self._tc, seed=seed)
            self._done[key] = _fit_dnn(x=x, y=y, hives=hives, n_classes=self._n_classes, tc=tc)
        return self._done[key]


def _keras_predictor(model: Any) -> Any:
    """Probabilities of ``model`` in inference mode. A direct call, not ``model.predict``: predict traces
    a new tf.function for every model, which cost more than the scoring itself here (and TensorFlow warned
    about the retracing)."""

    def predict(features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        parts = [np.asarray(model(x[i : i + 4096], training=False)) for i in range(0, len(x), 4096)]
        return np.concatenate(parts) if parts else np.zeros((0, int(model.output_shape[-1])), np.float32)

    return predict


def run_codec(
    *,
    data: Path,
    out: Path,
    config: CodecConfig,
    cache_dir: Path | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the codec experiment on the recordings under ``data`` for every front end of ``config``; write
    ``report.md``, ``results.json`` and ``accuracy_vs_bitrate.png`` into ``out``; return the results.

    ``command`` overrides the reproducing command line the report prints (by default built from
    ``config`` by :func:`command_line`). Every front end is checked against every recording's sample rate
    before anything is decoded (:class:`beeaudio.desktop.datasets.BandTooWideError`).
    """
    from beeaudio.desktop import datasets
    from beeaudio.desktop.training.train import TrainConfig

    common.quiet_tensorflow()
    started = time.perf_counter()
    out = Path(out)
    bands = config.front_ends()
    recordings = datasets.discover(root=Path(data))
    for band in bands:
        datasets.check_band(recordings=recordings, config=band.config)
    out.mkdir(parents=True, exist_ok=True)
    argv = list(command) if command is not None else command_line(data=Path(data), out=out, config=config)
    common.seed_everything(seed=config.seed)
    defaults = TrainConfig()

    per_band = [
        _run_band(data=Path(data), band=band, config=config, cache_dir=cache_dir, defaults=defaults)
        for band in bands
    ]
    test_hives = {tuple(b["data"]["test_hives"]) for b in per_band}
    if len(test_hives) != 1:
        raise RuntimeError(f"the front ends got different splits ({sorted(test_hives)}): not comparable")
    rows = [row for b in per_band for row in b.pop("rows")]
    seed_rows = [row for b in per_band for row in b.pop("seed_rows")]
    first = per_band[0]
    results: dict[str, Any] = {
        "experiment": "codec",
        "provenance": {
            **common.provenance(command=argv),
            "library_overrides": common.unexpressed_overrides(training=config.training),
        },
        "config": config.to_dict(),
        "train_config": first["train_config"],
        "feature_config": first["feature_config"],
        "default_train_config": {
            "codec_augment": defaults.codec_augment,
            "codec_bitrates": list(defaults.codec_bitrates),
            "codec_weighting": defaults.codec_weighting,
            "model": defaults.model,
            "layers": defaults.layers,
            "units": defaults.units,
        },
        "default_condition": first["default_condition"],
        "seeds": config.seeds,
        "bands": per_band,
        "data": first["data"],
        "rows": rows,
        "seed_rows": seed_rows,
        "ablation": ablation(seed_rows=seed_rows),
        "summary": {b["name"]: b["summary"] for b in per_band},
        "timing": {
            **{f"{b['name']}_seconds": b["timing"]["total_seconds"] for b in per_band},
            "total_seconds": time.perf_counter() - started,
        },
    }
    report.write_codec_report(out=out, results=results)
    log.info("codec experiment written to %s in %.0f s", out, results["timing"]["total_seconds"])
    return results


def _run_band(
    *, data: Path, band: FrontEnd, config: CodecConfig, cache_dir: Path | None, defaults: Any
) -> dict[str, Any]:
    """Every training and test condition of one front end: rows, seed rows, models and what was drawn."""
    from beeaudio.desktop.experiments import baselines
    from beeaudio.desktop.training.train import codec_transform

    started = time.perf_counter()
    tc = train_config(config=config, feature_config=band.config)
    fc = tc.features
    ds = common.load_dataset(
        data=data,
        feature_config=fc,
        cache_dir=cache_dir,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    names = ds.label_names
    n_classes = len(names)
    x = np.asarray(ds.windows.features, dtype=np.float32)
    y = np.asarray(ds.windows.labels, dtype=np.int64)
    hives = np.asarray(ds.windows.hives).astype(str)
    tr, te = ds.train_idx, ds.test_idx
    train_hives = set(ds.train_hives)
    log.info(
        "codec experiment, front end %s (%s): %d windows, train %d (%d hives), test %d (%d hives)",
        band.name, band.describe(), len(y), len(tr), len(train_hives), len(te), len(ds.test_hives),
    )  # fmt: skip

    # Every recording through the MP3 encoder once per bitrate, aligned to the clean windows.
    timing: dict[str, float] = {}
    mp3: dict[int, np.ndarray] = {}
    for kbps in config.bitrates:
        t0 = time.perf_counter()
        windows, where = common.transformed_windows(
            dataset=ds,
            feature_config=fc,
            cache_dir=cache_dir,
            transform=_mp3(kbps),
            transform_key=f"mp3-{kbps}",
        )
        if len(set(where.tolist())) != len(y):
            raise RuntimeError(f"MP3 {kbps} kbps gave {len(where)} windows for {len(y)} clean ones")
        features = np.empty_like(x)
        features[where] = np.asarray(windows.features, dtype=np.float32)
        mp3[kbps] = features
        timing[f"mp3_{kbps}_seconds"] = time.perf_counter() - t0
    identical = [
        (f"mp3-{a}", f"mp3-{b}")
        for a, b in zip(config.bitrates, config.bitrates[1:], strict=False)
        if np.array_equal(mp3[a], mp3[b])
    ]
    distinct = [k for k in config.bitrates if not any(b == f"mp3-{k}" for _, b in identical)]
    test_sets: dict[str, tuple[int | None, np.ndarray]] = {"wav": (None, x)}
    test_sets.update({f"mp3-{k}": (k, mp3[k]) for k in config.bitrates})

    # Multi-condition training data: the WAV training windows plus MP3 copies of the training recordings.
    t0 = time.perf_counter()
    transform, aug_key = codec_transform(
        bitrates=config.bitrates, seed=config.seed, weighting=tc.codec_weighting
    )
    aug_windows, aug_where = common.transformed_windows(
        dataset=ds,
        feature_config=fc,
        cache_dir=cache_dir,
        transform=transform,
        transform_key=aug_key,
        recordings=[r for r in ds.recordings if r.hive in train_hives],
    )
    aug_features = np.asarray(aug_windows.features, dtype=np.float32)
    timing["augmentation_seconds"] = time.perf_counter() - t0
    conditions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        "wav": (x[tr], y[tr], hives[tr]),
        "codec-aug": (
            np.concatenate([x[tr], aug_features]),
            np.concatenate([y[tr], y[aug_where]]),
            np.concatenate([hives[tr], hives[aug_where]]),
        ),
        # The test conditions' MP3 windows of the training hives are what an augmentation at every bitrate
        # would compute: the same encoder over the same whole recordings.
        "codec-aug-every": (
            np.concatenate([x[tr], *(mp3[k][tr] for k in distinct)]),
            np.concatenate([y[tr]] * (1 + len(distinct))),
            np.concatenate([hives[tr]] * (1 + len(distinct))),
        ),
    }
    augmentation = {
        "cache_key": aug_key,
        "weighting": tc.codec_weighting,
        "bitrates": list(config.bitrates),
        "every_bitrates": distinct,
        **_draws(
            aug=aug_features,
            where=aug_where,
            windows=ds.windows,
            mp3=mp3,
            label_names=names,
            bitrates=distinct,
        ),
    }

    trained: list[_Trained] = []
    fits = _Fits(n_classes=n_classes, tc=tc)

    def add_dnn(train: str, xs: np.ndarray, ys: np.ndarray, hs: np.ndarray, *, n_clean: int | None) -> None:
        t1 = time.perf_counter()
        model, fit = fits.fit(x=xs, y=ys, hives=hs, seed=tc.seed)
        seconds = time.perf_counter() - t1
        validation = (
            {}
            if n_clean is None
            else _validation(hives=hs, validation_hives=fit.validation_hives, n_clean=n_clean)
        )
        trained.append(
            _Trained(
                "dnn", train, "grouped", _keras_predictor(model), int(model.count_params()), len(ys), seconds,
                validation,
            )
        )  # fmt: skip
        log.info("%s: dnn trained on %s (%d windows) in %.1f s", band.name, train, len(ys), seconds)

    for name in SEEDED_CONDITIONS:
        add_dnn(name, *conditions[name], n_clean=len(tr))
    default_condition = "wav"
    if defaults.codec_augment:
        if (
            tuple(defaults.codec_bitrates) == config.bitrates
            and defaults.codec_weighting == tc.codec_weighting
        ):
            default_condition = "codec-aug"
        else:
            default_condition = "default"
            t_default, key = codec_transform(
                bitrates=defaults.codec_bitrates, seed=config.seed, weighting=defaults.codec_weighting
            )
            wd, wh = common.transformed_windows(
                dataset=ds, feature_config=fc, cache_dir=cache_dir, transform=t_default, transform_key=key,
                recordings=[r for r in ds.recordings if r.hive in train_hives],
            )  # fmt: skip
            add_dnn(
                "default",
                np.concatenate([x[tr], np.asarray(wd.features, dtype=np.float32)]),
                np.concatenate([y[tr], y[wh]]),
                np.concatenate([hives[tr], hives[wh]]),
                n_clean=len(tr),
            )
    if config.matched:
        for kbps in config.bitrates:
            add_dnn(f"mp3-{kbps}", mp3[kbps][tr], y[tr], hives[tr], n_clean=None)
    if config.baselines:
        for train in ("wav", "codec-aug"):
            xs, ys, _ = conditions[train]
            for fit_baseline in (
                lambda xs=xs, ys=ys: baselines.fit_gmm(
                    features=xs, labels=ys, n_classes=n_classes, config=fc, seed=config.seed
                ),
                lambda xs=xs, ys=ys: baselines.fit_band_logreg(
                    features=xs, labels=ys, config=fc, seed=config.seed
                ),
            ):
                t1 = time.perf_counter()
                b = fit_baseline()
                trained.append(
                    _Trained(
                        b.name, train, "grouped", b.predict_proba, b.params, len(ys), time.perf_counter() - t1
                    )
                )

    rows = [row for t in trained for row in _rows_of(t, te, y, test_sets, band=band.name)]
    random_split: dict[str, Any] | None = None
    if config.random_split:
        r_tr, r_te = _random_split(labels=y, test_fraction=config.test_fraction, seed=config.seed)
        t1 = time.perf_counter()
        # Window-level split: every window its own "group", so validation is random windows too.
        model, _ = _fit_dnn(
            x=x[r_tr], y=y[r_tr], hives=np.char.add("w", r_tr.astype(str)), n_classes=n_classes, tc=tc
        )
        t = _Trained(
            "dnn", "wav", "random", _keras_predictor(model), int(model.count_params()), len(r_tr),
            time.perf_counter() - t1,
        )  # fmt: skip
        trained.append(t)
        rows += _rows_of(t, r_te, y, test_sets, band=band.name)
        random_split = {
            "train_windows": len(r_tr),
            "test_windows": len(r_te),
            "hives_in_both": len(set(hives[r_tr]) & set(hives[r_te])),
        }

    seed_rows = _seed_rows(
        band=band.name,
        conditions={name: conditions[name] for name in SEEDED_CONDITIONS},
        fits=fits,
        seeds=config.seeds,
        test=(te, y, test_sets),
    )
    return {
        "name": band.name,
        "describe": band.describe(),
        "feature_config": fc.to_dict(),
        "train_config": tc.to_dict(),
        "data": ds.summary(),
        "default_condition": default_condition,
        "identical_test_conditions": identical,
        "augmentation": augmentation,
        "random_split": random_split,
        "models": [
            {
                "band": band.name,
                "model": t.model,
                "train": t.train,
                "split": t.split,
                "params": t.params,
                "train_windows": t.train_windows,
                "fit_seconds": t.seconds,
                **({"validation": t.validation} if t.validation else {}),
            }
            for t in trained
        ],
        "rows": rows,
        "seed_rows": seed_rows,
        "summary": _summary(rows, default_condition=default_condition, bitrates=config.bitrates),
        "timing": {**timing, "total_seconds": time.perf_counter() - started},
    }


def _draws(
    *,
    aug: np.ndarray,
    where: np.ndarray,
    windows: Any,
    mp3: dict[int, np.ndarray],
    label_names: Sequence[str],
    bitrates: Sequence[int],
) -> dict[str, Any]:
    """Which bitrate each training recording's augmented copy is, per label, told by comparing its windows
    with the test conditions' MP3 windows of the same recording (so this also checks that the training
    copies went through the very encoder, at the very settings, the test audio went through)."""
    recordings = np.asarray(windows.recordings).astype(str)[where]
    labels = np.asarray(windows.labels)[where]
    draws: dict[str, dict[str, int]] = {str(k): {name: 0 for name in label_names} for k in bitrates}
    unmatched: list[str] = []
    for rec in sorted(set(recordings.tolist())):
        mine = recordings == rec
        hit = next((k for k in bitrates if np.array_equal(aug[mine], mp3[k][where[mine]])), None)
        if hit is None:
            unmatched.append(rec)
            continue
        draws[str(hit)][label_names[int(labels[mine][0])]] += 1
    return {"draws": draws, "recordings": len(set(recordings.tolist())), "unmatched_recordings": unmatched}


def _validation(*, hives: np.ndarray, validation_hives: Sequence[str], n_clean: int) -> dict[str, Any]:
    """Where a model's early-stopping windows came from: the first ``n_clean`` windows are clean, the rest
    augmented copies, each carrying its recording's hive."""
    in_val = np.isin(np.asarray(hives).astype(str), list(validation_hives))
    return {
        "hives": sorted(validation_hives),
        "clean_windows": int(in_val[:n_clean].sum()),
        "copy_windows": int(in_val[n_clean:].sum()),
        "fit_copy_windows": int((~in_val[n_clean:]).sum()),
    }


def _seed_rows(
    *,
    band: str,
    conditions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    fits: _Fits,
    seeds: Sequence[int],
    test: tuple[np.ndarray, np.ndarray, dict[str, tuple[int | None, np.ndarray]]],
) -> list[dict[str, Any]]:
    """Each seeded condition's accuracy on every test condition for each training seed (split and data
    fixed; the experiment's own seed reuses the model already trained)."""
    test_idx, y, test_sets = test
    rows = []
    for name, (xs, ys, hs) in conditions.items():
        for seed in seeds:
            model, _ = fits.fit(x=xs, y=ys, hives=hs, seed=seed)
            predict = _keras_predictor(model)
            for key, (kbps, features) in test_sets.items():
                scores = common.accuracy(y_true=y[test_idx], probabilities=predict(features[test_idx]))
                rows.append(
                    {
                        "band": band,
                        "model": "dnn",
                        "train": name,
                        "test": key,
                        "bitrate_kbps": kbps,
                        "seed": seed,
                    }
                    | scores
                )
    return rows


def ablation(*, seed_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) over the training seeds, per front end,
    training condition and test condition, in the order the seed rows give."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in seed_rows:
        groups.setdefault((row["band"], row["train"], row["test"]), []).append(row)
    out = []
    for (band, train, test), rows in groups.items():
        values = np.array([r["accuracy"] for r in rows], dtype=np.float64)
        out.append(
            {
                "band": band,
                "model": "dnn",
                "train": train,
                "test": test,
                "bitrate_kbps": rows[0]["bitrate_kbps"],
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "seeds": [int(r["seed"]) for r in rows],
                "values": values.tolist(),
            }
        )
    return out


def _rows_of(
    t: _Trained,
    test_idx: np.ndarray,
    y: np.ndarray,
    test_sets: dict[str, tuple[int | None, np.ndarray]],
    *,
    band: str,
) -> list[dict[str, Any]]:
    rows = []
    for name, (kbps, features) in test_sets.items():
        scores = common.accuracy(y_true=y[test_idx], probabilities=t.predict(features[test_idx]))
        rows.append(
            {
                "band": band,
                "model": t.model,
                "train": t.train,
                "split": t.split,
                "test": name,
                "bitrate_kbps": kbps,
                **scores,
            }
        )
    wav = rows[0]["accuracy"]
    for row in rows:
        row["delta_vs_wav"] = row["accuracy"] - wav
    return rows


def _random_split(*, labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(tr), np.sort(te)


def _summary(
    rows: list[dict[str, Any]], *, default_condition: str, bitrates: Sequence[int]
) -> dict[str, Any]:
    """The headline numbers of one front end: each DNN's WAV accuracy and its drop at each bitrate."""

    def acc(model: str, train: str, test: str, split: str = "grouped") -> float | None:
        for row in rows:
            if (row["model"], row["train"], row["test"], row["split"]) == (model, train, test, split):
                return float(row["accuracy"])
        return None

    out: dict[str, Any] = {"default_condition": default_condition}
    for train in dict.fromkeys((*SEEDED_CONDITIONS, default_condition)):
        wav = acc("dnn", train, "wav")
        if wav is None:
            continue
        out[train] = {
            "wav": wav,
            **{f"drop_mp3_{k}": wav - (acc("dnn", train, f"mp3-{k}") or 0.0) for k in bitrates},
        }
    if 32 in bitrates:
        drop = out.get(default_condition, {}).get("drop_mp3_32")
        out["default_mp3_32_within_2_points"] = None if drop is None else bool(abs(drop) <= 0.02)
    return out
