"""Signal checks before the model: is there usable audio in this window at all?

A dead or unplugged microphone, a recorder dropping samples, a gain set so high that the input clips, or a
failing preamplifier pinned off-centre all still give the model numbers to classify, and it will answer
with confidence. :func:`check_window` looks at one window of decoded mono samples *at the model's rate*
(after resampling, as the device and ``classify`` see them) and returns a :class:`SignalQuality`: the
measures, and a verdict from :data:`beeaudio.core.wire.QUALITIES` — the first problem that applies, worst
first (``no_signal``, ``dropout``, ``clipped``, ``dc_offset``), else ``ok``. Windows that are not ``ok`` are
no evidence of any hive state.

The thresholds live in :class:`QualityConfig`; the comments there say what each was measured against.
Imports only numpy: a hive device runs this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from beeaudio.core import wire

__all__ = ["QualityConfig", "SignalQuality", "check_window"]

#: Level reported for a window without any variation (digital silence, a constant value).
SILENT_DBFS = -120.0
_CONFIG_FIELDS = (
    "level_floor_dbfs", "min_dropout_seconds", "zero_relative", "zero_tolerance", "max_edge_zero_fraction",
    "clip_level", "max_clipped_fraction", "max_dc_offset",
)  # fmt: skip


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the signal checks (amplitudes relative to full scale, 1.0).

    * ``level_floor_dbfs = -70``: below it a window is ``no_signal``. The level is the RMS after removing
      the window's mean, so a constant offset is not mistaken for sound. A colony is loud: the quietest
      windows of the real Open Source Beehives clips sit at -20 dBFS, the outdoor flight-buzz clip at
      -40 dBFS, and the synthetic generator's quietest hive at night at -41 dBFS. A dead microphone input
      leaves the converter's own noise, -90 to -100 dBFS on 16-bit recorders (one step is -90 dBFS), and a
      powered preamplifier with nothing plugged in a hiss around -80 dBFS. -70 dBFS is 30 dB under any
      colony we have heard and 10 dB over an idle input.
    * ``min_dropout_seconds = 0.005``, ``zero_relative = 0.001``, ``zero_tolerance = 1e-5``: a run of at
      least 5 ms of samples within 0.1 % of the window's RMS of zero (60 dB below its level; never less
      than 1e-5) in a live window is a ``dropout``. Exactly zero is what a recorder writes for lost
      buffers, but soxr does not keep exact zeros: resampled to 8 kHz, a 50 ms run of zeros from 16 kHz
      keeps no run of more than two exact zeros (residues around 1e-8), and how much of it stays under a
      fixed 1e-5 depends on the level, because the filter's ringing into the gap scales with the signal
      (a 20 ms dropout at -45 dBFS keeps 10-12 ms under 1e-5, at -8 dBFS only 0.5-1.6 ms). Relative to
      the window's level it does not: measured from 16, 22.05, 44.1 and 48 kHz at -45, -24 and -8 dBFS, a
      20 ms dropout keeps 7-12 ms within 0.1 % of the RMS (a 15 ms one 3-9 ms, at 8 kHz all of it), while
      the same live hum-plus-noise never stays there for more than one sample. So dropouts of 20 ms and
      more are caught from any rate (shorter ones at the model's own rate). 60 dB, not less: a quiet
      pause 40-50 dB under a window's level is sound (a room, a distant hum), not a lost buffer.
    * ``max_edge_zero_fraction = 0.25``: a run of zeros that touches the window's first or last sample is
      the start or end of a recording, which recorders and converters pad with zeros (the real Open
      Source Beehives "Pre-Swarm" clip starts with 63 ms of them), not a lost buffer: it counts as a
      dropout only beyond a quarter of the window. A dropout shorter than the hop between windows is
      inside some window anyway (windows overlap), so only dropouts at a file's very edges go unflagged.
    * ``clip_level = 0.99`` and ``max_clipped_fraction = 0.01``: a window with more than 1 % of its
      samples at or beyond 99 % of full scale is ``clipped``. Hard-clipped flat tops survive resampling
      only in part, as ringing plateaus around full scale: measured with soxr on hum-plus-noise clipped
      at the source, 16 kHz -> 8 kHz keeps 29 % clipped samples as 18 % at >= 0.99 and 1.2 % as 0.18 %;
      44.1 kHz -> 8 kHz keeps 41 % as 28 % and 1.2 % as none (the flat tops' harmonics are what the
      low-pass removes). A loud signal that does not clip has only isolated peaks there (a hum-plus-noise
      signal normalised to a 0.95 peak has none at >= 0.99 after resampling). So a gain set too high is
      caught, a single clipped transient (a bee bumping the microphone) is not; it changes the 100-1000
      Hz features little. A pure tone normalised to full scale also counts as clipped: no hive sounds so.
    * ``max_dc_offset = 0.2``: a window whose mean is beyond +-0.2 has a ``dc_offset``. Converters with
      AC-coupled inputs sit within +-0.01; handling rumble below a few Hz moves a 2 s window's mean further
      (up to 0.09 in the synthetic generator, which models both). 0.2 (-14 dBFS) is a microphone bias or a
      preamplifier failing, and it costs a fifth of the headroom.
    """

    level_floor_dbfs: float = -70.0
    min_dropout_seconds: float = 0.005
    zero_relative: float = 0.001
    zero_tolerance: float = 1e-5
    max_edge_zero_fraction: float = 0.25
    clip_level: float = 0.99
    max_clipped_fraction: float = 0.01
    max_dc_offset: float = 0.2

    def __post_init__(self) -> None:
        for name in _CONFIG_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"QualityConfig.{name} must be a finite number, got {value!r}")
        if not SILENT_DBFS < self.level_floor_dbfs < 0.0:
            raise ValueError(f"level_floor_dbfs must be in ({SILENT_DBFS:g}, 0), got {self.level_floor_dbfs}")
        if not 0.0 <= self.zero_tolerance < 0.01:
            raise ValueError(f"zero_tolerance must be in [0, 0.01), got {self.zero_tolerance}")
        if not 0.0 <= self.zero_relative < 0.5:
            raise ValueError(f"zero_relative must be in [0, 0.5), got {self.zero_relative}")
        if not 0.0 < self.max_edge_zero_fraction <= 1.0:
            raise ValueError(f"max_edge_zero_fraction must be in (0, 1], got {self.max_edge_zero_fraction}")
        if self.min_dropout_seconds <= 0.0:
            raise ValueError(f"min_dropout_seconds must be positive, got {self.min_dropout_seconds}")
        if not 0.5 <= self.clip_level <= 1.0:
            raise ValueError(f"clip_level must be in [0.5, 1], got {self.clip_level}")
        if not 0.0 <= self.max_clipped_fraction < 1.0:
            raise ValueError(f"max_clipped_fraction must be in [0, 1), got {self.max_clipped_fraction}")
        if not 0.0 < self.max_dc_offset < 1.0:
            raise ValueError(f"max_dc_offset must be in (0, 1), got {self.max_dc_offset}")


