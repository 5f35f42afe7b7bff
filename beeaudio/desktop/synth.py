"""SYNTHETIC beehive recordings: a deterministic, seeded generator of in-hive sound for tests and benchmarks.

Nothing this module writes is a real recording, and every dataset it writes says so (``README.txt``, the
``synthetic`` column of ``manifest.csv``). It exists so that the whole pipeline (training, export, the
device, the collector) can be exercised and measured without shipping gigabytes of field audio, and so that
grouped evaluation can be studied on data whose ground truth is known. Numbers measured on it are numbers
about this generator, not about bees.

What it draws on (published in-hive acoustics; see ``data/README.md`` for references):

* **Colony hum** — the summed wing and thorax vibration of thousands of workers: a fundamental near
  200–300 Hz (Ferrari et al. 2008; Cejrowski et al. 2018; Zgank 2021) with harmonics falling off above,
  broadened by the spread of individual wing-beat frequencies, with slow level changes over the day
  (activity is higher by day, lower at night; Cecchi et al. 2018).
* **Swarming** — in the hours before a swarm the hum rises in level and the energy moves up towards
  300–600 Hz; the sound gets rougher, with more amplitude modulation and a less steady pitch (Ferrari et
  al. 2008, "a shift of the fundamental and an increase of the power above 300 Hz"; Zlatkova et al. 2020).
* **Queen piping** — a virgin queen's "tooting": a ~1 s pulse followed by a run of shorter ~0.25 s pulses
  near 400–500 Hz with harmonics, answered by "quacking" (shorter, lower pulses) (Michelsen et al. 1986;
  Ramsey et al. 2017).
* **Queenless colonies** — a "roar": a broader, noisier, more irregular spectrum than a queenright colony
  (Ruvinga et al. 2021; Terenzi et al. 2020).

and adds what makes real recordings hard: **per-hive** differences (fundamental, harmonic weights, colony
size and loudness, how each state shows in that colony), **per-microphone** differences (a random EQ tilt
and resonance, high-pass corner, gain, DC, low-frequency handling rumble), **background** (wind: low-passed
noise gusts; rain: clicks; birds: chirps at 2–5 kHz; speech-like formant bursts; mains hum at 50/60 Hz with
harmonics; an electronic noise floor) and **day/night** level changes.

Two **variations** (``SynthConfig.variation``): ``default`` (the benchmark every published figure was
measured on; unchanged) and ``wide``, which draws colonies from wider ranges (fundamental 110–360 Hz, as the
real recordings in ``../shared/data/real`` and the other colonies we heard span), colours each colony by its
hive body, and gives each hive a microphone from one of a few discrete **families** with distinct frequency
responses, self-noise, pick-up of outside sound and (one family) automatic gain control, recorded at an
installer's gain with headroom (:mod:`beeaudio.desktop.synth_channel`). The manifest's ``microphone``
column names each recording's family (``default`` datasets: one microphone per hive, ``<hive>-mic``), so
an evaluation can hold out whole families.

The generator is tuned (``data/README.md`` has the measured numbers and the command) so that the hive-to-hive
spread of any single band's level is larger than the difference between states — a one-band energy
threshold learned on some hives fails on others, as it does on real recordings (``../shared/data/real``) —
while the whole spectral and temporal pattern (harmonic line width, pitch steadiness, modulation, level
changes, pulses) still separates the states, so a model has to learn that pattern.

Only numpy is imported (plus ``tqdm`` inside :func:`generate_dataset`): generation is vectorised, a 30 s
16 kHz recording takes a fraction of a second.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from beeaudio.desktop.synth_channel import (
    FAMILY_NAMES,
    Channel,
    automatic_gain,
    body_db,
    draw_channel,
    response_db,
)

__all__ = [
    "CLASSES",
    "FAMILY_NAMES",
    "MANIFEST_COLUMNS",
    "VARIATIONS",
    "HiveProfile",
    "StateProfile",
    "SynthConfig",
    "generate_dataset",
    "hive_profile",
    "hive_seed",
    "microphone_of",
    "render_recording",
    "render_timeline",
]

log = logging.getLogger(__name__)

#: Every state the generator can render.
CLASSES = ("normal", "swarm", "queenless", "piping")
#: Columns of the ``manifest.csv`` a synthetic dataset carries (paths are relative to the manifest).
MANIFEST_COLUMNS = (
    "path", "label", "hive", "recording", "start_s", "end_s", "synthetic", "seed", "microphone",
)  # fmt: skip
#: How widely hives, microphones and channels vary (see the module docstring).
VARIATIONS = ("default", "wide")
#: Rate (Hz) of the slowly varying control signals (pitch, modulation, state mix) that drive the audio.
CONTROL_RATE = 200
#: Reference level (dBFS) of a median colony's hum before per-hive, per-state and day/night offsets.
BASE_LEVEL_DBFS = -32.0
#: Highest harmonic frequency of the hum that is synthesised (the feature band ends at 1 kHz).
MAX_HARMONIC_HZ = 3000.0
#: Timelines longer than this are rendered in blocks (bounded memory) joined by short crossfades.
BLOCK_SECONDS = 60.0
_CROSSFADE_SECONDS = 0.5
_README = """SYNTHETIC DATA — NOT REAL BEEHIVE RECORDINGS

Every WAV file in this folder was generated by beeaudio.desktop.synth (the beeaudio synthetic hive generator),
seeded and deterministic: the same configuration and seed give the same files. It imitates published
in-hive acoustics (colony hum near 200-300 Hz with harmonics, the higher, rougher, modulated sound of a
swarming colony, queen piping, a queenless roar) with per-hive, per-microphone, background-noise and
day/night variation, but it is not bee sound. Accuracy measured on it says how well a model learns this
generator, not how well it would work on a real hive.

