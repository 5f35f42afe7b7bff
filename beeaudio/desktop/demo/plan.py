"""What the demo generates: the apiary (its hives, which of them swarm, when each recorded what) and the
recipe of the model it trains. Plain values and pure functions: nothing here renders, trains or starts.

Each hive's recorder is duty-cycled: ``recording_seconds`` of audio every ``interval_minutes`` over the last
``hours``, ending "now". A swarming hive sounds normal until ``swarm_at`` of the way through the timeline,
then swarms until the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from beeaudio import __version__

#: Bumped when the demo changes how it renders audio or trains, so old caches are not reused.
DEMO_CACHE_VERSION = 1
#: The demo's hives are drawn from synth seeds far from the training set's, so the model hears new hives.
DEMO_SEED_BASE = 7_000


def digest(payload: Any) -> str:
    """A short, stable key of a JSON-able value: names the cache folders."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiaryPlan:
    """How the synthetic apiary sounds and when its hives recorded (see the module docstring)."""

    hives: int = 4
    swarming: int = 1
    seed: int = 1
    hours: float = 6.0
    recording_seconds: float = 20.0
    interval_minutes: float = 10.0
    swarm_at: float = 0.7
    sample_rate: int = 8000

    def __post_init__(self) -> None:
        if self.hives < 1:
            raise ValueError("the demo needs at least one hive")
        if not 0 <= self.swarming <= self.hives:
            raise ValueError(f"swarming must be between 0 and hives ({self.hives}), got {self.swarming}")
        if (
            self.hours <= 0
            or self.recording_seconds <= 0
            or self.interval_minutes * 60 < self.recording_seconds
        ):
            raise ValueError("hours and recording_seconds must be positive, recordings may not overlap")
        if not 0.0 < self.swarm_at < 1.0:
            raise ValueError("swarm_at must be a fraction of the timeline in (0, 1)")

    @property
    def recordings(self) -> int:
        return max(1, round(self.hours * 60 / self.interval_minutes))

    def key(self) -> str:
        return digest({"plan": dataclasses.asdict(self), "cache": DEMO_CACHE_VERSION})


@dataclass(frozen=True)
class DemoHive:
    index: int
    hive_id: str
    name: str
    device_id: str
    hive_seed: int
    swarms: bool

    @property
    def expected_state(self) -> str:
        return "swarm" if self.swarms else "normal"


@dataclass(frozen=True)
class ModelRecipe:
    """The training set and training run behind the demo's model; its digest keys the model cache."""

    # Many hives, little audio each: what generalises to an unseen colony is having heard many colonies
    # (8 hives x 3 recordings scored ~65 % on held-out hives, 16 x 2 scores ~96-98 %).
    synth_hives: int = 16
    synth_recordings_per_class: int = 2
    synth_seconds: float = 15.0
    synth_seed: int = 11
    #: The model's own rate: recording training data any higher only costs resampling time.
    synth_sample_rate: int = 8000
    layers: int = 2
    units: int = 32
    epochs: int = 60
    patience: int = 10
    train_seed: int = 3
    # float32: at this size the model is a few KB either way, and int8's agreement check (>= 99 % of the
    # held-out windows) is a coin toss for a model trained in a minute.
    quantize: str = "float32"

    def key(self) -> str:
        return digest(
            {"recipe": dataclasses.asdict(self), "cache": DEMO_CACHE_VERSION, "beeaudio": __version__}
        )


def plan_hives(*, plan: ApiaryPlan) -> list[DemoHive]:
    """The apiary's hives; which ones swarm is drawn from the seed. Their sound comes from synth seeds
    the training set does not use, so the model hears hives it was never trained on."""
    import numpy as np

    from beeaudio.desktop.synth import hive_seed as synth_hive_seed

    rng = np.random.default_rng(plan.seed)
    swarming = (
        set(rng.choice(plan.hives, size=plan.swarming, replace=False).tolist()) if plan.swarming else set()
    )
    return [
        DemoHive(
            index=i + 1,
            hive_id=f"demo-hive-{i + 1}",
            name=f"Hive {i + 1}",
            device_id=f"demo-device-{i + 1}",
            hive_seed=synth_hive_seed(seed=DEMO_SEED_BASE + plan.seed, index=i),
            swarms=i in swarming,
        )
        for i in range(plan.hives)
    ]


def recording_segments(*, plan: ApiaryPlan, hive: DemoHive, index: int) -> list[tuple[str, float]]:
    """What recording ``index`` of ``hive`` contains: (label, seconds) segments, in order."""
    if not hive.swarms:
        return [("normal", plan.recording_seconds)]
    step = plan.interval_minutes * 60
    swarm_from = plan.swarm_at * plan.recordings * step
    start = index * step
    if start + plan.recording_seconds <= swarm_from:
        return [("normal", plan.recording_seconds)]
    if start >= swarm_from:
        return [("swarm", plan.recording_seconds)]
    return [("normal", swarm_from - start), ("swarm", start + plan.recording_seconds - swarm_from)]


def recording_times(*, plan: ApiaryPlan, now: datetime) -> list[datetime]:
    """Start times of the recordings, oldest first; the last one ends just before ``now``."""
    step = timedelta(minutes=plan.interval_minutes)
    # Recordings start on the minute, like a recorder on a cron schedule: each one's windows then fall in
    # one rollup bucket of the collector instead of straddling two.
    last = (now - timedelta(seconds=plan.recording_seconds + 5)).replace(second=0, microsecond=0)
    return [last - step * (plan.recordings - 1 - i) for i in range(plan.recordings)]


def spool_name(start: datetime) -> str:
    """File name a recorder would give a recording that starts at ``start`` (UTC)."""
    return start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + ".wav"


def expected_windows(*, plan: ApiaryPlan, feature_config: Any) -> int:
    """Analysis windows in one recording: what one device sends per file."""
    from beeaudio.core.features import window_starts

    n_samples = round(plan.recording_seconds * feature_config.sample_rate)
    return len(window_starts(n_samples=n_samples, config=feature_config))
