"""Shared fixtures.

Fixtures that need something outside the repository (the real recordings in ``../shared/data/real``, the
PostgreSQL server, the edge virtual environments built by ``.ci/run``, Chromium) skip with a reason on a
user's machine and fail loudly when ``CI=true``, so CI can never pass by skipping them.

Where they are comes from the environment, with the defaults of this project's CI machine:
``BEEAUDIO_REAL_DATA`` (the real recordings), ``BEEAUDIO_CHROMIUM`` (the browser, else ``chromium`` on the
PATH), ``BEEAUDIO_EDGE_PYTHON`` / ``BEEAUDIO_TFLITE214_PYTHON`` (the edge environments).

``pytest -m "not slow"`` is the edit-test loop (under a minute): it leaves out the tests that train or
convert models, run the demo, drive a browser, start a broker, fuzz the API or wait on the wall clock, and
the PostgreSQL copy of every test that runs on both databases (the SQLite copy stays). The whole run
(plain ``pytest``) is what CI and the README run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.bundles", "tests.fixtures.collector", "tests.fixtures.mqtt"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_REAL = Path(os.environ.get("BEEAUDIO_REAL_DATA") or REPO_ROOT.parent / "shared" / "data" / "real")


def chromium_path() -> Path | None:
    """The Chromium the browser tests drive: ``$BEEAUDIO_CHROMIUM``, else ``chromium`` on the PATH."""
    found = (
        os.environ.get("BEEAUDIO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    return Path(found) if found else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing outside CI; fail in CI, where it must be present."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``$BEEAUDIO_REAL_DATA`` or ``../shared/data/real``: a few real hive recordings (MIT), read in place,
    never copied."""
    require(SHARED_REAL.is_dir(), f"the real recordings are not at {SHARED_REAL}")
    return SHARED_REAL


#: Fixtures that train or convert models (TensorFlow, seconds to tens of seconds) or start a broker: a
#: test that uses one is slow.
SLOW_FIXTURES = frozenset(
    {"tiny_run", "tiny_bundle", "tiny_bundle_float32", "bundle", "bundle_f32", "model_bundles", "broker"}
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # The PostgreSQL copy of a both-databases test: the fast loop keeps its SQLite copy.
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.slow)
