"""The two model families: the reference paper's feed-forward ``dnn`` and a small ``cnn``.

Both start with a Keras ``Normalization`` layer adapted on the training features, so the exported model
takes the front end's raw features and the bundle needs no separate scaler, and both end in a softmax.
Only builtin TF-Lite ops are used (dense, conv, pooling, reshape, softmax), so every runtime runs them.

With ``input_range`` set, an :class:`InputQuantization` layer comes first: it rounds the raw features to
the 8-bit grid the int8 model's input tensor will use. A full-integer model quantises its whole input with
one scale, and the raw features span ~200 units (the level coefficient) while the deltas' statistics vary
by tenths, so a model trained on unrounded features leans on differences the int8 model cannot see (on
the synthetic benchmark it agreed with its int8 conversion on only ~97 % of windows). Trained on the grid,
the Keras model computes what the int8 model computes; the exporter removes the layer from the int8 graph,
where the runtime's own input quantisation does the same rounding.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from beeaudio.desktop.training.train import MODEL_KINDS, REPRESENTATION  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

INPUT_QUANTIZATION_LAYER = "input_quantization"


@keras.saving.register_keras_serializable(package="beeaudio")
class InputQuantization(keras.layers.Layer):
    """Round features to an affine int8 grid, as TF-Lite quantises an int8 input tensor.

    ``scale = (maximum - minimum) / 255`` and ``zero_point = round(-128 - minimum / scale)`` (the range
    always contains 0), ``q = clip(round(x / scale) + zero_point, -128, 127)``, output
    ``(q - zero_point) * scale``: the same arithmetic as the converter's calibration and
    :func:`beeaudio.core.inference.quantize`. Active in training and inference alike.
    """

    def __init__(self, *, minimum: float, maximum: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.minimum = float(min(minimum, 0.0))
        self.maximum = float(max(maximum, 0.0))
        if not self.maximum > self.minimum:
            raise ValueError(f"empty input range [{minimum}, {maximum}]")
        self.scale = (self.maximum - self.minimum) / 255.0
        self.zero_point = float(round(-128.0 - self.minimum / self.scale))

    def call(self, inputs):
        q = keras.ops.clip(keras.ops.round(inputs / self.scale) + self.zero_point, -128.0, 127.0)
        return (q - self.zero_point) * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "minimum": self.minimum, "maximum": self.maximum}


def input_range(features: np.ndarray) -> tuple[float, float]:
    """The range an int8 converter calibrated on ``features`` gives the input tensor (it includes 0)."""
    values = np.asarray(features, dtype=np.float32)
    return float(min(values.min(), 0.0)), float(max(values.max(), 0.0))


def load_model(path) -> keras.Model:
    """``keras.models.load_model`` with this module's layers registered (importing it registers them)."""
    return keras.models.load_model(path)