Configuration: {config}
Layout: <hive>/<label>_<n>.wav, listed in manifest.csv (columns {columns}; paths relative to it).
"""


# -- configuration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthConfig:
    """Size and seed of a synthetic dataset. The defaults are the project's benchmark: 12 hives × 2 states ×
    4 recordings × 30 s at 16 kHz (48 min of audio, 2784 analysis windows of 2 s every 1 s)."""

    hives: int = 12
    recordings_per_class: int = 4
    seconds: float = 30.0
    sample_rate: int = 16000
    classes: tuple[str, ...] = ("normal", "swarm")
    seed: int = 1
    #: "default" (the benchmark) or "wide" (microphone families, hive bodies, wider colonies).
    variation: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.variation not in VARIATIONS:
            raise ValueError(f"variation must be one of {VARIATIONS}, got {self.variation!r}")
        if self.hives < 1 or self.recordings_per_class < 1:
            raise ValueError("SynthConfig needs at least one hive and one recording per class")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.sample_rate < 4000:
            raise ValueError(f"sample_rate must be at least 4000 Hz, got {self.sample_rate}")
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {CLASSES}, got {self.classes}")


@dataclass(frozen=True)
class StateProfile:
    """How one state sounds in one colony (each colony shows a state its own way)."""

    f0_factor: float  # multiplies the colony's fundamental
    tilt: float  # added to the harmonic roll-off exponent (> 0: energy moves to higher harmonics)
    jitter: float  # fast pitch wander, fraction of f0 (std)
    breadth: float  # phase noise of the harmonics (rad, std): the line width
    am_fast: float  # std of the log-envelope of the fast (1–8 Hz) irregular amplitude modulation
    am_slow: float  # depth of the slow (< 0.3 Hz) level wander
    irregularity: float  # std of each harmonic's own fast (1-8 Hz) log-amplitude fluctuation
    spread: float  # relative spread of the workers' wing-beat frequencies (std): width of the hum's peaks
    tonal_db: float  # level of the coherent (narrow-line) part of the hum relative to the broad part
    level_db: float  # level of the bee sound relative to the colony's normal level
    noise_db: float  # colony noise ("roar") relative to the hum
    noise_centre_hz: float  # centre of the roar band
    noise_width: float  # width of the roar band, in octaves (std of a log-frequency Gaussian)
    piping_db: float = -math.inf  # queen piping level relative to the hum (-inf: none)


@dataclass(frozen=True)
class HiveProfile:
    """One synthetic colony with its microphone and site: all that stays fixed across its recordings."""

    seed: int
    f0: float
    rolloff: float
    harmonic_db: tuple[float, ...]
    level_db: float
    mic_gain_db: float
    mic_tilt_db_per_octave: float
    mic_resonance_hz: float
    mic_resonance_db: float
    mic_resonance_octaves: float
    mic_highpass_hz: float
    mic_dc: float
    rumble_db: float
    mains_hz: float
    mains_db: float
    queen_hz: float
    wind_prob: float
    rain_prob: float
    bird_prob: float
    speech_prob: float
    states: dict[str, StateProfile] = field(compare=False)
    variation: str = "default"
    #: The ``wide`` variation's microphone, hive body and recorder level (None: the default's mic_* draws).
    channel: Channel | None = None

    @property
    def microphone(self) -> str:
        """The microphone family (``wide``), or ``""`` for the default variation's one-off microphones."""
        return self.channel.family if self.channel is not None else ""


def hive_seed(*, seed: int, index: int) -> int:
    """Seed of hive ``index`` in a dataset seeded ``seed`` (the ``hive_seed`` of :func:`render_timeline`)."""
    return _derive(seed, "hive", index)


