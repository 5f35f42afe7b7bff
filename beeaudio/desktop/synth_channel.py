"""SYNTHETIC microphones, hive bodies and recorders for the generator's ``wide`` variation.

The ``default`` variation gives every hive its own random microphone (an EQ tilt, a resonance, a high-pass
corner, a gain) from one continuous range, so a model trained on a few hives has already seen microphones
like any new one. Real fleets are not like that: a project buys one kind of microphone, another project
another kind, and the kinds differ more than units of one kind. The ``wide`` variation draws each hive's
microphone from a **family** (:data:`MICROPHONE_FAMILIES`), each with its own frequency response, self-noise,
pick-up of airborne sound and, for one family, automatic gain control; a unit varies within its family
(corner frequencies, resonance, a smooth ±2 dB ripple). It adds the **hive body** (a few damped resonances
of the box, comb and cluster that colour the colony's sound before it reaches any microphone) and an
**installer's gain** (each recorder set so the colony's daytime sound sits 20-38 dB under full scale, as a
person setting up a recorder leaves headroom; the default variation's loudest hives sit in its soft limiter).

What the families stand for (ranges are plausible for the kind, not measured on any product):

* ``electret`` — a cheap electret capsule in the hive (the Open Source Beehives sensor kind): a gentle
  first-order low cut at 60-150 Hz (its coupling capacitor) and a damped peak at 600-1500 Hz from the
  capsule behind its mesh;
* ``mems`` — an I2S MEMS microphone (ESP32 / Pi builds): flat, but a steep high-pass at 90-220 Hz from its
  port and the DC filter, so the colony's fundamental is cut;
* ``piezo`` — a piezo disc on a frame or wall: a strong, narrow mechanical resonance at 350-900 Hz and a
  steep loss below 150-300 Hz, little airborne sound, more self-noise;
* ``accelerometer`` — a vibration sensor on the hive wall: low-passed at 250-500 Hz, a wall mode at
  120-300 Hz, almost no airborne sound;
* ``usb`` — a USB headset or phone microphone: telephone band (high-pass 200-320 Hz, low-pass ~3.4 kHz), a
  mid-range peak, automatic gain control (which flattens slow level changes), high self-noise;
* ``condenser`` — a measurement-grade condenser: flat from 20 Hz, quiet.

All of it is linear filtering except self-noise, automatic gain control and background pick-up, which is
the point: per-hive cepstral mean normalisation removes a fixed linear filter exactly (up to the mel
smoothing), and nothing else. Only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = [
    "FAMILY_NAMES",
    "MICROPHONE_FAMILIES",
    "Channel",
    "MicrophoneFamily",
    "automatic_gain",
    "body_db",
    "draw_channel",
    "response_db",
]

#: Octave points (Hz) of a unit's smooth response ripple.
_RIPPLE_HZ = (62.5, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


@dataclass(frozen=True)
class MicrophoneFamily:
    """A kind of microphone: the ranges its units are drawn from (``(low, high)``; Hz, dB, octaves)."""

    name: str
    highpass_hz: tuple[float, float]
    highpass_order: int  # 1: 6 dB/octave below the corner, 2: 12 dB/octave, ...
    lowpass_hz: tuple[float, float] | None
    lowpass_order: int
    resonance_hz: tuple[float, float]
    resonance_db: tuple[float, float]
    resonance_octaves: tuple[float, float]
    tilt_db_per_octave: tuple[float, float]
    noise_floor_dbfs: tuple[float, float]  # self-noise + converter, RMS over the full band
    airborne_db: (
        float  # pick-up of sound from outside the colony (wind, birds, voices, mains) vs a mic in air
    )
    agc_seconds: float = 0.0  # time constant of automatic gain control (0: none)


MICROPHONE_FAMILIES: Mapping[str, MicrophoneFamily] = MappingProxyType(
    {
        f.name: f
        for f in (
            MicrophoneFamily("electret", (60.0, 150.0), 1, None, 2, (600.0, 1500.0), (3.0, 8.0),
                             (0.4, 0.8), (-1.0, 1.0), (-80.0, -70.0), 0.0),
            MicrophoneFamily("mems", (90.0, 220.0), 2, None, 2, (2000.0, 6000.0), (0.0, 4.0),
                             (0.5, 1.0), (-0.5, 0.5), (-85.0, -75.0), 0.0),
            MicrophoneFamily("piezo", (150.0, 300.0), 2, None, 2, (350.0, 900.0), (10.0, 18.0),
                             (0.15, 0.35), (-2.0, 0.0), (-72.0, -62.0), -15.0),
            MicrophoneFamily("accelerometer", (20.0, 50.0), 1, (250.0, 500.0), 2, (120.0, 300.0),
                             (3.0, 8.0), (0.2, 0.5), (-0.5, 0.5), (-78.0, -68.0), -20.0),
            MicrophoneFamily("usb", (200.0, 320.0), 3, (3000.0, 3600.0), 4, (800.0, 2000.0), (3.0, 8.0),
                             (0.4, 0.8), (-1.0, 1.0), (-70.0, -60.0), 3.0, agc_seconds=3.0),
            MicrophoneFamily("condenser", (10.0, 25.0), 2, None, 2, (4000.0, 8000.0), (0.0, 2.0),
                             (0.5, 1.0), (-0.3, 0.3), (-92.0, -85.0), 0.0),
        )
    }
)  # fmt: skip
#: The families in a fixed order (the generator deals them out to hives round-robin).
FAMILY_NAMES: tuple[str, ...] = tuple(MICROPHONE_FAMILIES)


@dataclass(frozen=True)
class Channel:
    """One hive's microphone unit, the hive body it sits in, and its recorder's level settings."""

    family: str
    highpass_hz: float
    highpass_order: int
    lowpass_hz: float  # inf: none
    lowpass_order: int
    resonance_hz: float
    resonance_db: float
    resonance_octaves: float
    tilt_db_per_octave: float
    ripple_db: tuple[float, ...]  # at _RIPPLE_HZ, interpolated in log frequency
    body_hz: tuple[float, ...]
    body_db: tuple[float, ...]
    body_octaves: tuple[float, ...]
    noise_floor_dbfs: float
    airborne_db: float
    agc_seconds: float
    target_dbfs: float  # the installer's level: RMS of the colony's normal daytime sound


def draw_channel(*, rng: np.random.Generator, family: str) -> Channel:
    """A unit of ``family`` with its hive body and level, from ``rng`` (deterministic for a given stream)."""
    if family not in MICROPHONE_FAMILIES:
        raise ValueError(f"unknown microphone family {family!r}; families: {', '.join(FAMILY_NAMES)}")
    f = MICROPHONE_FAMILIES[family]

    def log_uniform(bounds: tuple[float, float]) -> float:
        return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))

    n_body = 3
    return Channel(
        family=family,
        highpass_hz=log_uniform(f.highpass_hz),
        highpass_order=f.highpass_order,
        lowpass_hz=log_uniform(f.lowpass_hz) if f.lowpass_hz is not None else math.inf,
        lowpass_order=f.lowpass_order,
        resonance_hz=log_uniform(f.resonance_hz),
        resonance_db=float(rng.uniform(*f.resonance_db)),
        resonance_octaves=float(rng.uniform(*f.resonance_octaves)),
        tilt_db_per_octave=float(rng.uniform(*f.tilt_db_per_octave)),
        ripple_db=tuple(float(x) for x in rng.normal(0.0, 1.0, len(_RIPPLE_HZ)).clip(-2.0, 2.0)),
        # The box, the comb and the cluster: damped modes between 150 Hz and 1.5 kHz.
        body_hz=tuple(log_uniform((150.0, 1500.0)) for _ in range(n_body)),
        body_db=tuple(float(x) for x in rng.uniform(-6.0, 8.0, n_body)),
        body_octaves=tuple(float(x) for x in rng.uniform(0.15, 0.5, n_body)),
        noise_floor_dbfs=float(rng.uniform(*f.noise_floor_dbfs)),
        airborne_db=f.airborne_db,
        agc_seconds=f.agc_seconds,
        target_dbfs=float(rng.uniform(-38.0, -20.0)),
    )


def _peak(f: np.ndarray, centre: float, db: float, octaves: float) -> np.ndarray:
    return db * np.exp(-0.5 * (np.log2(f / centre) / octaves) ** 2)


def response_db(*, channel: Channel, freqs: np.ndarray) -> np.ndarray:
    """The microphone's response (dB, without gain) at ``freqs`` (Hz, > 0)."""
    f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)
    out = channel.tilt_db_per_octave * np.log2(f / 400.0)
    out += _peak(f, channel.resonance_hz, channel.resonance_db, channel.resonance_octaves)
    # Butterworth magnitudes: -10 log10(1 + (fc/f)^(2n)) below the high-pass corner, and so above the
    # low-pass one.
    out -= 10.0 * np.log10(1.0 + (channel.highpass_hz / f) ** (2 * channel.highpass_order))
    if math.isfinite(channel.lowpass_hz):
        out -= 10.0 * np.log10(1.0 + (f / channel.lowpass_hz) ** (2 * channel.lowpass_order))
    out += np.interp(np.log2(f), np.log2(_RIPPLE_HZ), channel.ripple_db)
    return out