def without_input_quantization(model: keras.Model) -> keras.Model:
    """The same layers and weights without a leading :class:`InputQuantization` (for int8 conversion,
    where the runtime's input quantisation does the rounding). Models are single chains of layers."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], InputQuantization):
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="features")
    x = inputs
    for layer in layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def integer_export_model(model: keras.Model) -> keras.Model:
    """The model to convert to full-integer int8: without the leading :class:`InputQuantization` (the
    runtime's input quantisation rounds the same way) and with the ``Normalization`` folded into the
    following ``Dense`` layer (``W' = W / std`` per input, ``b' = b - (mean / std) @ W``).

    Folding matters: as separate int8 SUB and MUL ops, the per-feature means and scales are themselves
    quantised with one scale for all 52 features and the standardised values are rounded again, which
    moved outputs by up to ~0.16 on the synthetic data; folded, only the dense weights are quantised.
    A ``Normalization`` followed by anything else (the CNN's Conv1D with zero padding) is kept as is.
    """
    model = without_input_quantization(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if (
        len(layers) < 2
        or not isinstance(layers[0], keras.layers.Normalization)
        or not isinstance(layers[1], keras.layers.Dense)
    ):
        return model
    normalize, dense = layers[0], layers[1]
    mean = np.asarray(normalize.mean, dtype=np.float64).reshape(-1)
    std = np.sqrt(np.asarray(normalize.variance, dtype=np.float64).reshape(-1))
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in dense.get_weights())
    folded = keras.layers.Dense(
        kernel.shape[1], activation=dense.activation, name=f"{dense.name}_folded", dtype="float32"
    )
    inputs = keras.Input(shape=model.input_shape[1:], name="features")
    x = folded(inputs)
    folded.set_weights(
        [(kernel / std[:, None]).astype(np.float32), (bias - (mean / std) @ kernel).astype(np.float32)]
    )
    for layer in layers[2:]:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def _input(train_features: np.ndarray, input_range: tuple[float, float] | None):
    """The model's input, the tensor after the optional InputQuantization, and the Normalization layer,
    adapted on the training features as that tensor holds them (rounded): a feature that varies by less
    than one grid step has a tiny raw variance, and standardising rounded values by it would blow single
    steps up into huge jumps."""
    inputs = keras.Input(shape=train_features.shape[1:], name="features")
    if input_range is None:
        return inputs, inputs, _normalization(train_features)
    lo, hi = input_range
    layer = InputQuantization(minimum=lo, maximum=hi, name=INPUT_QUANTIZATION_LAYER)
    seen = np.asarray(layer(np.asarray(train_features, dtype=np.float32)))
    return inputs, layer(inputs), _normalization(seen, min_std=layer.scale)


def build_dnn(
    *,
    train_features: np.ndarray,
    n_classes: int,
    layers: int = 3,
    units: int = 128,
    dropout: float = 0.2,
    input_range: tuple[float, float] | None = None,
) -> keras.Model:
    """Feed-forward network over a window's MFCC-statistics vector (Zgank 2021: MFCC + DNN).

    ``layers`` hidden ReLU layers of ``units`` each, dropout after each, softmax output. The default
    (3 × 128 over 52 features) has ~41 k parameters: ~45 KB as an int8 bundle.
    """
    if train_features.ndim != 2:
        raise ValueError(
            f"dnn takes (n, features) vectors ('stats' representation), got {train_features.shape}"
        )
    if layers < 1 or units < 1:
        raise ValueError(f"dnn needs layers >= 1 and units >= 1, got layers={layers}, units={units}")
    inputs, x, normalize = _input(train_features, input_range)
    x = normalize(x)
    for i in range(layers):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i + 1}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i + 1}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"dnn_{layers}x{units}")


def build_cnn(
    *,
    train_features: np.ndarray,
    n_classes: int,
    layers: int = 2,
    units: int = 32,
    dropout: float = 0.2,
    input_range: tuple[float, float] | None = None,
) -> keras.Model:
    """Small 1-D convolutional net over MFCC × time (frames × coefficients, 'frames' representation).

    ``layers`` blocks of Conv1D(``units``, 5) + max-pooling along time, then global average pooling (so
    the model does not care about the window's exact length) and a softmax layer.
    """
    if train_features.ndim != 3:
        raise ValueError(
            f"cnn takes (n, frames, coefficients) ('frames' representation), got {train_features.shape}"
        )
    if layers < 1 or units < 1:
        raise ValueError(f"cnn needs layers >= 1 and units >= 1, got layers={layers}, units={units}")
    inputs, x, normalize = _input(train_features, input_range)
    x = normalize(x)
    for i in range(layers):
        x = keras.layers.Conv1D(units, 5, padding="same", activation="relu", name=f"conv_{i + 1}")(x)
        x = keras.layers.MaxPooling1D(2, name=f"pool_{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="average")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"cnn_{layers}x{units}")


def build_model(
    *,
    kind: str,
    train_features: np.ndarray,
    n_classes: int,
    layers: int,
    units: int,
    dropout: float,
    input_range: tuple[float, float] | None = None,
) -> keras.Model:
    """``build_dnn`` or ``build_cnn`` by name."""
    settings = {"n_classes": n_classes, "layers": layers, "units": units, "dropout": dropout}
    if kind == "dnn":
        return build_dnn(train_features=train_features, input_range=input_range, **settings)
    if kind == "cnn":
        return build_cnn(train_features=train_features, input_range=input_range, **settings)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")


def _normalization(train_features: np.ndarray, *, min_std: float = 1e-3) -> keras.layers.Normalization:
    """Standardise each feature (the last axis; for 'frames' pooled over time, so the CNN's normalisation
    does not depend on the position within the window). Standard deviations are floored at ``min_std`` —
    one input grid step for quantised inputs — so a feature that (nearly) never changes in training does
    not turn a one-step change at inference into an enormous activation."""
    values = np.asarray(train_features, dtype=np.float64).reshape(-1, train_features.shape[-1])
    mean = values.mean(axis=0)
    variance = np.maximum(values.var(axis=0), min_std**2)
    return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalize")
