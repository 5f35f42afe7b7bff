"""The MFCC front end: one numpy implementation, used for training and on the hive device.

It follows librosa's conventions exactly (Slaney mel scale and Slaney-normalised triangular filters as
``librosa.filters.mel``, power spectrogram of a periodic Hann window, ``center=False``,
``10*log10(max(S, 1e-10))`` without top-dB clipping, orthonormal DCT-II, Savitzky-Golay deltas of width 9
in ``"interp"`` mode), so ``tests/test_features.py`` can hold it to ``librosa.feature.mfcc``. It imports
only numpy, because the device runs this very module without librosa or scipy (and the limits of
:mod:`beeaudio.core.wire`, which bound what a configuration may ask of a device).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from beeaudio.core import wire

__all__ = [
    "DELTA_WIDTH",
    "FEATURE_CONFIG_VERSION",
    "FeatureConfig",
    "FeatureWorkspace",
    "delta",
    "features_of_windows",
    "level_dbfs",
    "mel_filterbank",
    "mfcc",
    "window_features",
    "window_start_samples",
    "window_starts",
]

FEATURE_CONFIG_VERSION = 1
#: Savitzky-Golay window of the deltas (librosa's default ``width``).
DELTA_WIDTH = 9
#: Floor of the power spectrum before the logarithm (librosa's ``amin``): -100 dB.
POWER_FLOOR = 1e-10
#: Level reported for silence or an empty signal.
LEVEL_FLOOR_DBFS = -120.0

_REPRESENTATIONS = ("stats", "frames")
_INT_FIELDS = ("version", "sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "deltas")
_FLOAT_FIELDS = ("fmin", "fmax", "window_seconds", "hop_seconds")


@dataclass(frozen=True)
class FeatureConfig:
    """What the model hears: serialised into every bundle so the device computes the very same features.

    Defaults are chosen for sound inside a beehive:

    * ``sample_rate=8000``: the information is below 1 kHz (the colony's hum sits at 200–300 Hz, a swarming
      colony's broadband roar at 300–600 Hz, queen piping at 400–500 Hz with harmonics), so 8 kHz keeps
      everything the model uses while making decoding, features and storage on a Pi cheap. Every input is
      resampled to it (soxr, in :mod:`beeaudio.core.audio`).
    * ``n_fft=512`` (64 ms at 8 kHz): ~15.6 Hz FFT bins, fine enough to resolve the 100–1000 Hz band into
      24 mel filters without empty ones, and long enough to cover several periods of a 120 Hz hum.
      ``hop_length=256``: 50 % overlap, 32 ms frames, ~61 frames per 2 s window.
    * ``fmin=100``, ``fmax=1000`` (the band): above mains hum (50/60 Hz and its low harmonics) and the
      handling and wind noise real recorders put below 100 Hz; below the ~2–5 kHz low-pass that low-bitrate
      MP3 encoders apply, so MP3 costs the features little (the reference paper lost > 10 % on MP3 with a
      full-band front end); and within the Nyquist frequency (1102.5 Hz) of the 2205 Hz Open Source
      Beehives recorders, so their recordings can be analysed instead of refused.
    * ``n_mels=24``, ``n_mfcc=13``: the classical speech-sized cepstrum, here spent on a 900 Hz band (mel
      filters ~70 Hz wide), which separates hum, roar and piping harmonics; 13 coefficients keep the
      int8 model far under 100 KB.
    * ``deltas=1``: first-order deltas (librosa's width 9, ~290 ms) capture the temporal texture (pulsing,
      piping, level changes) that distinguishes states better than the average spectrum.
    * ``representation="stats"``: per-coefficient mean and standard deviation over a window's frames, the
      input of the reference paper's feed-forward DNN (52 values); ``"frames"`` gives the MFCC × time matrix
      for the CNN.
    * ``window_seconds=2.0``, ``hop_seconds=1.0``: 2 s is the length of the Open Source Beehives labelled
      clips and long enough for stable statistics; windows overlap by half so an event is never split.

    Normalisation (standardising each feature) is not done here: it is learnt from training data and lives
    inside the exported model, so the device needs no extra statistics.
    """

    version: int = FEATURE_CONFIG_VERSION
    sample_rate: int = 8000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 24
    fmin: float = 100.0
    fmax: float = 1000.0
    n_mfcc: int = 13
    deltas: int = 1
    representation: str = "stats"
    window_seconds: float = 2.0
    hop_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"FeatureConfig.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(f"FeatureConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"FeatureConfig.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.version != FEATURE_CONFIG_VERSION:
            raise ValueError(
                f"unknown FeatureConfig version {self.version}"
                f" (this beeaudio knows {FEATURE_CONFIG_VERSION}); upgrade beeaudio to read this model"
            )
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FeatureConfig.{name} must be positive, got {getattr(self, name)}")
        # What a device can serve (beeaudio.core.wire); checked before the filterbank, whose size they bound.
        for name, low, high in (
            ("sample_rate", wire.MIN_SAMPLE_RATE, wire.MAX_SAMPLE_RATE),
            ("n_fft", 1, wire.MAX_N_FFT),
            ("n_mels", 1, wire.MAX_N_MELS),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(
                    f"FeatureConfig.{name} {value} is outside {low}..{high}, what a device serves"
                )
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length {self.hop_length} > n_fft {self.n_fft} would skip samples")
        if not 0.0 <= self.fmin < self.fmax:
            raise ValueError(f"need 0 <= fmin < fmax, got fmin={self.fmin}, fmax={self.fmax}")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(
                f"fmax {self.fmax} Hz is above the Nyquist frequency {self.sample_rate / 2} Hz of sample_rate"
                f" {self.sample_rate}: lower fmax or raise sample_rate"
            )
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} > n_mels {self.n_mels}: the DCT has only n_mels outputs")
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.representation not in _REPRESENTATIONS:
            raise ValueError(f"representation must be one of {_REPRESENTATIONS}, got {self.representation!r}")
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise ValueError("window_seconds and hop_seconds must be positive")
        longest = wire.MAX_FEATURE_WINDOW_SECONDS
        for name in ("window_seconds", "hop_seconds"):
            if getattr(self, name) > longest:
                raise ValueError(
                    f"FeatureConfig.{name} {getattr(self, name):g} s is longer than the {longest:g} s of a "
                    "device's recordings: no recording would hold a window"
                )
        shortest = wire.MIN_HOP_SECONDS
        if self.hop_seconds < shortest:
            raise ValueError(
                f"FeatureConfig.hop_seconds {self.hop_seconds:g} s is shorter than {shortest:g} s: more than "
                f"{1 / shortest:g} windows (and events) per second of audio"
            )
        if self.window_samples < self.n_fft:
            raise ValueError(
                f"window_seconds {self.window_seconds} s ({self.window_samples} samples) is shorter than one"
                f" FFT frame (n_fft={self.n_fft})"
            )
        frames, fft_samples = self.frames_per_window, self.frames_per_window * self.n_fft
        if fft_samples > wire.MAX_WINDOW_FFT_SAMPLES:
            raise ValueError(
                f"a window of {self.window_seconds:g} s holds {frames} FFT frames of {self.n_fft} samples "
                f"({fft_samples} in all), more than the {wire.MAX_WINDOW_FFT_SAMPLES} a device computes one "
                "window with: raise hop_length or shorten the window"
            )
        if self.deltas and self.frames_per_window < DELTA_WIDTH:
            raise ValueError(
                f"deltas need at least {DELTA_WIDTH} frames per window, window_seconds"
                f" {self.window_seconds} s gives {self.frames_per_window}: lengthen the window or set"
                " deltas=0"
            )
        empty = np.flatnonzero(mel_filterbank(config=self).max(axis=1) <= 0)
        if empty.size:
            raise ValueError(
                f"mel filters {empty.tolist()} are empty: {self.n_mels} bands between {self.fmin} and"
                f" {self.fmax} Hz are narrower than the FFT bins ({self.sample_rate / self.n_fft:.1f} Hz);"
                " use fewer n_mels or a larger n_fft"
            )

    # -- derived sizes -------------------------------------------------------------------------------------
    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return max(1, round(self.hop_seconds * self.sample_rate))

    @property
    def frames_per_window(self) -> int:
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    @property
    def features_per_frame(self) -> int:
        return self.n_mfcc * (1 + self.deltas)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        if self.representation == "stats":
            return (2 * self.features_per_frame,)
        return (self.frames_per_window, self.features_per_frame)

    # -- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`. Missing keys take their defaults; unknown keys are an error, because
        they mean a newer front end whose features this one cannot reproduce."""
        if not isinstance(d, dict):
            raise ValueError(f"FeatureConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FeatureConfig keys {unknown} (written by a newer beeaudio?)")
        version = d.get("version", FEATURE_CONFIG_VERSION)
        if version != FEATURE_CONFIG_VERSION:
            raise ValueError(
                f"unknown FeatureConfig version {version!r} (this beeaudio knows {FEATURE_CONFIG_VERSION})"
            )
        return cls(**d)

    def fingerprint(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON: a cache key for computed features."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- Slaney mel scale (librosa.hz_to_mel / mel_to_hz with htk=False) ---------------------------------------
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


@functools.lru_cache(maxsize=32)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each filter has unit area, so band energies do not grow with filter width.
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_filterbank(*, config: FeatureConfig) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float64 weights, equal to ``librosa.filters.mel`` defaults (read-only)."""
    return _filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)


@functools.lru_cache(maxsize=32)
def _dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II rows (scipy ``dct(type=2, norm="ortho")``), first n_mfcc of them."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def _periodic_hann(n_fft: int) -> np.ndarray:
    # Periodic (fftbins=True) as scipy.signal.get_window("hann", n_fft), which librosa's stft uses.
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    window.setflags(write=False)
    return window


def _frame_starts(n_samples: int, config: FeatureConfig) -> np.ndarray:
    if n_samples < config.n_fft:
        return np.zeros(0, dtype=np.int64)
    return np.arange(1 + (n_samples - config.n_fft) // config.hop_length, dtype=np.int64) * config.hop_length


def _mfcc_of_frames(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """frames (..., n_fft) -> (..., n_mfcc) float64."""
    spectrum = np.fft.rfft(frames * _periodic_hann(config.n_fft), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filterbank(config=config).T
    db = 10.0 * np.log10(np.maximum(mel, POWER_FLOOR))
    return db @ _dct_matrix(config.n_mfcc, config.n_mels).T


def _as_signal(audio: np.ndarray) -> np.ndarray:
    signal = np.asarray(audio)
    if signal.ndim != 1:
        raise ValueError(f"audio must be a mono 1-D array, got shape {signal.shape}")
    return signal.astype(np.float64, copy=False)


def mfcc(*, audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """MFCCs of mono audio at ``config.sample_rate``: (n_frames, n_mfcc) float32, frames without centring.

    ``n_frames = 1 + (len(audio) - n_fft) // hop_length``, or 0 when the audio is shorter than one frame.
    """
    signal = _as_signal(audio)
    starts = _frame_starts(signal.size, config)
    if starts.size == 0:
        return np.zeros((0, config.n_mfcc), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(signal, config.n_fft)[:: config.hop_length]
    return _mfcc_of_frames(frames, config).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _savgol_weights(order: int, width: int, positions: tuple[int, ...]) -> np.ndarray:
    """Weights giving the ``order``-th derivative, at ``positions`` (relative to the window centre), of the
    least-squares polynomial of degree ``order`` through ``width`` samples: (len(positions), width)."""
    half = width // 2
    t = np.arange(-half, width - half, dtype=np.float64)
    vander = t[:, None] ** np.arange(order + 1)[None, :]  # (width, order+1)
    coef_of_samples = np.linalg.pinv(vander)  # polynomial coefficients = coef_of_samples @ samples
    # The polynomial has degree == order, so its order-th derivative is the constant order! * c_order,
    # the same at every position (librosa ties polyorder to order).
    weights = np.repeat(math.factorial(order) * coef_of_samples[order][None, :], len(positions), axis=0)
    weights.setflags(write=False)
    return weights


def delta(*, features: np.ndarray, order: int = 1, width: int = DELTA_WIDTH, axis: int = 0) -> np.ndarray:
    """Delta features along ``axis`` (frames), equal to ``librosa.feature.delta(features, width=width,
    order=order, mode="interp", axis=axis)``: a Savitzky-Golay derivative, with the edge frames taken from
    the polynomial fitted to the first/last ``width`` frames instead of padding. Returns float64."""
    x = np.moveaxis(np.asarray(features, dtype=np.float64), axis, 0)
    n = x.shape[0]
    if width < 3 or width % 2 == 0:
        raise ValueError(f"delta width must be an odd integer >= 3, got {width}")
    if order < 1 or order >= width:
        raise ValueError(f"delta order must be in 1..{width - 1}, got {order}")
    if n < width:
        raise ValueError(f"delta needs at least {width} frames, got {n}")
    half = width // 2
    centre = _savgol_weights(order, width, (0,))[0]
    out = np.empty_like(x)
    windows = np.lib.stride_tricks.sliding_window_view(x, width, axis=0)  # (n-width+1, ..., width)
    out[half : n - half] = windows @ centre
    left = _savgol_weights(order, width, tuple(range(-half, 0)))
    right = _savgol_weights(order, width, tuple(range(1, half + 1)))
    out[:half] = np.tensordot(left, x[:width], axes=(1, 0))
    out[n - half :] = np.tensordot(right, x[n - width :], axes=(1, 0))
    return np.moveaxis(out, 0, axis)


def window_start_samples(*, n_samples: int, config: FeatureConfig) -> np.ndarray:
    """First sample (int64) of every analysis window of a signal of ``n_samples`` samples."""
    if n_samples < config.window_samples:
        return np.zeros(0, dtype=np.int64)
    count = 1 + (n_samples - config.window_samples) // config.hop_samples
    return np.arange(count, dtype=np.int64) * config.hop_samples


def window_starts(*, n_samples: int, config: FeatureConfig) -> np.ndarray:
    """Start times (seconds, float64) of the analysis windows of a signal of ``n_samples`` samples."""
    return window_start_samples(n_samples=n_samples, config=config) / config.sample_rate


class FeatureWorkspace:
    """Arrays the batched front end reuses from one call to the next (the widened samples, the spectra).

    The spectra of one FFT batch are ~0.5 MB; written into the same (cache-warm) memory each time instead
    of freshly allocated ones, a minute of audio costs ~3-5 % less (measured: 6.0 against 6.2 ms), which
    is all a workspace is for. Not thread-safe: one per thread (a
    :class:`~beeaudio.core.inference.Classifier` owns one). Arrays only grow, up to what the largest call
    asked of them (``window_features`` of a whole signal widens all of it into the workspace).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape``, the same memory on every call that fits."""
        size = math.prod(shape)
        held = self._arrays.get(name)
        if held is None or held.size < size or held.dtype != dtype:
            held = np.empty(size, dtype=dtype)
            self._arrays[name] = held
        return held[:size].reshape(shape)


#: numpy 2 writes FFTs into a given array; numpy 1.26 (the 32-bit Pi OS stack) allocates its output.
_RFFT_TAKES_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"
#: Windows per FFT call. Beyond 2 windows the cost per window hardly falls (0.122 ms for 1, 0.112 for 2,
#: 0.107 for 64 with the default configuration; on 2026-12-02, interleaved: median 0.121 for 2, 0.108
#: for 8), while the workspace grows with it (~0.4 MB a window; classify_file peaks at 6.8 MB for 8).
_BATCH_WINDOWS = 2


@dataclass(frozen=True)
class _Plan:
    """The batched front end's constants for one configuration (read-only arrays)."""

    window: np.ndarray  # (n_fft,) periodic Hann
    band: slice  # the FFT bins any mel filter weighs: the others are never computed into the mel energies
    mel_pairs: np.ndarray  # (2 * bins in band, n_mels): each bin's weights twice (real, imaginary part)
    dct_t: np.ndarray  # (n_mels, n_mfcc)
    #: (frames, frames) per order: delta() as one matrix product per window; empty for windows longer
    #: than :data:`DELTA_MATRIX_MAX_FRAMES`, whose deltas go through :func:`delta`.
    deltas: tuple[np.ndarray, ...]


#: Longest window (frames) whose deltas are one dense matrix product. The matrix is frames² float64 and
#: cached: 8 MB here, while the longest window a bundle may declare has ~16 000 frames (2 GB).
DELTA_MATRIX_MAX_FRAMES = 1024


@functools.lru_cache(maxsize=16)
def _delta_matrix(order: int, width: int, n: int) -> np.ndarray:
    """(n, n) matrix ``M`` with ``M @ x == delta(features=x, order=order, width=width)`` for x (n, ...)."""
    half = width // 2
    centre = _savgol_weights(order, width, (0,))[0]
    left = _savgol_weights(order, width, tuple(range(-half, 0)))
    right = _savgol_weights(order, width, tuple(range(1, half + 1)))
    matrix = np.zeros((n, n), dtype=np.float64)
    for i in range(half, n - half):
        matrix[i, i - half : i + half + 1] = centre
    matrix[:half, :width] = left
    matrix[n - half :, n - width :] = right
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=16)
def _plan(config: FeatureConfig) -> _Plan:
    weights = mel_filterbank(config=config)
    used = np.flatnonzero(weights.any(axis=0))
    band = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, weights.shape[1])
    mel_pairs = np.repeat(weights[:, band].T, 2, axis=0)
    dct_t = np.ascontiguousarray(_dct_matrix(config.n_mfcc, config.n_mels).T)
    deltas = ()
    if config.frames_per_window <= DELTA_MATRIX_MAX_FRAMES:
        deltas = tuple(
            _delta_matrix(order, DELTA_WIDTH, config.frames_per_window)
            for order in range(1, config.deltas + 1)
        )
    for array in (mel_pairs, dct_t):
        array.setflags(write=False)
    return _Plan(
        window=_periodic_hann(config.n_fft), band=band, mel_pairs=mel_pairs, dct_t=dct_t, deltas=deltas
    )


