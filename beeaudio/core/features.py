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
    "delta",
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
            if not low <= getattr(self, name) <= high:
                raise ValueError(
                    f"FeatureConfig.{name} {getattr(self, name)} is outside {low}..{high}, what a device serves"
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
        if self.hop_seconds < wire.MIN_HOP_SECONDS:
            raise ValueError(
                f"FeatureConfig.hop_seconds {self.hop_seconds:g} s is shorter than {wire.MIN_HOP_SECONDS:g} s: "
                f"more than {1 / wire.MIN_HOP_SECONDS:g} windows (and events) per second of audio"
            )
        if self.window_samples < self.n_fft:
            raise ValueError(
                f"window_seconds {self.window_seconds} s ({self.window_samples} samples) is shorter than one"
                f" FFT frame (n_fft={self.n_fft})"
            )
        fft_samples = self.frames_per_window * self.n_fft
        if fft_samples > wire.MAX_WINDOW_FFT_SAMPLES:
            raise ValueError(
                f"a window of {self.window_seconds:g} s holds {self.frames_per_window} FFT frames of {self.n_fft}"
                f" samples ({fft_samples} in all), more than the {wire.MAX_WINDOW_FFT_SAMPLES} a device computes"
                " one window with: raise hop_length or shorten the window"
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


def _features_of_windows(cepstra: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """cepstra (windows, frames, n_mfcc) -> (windows, *feature_shape); deltas within each window."""
    parts = [cepstra]
    parts.extend(delta(features=cepstra, order=order, axis=1) for order in range(1, config.deltas + 1))
    stacked = np.concatenate(parts, axis=-1)
    if config.representation == "stats":
        return np.concatenate([stacked.mean(axis=1), stacked.std(axis=1)], axis=-1)
    return stacked


def window_features(*, audio: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Features of every analysis window: (n_windows, *config.feature_shape) float32.

    Windows start at 0 and every ``hop_seconds``; a trailing part shorter than a window is dropped. Each
    window is computed from its own samples only, so the device, which sees one window at a time, gets
    exactly what training saw.
    """
    signal = _as_signal(audio)
    starts = window_start_samples(n_samples=signal.size, config=config)
    out = np.empty((starts.size, *config.feature_shape), dtype=np.float32)
    if starts.size == 0:
        return out
    frame_offsets = _frame_starts(config.window_samples, config)
    all_frames = np.lib.stride_tricks.sliding_window_view(signal, config.n_fft)
    # A bounded number of windows per FFT batch keeps memory flat on long recordings.
    batch = max(1, 4096 // frame_offsets.size)
    for first in range(0, starts.size, batch):
        chunk = starts[first : first + batch]
        frames = all_frames[chunk[:, None] + frame_offsets[None, :]]  # (b, frames, n_fft)
        out[first : first + chunk.size] = _features_of_windows(_mfcc_of_frames(frames, config), config)
    return out


def level_dbfs(*, audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS); -120 for silence."""
    signal = np.asarray(audio, dtype=np.float64).ravel()
    if signal.size == 0:
        return LEVEL_FLOOR_DBFS
    rms = math.sqrt(float(np.mean(signal * signal)))
    if rms <= 0.0 or not math.isfinite(rms):
        return LEVEL_FLOOR_DBFS
    return max(LEVEL_FLOOR_DBFS, 20.0 * math.log10(rms))
