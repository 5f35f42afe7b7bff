"""The apiary's audio: every recording of every hive rendered once by the synth and cached by the plan."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from beeaudio.core.fsio import write_json
from beeaudio.desktop.demo.plan import ApiaryPlan, DemoHive, recording_segments


def recording_path(*, audio: Path, hive: DemoHive, index: int) -> Path:
    """Where :func:`render_apiary` keeps recording ``index`` of ``hive`` under its folder ``audio``."""
    return audio / hive.hive_id / f"rec-{index:04d}.wav"


def _render_one(job: tuple[ApiaryPlan, DemoHive, int, Path]) -> Path:
    # A module-level function with one tuple argument: what a process pool can pickle and map.
    from beeaudio.core.audio import write_wav
    from beeaudio.desktop.synth import render_timeline

    plan, hive, index, path = job
    # The day/night level cycle follows a timeline that ends in the afternoon.
    hour = (16.0 - (plan.recordings - 1 - index) * plan.interval_minutes / 60.0) % 24.0
    audio = render_timeline(
        hive_seed=hive.hive_seed,
        segments=recording_segments(plan=plan, hive=hive, index=index),
        sample_rate=plan.sample_rate,
        seed=plan.seed * 1_000_003 + hive.index * 10_007 + index,
        hour=hour,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_wav(path, audio=audio, sample_rate=plan.sample_rate)


def render_apiary(*, plan: ApiaryPlan, hives: Sequence[DemoHive], cache: Path, progress: bool) -> Path:
    """Render every hive's recordings once into ``cache/apiary-<key>/<hive_id>/rec-NNNN.wav``."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    folder = cache / f"apiary-{plan.key()}"
    done = folder / "complete.json"
    if done.is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    jobs = [
        (plan, hive, i, recording_path(audio=folder, hive=hive, index=i))
        for hive in hives
        for i in range(plan.recordings)
    ]
    with ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for _ in tqdm(
            pool.map(_render_one, jobs, chunksize=4),
            total=len(jobs),
            desc="render apiary",
            unit="rec",
            disable=not progress,
            leave=False,
        ):
            pass
    # Written last: a run interrupted mid-render leaves no marker, and the next run renders again.
    write_json(done, {"plan": dataclasses.asdict(plan), "recordings": len(jobs)})
    return folder
