"""The house as drawn: rooms keep their import boundaries, the packaging matches the folders, and nothing
generic (``device``, ``service``) is installed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.fixtures.layout import Room, rooms, violations


def test_no_room_imports_what_it_must_not() -> None:
    problems = violations(room_list=rooms(repo=REPO_ROOT))
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_the_contract_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The check above can fail: a core module that imports the desktop side, lazily, is reported."""
    core = tmp_path / "beeaudio" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "features.py").write_text("def f():\n    from beeaudio.desktop.synth import render_timeline\n")
    (core / "inference.py").write_text("import numpy as np\nfrom beeaudio.core import features\n")
    device = tmp_path / "device"
    device.mkdir()
    (device / "agent.py").write_text("import tensorflow as tf\nfrom beeaudio.collector import db\n")
    room_list = [r for r in rooms(repo=tmp_path) if r.name in ("beeaudio.core", "beeaudio.device")]
    problems = violations(room_list=room_list)
    assert len(problems) == 3, problems
    assert any("beeaudio.core.features imports beeaudio.desktop.synth" in p for p in problems)
    assert any("beeaudio.device.agent imports tensorflow" in p for p in problems)
    assert any("beeaudio.device.agent imports beeaudio.collector" in p for p in problems)


def test_a_rooms_exception_is_narrow(tmp_path: Path) -> None:
    desktop = tmp_path / "beeaudio" / "desktop"
    (desktop / "demo").mkdir(parents=True)
    (desktop / "demo" / "run.py").write_text(
        "from beeaudio.device.client import CollectorClient\nfrom beeaudio.device import agent\n"
    )
    (desktop / "synth.py").write_text("from beeaudio.device.client import CollectorClient\n")
    room = next(r for r in rooms(repo=tmp_path) if r.name == "beeaudio.desktop")
    problems = violations(room_list=[room])
    assert len(problems) == 2, problems  # the demo's agent import, and the synth's client import
    assert any("beeaudio.desktop.demo.run imports beeaudio.device.agent" in p for p in problems)
    assert any("beeaudio.desktop.synth imports beeaudio.device.client" in p for p in problems)


def _packages(pyproject: Path) -> list[str]:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]


def _package_folders(room: Room) -> set[str]:
    found = set()
    for root in room.paths:
        if root.is_dir():
            for init in root.rglob("__init__.py"):
                if "build" in init.relative_to(root).parts:
                    continue
                rel = init.parent.relative_to(root).parts
                found.add(".".join([room.name, *rel]))
    return found


def test_the_distributions_list_every_package_folder() -> None:
    folders = {"beeaudio"} | set().union(*(_package_folders(r) for r in rooms(repo=REPO_ROOT)))
    assert sorted(_packages(REPO_ROOT / "pyproject.toml")) == sorted(folders)
    # The hive device's distribution: the edge core and the agent, nothing of the desktop or the collector.
    assert sorted(_packages(REPO_ROOT / "device" / "pyproject.toml")) == [
        "beeaudio",
        "beeaudio.core",
        "beeaudio.device",
    ]
    root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    edge = tomllib.loads((REPO_ROOT / "device" / "pyproject.toml").read_text())["project"]
    assert edge["version"] == root["version"]
    assert set(root["dependencies"]) <= set(edge["dependencies"]) | {"tqdm>=4.60"}


def test_installed_import_names_are_the_projects_own(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "print([m for m in ('device', 'service') if u.find_spec(m) is not None])\n"
        "import beeaudio.device, beeaudio.collector, beeaudio.core, beeaudio.desktop\n"
    )
    # -P and another folder: what a user's shell sees, not this checkout's folders.
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