def _derive(*parts: object) -> int:
    """A stable 63-bit integer from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_derive(*parts))


def hive_profile(*, hive_seed: int, variation: str = "default", microphone: str | None = None) -> HiveProfile:
    """The colony, microphone and site drawn from ``hive_seed``. Each state's profile has its own random
    stream, so adding a state (e.g. ``queenless``) to a dataset leaves the other states' sound unchanged.

    ``variation="wide"`` draws from the wider ranges and gives the hive a microphone of family
    ``microphone`` (drawn from ``hive_seed`` when None); the default variation ignores ``microphone``.
    """
    if variation not in VARIATIONS:
        raise ValueError(f"variation must be one of {VARIATIONS}, got {variation!r}")
    if variation == "wide":
        return _wide_profile(hive_seed=hive_seed, microphone=microphone)
    rng = _rng("hive-profile", hive_seed)
    f0 = float(np.exp(rng.uniform(np.log(170.0), np.log(330.0))))
    n_harm = 24
    states = {name: _state_profile(name=name, rng=_rng("state", hive_seed, name)) for name in CLASSES}
    return HiveProfile(
        seed=hive_seed,
        f0=f0,
        rolloff=float(rng.uniform(0.6, 1.8)),
        harmonic_db=tuple(float(x) for x in rng.normal(0.0, 4.0, n_harm)),
        level_db=float(rng.uniform(-10.0, 10.0)),
        mic_gain_db=float(rng.uniform(-8.0, 8.0)),
        mic_tilt_db_per_octave=float(rng.uniform(-5.0, 5.0)),
        mic_resonance_hz=float(np.exp(rng.uniform(np.log(250.0), np.log(2500.0)))),
        mic_resonance_db=float(rng.uniform(-4.0, 12.0)),
        mic_resonance_octaves=float(rng.uniform(0.2, 0.8)),
        mic_highpass_hz=float(np.exp(rng.uniform(np.log(20.0), np.log(140.0)))),
        mic_dc=float(rng.uniform(-0.02, 0.02)),
        rumble_db=float(rng.uniform(-20.0, 6.0)),
        mains_hz=float(rng.choice([50.0, 60.0])),
        mains_db=float(rng.uniform(-30.0, -8.0)) if rng.random() < 0.5 else -math.inf,
        queen_hz=float(rng.uniform(400.0, 500.0)),
        wind_prob=float(rng.uniform(0.1, 0.6)),
        rain_prob=float(rng.uniform(0.0, 0.3)),
        bird_prob=float(rng.uniform(0.1, 0.7)),
        speech_prob=float(rng.uniform(0.0, 0.3)),
        states=states,
    )


@functools.lru_cache(maxsize=256)
def _wide_profile(*, hive_seed: int, microphone: str | None) -> HiveProfile:
    """The ``wide`` variation: its own random streams (the default's draws are untouched), wider colony
    ranges, a microphone family's unit and the installer's gain (see :func:`_install_gain_db`). Cached:
    the installer's gain costs a short rendering, and every recording of a hive asks for its profile."""
    rng = _rng("hive-profile-wide", hive_seed)
    family = microphone if microphone is not None else FAMILY_NAMES[int(rng.integers(len(FAMILY_NAMES)))]
    channel = draw_channel(rng=_rng("channel", hive_seed, family), family=family)
    states = {
        name: _wide_state_profile(name=name, rng=_rng("state-wide", hive_seed, name)) for name in CLASSES
    }
    profile = HiveProfile(
        seed=hive_seed,
        # Real colonies peak from ~110 Hz (the Open Source Beehives clips: 113-150 Hz) to ~400 Hz.
        f0=float(np.exp(rng.uniform(np.log(110.0), np.log(360.0)))),
        rolloff=float(rng.uniform(0.4, 2.2)),
        harmonic_db=tuple(float(x) for x in rng.normal(0.0, 5.0, 24)),
        level_db=float(rng.uniform(-12.0, 12.0)),
        mic_gain_db=0.0,
        mic_tilt_db_per_octave=0.0,
        mic_resonance_hz=1000.0,
        mic_resonance_db=0.0,
        mic_resonance_octaves=0.5,
        mic_highpass_hz=channel.highpass_hz,
        mic_dc=float(rng.uniform(-0.005, 0.005)),
        rumble_db=float(rng.uniform(-26.0, 0.0)),
        mains_hz=float(rng.choice([50.0, 60.0])),
        mains_db=float(rng.uniform(-40.0, -12.0)) if rng.random() < 0.6 else -math.inf,
        queen_hz=float(rng.uniform(380.0, 520.0)),
        wind_prob=float(rng.uniform(0.1, 0.6)),
        rain_prob=float(rng.uniform(0.0, 0.3)),
        bird_prob=float(rng.uniform(0.1, 0.7)),
        speech_prob=float(rng.uniform(0.0, 0.3)),
        states=states,
        variation="wide",
        channel=channel,
    )
    return replace(profile, mic_gain_db=_install_gain_db(profile))


#: Seconds of the colony's normal sound an installer listens to while setting the recorder's gain.
_INSTALL_SECONDS = 3.0
_INSTALL_RATE = 8000


def _install_gain_db(profile: HiveProfile) -> float:
    """The gain that puts this hive's normal daytime sound (no background) at its channel's target RMS,
    as an installer watching a level meter would set it: the recorder keeps its headroom."""
    assert profile.channel is not None
    rng = _rng("install", profile.seed)
    segments = [("normal", _INSTALL_SECONDS)]
    ctl = _controls(
        hive=profile, segments=segments, sample_rate=_INSTALL_RATE, rng=rng, transition_s=0.0, hour=14.0
    )
    n = round(_INSTALL_SECONDS * _INSTALL_RATE)
    quiet = replace(profile, channel=replace(profile.channel, noise_floor_dbfs=-math.inf, agc_seconds=0.0))
    audio = _render_block(
        hive=quiet, ctl=ctl, start=0, n=n, sample_rate=_INSTALL_RATE, rng=rng, hour=14.0, background=False
    )
    audio = audio - np.mean(audio)
    rms_db = 10.0 * math.log10(max(float(np.mean(audio * audio)), 1e-20))
    return profile.channel.target_dbfs - rms_db


def _state_profile(*, name: str, rng: np.random.Generator) -> StateProfile:
    u = rng.uniform
    normal_noise = float(u(-18.0, -10.0))
    if name == "normal" or name == "piping":
        # A queenright colony at rest: a steady, clean harmonic hum.
        return StateProfile(
            f0_factor=1.0,
            tilt=0.0,
            jitter=float(u(0.002, 0.008)),
            breadth=float(u(0.6, 1.2)),
            am_fast=float(u(0.02, 0.08)),
            am_slow=float(u(0.05, 0.2)),
            irregularity=float(u(0.03, 0.1)),
            spread=float(u(0.06, 0.1)),
            tonal_db=float(u(2.0, 6.0)),
            level_db=0.0,
            noise_db=normal_noise,
            noise_centre_hz=float(np.exp(u(np.log(250.0), np.log(700.0)))),
            noise_width=float(u(0.8, 1.4)),
            piping_db=float(u(-4.0, 4.0)) if name == "piping" else -math.inf,
        )
    if name == "swarm":
        # Higher, louder and rougher: pitch shifts (mostly up), energy moves to higher harmonics and to a
        # 300-600 Hz roar, irregular amplitude bursts, an unsteady pitch.
        return StateProfile(
            f0_factor=float(u(0.92, 1.3)),
            tilt=float(u(0.2, 1.0)),
            jitter=float(u(0.015, 0.035)),
            breadth=float(u(1.5, 3.0)),
            am_fast=float(u(0.45, 0.8)),
            am_slow=float(u(0.1, 0.3)),
            irregularity=float(u(0.4, 0.7)),
            spread=float(u(0.08, 0.14)),
            tonal_db=float(u(0.0, 4.0)),
            level_db=float(u(0.0, 4.0)),
            noise_db=float(u(-12.0, -4.0)),
            noise_centre_hz=float(np.exp(u(np.log(300.0), np.log(600.0)))),
            noise_width=float(u(0.5, 0.9)),
        )
    # queenless: a broad, irregular roar with a wailing, unsteady pitch but no swarm bursts.
    return StateProfile(
        f0_factor=float(u(1.0, 1.2)),
        tilt=float(u(0.0, 0.6)),
        jitter=float(u(0.03, 0.06)),
        breadth=float(u(3.0, 5.0)),
        am_fast=float(u(0.12, 0.25)),
        am_slow=float(u(0.2, 0.4)),
        irregularity=float(u(0.25, 0.45)),
        spread=float(u(0.1, 0.16)),
        tonal_db=float(u(-4.0, 0.0)),
        level_db=float(u(0.0, 5.0)),
        noise_db=float(u(-4.0, 2.0)),
        noise_centre_hz=float(np.exp(u(np.log(250.0), np.log(700.0)))),
        noise_width=float(u(1.0, 1.6)),
    )


def _wide_state_profile(*, name: str, rng: np.random.Generator) -> StateProfile:
    """How each state shows in a ``wide`` colony: the default's states with overlapping ranges. A restless
    colony's normal hum can be rougher and more modulated than a calm colony's swarm, and a swarm's pitch
    may go down (one real colony's swarm clip peaks near 240 Hz, its active clip near 400 Hz), so no
    absolute texture or pitch separates the states across hives; within one colony, the swarm is still
    higher-harmonic, rougher, more modulated, noisier and louder than that colony's normal."""
    u = rng.uniform
    if name == "normal" or name == "piping":
        return StateProfile(
            f0_factor=1.0,
            tilt=0.0,
            jitter=float(u(0.002, 0.016)),
            breadth=float(u(0.6, 2.0)),
            # At most 0.15 and 0.2: the real Open Source Beehives hum varies its level within 2 s about as
            # little as the default's calm colonies do (std of c0 5-7; 11 with up to 0.35; bench/realism.py).
            am_fast=float(u(0.02, 0.15)),
            am_slow=float(u(0.05, 0.3)),
            irregularity=float(u(0.03, 0.2)),
            spread=float(u(0.05, 0.12)),
            tonal_db=float(u(0.0, 6.0)),
            level_db=0.0,
            noise_db=float(u(-20.0, -6.0)),
            noise_centre_hz=float(np.exp(u(np.log(200.0), np.log(800.0)))),
            noise_width=float(u(0.6, 1.5)),
            piping_db=float(u(-4.0, 4.0)) if name == "piping" else -math.inf,
        )
    if name == "swarm":
        return StateProfile(
            f0_factor=float(u(0.85, 1.3)),
            tilt=float(u(0.1, 1.0)),
            jitter=float(u(0.008, 0.035)),
            breadth=float(u(1.2, 3.0)),
            am_fast=float(u(0.15, 0.8)),
            am_slow=float(u(0.1, 0.35)),
            irregularity=float(u(0.2, 0.7)),
            spread=float(u(0.07, 0.15)),
            tonal_db=float(u(-2.0, 4.0)),
            level_db=float(u(-1.0, 5.0)),
            noise_db=float(u(-14.0, -3.0)),
            noise_centre_hz=float(np.exp(u(np.log(280.0), np.log(650.0)))),
            noise_width=float(u(0.5, 1.0)),
        )
    return _state_profile(name=name, rng=rng)


# -- small signal helpers ------------------------------------------------------------------------------
def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFT lengths with small prime factors are fast)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _shaped_noise(rng: np.random.Generator, n: int, sample_rate: float, gain: object) -> np.ndarray:
    """Gaussian noise of ``n`` samples whose amplitude spectrum is ``gain(freqs)``, normalised to unit RMS."""
    m = _fast_len(n)
    spectrum = np.fft.rfft(rng.standard_normal(m))
    freqs = np.fft.rfftfreq(m, 1.0 / sample_rate)
    spectrum *= gain(freqs)  # type: ignore[operator]
    out = np.fft.irfft(spectrum, m)[:n]
    rms = float(np.sqrt(np.mean(out * out)))
    return out / rms if rms > 0 else out


