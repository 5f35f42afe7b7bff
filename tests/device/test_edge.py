"""The agent in the ``edge`` virtual environment (only the edge extra: no TensorFlow, no librosa).

``BEEAUDIO_EDGE_PYTHON`` is the environment's python and ``BEEAUDIO_TFLITE214_PYTHON`` the 32-bit Pi OS one
(tflite-runtime 2.14, numpy 1.26), both built by ``.ci/edge-venvs.sh``; locally the test skips without them,
in CI it fails.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import require
from tests.fixtures.device import event_ids_in, run_cli, write_recordings


@pytest.fixture(params=["BEEAUDIO_EDGE_PYTHON", "BEEAUDIO_TFLITE214_PYTHON"])
def edge_python(request) -> str:
    """The edge venv (ai-edge-litert, numpy 2) and the 32-bit Pi OS one (tflite-runtime 2.14, numpy 1.26)."""
    python = os.environ.get(request.param, "")
    require(bool(python) and Path(python).is_file(), f"{request.param} is not set to an edge venv's python")
    return python


def test_agent_runs_in_the_edge_environments(tmp_path, bundle, edge_python):
    state = tmp_path / "state"
    installed = run_cli("device", "install-model", str(bundle), "--state-dir", str(state), python=edge_python)
    assert installed.returncode == 0, installed.stderr

    selftest = run_cli("device", "selftest", "--state-dir", str(state), python=edge_python)
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    assert "checksum and self-test passed" in selftest.stdout
    assert "heavy modules loaded: none" in selftest.stdout
    assert "tensorflow" not in selftest.stdout.split("runtimes installed:")[1].splitlines()[0]

    folder = tmp_path / "recordings"
    files = write_recordings(
        folder=folder, count=2, seconds=6.0, start=datetime(2026, 4, 1, tzinfo=UTC), mp3_every=2
    )
    run = run_cli(
        "device", "run", "--state-dir", str(state), "--once", "--input", str(folder), python=edge_python
    )
    assert run.returncode == 0, run.stderr
    ids = event_ids_in(state / "outbox.sqlite")
    assert len(ids) == len(set(ids)) >= 2 * 4
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in files)  # one-shot inputs stay

    status = run_cli("device", "status", "--state-dir", str(state), "--json", python=edge_python)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["outbox_depth"] == len(ids) and report["files_done"] == 2


def test_a_bundle_that_crashes_the_runtime_is_refused_in_the_edge_environments(tmp_path, bundle, edge_python):
    """On the device's own runtimes: tflite-runtime 2.14 does not verify models and dies on most bundles
    with a few bytes changed; ai-edge-litert dies on a FULLY_CONNECTED without weights. Either way
    install-model and selftest print one line and the installed model stays (run again in another process,
    the runtime may refuse the bundle instead of dying: refused either way)."""
    from beeaudio.core.bundle import BundleError
    from beeaudio.core.sandbox import BundleCrashError, check_bundle_in_child
    from tests.fixtures.device import crashing_bundle, mutated_bundle

    # The first candidate that crashes this runtime, else the first it refuses: whether the runtime dies on
    # a read past its tensors depends on the heap of the process, so a machine may see only refusals.
    crasher, refused = None, None
    candidates = [lambda p: crashing_bundle(bundle, p)]
    candidates += [lambda p, s=seed: mutated_bundle(bundle, p, seed=s) for seed in range(40)]
    for i, make in enumerate(candidates):
        path = make(tmp_path / f"candidate-{i}.beemodel")
        try:
            check_bundle_in_child(path=path, python=edge_python)
        except BundleCrashError:
            crasher = path
            break
        except BundleError:  # refused without a crash
            refused = refused or path
    crasher = crasher or refused
    assert crasher is not None, "this runtime loads every candidate: none is refused"
    state = tmp_path / "state"
    assert (
        run_cli(
            "device", "install-model", str(bundle), "--state-dir", str(state), python=edge_python
        ).returncode
        == 0
    )
    current = (state / "models" / "current").read_text()
    for action in (("install-model", str(crasher)), ("selftest", "--bundle", str(crasher))):
        result = run_cli("device", *action, "--state-dir", str(state), python=edge_python)
        assert result.returncode == 1, (action, result.returncode, result.stderr)
        # The same bundle in another process (other paths, another heap) may be refused rather than crash.
        errors = [line for line in result.stderr.splitlines() if "error:" in line or line.startswith("FAIL")]
        assert len(errors) == 1 and "refused" in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert (state / "models" / "current").read_text() == current
