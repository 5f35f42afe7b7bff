"""Shared fixtures.

Fixtures that need something outside the repository (the real recordings in ``../shared/data/real``, the
PostgreSQL server, the edge virtual environments built by ``.ci/run``) skip with a reason on a user's
machine and fail loudly when ``CI=true``, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.bundles", "tests.fixtures.collector"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_REAL = REPO_ROOT.parent / "shared" / "data" / "real"


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
    """``../shared/data/real``: a few real hive recordings (MIT), read in place, never copied."""
    require(SHARED_REAL.is_dir(), f"the real recordings are not at {SHARED_REAL}")
    return SHARED_REAL
