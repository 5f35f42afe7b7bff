"""The WAV-versus-MP3 experiment: does MP3 cost accuracy, and does codec augmentation buy it back?

One hive-grouped split (``beeaudio.desktop.datasets.grouped_split`` with the seed) is used for every
condition.
The test hives are scored on their WAV audio and on the same audio through a real MP3 encoder at each
bitrate (:func:`beeaudio.core.audio.mp3_roundtrip` over the whole recording, once per bitrate, then cut into
the same windows; the feature cache keys them ``mp3-<kbps>``). The models trained are:

* ``wav`` — the DNN of ``beeaudio train`` (its default size and training) on the WAV training windows;
* ``codec-aug`` — the same on the WAV windows plus one MP3 copy of every training recording at a bitrate
  drawn per recording from the list (multi-condition training,
  :func:`beeaudio.desktop.training.train.codec_transform`, i.e. what
  ``beeaudio train --codec-augment --codec-bitrates <list>`` does);
* ``default`` — what ``beeaudio train`` does with no options, when that is not one of the above;
* ``mp3-<kbps>`` (matched conditions) — the DNN trained on the MP3 windows of that bitrate only;
* the baselines (:mod:`beeaudio.desktop.experiments.baselines`) trained on ``wav`` and on ``codec-aug``;
* once, the ``wav`` DNN on a random window-level split (NOT grouped), to show what such a split claims.

Every model is scored on every test condition, so the report has matched and mismatched cells.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.desktop.experiments import common, report

log = logging.getLogger(__name__)

DEFAULT_BITRATES = (16, 32, 64, 128)


@dataclass(frozen=True)
class CodecConfig:
    """The codec experiment's settings (``results.json`` records them)."""

    bitrates: tuple[int, ...] = DEFAULT_BITRATES
    seed: int = 0
    test_fraction: float = 0.25
    quick: bool = False
    matched: bool = True
    baselines: bool = True
    random_split: bool = True
    repeats: int = 1  # extra training seeds for the wav and codec-aug DNNs (same split, same data)
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides

    def __post_init__(self) -> None:
        rates = tuple(int(b) for b in self.bitrates)
        if not rates or any(b <= 0 for b in rates):
            raise ValueError(f"bitrates must be positive kbps values, got {self.bitrates!r}")
        object.__setattr__(self, "bitrates", tuple(sorted(set(rates))))


@dataclass
class _Trained:
    model: str  # "dnn", "gmm", "band-logreg"
    train: str  # training condition
    split: str  # "grouped" or "random"
    predict: Any  # features -> probabilities
    params: int
    train_windows: int
    seconds: float


def train_config(*, config: CodecConfig) -> Any:  # -> beeaudio.desktop.training.train.TrainConfig
    """``beeaudio train``'s defaults, with the experiment's seed (and ``--quick``'s short training)."""
    from beeaudio.desktop.training.train import TrainConfig

    overrides: dict[str, Any] = {"seed": config.seed, "test_fraction": config.test_fraction}
    if config.quick:
        overrides.update(common.QUICK_TRAINING)
    overrides.update(config.training)
    overrides.update({"verbose": 0, "progress": False, "codec_augment": False})
    return TrainConfig(**overrides)