def _cepstra_of_frames(
    frames: np.ndarray, *, config: FeatureConfig, workspace: FeatureWorkspace
) -> np.ndarray:
    """frames (windows, frames, n_fft) float64 (a strided view) -> cepstra, same leading shape, float64.

    One FFT call over every frame, then only the band's bins. The periodic Hann window is applied there,
    as the 3-tap convolution its spectrum is (``0.5 X[k] - 0.25 (X[k-1] + X[k+1])``, exact to rounding),
    instead of as a pass over every sample of every frame (0.29 of 0.69 ms for the 549 frames of 10 s).
    """
    plan = _plan(config)
    shape = frames.shape[:-1]
    lo, hi = plan.band.start, plan.band.stop
    if lo >= 1 and hi < config.n_fft // 2 + 1:
        if _RFFT_TAKES_OUT:
            spectrum = workspace.array("spectrum", (*shape, config.n_fft // 2 + 1), np.complex128)
            np.fft.rfft(frames, axis=-1, out=spectrum)
        else:
            spectrum = np.fft.rfft(frames, axis=-1)
        # Real and imaginary parts side by side (a float view), copied out of the spectrum: the window's
        # convolution and the squares are then plain float64 arithmetic on a small contiguous array
        # (numpy's complex arithmetic on strided slices is ~3x slower).
        near = np.ascontiguousarray(spectrum.view(np.float64)[..., 2 * (lo - 1) : 2 * (hi + 1)])
        band = near[..., 2:-2] * 0.5
        band -= 0.25 * (near[..., :-4] + near[..., 4:])
    else:  # a band reaching bin 0 or the last bin: the neighbours are mirrored; window in time instead
        windowed = workspace.array("frames", frames.shape, np.float64)
        np.multiply(frames, plan.window, out=windowed)
        band = np.ascontiguousarray(np.fft.rfft(windowed, axis=-1)[..., lo:hi]).view(np.float64)
    band *= band
    # Each filter weighs a bin's squared real and imaginary parts alike: |X|^2 summed inside the product.
    mel = band @ plan.mel_pairs
    np.maximum(mel, POWER_FLOOR, out=mel)
    np.log10(mel, out=mel)
    mel *= 10.0
    return mel @ plan.dct_t


def _as_float64(samples: np.ndarray, *, workspace: FeatureWorkspace) -> np.ndarray:
    """Samples as a contiguous float64 array: the FFT's input type (float32 widens exactly), in the
    workspace unless they already are one."""
    x = np.asarray(samples)
    if x.dtype == np.float64 and x.flags.c_contiguous:
        return x
    out = workspace.array("samples", x.shape, np.float64)
    np.copyto(out, x)
    return out


def _frame_view(signal: np.ndarray, first: int, count: int, step: int, config: FeatureConfig) -> np.ndarray:
    """(count, frames_per_window, n_fft) view of the frames of ``count`` windows starting at sample
    ``first``, ``step`` samples apart (no copy: strides over the signal)."""
    stride = signal.strides[0]
    return np.lib.stride_tricks.as_strided(
        signal[first:],
        shape=(count, config.frames_per_window, config.n_fft),
        strides=(step * stride, config.hop_length * stride, stride),
        writeable=False,
    )


def _features_into(out: np.ndarray, cepstra: np.ndarray, config: FeatureConfig) -> None:
    """cepstra (windows, frames, n_mfcc) -> out (windows, *feature_shape); deltas within each window."""
    parts = [cepstra]
    matrices = _plan(config).deltas
    if matrices or not config.deltas:
        parts.extend(matrix @ cepstra for matrix in matrices)
    else:
        parts.extend(delta(features=cepstra, order=o, axis=1) for o in range(1, config.deltas + 1))
    stacked = np.concatenate(parts, axis=-1) if len(parts) > 1 else cepstra
    if config.representation == "stats":
        width = stacked.shape[-1]
        out[:, :width] = stacked.mean(axis=1)
        out[:, width:] = stacked.std(axis=1)
    else:
        out[...] = stacked


def window_features(
    *, audio: np.ndarray, config: FeatureConfig, workspace: FeatureWorkspace | None = None
) -> np.ndarray:
    """Features of every analysis window: (n_windows, *config.feature_shape) float32.

    Windows start at 0 and every ``hop_seconds``; a trailing part shorter than a window is dropped. Each
    window is computed from its own samples only, so the device, which computes windows apart, gets
    exactly what training saw. ``workspace``: arrays to reuse between calls (see :class:`FeatureWorkspace`).
    """
    if np.ndim(audio) != 1:
        raise ValueError(f"audio must be a mono 1-D array, got shape {np.shape(audio)}")
    workspace = workspace or FeatureWorkspace()
    signal = _as_float64(audio, workspace=workspace)
    starts = window_start_samples(n_samples=signal.size, config=config)
    out = np.empty((starts.size, *config.feature_shape), dtype=np.float32)
    hop = config.hop_samples
    # A bounded number of windows per FFT batch keeps memory flat on long recordings.
    for first in range(0, starts.size, _BATCH_WINDOWS):
        count = min(_BATCH_WINDOWS, starts.size - first)
        frames = _frame_view(signal, int(starts[first]), count, hop, config)
        cepstra = _cepstra_of_frames(frames, config=config, workspace=workspace)
        _features_into(out[first : first + count], cepstra, config)
    return out


def features_of_windows(
    *, windows: np.ndarray, config: FeatureConfig, workspace: FeatureWorkspace | None = None
) -> np.ndarray:
    """Features of separate windows ``(n, window_samples)`` (as :func:`beeaudio.core.audio.iter_windows`
    yields them): ``(n, *config.feature_shape)`` float32, row ``i`` equal to
    ``window_features(audio=windows[i], config=config)[0]``, in one batch."""
    shape = np.shape(windows)
    if len(shape) != 2 or shape[1] != config.window_samples:
        raise ValueError(f"windows must be (n, {config.window_samples}) samples, got shape {shape}")
    workspace = workspace or FeatureWorkspace()
    out = np.empty((shape[0], *config.feature_shape), dtype=np.float32)
    for first in range(0, shape[0], _BATCH_WINDOWS):
        # Widened a few windows at a time: the float64 copy stays as small as the batch.
        chunk = _as_float64(windows[first : first + _BATCH_WINDOWS], workspace=workspace)
        frames = _frame_view(chunk.reshape(-1), 0, chunk.shape[0], config.window_samples, config)
        cepstra = _cepstra_of_frames(frames, config=config, workspace=workspace)
        _features_into(out[first : first + chunk.shape[0]], cepstra, config)
    return out


def level_dbfs(*, audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS); -120 for silence."""
    signal = np.asarray(audio, dtype=np.float64).ravel()
    if signal.size == 0:
        return LEVEL_FLOOR_DBFS
    rms = math.sqrt(float(np.dot(signal, signal)) / signal.size)  # one pass, no squared copy
    if rms <= 0.0 or not math.isfinite(rms):
        return LEVEL_FLOOR_DBFS
    return max(LEVEL_FLOOR_DBFS, 20.0 * math.log10(rms))