@dataclass(frozen=True)
class SignalQuality:
    """The measures of one window and the verdict (:data:`beeaudio.core.wire.QUALITIES`)."""

    verdict: str
    #: RMS level after removing the window's mean (dBFS; a full-scale square wave is 0).
    level_dbfs: float
    #: Largest absolute sample (resampling can overshoot 1.0 on clipped input).
    peak: float
    #: Share of samples at or beyond ``clip_level`` of full scale.
    clipped_fraction: float
    #: The window's mean.
    dc_offset: float
    #: Longest run of (near-)zero samples inside the window (not touching its edges), in seconds.
    longest_zero_run_s: float
    #: Longest run of (near-)zero samples at the window's start or end, in seconds.
    edge_zero_run_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == wire.QUALITY_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "level_dbfs": round(self.level_dbfs, 2),
            "peak": round(self.peak, 5),
            "clipped_fraction": round(self.clipped_fraction, 5),
            "dc_offset": round(self.dc_offset, 5),
            "longest_zero_run_s": round(self.longest_zero_run_s, 4),
            "edge_zero_run_s": round(self.edge_zero_run_s, 4),
        }


def _zero_runs(mask: np.ndarray) -> tuple[int, int]:
    """Longest run of True inside a 1-D boolean array and longest touching either end, in samples."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return 0, 0
    steps = np.diff(where)
    if where.size == 1 or steps.min() > 1:
        # Live sound's usual case, isolated near-zero samples (zero crossings): every run is one sample
        # long, found without the general case's dozen array operations.
        last = mask.size - 1
        at_edge = int(where[0] == 0) + int(where[-1] == last)
        return int(where.size > at_edge), int(at_edge > 0)
    # Runs from the positions of the (in live sound, few) True samples: a run ends where they jump.
    breaks = np.flatnonzero(steps != 1)
    starts = where[np.concatenate(([0], breaks + 1))]
    stops = where[np.concatenate((breaks, [where.size - 1]))] + 1
    lengths = stops - starts
    at_edge = (starts == 0) | (stops == mask.size)
    inside = int(lengths[~at_edge].max()) if (~at_edge).any() else 0
    edge = int(lengths[at_edge].max()) if at_edge.any() else 0
    return inside, edge


def check_window(
    *, samples: np.ndarray, sample_rate: int, config: QualityConfig = QualityConfig()
) -> SignalQuality:
    """Measure one window of mono samples (float, full scale 1.0) at ``sample_rate`` and give the verdict:
    the first of ``no_signal``, ``dropout``, ``clipped``, ``dc_offset`` that applies, else ``ok``."""
    x = np.asarray(samples)
    if x.dtype != np.float32:  # the decoder's windows are float32: measured as they are, no copy
        x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples must be a mono 1-D array, got shape {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    # The sums in float64 (one copy); the rest is exact in the samples' own type. Seven passes over the
    # window where a pass per measure took eleven: this runs on every window of the device.
    wide = x if x.dtype == np.float64 else x.astype(np.float64)
    # A finite sum means finite samples (one pass instead of isfinite's two), unless huge float64 values
    # overflowed it: then each sample is looked at.
    total = float(np.sum(wide)) if x.size else math.nan
    if not math.isfinite(total) and (x.size == 0 or not np.all(np.isfinite(wide))):
        # The decoder refuses non-finite audio; a caller passing it anyway gets no signal, not a crash.
        return SignalQuality(wire.QUALITY_NO_SIGNAL, SILENT_DBFS, 0.0, 0.0, 0.0, 0.0, x.size / sample_rate)
    if math.isfinite(total):
        mean = total / x.size
        # The variance as E[x^2] - mean^2: in float64 the cancellation costs nothing a level in dB can
        # show (a 0.2 offset under -70 dBFS of sound loses 11 of 16 digits).
        rms = math.sqrt(max(0.0, float(np.dot(wide, wide)) / x.size - mean * mean))
    else:  # finite samples whose sum overflowed: the two-pass way
        mean = float(wide.mean())
        rms = float(np.std(wide))
    level = max(SILENT_DBFS, 20.0 * math.log10(rms)) if rms > 0.0 else SILENT_DBFS
    magnitude = np.abs(x)
    peak = float(magnitude.max())
    clipped = np.count_nonzero(magnitude >= config.clip_level) / x.size if peak >= config.clip_level else 0.0
    near_zero = magnitude <= max(config.zero_tolerance, config.zero_relative * rms)
    inside, edge = _zero_runs(near_zero)
    zero_run_s, edge_run_s = inside / sample_rate, edge / sample_rate
    if level < config.level_floor_dbfs:
        verdict = wire.QUALITY_NO_SIGNAL
    elif zero_run_s >= config.min_dropout_seconds or edge > config.max_edge_zero_fraction * x.size:
        verdict = wire.QUALITY_DROPOUT
    elif clipped > config.max_clipped_fraction:
        verdict = wire.QUALITY_CLIPPED
    elif abs(mean) > config.max_dc_offset:
        verdict = wire.QUALITY_DC_OFFSET
    else:
        verdict = wire.QUALITY_OK
    return SignalQuality(
        verdict=verdict,
        level_dbfs=float(level),
        peak=peak,
        clipped_fraction=clipped,
        dc_offset=mean,
        longest_zero_run_s=float(zero_run_s),
        edge_zero_run_s=float(edge_run_s),
    )