def _mp3(kbps: int) -> common.Transform:
    from beeaudio.desktop.codec import mp3_roundtrip

    def transform(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return mp3_roundtrip(audio=audio, sample_rate=sample_rate, bitrate_kbps=kbps)

    return transform


def _fit_dnn(
    *, x: np.ndarray, y: np.ndarray, hives: np.ndarray, n_classes: int, tc: Any
) -> tuple[Any, float]:
    from beeaudio.desktop.training.train import fit_model

    started = time.perf_counter()
    fit = fit_model(features=x, labels=y, hives=np.asarray(hives).astype(str), n_classes=n_classes, config=tc)
    return fit.model, time.perf_counter() - started


def _keras_predictor(model: Any) -> Any:
    def predict(features: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(np.asarray(features, dtype=np.float32), verbose=0, batch_size=1024))

    return predict


def run_codec(
    *,
    data: Path,
    out: Path,
    config: CodecConfig,
    cache_dir: Path | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the codec experiment on the recordings under ``data``; write ``report.md``, ``results.json``
    and ``accuracy_vs_bitrate.png`` into ``out``; return the results dictionary."""
    from beeaudio.desktop.experiments import baselines
    from beeaudio.desktop.training.train import TrainConfig, codec_transform

    common.quiet_tensorflow()
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    common.seed_everything(seed=config.seed)
    tc = train_config(config=config)
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
        "codec experiment: %d windows, train %d (%d hives), test %d (%d hives)",
        len(y), len(tr), len(train_hives), len(te), len(ds.test_hives),
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
        log.info("MP3 %d kbps: %d windows in %.1f s", kbps, len(where), timing[f"mp3_{kbps}_seconds"])
    identical = [
        (f"mp3-{a}", f"mp3-{b}")
        for a, b in zip(config.bitrates, config.bitrates[1:], strict=False)
        if np.array_equal(mp3[a], mp3[b])
    ]
    test_sets: dict[str, tuple[int | None, np.ndarray]] = {"wav": (None, x)}
    test_sets.update({f"mp3-{k}": (k, mp3[k]) for k in config.bitrates})

    # Multi-condition training data: the WAV training windows plus one MP3 copy per training recording.
    def augmented(bitrates: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        transform, key = codec_transform(bitrates=bitrates, seed=config.seed)
        windows, where = common.transformed_windows(
            dataset=ds,
            feature_config=fc,
            cache_dir=cache_dir,
            transform=transform,
            transform_key=key,
            recordings=[r for r in ds.recordings if r.hive in train_hives],
        )
        return (
            np.concatenate([x[tr], np.asarray(windows.features, dtype=np.float32)]),
            np.concatenate([y[tr], y[where]]),
            np.concatenate([hives[tr], hives[where]]),
            key,
        )

    trained: list[_Trained] = []

    def add_dnn(train: str, xs: np.ndarray, ys: np.ndarray, hs: np.ndarray, split: str = "grouped") -> None:
        model, seconds = _fit_dnn(x=xs, y=ys, hives=hs, n_classes=n_classes, tc=tc)
        trained.append(
            _Trained(
                "dnn", train, split, _keras_predictor(model), int(model.count_params()), len(ys), seconds
            )
        )
        log.info("dnn trained on %s (%s split, %d windows) in %.1f s", train, split, len(ys), seconds)

    def add_baselines(train: str, xs: np.ndarray, ys: np.ndarray) -> None:
        for fit in (
            lambda: baselines.fit_gmm(
                features=xs, labels=ys, n_classes=n_classes, config=fc, seed=config.seed
            ),
            lambda: baselines.fit_band_logreg(features=xs, labels=ys, config=fc, seed=config.seed),
        ):
            t0 = time.perf_counter()
            b = fit()
            trained.append(
                _Trained(
                    b.name, train, "grouped", b.predict_proba, b.params, len(ys), time.perf_counter() - t0
                )
            )

    add_dnn("wav", x[tr], y[tr], hives[tr])
    t0 = time.perf_counter()
    xa, ya, ha, aug_key = augmented(config.bitrates)
    timing["augmentation_seconds"] = time.perf_counter() - t0
    add_dnn("codec-aug", xa, ya, ha)

    defaults = TrainConfig()
    if not defaults.codec_augment:
        default_condition = "wav"
    elif tuple(defaults.codec_bitrates) == config.bitrates:
        default_condition = "codec-aug"
    else:
        default_condition = "default"
        xd, yd, hd, _ = augmented(defaults.codec_bitrates)
        add_dnn("default", xd, yd, hd)

    if config.matched:
        for kbps in config.bitrates:
            add_dnn(f"mp3-{kbps}", mp3[kbps][tr], y[tr], hives[tr])
    if config.baselines:
        add_baselines("wav", x[tr], y[tr])
        add_baselines("codec-aug", xa, ya)

    repeats = _repeat_fits(
        conditions={"wav": (x[tr], y[tr], hives[tr]), "codec-aug": (xa, ya, ha)},
        n_classes=n_classes,
        tc=tc,
        repeats=config.repeats,
        test=(te, y, {k: test_sets[k] for k in ("wav", "mp3-32") if k in test_sets}),
    )
    rows = [_rows_of(t, te, y, test_sets, config.bitrates) for t in trained]
    random_rows: list[dict[str, Any]] = []
    random_split: dict[str, Any] | None = None
    if config.random_split:
        r_tr, r_te = _random_split(labels=y, test_fraction=config.test_fraction, seed=config.seed)
        # Window-level split: every window its own "group", so validation is random windows too.
        model, seconds = _fit_dnn(
            x=x[r_tr], y=y[r_tr], hives=np.char.add("w", r_tr.astype(str)), n_classes=n_classes, tc=tc
        )
        t = _Trained(
            "dnn", "wav", "random", _keras_predictor(model), int(model.count_params()), len(r_tr), seconds
        )
        random_rows = _rows_of(t, r_te, y, test_sets, config.bitrates)
        random_split = {
            "train_windows": len(r_tr),
            "test_windows": len(r_te),
            "hives_in_both": len(set(hives[r_tr]) & set(hives[r_te])),
        }
    flat = [row for group in rows for row in group] + random_rows

    results: dict[str, Any] = {
        "experiment": "codec",
        "provenance": common.provenance(command=command),
        "config": {**asdict(config), "bitrates": list(config.bitrates)},
        "train_config": tc.to_dict(),
        "default_train_config": {
            "codec_augment": defaults.codec_augment,
            "codec_bitrates": list(defaults.codec_bitrates),
            "model": defaults.model,
            "layers": defaults.layers,
            "units": defaults.units,
        },
        "default_condition": default_condition,
        "augmentation_cache_key": aug_key,
        "identical_test_conditions": identical,
        "repeats": repeats,
        "feature_config": fc.to_dict(),
        "data": ds.summary(),
        "random_split": random_split,
        "models": [
            {
                "model": t.model,
                "train": t.train,
                "split": t.split,
                "params": t.params,
                "train_windows": t.train_windows,
                "fit_seconds": t.seconds,
            }
            for t in trained
        ],
        "rows": flat,
        "timing": {**timing, "total_seconds": time.perf_counter() - started},
    }
    results["summary"] = _summary(flat, default_condition=default_condition, bitrates=config.bitrates)
    report.write_codec_report(out=out, results=results)
    log.info("codec experiment written to %s in %.0f s", out, results["timing"]["total_seconds"])
    return results


def _repeat_fits(
    *,
    conditions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_classes: int,
    tc: Any,
    repeats: int,
    test: tuple[np.ndarray, np.ndarray, dict[str, tuple[int | None, np.ndarray]]],
) -> dict[str, Any] | None:
    """The same trainings again with training seeds ``seed .. seed+repeats-1`` (split and data fixed):
    how much of a difference between conditions is just the training seed."""
    if repeats <= 1:
        return None
    test_idx, y, test_sets = test
    out: dict[str, Any] = {"seeds": [tc.seed + i for i in range(repeats)]}
    for name, (xs, ys, hs) in conditions.items():
        scores: dict[str, list[float]] = {k: [] for k in test_sets}
        for i in range(repeats):
            model, _ = _fit_dnn(
                x=xs, y=ys, hives=hs, n_classes=n_classes, tc=dataclasses.replace(tc, seed=tc.seed + i)
            )
            for key, (_, features) in test_sets.items():
                probs = _keras_predictor(model)(features[test_idx])
                scores[key].append(common.accuracy(y_true=y[test_idx], probabilities=probs)["accuracy"])
        out[name] = {
            key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
            for key, v in scores.items()
        }
    return out


def _rows_of(
    t: _Trained,
    test_idx: np.ndarray,
    y: np.ndarray,
    test_sets: dict[str, tuple[int | None, np.ndarray]],
    bitrates: Sequence[int],
) -> list[dict[str, Any]]:
    rows = []
    for name, (kbps, features) in test_sets.items():
        scores = common.accuracy(y_true=y[test_idx], probabilities=t.predict(features[test_idx]))
        rows.append(
            {
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
    """The headline numbers: each DNN's WAV accuracy and its drop at each bitrate (grouped split)."""

    def acc(model: str, train: str, test: str, split: str = "grouped") -> float | None:
        for row in rows:
            if (row["model"], row["train"], row["test"], row["split"]) == (model, train, test, split):
                return float(row["accuracy"])
        return None

    out: dict[str, Any] = {"default_condition": default_condition}
    for train in ("wav", "codec-aug", default_condition):
        wav = acc("dnn", train, "wav")
        if wav is None:
            continue
        out[train] = {
            "wav": wav,
            **{f"drop_mp3_{k}": wav - (acc("dnn", train, f"mp3-{k}") or 0.0) for k in bitrates},
        }
    if 32 in bitrates:
        d = out.get(default_condition, {})
        drop = d.get("drop_mp3_32")
        out["default_mp3_32_within_2_points"] = None if drop is None else bool(abs(drop) <= 0.02)
    return out
