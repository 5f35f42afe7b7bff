"""Small real TF-Lite models for the bundle and inference tests (TensorFlow is allowed here, not in beeaudio).

A Keras model with seeded random weights over the front end's features of seeded synthetic sound is converted
with ``TFLiteConverter.from_keras_model`` to float32 and to full-integer int8. The conversions are cached for
the test session, because converting costs seconds and every test module needs the same models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beeaudio.bundle import BUNDLE_FORMAT_VERSION, BundleManifest, SelfTest, write_bundle
from beeaudio.features import FeatureConfig, window_features
from beeaudio.inference import make_selftest

LABELS = ("normal", "swarm")
SAMPLE_RATE = 8000


def synthetic_sound(*, seconds: float, seed: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Hum-like tones plus noise at a seeded level: enough variety for the features to spread out."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    signal = np.zeros_like(t)
    for _ in range(3):
        freq = rng.uniform(150.0, 700.0)
        signal += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    signal *= 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)  # slow level changes
    signal += rng.uniform(0.005, 0.1) * rng.standard_normal(t.size)
    return (0.8 * signal / np.max(np.abs(signal))).astype(np.float32)


@functools.cache
def feature_windows(*, config: FeatureConfig = FeatureConfig(), n_clips: int = 12) -> np.ndarray:
    """Feature windows of several seeded synthetic clips, (n, *feature_shape) float32."""
    clips = (synthetic_sound(seconds=6.0, seed=seed) for seed in range(n_clips))
    return np.concatenate([window_features(audio=clip, config=config) for clip in clips])


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation along the last axis, as a trainer would compute them."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).astype(np.float32), (flat.std(axis=0) + 1e-3).astype(np.float32)


def build_keras_model(*, features: np.ndarray, n_labels: int, seed: int, normalize_inside: bool):
    """[Normalization with baked-in statistics →] Dense(16, relu) → Dense(n_labels, softmax).

    With ``normalize_inside=False`` the model expects standardised features (the bundle's
    ``feature_mean``/``feature_std`` do it at run time).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=features.shape[1:], dtype="float32")
    x = keras.layers.Flatten()(inputs) if features.ndim > 2 else inputs
    if normalize_inside:
        mean, std = feature_stats(features)
        x = keras.layers.Normalization(mean=mean, variance=std**2)(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    # Larger output weights than the default initialiser so the probabilities spread over (0, 1).
    outputs = keras.layers.Dense(
        n_labels, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=0.6)
    )(x)
    return keras.Model(inputs, outputs)


def convert(*, model, quantization: str, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [representative[i : i + 1]] for i in range(len(representative))
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # tflite-runtime 2.14 rejects the FULLY_CONNECTED version that per-channel dense quantisation needs.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    elif quantization != "float32":
        raise ValueError(quantization)
    return converter.convert()


@dataclass(frozen=True)
class BuiltModel:
    quantization: str
    config: FeatureConfig
    model_bytes: bytes
    features: np.ndarray  # raw front-end windows the model was calibrated on
    keras_probabilities: np.ndarray  # Keras output for ``features`` (standardised if need be)
    keras_model: object
    feature_mean: tuple[float, ...] | None  # for the manifest when the runtime standardises
    feature_std: tuple[float, ...] | None


@functools.cache
def built_model(
    *,
    quantization: str,
    config: FeatureConfig = FeatureConfig(),
    normalize_inside: bool = True,
    seed: int = 3,
) -> BuiltModel:
    features = feature_windows(config=config)
    mean, std = feature_stats(features)
    model_input = features if normalize_inside else (features - mean) / std
    keras_model = build_keras_model(
        features=features, n_labels=len(LABELS), seed=seed, normalize_inside=normalize_inside
    )
    model_bytes = convert(model=keras_model, quantization=quantization, representative=model_input)
    probabilities = np.asarray(keras_model(model_input, training=False), dtype=np.float32)
    return BuiltModel(
        quantization=quantization,
        config=config,
        model_bytes=model_bytes,
        features=features,
        keras_probabilities=probabilities,
        keras_model=keras_model,
        feature_mean=None if normalize_inside else tuple(mean.tolist()),
        feature_std=None if normalize_inside else tuple(std.tolist()),
    )


def draft_manifest(*, built: BuiltModel, name: str = "test-model") -> BundleManifest:
    """A manifest with the model-derived fields left empty, for ``write_bundle`` to fill from the model."""
    return BundleManifest(
        format_version=BUNDLE_FORMAT_VERSION,
        model_name=name,
        model_version="0.0.1",
        labels=LABELS,
        swarm_label="swarm",
        feature_config=built.config,
        input_shape=(),
        input_dtype="",
        output_shape=(),
        output_dtype="",
        quantization="",
        model_sha256="",
        training={"data": "synthetic test sound", "metrics": {"accuracy": np.float64(0.5)}},
        feature_mean=built.feature_mean,
        feature_std=built.feature_std,
    )


def selftest_for(built: BuiltModel, *, n: int = 6, atol: float | None = None) -> SelfTest:
    """Self-test windows with the expected output computed by this process's TF-Lite runtime."""
    windows = built.features[:: max(1, len(built.features) // n)][:n]
    return make_selftest(
        model_bytes=built.model_bytes,
        features=windows,
        atol=atol,
        feature_mean=built.feature_mean,
        feature_std=built.feature_std,
    )


def write_test_bundle(*, path: Path, built: BuiltModel, **kwargs: object) -> Path:
    """Write ``built`` as a bundle; ``kwargs`` go to ``write_bundle`` (e.g. ``verify=False``)."""
    return write_bundle(
        path=path,
        manifest=draft_manifest(built=built),
        model_bytes=built.model_bytes,
        selftest=selftest_for(built),
        **kwargs,
    )


def rewrite_bundle(
    *, source: Path, target: Path, replace: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()
) -> Path:
    """Copy a bundle's zip with members replaced or dropped: how the tests make broken bundles."""
    import zipfile

    replace = replace or {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            if name in drop:
                continue
            dst.writestr(name, replace.get(name, src.read(name)))
    return target