def body_db(*, channel: Channel, freqs: np.ndarray) -> np.ndarray:
    """The hive body's colouring (dB) of the colony's sound at ``freqs``."""
    f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)
    out = np.zeros_like(f)
    for centre, db, octaves in zip(channel.body_hz, channel.body_db, channel.body_octaves, strict=True):
        out += _peak(f, centre, db, octaves)
    return out


def automatic_gain(*, audio: np.ndarray, sample_rate: int, seconds: float, target_dbfs: float) -> np.ndarray:
    """A recorder's automatic gain control: the signal divided by its RMS over the last ~``seconds``
    (a causal moving window), times the target level, the gain limited to ±30 dB. Slow level changes (the
    day, a swarm getting louder) are flattened; changes faster than the window (bursts) are kept."""
    x = np.asarray(audio, dtype=np.float64)
    width = max(1, round(seconds * sample_rate))
    power = np.concatenate([[0.0], np.cumsum(x * x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - width)
    mean_power = (power[idx] - power[lo]) / (idx - lo)
    target = 10.0 ** (target_dbfs / 20.0)
    gain = target / np.sqrt(np.maximum(mean_power, 1e-20))
    gain = np.clip(gain, 10.0 ** (-30 / 20), 10.0 ** (30 / 20))
    return x * gain
