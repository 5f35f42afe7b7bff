"""The hives' side of the demo: each recorder's spool folder, each device agent's configuration, and the
agents themselves, run through the ``beeaudio device`` CLI exactly as on a hive."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from beeaudio.collector.launch import tail
from beeaudio.desktop.demo.errors import DemoError
from beeaudio.desktop.demo.plan import ApiaryPlan, DemoHive, spool_name
from beeaudio.desktop.demo.render import recording_path
from beeaudio.device.config import CollectorSection, DeviceConfig, DeviceSection, SourceSection, write_config

CONFIG_HEADER = "Written by `beeaudio demo`: one hive's device agent, working off its spool folder."


@dataclass(frozen=True)
class DeviceJob:
    """One hive's device agent: its configuration file and the log its commands write."""

    hive: DemoHive
    config: Path
    log_path: Path


def spool_folder(*, run: Path, hive: DemoHive) -> Path:
    return run / "spool" / hive.hive_id


def stage_spool(
    *, plan: ApiaryPlan, hive: DemoHive, audio: Path, run: Path, times: Sequence[datetime]
) -> Path:
    """Fill the hive's spool folder with its rendered recordings, named and dated by ``times``."""
    spool = spool_folder(run=run, hive=hive)
    spool.mkdir(parents=True)
    for i, start in enumerate(times):
        finished = start + timedelta(seconds=plan.recording_seconds)
        source = recording_path(audio=audio, hive=hive, index=i)
        _place_recording(source, spool / spool_name(start), finished=finished)
    return spool


def _place_recording(source: Path, target: Path, *, finished: datetime) -> None:
    """Put a cached recording into a spool folder as the recorder would have left it."""
    # The agent archives or deletes what it has processed: a hard link keeps the cached original intact.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    # Agents work off a backlog oldest file first (by modification time), as a recorder leaves it.
    stamp = finished.timestamp()
    os.utime(target, (stamp, stamp))


def device_config(*, hive: DemoHive, token: str, api_url: str, spool: Path, state: Path) -> DeviceConfig:
    """The device agent's configuration for one demo hive (options: ``device/device.example.toml``)."""
    return DeviceConfig(
        device=DeviceSection(device_id=hive.device_id, hive_id=hive.hive_id, state_dir=state),
        collector=CollectorSection(
            url=api_url,
            token=token,
            batch_size=500,
            # The demo installs its model directly; the collector publishes none.
            ota_poll_interval_s=0.0,
        ),
        source=SourceSection(
            kind="spool",
            path=spool,
            after="archive",
            # The files are complete when the demo links them in: no need to wait for a recorder to finish.
            settle_seconds=0.0,
        ),
    )


def prepare_device(*, run: Path, hive: DemoHive, token: str, api_url: str) -> DeviceJob:
    """Write the hive's device configuration (mode 0600: it holds the device token) into its state folder."""
    state = run / "devices" / hive.hive_id
    state.mkdir(parents=True)
    config = device_config(
        hive=hive, token=token, api_url=api_url, spool=spool_folder(run=run, hive=hive), state=state
    )
    path = write_config(
        path=state / "device.toml", config=config, header=CONFIG_HEADER, include_defaults=False
    )
    return DeviceJob(hive=hive, config=path, log_path=run / "logs" / f"device-{hive.hive_id}.log")


def _cli(*args: str) -> list[str]:
    # -P: the current folder never shadows the installed package.
    return [sys.executable, "-P", "-m", "beeaudio.cli", *args]


def _run_device(job: DeviceJob, model: Path) -> str | None:
    """Install the model on one hive's device, then work off its spool folder once; the failure, if any."""
    with job.log_path.open("wb") as sink:
        for command in (
            _cli("device", "install-model", str(model), "--config", str(job.config)),
            _cli("device", "run", "--config", str(job.config), "--once"),
        ):
            code = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT)
            if code != 0:
                return f"{job.hive.name}: `beeaudio device {command[4]}` exit code {code}, log {job.log_path}"
    return None


def run_devices(*, jobs: Sequence[DeviceJob], model: Path, progress: bool) -> None:
    """Every hive's device agent, as many at a time as there are CPU cores."""
    from tqdm import tqdm

    failures = []
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc="device agents", unit="hive", disable=not progress, leave=False) as bar,
    ):
        for job, failure in zip(jobs, pool.map(lambda job: _run_device(job, model), jobs), strict=True):
            bar.update(1)
            if failure:
                failures.append(f"{failure}:\n{tail(job.log_path)}")
    if failures:
        raise DemoError("device agents failed:\n" + "\n".join(failures))