def _lowpass_process(
    rng: np.random.Generator, n: int, rate: float, cutoff: float, low: float = 0.0
) -> np.ndarray:
    """Unit-variance smooth random process (for control signals): noise band-limited to [low, cutoff] Hz."""

    def gain(f: np.ndarray) -> np.ndarray:
        g = 1.0 / np.sqrt(1.0 + (f / cutoff) ** 4)
        if low > 0:
            g = g / np.sqrt(1.0 + (low / np.maximum(f, 1e-9)) ** 4)
        g[0] = 0.0
        return g

    return _shaped_noise(rng, n, rate, gain)


def _db(x: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(x) / 20.0)


# -- control signals -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Controls:
    """Everything slowly varying, at CONTROL_RATE, for the whole timeline (so blocks join seamlessly)."""

    weights: np.ndarray  # (nc, n_states): how much of each state is present
    states: tuple[str, ...]
    f0: np.ndarray  # Hz
    tilt: np.ndarray
    breadth: np.ndarray
    tonal: np.ndarray  # amplitude of the coherent hum relative to the broad colony sound
    log_env: np.ndarray  # natural-log amplitude envelope of the bee sound (modulation + level + day/night)
    phase_noise: np.ndarray  # (n_harm, nc) unit processes
    harmonic_log_amp: np.ndarray  # (n_harm, nc) each harmonic's own log-amplitude fluctuation
    n_harm: int


def _state_weights(
    segments: Sequence[tuple[str, float]], nc: int, transition_s: float
) -> tuple[np.ndarray, tuple[str, ...]]:
    states = tuple(dict.fromkeys(label for label, _ in segments))
    weights = np.zeros((nc, len(states)))
    t = 0.0
    for label, seconds in segments:
        a, b = round(t * CONTROL_RATE), round((t + seconds) * CONTROL_RATE)
        weights[a:b, states.index(label)] = 1.0
        t += seconds
    weights[round(t * CONTROL_RATE) :, states.index(segments[-1][0])] = 1.0
    width = round(transition_s * CONTROL_RATE)
    if width > 1 and len(segments) > 1:
        # Raised-cosine smoothing of the one-hot state path: every change becomes a gradual crossfade of
        # all parameters (a colony works itself up to a swarm over minutes), and the weights still sum to 1.
        kernel = np.hanning(width + 2)[1:-1]
        kernel /= kernel.sum()
        pad = width // 2 + 1
        padded = np.pad(weights, ((pad, pad), (0, 0)), mode="edge")
        smoothed = np.stack(
            [np.convolve(padded[:, j], kernel, mode="same") for j in range(len(states))], axis=1
        )
        weights = smoothed[pad : pad + nc]
        weights /= weights.sum(axis=1, keepdims=True)
    return weights, states


def _controls(
    *,
    hive: HiveProfile,
    segments: Sequence[tuple[str, float]],
    sample_rate: int,
    rng: np.random.Generator,
    transition_s: float,
    hour: float,
) -> _Controls:
    total = sum(s for _, s in segments)
    nc = math.ceil(total * CONTROL_RATE) + 3
    weights, states = _state_weights(segments, nc, transition_s)
    profiles = [hive.states[s] for s in states]

    def mix(attr: str) -> np.ndarray:
        return weights @ np.array([getattr(p, attr) for p in profiles], dtype=np.float64)

    f0_factor, jitter, am_fast, am_slow = mix("f0_factor"), mix("jitter"), mix("am_fast"), mix("am_slow")
    level_db = mix("level_db")
    slow_pitch = _lowpass_process(rng, nc, CONTROL_RATE, 0.15)
    fast_pitch = _lowpass_process(rng, nc, CONTROL_RATE, 6.0, low=0.5)
    f0 = hive.f0 * f0_factor * (1.0 + 0.01 * slow_pitch + jitter * fast_pitch)
    # Irregular bursts (1-8 Hz) in log-amplitude, plus slow level wander, plus the daily activity cycle
    # (about +/-5 dB around the mean, loudest in the early afternoon) for recordings that span hours.
    bursts = _lowpass_process(rng, nc, CONTROL_RATE, 8.0, low=1.0)
    wander = _lowpass_process(rng, nc, CONTROL_RATE, 0.2)
    hours = hour + np.arange(nc) / CONTROL_RATE / 3600.0
    day = 5.0 * np.cos(2 * np.pi * (hours - 14.0) / 24.0)
    log_env = am_fast * bursts - 0.5 * am_fast**2 + am_slow * wander + (level_db + day) * (math.log(10) / 20)
    max_f0 = float(f0.max())
    n_harm = int(
        min(len(hive.harmonic_db), max(1, MAX_HARMONIC_HZ // max_f0), (0.45 * sample_rate) // max_f0)
    )
    phase_noise = np.stack([_lowpass_process(rng, nc, CONTROL_RATE, 20.0) for _ in range(n_harm)])
    flutter = np.stack([_lowpass_process(rng, nc, CONTROL_RATE, 8.0, low=1.0) for _ in range(n_harm)])
    irregularity = mix("irregularity")
    return _Controls(
        weights=weights,
        states=states,
        f0=f0,
        tilt=mix("tilt"),
        breadth=mix("breadth"),
        tonal=weights @ _db(np.array([p.tonal_db for p in profiles])),
        log_env=log_env,
        phase_noise=phase_noise,
        harmonic_log_amp=flutter * irregularity[None, :] - 0.5 * irregularity[None, :] ** 2,
        n_harm=n_harm,
    )


# -- one block of audio ----------------------------------------------------------------------------------
def _interp_matrix(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of control-rate rows (..., nc) at fractional control positions ``pos``."""
    lo = np.minimum(pos.astype(np.int64), values.shape[-1] - 2)
    frac = pos - lo
    return values[..., lo] * (1.0 - frac) + values[..., lo + 1] * frac


def _upsample(values: np.ndarray, start: int, n: int, sample_rate: int) -> np.ndarray:
    """Control-rate rows (..., nc) linearly interpolated to samples ``start .. start+n`` of the audio.

    When the sample rate is a multiple of CONTROL_RATE (8, 16, 48 kHz) this is a broadcast, not a gather:
    the hum's harmonics need one such row each, and this is where generation spends its time."""
    ratio = sample_rate // CONTROL_RATE
    if ratio * CONTROL_RATE != sample_rate or start % ratio:
        return _interp_matrix(values, (start + np.arange(n)) * (CONTROL_RATE / sample_rate))
    first = start // ratio
    count = -(-n // ratio)
    v = values[..., first : first + count + 1]
    if v.shape[-1] < count + 1:
        v = np.concatenate([v, np.repeat(v[..., -1:], count + 1 - v.shape[-1], axis=-1)], axis=-1)
    steps = np.arange(ratio) / ratio
    a, d = v[..., :-1], np.diff(v, axis=-1)
    out = a[..., :, None] + d[..., :, None] * steps
    return out.reshape(*v.shape[:-1], count * ratio)[..., :n]


def _hum(
    hive: HiveProfile, ctl: _Controls, start: int, n: int, sample_rate: int, theta: np.ndarray
) -> np.ndarray:
    """The harmonic hum (unit RMS when steady): harmonic k at k·f0 with per-harmonic phase noise."""
    k = np.arange(1, ctl.n_harm + 1, dtype=np.float64)
    base_db = np.asarray(hive.harmonic_db[: ctl.n_harm])
    # Harmonic amplitudes at control rate: colony roll-off, minus the state's tilt, normalised to unit power.
    log_k = np.log(k)[:, None]
    amps = _db(base_db)[:, None] * np.exp(-(hive.rolloff - ctl.tilt[None, :]) * log_k)
    amps /= np.sqrt(0.5 * np.sum(amps**2, axis=0, keepdims=True))
    amps = amps * np.exp(ctl.harmonic_log_amp)
    phase_noise = ctl.phase_noise * (ctl.breadth[None, :] * np.sqrt(k)[:, None])
    out = np.zeros(n)
    chunk = 32000
    for first in range(0, n, chunk):
        m = min(chunk, n - first)
        phases = k[:, None] * theta[None, first : first + m]
        phases += _upsample(phase_noise, start + first, m, sample_rate)
        out[first : first + m] = np.einsum(
            "ij,ij->j", _upsample(amps, start + first, m, sample_rate), np.cos(phases)
        )
    return out


def _colony_noise(
    rng: np.random.Generator, n: int, sample_rate: int, hive: HiveProfile, state: StateProfile
) -> np.ndarray:
    """The colony's incoherent sound in one state (unit RMS): thousands of workers beating their wings at
    slightly different rates give broad peaks at the harmonics of f0 (width ∝ harmonic × ``spread``),
    over a roar band (log-frequency Gaussian) and a pink floor, at ``state.noise_db`` below the peaks."""
    f0 = hive.f0 * state.f0_factor
    n_harm = int(min(len(hive.harmonic_db), MAX_HARMONIC_HZ // f0, (0.45 * sample_rate) // f0))
    centre, width = state.noise_centre_hz, state.noise_width

    def gain(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)
        comb = np.zeros_like(f)
        for k in range(1, n_harm + 1):
            sigma = k * f0 * state.spread + 4.0
            lo, hi = np.searchsorted(f, [k * f0 - 5 * sigma, k * f0 + 5 * sigma])
            weight = _db(hive.harmonic_db[k - 1]) * k ** -(hive.rolloff - state.tilt) / np.sqrt(sigma)
            comb[lo:hi] += weight * np.exp(-0.5 * ((f[lo:hi] - k * f0) / sigma) ** 2)
        band = np.exp(-0.5 * (np.log2(f / centre) / width) ** 2) + 0.1 * np.sqrt(100.0 / np.maximum(f, 100.0))
        comb /= np.sqrt(np.mean(comb**2)) + 1e-12
        band /= np.sqrt(np.mean(band**2)) + 1e-12
        return (comb + _db(state.noise_db) * band) / np.sqrt(1.0 + (60.0 / f) ** 4)

    return _shaped_noise(rng, n, sample_rate, gain)


def _piping(rng: np.random.Generator, n: int, sample_rate: int, queen_hz: float) -> np.ndarray:
    """Queen piping: a train every 2-5 s of a ~1 s toot then 3-8 short toots (400-500 Hz, rising slightly,
    with harmonics), sometimes answered by lower, shorter quacks. Unit RMS while a pulse sounds."""
    out = np.zeros(n)
    t = float(rng.uniform(0.0, 1.5))
    duration = n / sample_rate
    while t < duration:
        pulses: list[tuple[float, float, float]] = [(t, float(rng.uniform(0.8, 1.2)), queen_hz)]
        cursor = t + pulses[0][1] + float(rng.uniform(0.1, 0.2))
        for _ in range(int(rng.integers(3, 9))):
            length = float(rng.uniform(0.18, 0.3))
            pulses.append((cursor, length, queen_hz * float(rng.uniform(0.98, 1.03))))
            cursor += length + float(rng.uniform(0.08, 0.18))
        if rng.random() < 0.4:  # quacking in reply
            cursor += float(rng.uniform(0.2, 0.6))
            for _ in range(int(rng.integers(2, 6))):
                length = float(rng.uniform(0.08, 0.15))
                pulses.append((cursor, length, queen_hz * float(rng.uniform(0.65, 0.8))))
                cursor += length + float(rng.uniform(0.05, 0.12))
        for start, length, freq in pulses:
            a, b = round(start * sample_rate), min(n, round((start + length) * sample_rate))
            if b <= a:
                continue
            tt = np.arange(b - a) / sample_rate
            sweep = freq * (0.96 + 0.04 * np.minimum(1.0, tt / max(length, 1e-3)))
            phase = 2 * np.pi * np.cumsum(sweep) / sample_rate
            env = np.minimum(1.0, np.minimum(tt, length - tt) / 0.02)
            tone = np.cos(phase) + 0.5 * np.cos(2 * phase) + 0.25 * np.cos(3 * phase)
            out[a:b] += 1.15 * env * tone
        t = cursor + float(rng.uniform(1.0, 3.5))
    return out


def _background(
    rng: np.random.Generator, hive: HiveProfile, n: int, sample_rate: int, hour: float
) -> np.ndarray:
    """Sounds that are not the colony, relative to a unit-RMS hum; independent of the colony's state."""
    out = np.zeros(n)
    nyq = sample_rate / 2
    daytime = 7.0 <= hour % 24 <= 20.0
    if rng.random() < hive.wind_prob:  # wind: low-passed noise in gusts, mostly below 100 Hz
        cutoff = float(rng.uniform(30.0, 100.0))
        wind = _shaped_noise(rng, n, sample_rate, lambda f: 1.0 / (1.0 + (f / cutoff) ** 2))
        gusts = np.interp(
            np.arange(n) / sample_rate * CONTROL_RATE,
            np.arange(math.ceil(n / sample_rate * CONTROL_RATE) + 1),
            _lowpass_process(rng, math.ceil(n / sample_rate * CONTROL_RATE) + 1, CONTROL_RATE, 0.4),
        )
        out += _db(rng.uniform(-15.0, 3.0)) * wind * np.exp(0.6 * gusts - 0.18)
    if rng.random() < hive.rain_prob:  # rain: drops on the hive roof, short decaying clicks
        rate = float(rng.uniform(3.0, 30.0))
        count = rng.poisson(rate * n / sample_rate)
        level = _db(rng.uniform(-12.0, 2.0))
        click_len = max(8, int(0.006 * sample_rate))
        decay = np.exp(-np.arange(click_len) / (0.0015 * sample_rate))
        for start in rng.integers(0, max(1, n - click_len), size=count):
            out[start : start + click_len] += (
                level * rng.lognormal(0.0, 0.5) * decay * rng.standard_normal(click_len)
            )
    if rng.random() < hive.bird_prob * (1.0 if daytime else 0.2):  # birds: chirps sweeping in 2-5 kHz
        for _ in range(int(rng.integers(1, 6))):
            phrase = float(rng.uniform(0.0, n / sample_rate))
            for j in range(int(rng.integers(2, 8))):
                length = float(rng.uniform(0.04, 0.2))
                a = round((phrase + j * rng.uniform(0.1, 0.3)) * sample_rate)
                b = min(n, a + round(length * sample_rate))
                if b <= a:
                    continue
                f_lo = float(rng.uniform(2000.0, 4000.0))
                f_hi = min(0.95 * nyq, f_lo + float(rng.uniform(-800.0, 1500.0)))
                tt = np.arange(b - a) / sample_rate
                freq = np.minimum(f_lo + (f_hi - f_lo) * tt / length, 0.95 * nyq)
                env = np.sin(np.pi * np.clip(tt / length, 0, 1)) ** 2
                out[a:b] += (
                    _db(rng.uniform(-10.0, 4.0)) * env * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
                )
    if rng.random() < hive.speech_prob * (1.0 if daytime else 0.3):  # a beekeeper talking nearby
        for _ in range(int(rng.integers(1, 4))):
            length = float(rng.uniform(0.4, 2.5))
            a = int(rng.integers(0, max(1, n - int(length * sample_rate))))
            b = min(n, a + round(length * sample_rate))
            out[a:b] += _db(rng.uniform(-18.0, -6.0)) * _speech_burst(rng, b - a, sample_rate)
    if math.isfinite(hive.mains_db):  # mains hum: 50/60 Hz with decaying odd and even harmonics
        tt = np.arange(n) / sample_rate
        phase0 = rng.uniform(0, 2 * np.pi)
        hum = sum(
            (0.6**h) * np.cos(2 * np.pi * hive.mains_hz * (h + 1) * tt + (h + 1) * phase0)
            for h in range(6)
            if hive.mains_hz * (h + 1) < nyq
        )
        out += _db(hive.mains_db) * hum
    return out


def _speech_burst(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Speech-like: a glottal pulse train (100-220 Hz, wandering) through 3 formants, in syllables."""
    tt = np.arange(n) / sample_rate
    pitch = float(rng.uniform(100.0, 220.0)) * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * tt))
    phase = np.cumsum(pitch) / sample_rate
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    formants = (rng.uniform(500, 800), rng.uniform(1000, 1800), rng.uniform(2200, 2800))

    def gain(f: np.ndarray) -> np.ndarray:
        return sum(np.exp(-0.5 * ((f - fc) / 80.0) ** 2) * (0.7**i) for i, fc in enumerate(formants)) + 0.02

    m = _fast_len(n)
    spectrum = np.fft.rfft(np.pad(source, (0, m - n))) * gain(np.fft.rfftfreq(m, 1.0 / sample_rate))
    voiced = np.fft.irfft(spectrum, m)[:n]
    syllables = np.sin(np.pi * np.clip(tt * rng.uniform(3.0, 5.0) % 1.0, 0, 1)) ** 2
    voiced *= syllables
    rms = float(np.sqrt(np.mean(voiced**2)))
    return voiced / rms if rms > 0 else voiced


def _microphone(x: np.ndarray, hive: HiveProfile, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The recorder: EQ tilt and a resonance (the mic and its mounting), a high-pass corner, gain, then
    handling rumble below ~30 Hz and a DC offset. A little per-recording variation in placement."""
    if hive.channel is not None:
        return _family_microphone(x, hive, hive.channel, sample_rate, rng)
    n = x.size
    m = _fast_len(n)
    spectrum = np.fft.rfft(x, m)
    f = np.maximum(np.fft.rfftfreq(m, 1.0 / sample_rate), 1.0)
    tilt = hive.mic_tilt_db_per_octave + float(rng.normal(0.0, 0.4))
    eq_db = tilt * np.log2(f / 400.0)
    eq_db += hive.mic_resonance_db * np.exp(
        -0.5 * (np.log2(f / hive.mic_resonance_hz) / hive.mic_resonance_octaves) ** 2
    )
    eq_db = np.clip(eq_db, -30.0, 20.0)
    highpass = 1.0 / np.sqrt(1.0 + (hive.mic_highpass_hz / f) ** 4)
    spectrum *= _db(eq_db + hive.mic_gain_db + float(rng.normal(0.0, 1.0))) * highpass
    spectrum[0] = 0.0
    out = np.fft.irfft(spectrum, m)[:n]
    rumble = _shaped_noise(rng, n, sample_rate, lambda f: 1.0 / (1.0 + (np.maximum(f, 1.0) / 15.0) ** 3))
    bumps = np.exp(2.0 * _lowpass_process(rng, max(8, math.ceil(n / sample_rate * 20)), 20.0, 0.5))
    bumps = np.interp(np.linspace(0, bumps.size - 1, n), np.arange(bumps.size), bumps)
    out += _db(BASE_LEVEL_DBFS + hive.rumble_db) * rumble * bumps / np.mean(bumps)
    out += hive.mic_dc
    return out


def _family_microphone(
    x: np.ndarray, hive: HiveProfile, channel: Channel, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``wide`` variation's recorder: the family unit's response and the installer's gain (with the
    same small per-recording placement changes as the default), rumble, self-noise, DC, and the automatic
    gain control of the families that have it."""
    n = x.size
    m = _fast_len(n)
    spectrum = np.fft.rfft(x, m)
    f = np.maximum(np.fft.rfftfreq(m, 1.0 / sample_rate), 1.0)
    tilt = float(rng.normal(0.0, 0.4))
    eq_db = np.clip(response_db(channel=channel, freqs=f) + tilt * np.log2(f / 400.0), -90.0, 30.0)
    spectrum *= _db(eq_db + hive.mic_gain_db + float(rng.normal(0.0, 1.0)))
    spectrum[0] = 0.0
    out = np.fft.irfft(spectrum, m)[:n]
    rumble = _shaped_noise(rng, n, sample_rate, lambda f: 1.0 / (1.0 + (np.maximum(f, 1.0) / 15.0) ** 3))
    bumps = np.exp(2.0 * _lowpass_process(rng, max(8, math.ceil(n / sample_rate * 20)), 20.0, 0.5))
    bumps = np.interp(np.linspace(0, bumps.size - 1, n), np.arange(bumps.size), bumps)
    out += _db(BASE_LEVEL_DBFS + hive.rumble_db + hive.mic_gain_db) * rumble * bumps / np.mean(bumps)
    if math.isfinite(channel.noise_floor_dbfs):  # self-noise and converter: slightly pink
        hiss = _shaped_noise(
            rng, n, sample_rate, lambda f: 1.0 / np.sqrt(np.sqrt(np.maximum(f, 20.0) / 20.0))
        )
        out += _db(channel.noise_floor_dbfs) * hiss
    if channel.agc_seconds > 0:
        out = automatic_gain(
            audio=out, sample_rate=sample_rate, seconds=channel.agc_seconds, target_dbfs=channel.target_dbfs
        )
    return out + hive.mic_dc


def _colour(x: np.ndarray, sample_rate: int, gain_db: object) -> np.ndarray:
    """``x`` through the linear filter whose magnitude (dB) is ``gain_db(freqs)`` (zero phase)."""
    m = _fast_len(x.size)
    spectrum = np.fft.rfft(x, m)
    spectrum *= _db(gain_db(np.fft.rfftfreq(m, 1.0 / sample_rate)))  # type: ignore[operator]
    return np.fft.irfft(spectrum, m)[: x.size]


def _render_block(
    *,
    hive: HiveProfile,
    ctl: _Controls,
    start: int,
    n: int,
    sample_rate: int,
    rng: np.random.Generator,
    hour: float,
    background: bool,
) -> np.ndarray:
    pos = (start + np.arange(n)) * (CONTROL_RATE / sample_rate)
    f0 = np.interp(pos, np.arange(ctl.f0.size), ctl.f0)
    # Phase of the fundamental: the integral of f0 from the start of the timeline, so blocks line up.
    theta0 = 0.0
    if start:  # the same sum of the same interpolated samples as an unbroken rendering would have made
        before = np.interp(np.arange(start) * (CONTROL_RATE / sample_rate), np.arange(ctl.f0.size), ctl.f0)
        theta0 = 2 * np.pi * float(np.sum(before)) / sample_rate
    theta = theta0 + 2 * np.pi * np.cumsum(f0) / sample_rate
    bee = _hum(hive, ctl, start, n, sample_rate, theta) * np.interp(pos, np.arange(ctl.tonal.size), ctl.tonal)
    for j, name in enumerate(ctl.states):
        w = _interp_matrix(ctl.weights[:, j], pos)
        if float(w.max()) < 1e-4:
            continue
        state = hive.states[name]
        bee += w * _colony_noise(rng, n, sample_rate, hive, state)
        if math.isfinite(state.piping_db):
            bee += w * _db(state.piping_db) * _piping(rng, n, sample_rate, hive.queen_hz)
    bee *= np.exp(np.interp(pos, np.arange(ctl.log_env.size), ctl.log_env))
    channel = hive.channel
    if channel is not None:
        # The wide variation: the hive body colours the colony's sound; the microphone family decides how
        # much outside sound it picks up; the noise floor is the recorder's own (added in the microphone).
        bee = _colour(bee, sample_rate, lambda f: body_db(channel=channel, freqs=f))
        mix = bee
        if background:
            mix = bee + _db(channel.airborne_db) * _background(rng, hive, n, sample_rate, hour)
        return _microphone(mix * _db(BASE_LEVEL_DBFS + hive.level_db), hive, sample_rate, rng)
    mix = bee + (_background(rng, hive, n, sample_rate, hour) if background else 0.0)
    mix += _db(-75.0 - BASE_LEVEL_DBFS - hive.level_db) * rng.standard_normal(n)  # electronic noise floor
    mix *= _db(BASE_LEVEL_DBFS + hive.level_db)
    return _microphone(mix, hive, sample_rate, rng)


def _limit(x: np.ndarray) -> np.ndarray:
    """Soft-limit peaks above 0.9 so rare loud events (rain on the mic, bursts) never wrap or clip hard."""
    y = x.copy()
    over = np.abs(y) > 0.9
    y[over] = np.sign(y[over]) * (0.9 + 0.09 * np.tanh((np.abs(y[over]) - 0.9) / 0.09))
    return y


def render_timeline(
    *,
    hive_seed: int,
    segments: Sequence[tuple[str, float]],
    sample_rate: int,
    seed: int,
    transition_seconds: float = 30.0,
    hour: float = 12.0,
    background: bool = True,
    variation: str = "default",
    microphone: str | None = None,
) -> np.ndarray:
    """SYNTHETIC audio of one colony going through states, e.g. ``[("normal", 600), ("swarm", 300)]``.

    Returns mono float32 at ``sample_rate`` of the segments' total length. Every parameter (pitch, harmonic
    balance, roar, modulation, level) moves between states over ``transition_seconds`` (a raised-cosine
    crossfade centred on each boundary), so a classifier's output rises gradually, as before a real swarm.
    ``hour`` is the local time at the start (drives the day/night level cycle). Long timelines are
    rendered in blocks of BLOCK_SECONDS with continuous control signals, so memory stays bounded.
    ``variation`` and ``microphone`` choose the hive as :func:`hive_profile` does.
    """
    if not segments:
        raise ValueError("render_timeline needs at least one (state, seconds) segment")
    for label, seconds in segments:
        if label not in CLASSES:
            raise ValueError(f"unknown state {label!r}; known: {CLASSES}")
        if not seconds > 0:
            raise ValueError(f"segment {label!r} must last a positive time, got {seconds}")
    if sample_rate < 4000:
        raise ValueError(f"sample_rate must be at least 4000 Hz, got {sample_rate}")
    hive = hive_profile(hive_seed=hive_seed, variation=variation, microphone=microphone)
    rng = _rng("timeline", hive_seed, seed)
    ctl = _controls(
        hive=hive,
        segments=segments,
        sample_rate=sample_rate,
        rng=rng,
        transition_s=transition_seconds,
        hour=hour,
    )
    total = round(sum(s for _, s in segments) * sample_rate)
    block = round(BLOCK_SECONDS * sample_rate)
    if total <= block + round(BLOCK_SECONDS * sample_rate) // 2:
        out = _render_block(
            hive=hive,
            ctl=ctl,
            start=0,
            n=total,
            sample_rate=sample_rate,
            rng=rng,
            hour=hour,
            background=background,
        )
        return _limit(out).astype(np.float32)
    fade = round(_CROSSFADE_SECONDS * sample_rate)
    out = np.zeros(total, dtype=np.float32)
    ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2  # equal power for independent noise
    for start in range(0, total, block):
        a = max(0, start - fade)
        b = min(total, start + block)
        piece = _render_block(
            hive=hive,
            ctl=ctl,
            start=a,
            n=b - a,
            sample_rate=sample_rate,
            rng=_rng("timeline-block", hive_seed, seed, start),
            hour=hour + a / sample_rate / 3600.0,
            background=background,
        )
        if a < start:
            piece[: start - a] *= np.sqrt(ramp[: start - a])
            out[a:start] *= np.sqrt(ramp[::-1][: start - a]).astype(np.float32)
        out[a:b] += piece.astype(np.float32)
    return _limit(out).astype(np.float32)


def render_recording(
    *,
    hive_seed: int,
    label: str,
    seconds: float,
    sample_rate: int,
    seed: int,
    hour: float | None = None,
    variation: str = "default",
    microphone: str | None = None,
) -> np.ndarray:
    """One SYNTHETIC recording of a colony in one state (``label``), as the dataset generator writes it.

    ``hour`` (local time, drives the day/night level) is drawn from ``seed`` when not given.
    """
    if hour is None:
        hour = float(_rng("hour", seed).uniform(0.0, 24.0))
    return render_timeline(
        hive_seed=hive_seed,
        segments=[(label, seconds)],
        sample_rate=sample_rate,
        seed=seed,
        hour=hour,
        variation=variation,
        microphone=microphone,
    )


def microphone_of(*, index: int, variation: str) -> str | None:
    """The microphone family the dataset generator gives hive ``index`` (1-based): the families dealt out
    in turn, so every family has hives as soon as there are as many hives as families; None (no family)
    for the default variation."""
    if variation == "default":
        return None
    return FAMILY_NAMES[(index - 1) % len(FAMILY_NAMES)]


# -- dataset ---------------------------------------------------------------------------------------------
def generate_dataset(*, out: Path, config: SynthConfig, progress: bool = True) -> Path:
    """Write a SYNTHETIC dataset: ``<hive>/<label>_<n>.wav`` (16-bit PCM), ``manifest.csv`` and
    ``README.txt`` (which says the data are synthetic). Returns the manifest's path.

    Recording ``n`` of state ``label`` in hive ``i`` depends only on (config.seed, i, label, n, seconds,
    sample_rate): the same configuration always gives the same files, and growing a dataset (more hives,
    more recordings, more classes) leaves the existing recordings unchanged.
    """
    from tqdm.auto import tqdm

    from beeaudio.core.audio import write_wav
    from beeaudio.core.fsio import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(config.hives)))
    jobs = [
        (h, label, r)
        for h in range(1, config.hives + 1)
        for label in config.classes
        for r in range(1, config.recordings_per_class + 1)
    ]
    rows: list[dict[str, object]] = []
    for h, label, r in tqdm(jobs, desc="synthesising", unit="rec", disable=not progress):
        hive = f"hive{h:0{width}d}"
        rec_seed = _derive(config.seed, "recording", h, label, r)
        family = microphone_of(index=h, variation=config.variation)
        audio = render_recording(
            hive_seed=hive_seed(seed=config.seed, index=h),
            label=label,
            seconds=config.seconds,
            sample_rate=config.sample_rate,
            seed=rec_seed,
            variation=config.variation,
            microphone=family,
        )
        relative = f"{hive}/{label}_{r}.wav"
        write_wav(out / relative, audio=audio, sample_rate=config.sample_rate)
        rows.append(
            {
                "path": relative,
                "label": label,
                "hive": hive,
                "recording": f"{hive}/{label}_{r}",
                "start_s": 0.0,
                "end_s": round(audio.size / config.sample_rate, 6),
                "synthetic": "true",
                "seed": rec_seed,
                # What an evaluation groups by to hold out microphones it has never heard.
                "microphone": family or f"{hive}-mic",
            }
        )
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    write_text_atomic(manifest, buffer.getvalue())
    write_text_atomic(out / "README.txt", _README.format(config=config, columns=",".join(MANIFEST_COLUMNS)))
    log.debug("wrote %d synthetic recordings (%s) to %s", len(rows), config, out)
    return manifest
