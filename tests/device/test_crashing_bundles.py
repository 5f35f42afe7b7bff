"""A bundle that crashes the TF-Lite runtime (SIGSEGV) is refused in a child process: ``classify``,
``install-model`` and ``selftest`` print one error line, an over-the-air update keeps the old model running
and is not downloaded again after a restart, and an agent whose stored model crashes rolls back.

The crashing bundle is real: its first FULLY_CONNECTED has no weights tensor, which the flatbuffer verifier
lets through and the runtime reads past (SIGSEGV in ai-edge-litert, or a refusal to prepare the node where
the heap around it stops the read first: see tests.fixtures.device.refused_by_the_runtime). The crash
message itself is checked with stand-in children that die by a signal. The fuzz test loads a few hundred
bundles with 8 random bytes of model.tflite replaced (checksum recomputed) through the child check, in this
environment and in tflite-runtime 2.14's (where most of them kill the child): the parent survives all.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from beeaudio.core.bundle import BundleError
from beeaudio.core.fsio import file_sha256
from beeaudio.core.sandbox import BundleCheck, BundleCrashError, check_bundle_in_child
from beeaudio.device.client import CollectorClient
from beeaudio.device.modelstore import ModelStore, ModelStoreError
from beeaudio.device.uplink import check_model_update
from tests.fixtures.device import (
    REPO_ROOT,
    RUNTIME_REFUSAL,
    cli,
    crashing_bundle,
    event_ids_in,
    fake_collector,
    mutated_bundle,
    refused_by_the_runtime,
    run_cli,
    wait_for,
    write_config,
    write_recordings,
)


@pytest.fixture
def crasher(tmp_path: Path, bundle: Path) -> Path:
    path = crashing_bundle(bundle, tmp_path / "crashing.beemodel")
    # The premise: loading it in a process kills that process (SIGSEGV) or, where the heap the runtime
    # reads past happens to stop it first, fails in the kernel's prepare step; it never loads.
    code = "import sys; from beeaudio.core.inference import Classifier; Classifier.load(sys.argv[1])"
    died = subprocess.run([sys.executable, "-P", "-c", code, str(path)], capture_output=True, timeout=60)
    assert died.returncode == -signal.SIGSEGV or RUNTIME_REFUSAL in died.stderr.decode(errors="replace"), died
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a command prints for crashing_bundle (its crash, or the runtime's refusal), exit 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Fatal Python error" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line or line.startswith("FAIL")]
    assert len(errors) == 1 and refused_by_the_runtime(errors[0]), result.stderr
    return errors[0]


def test_the_child_check_refuses_it_and_passes_a_good_bundle(crasher: Path, bundle: Path) -> None:
    with pytest.raises(BundleError, match="refused") as refused:  # the crash message: _fake_python below
        check_bundle_in_child(path=crasher)
    assert refused_by_the_runtime(str(refused.value))
    good = check_bundle_in_child(path=bundle)
    assert isinstance(good, BundleCheck) and good.runtime and good.selftest_windows > 0
    assert good.selftest_max_delta <= 1.0 and good.seconds > 0


def test_classify_prints_one_error_line(tmp_path: Path, crasher: Path) -> None:
    (clip,) = write_recordings(
        folder=tmp_path / "audio", count=1, seconds=4.0, start=datetime(2026, 4, 1, tzinfo=UTC)
    )
    result = run_cli("classify", "--model", str(crasher), str(clip))
    line = one_error_line(result)
    assert line.startswith("beeaudio classify: error:")


def test_install_model_refuses_it_and_keeps_the_current_model(
    tmp_path: Path, crasher: Path, bundle: Path
) -> None:
    state = tmp_path / "state"
    assert run_cli("device", "install-model", str(bundle), "--state-dir", str(state)).returncode == 0
    current = (state / "models" / "current").read_text()
    one_error_line(run_cli("device", "install-model", str(crasher), "--state-dir", str(state)))
    assert (state / "models" / "current").read_text() == current
    assert ModelStore(root=state / "models").refusal(file_sha256(crasher)) is not None  # remembered
    assert not list((state / "models").glob(".incoming*"))
    # The device still works with the model it had.
    assert run_cli("device", "selftest", "--state-dir", str(state)).returncode == 0


def test_selftest_of_it_is_a_fail_line(crasher: Path) -> None:
    result = run_cli("device", "selftest", "--bundle", str(crasher))
    one_error_line(result)


def _offer(collector, data: bytes, model_id: str) -> str:
    sha = hashlib.sha256(data).hexdigest()
    offer = {"model_id": model_id, "sha256": sha, "download_url": f"/api/v1/models/{model_id}/file"}
    headers = {"ETag": f'"{sha}"', "Content-Type": "application/json"}
    collector.routes["/api/v1/devices/dev-1/model"] = (200, headers, json.dumps(offer).encode())
    collector.routes[f"/api/v1/models/{model_id}/file"] = (200, {"ETag": f'"{sha}"'}, data)
    return sha


def _downloads(collector, model_id: str) -> int:
    return sum(1 for _, path, _, _ in collector.requests if path == f"/api/v1/models/{model_id}/file")


def test_an_update_over_the_air_is_refused_and_not_downloaded_again_after_a_restart(
    tmp_path: Path, crasher: Path, bundle: Path
) -> None:
    store = ModelStore(root=tmp_path / "models")
    store.install(source=bundle)
    good = store.current_sha()
    with fake_collector() as collector:
        client = CollectorClient(base_url=collector.url, token="t", timeout_s=10)
        _offer(collector, crasher.read_bytes(), "bad")
        with pytest.raises(ModelStoreError, match=r"SIGSEGV|FULLY_CONNECTED"):
            check_model_update(client=client, device_id="dev-1", store=store, refused=set())
        assert store.current_sha() == good and _downloads(collector, "bad") == 1
        # A restart: a new store object and no memory in the process; the store remembers.
        restarted = ModelStore(root=tmp_path / "models")
        assert check_model_update(client=client, device_id="dev-1", store=restarted, refused=set()) is None
        assert _downloads(collector, "bad") == 1 and restarted.current_sha() == good


def test_a_damaged_download_is_not_remembered_as_refused(
    tmp_path: Path, bundle: Path, bundle_f32: Path
) -> None:
    """A portal's page in place of the bundle is the network's fault: tried again at the next poll."""
    store = ModelStore(root=tmp_path / "models")
    store.install(source=bundle)
    with fake_collector() as collector:
        client = CollectorClient(base_url=collector.url, token="t", timeout_s=10)
        sha = _offer(collector, bundle_f32.read_bytes(), "new")
        collector.routes["/api/v1/models/new/file"] = (
            200,
            {"Content-Type": "text/html"},
            b"<html>login</html>",
        )
        with pytest.raises(ModelStoreError, match="not the announced"):
            check_model_update(client=client, device_id="dev-1", store=store)
        assert store.refusal(sha) is None
        collector.routes["/api/v1/models/new/file"] = (200, {}, bundle_f32.read_bytes())
        assert check_model_update(client=client, device_id="dev-1", store=store).sha256 == sha


def test_an_agent_whose_stored_model_crashes_rolls_back_at_start(
    tmp_path: Path, crasher: Path, bundle: Path
) -> None:
    """The current pointer names a crashing bundle the store never checked (e.g. stored by an older
    beeaudio): the agent checks it in a child, refuses it, rolls back to the previous model and runs."""
    state = tmp_path / "state"
    models = state / "models"
    assert run_cli("device", "install-model", str(bundle), "--state-dir", str(state)).returncode == 0
    sha = file_sha256(crasher)
    (models / "bundles" / f"{sha}.beemodel").write_bytes(crasher.read_bytes())
    (models / "previous").write_text((models / "current").read_text())
    (models / "current").write_text(f"{sha}\n")
    folder = tmp_path / "recordings"
    write_recordings(folder=folder, count=1, seconds=4.0, start=datetime(2026, 4, 1, tzinfo=UTC))
    run = run_cli("device", "run", "--once", "--input", str(folder), "--state-dir", str(state))
    assert run.returncode == 0, run.stderr
    assert "rolling back" in run.stderr and refused_by_the_runtime(run.stderr)
    assert len(event_ids_in(state / "outbox.sqlite")) > 0
    assert (models / "current").read_text().strip() == file_sha256(bundle)
    # Without a model to fall back on: exit 2 with the reason, never a signal.
    (models / "previous").unlink()
    (models / "current").write_text(f"{sha}\n")
    alone = run_cli("device", "run", "--once", "--input", str(folder), "--state-dir", str(state))
    assert alone.returncode == 2 and refused_by_the_runtime(alone.stderr), (alone.returncode, alone.stderr)


def test_the_running_agent_survives_an_update_that_crashes_and_a_restart(
    tmp_path: Path, crasher: Path, bundle: Path
) -> None:
    """The issue's case: the collector pushes the crashing bundle over the air. The agent refuses it, goes
    on analysing with its model, and after a restart does not download it again."""
    state = tmp_path / "state"
    spool = tmp_path / "spool"
    assert run_cli("device", "install-model", str(bundle), "--state-dir", str(state)).returncode == 0
    good = (state / "models" / "current").read_text()
    with fake_collector() as collector:
        _offer(collector, crasher.read_bytes(), "bad")
        config = write_config(
            tmp_path / "device.toml",
            {
                "device": {"device_id": "dev-1", "hive_id": "hive-1", "state_dir": str(state)},
                "source": {"path": str(spool), "poll_seconds": 0.2, "settle_seconds": 0.5},
                "collector": {"url": collector.url, "token": "t", "upload_interval_s": 0.2,
                              "heartbeat_interval_s": 0.5, "ota_poll_interval_s": 0.5},
            },
        )  # fmt: skip
        for attempt in range(2):
            command = cli("device", "run", "--config", str(config))
            agent = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:
                start = datetime(2026, 4, 1, 10, attempt, tzinfo=UTC)
                write_recordings(folder=spool, count=1, seconds=4.0, start=start, seed=attempt)
                assert wait_for(lambda: _downloads(collector, "bad") >= 1, timeout=60)
                assert wait_for(lambda: not list(spool.glob("*.wav")), timeout=60)  # analysed (and deleted)
                time.sleep(1.5)  # a few more model polls
                assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=60)
            assert agent.returncode == 0
            assert _downloads(collector, "bad") == 1  # not again, not even after the restart
            assert (state / "models" / "current").read_text() == good
        assert len(collector.accepted) > 0


# -- the child itself ----------------------------------------------------------------------------------------
def _fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in for the child's interpreter (a real process that behaves badly in a chosen way)."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.slow  # waits on the wall clock (restarts, back-off, a hang cut short)
def test_the_child_reports_where_it_died_and_hangs_are_cut_short(tmp_path: Path) -> None:
    bundle = tmp_path / "any.beemodel"
    bundle.write_bytes(b"")
    dies = _fake_python(tmp_path, """echo '{"stage": "read"}'; echo '{"stage": "selftest"}'; kill -SEGV $$""")
    with pytest.raises(BundleCrashError, match=r"\(SIGSEGV\) while running its self-test: refused"):
        check_bundle_in_child(path=bundle, python=dies)
    hangs = _fake_python(tmp_path, """echo '{"stage": "load"}'; exec sleep 30""")
    started = time.monotonic()
    with pytest.raises(BundleCrashError, match=r"no answer within 1 s\) while loading"):
        check_bundle_in_child(path=bundle, python=hangs, timeout_s=1)
    assert time.monotonic() - started < 10
    refuses = _fake_python(tmp_path, """echo '{"error": "checksum mismatch", "kind": "bundle"}'; exit 1""")
    with pytest.raises(BundleError, match="checksum mismatch") as refused:
        check_bundle_in_child(path=bundle, python=refuses)
    assert not isinstance(refused.value, BundleCrashError)


def test_the_childs_memory_is_capped(bundle: Path) -> None:
    with pytest.raises(Exception) as capped:
        check_bundle_in_child(path=bundle, memory_limit_mb=40)  # not even numpy fits
    assert "memory" in str(capped.value).lower() or "MemoryError" in str(capped.value)
    assert check_bundle_in_child(path=bundle, memory_limit_mb=1024).runtime


# -- the fuzz test -------------------------------------------------------------------------------------------
FUZZ_SEEDS = range(240)


def _fuzz_pythons() -> list[str]:
    pythons = [sys.executable]
    extra = os.environ.get("BEEAUDIO_TFLITE214_PYTHON", "")
    if extra and Path(extra).is_file():
        pythons.append(extra)  # tflite-runtime 2.14 does not verify models: most mutants kill it
    return pythons


@pytest.mark.slow
def test_fuzz_mutated_bundles_never_crash_the_parent(tmp_path: Path, bundle: Path) -> None:
    pythons = _fuzz_pythons()
    jobs = [(seed, pythons[seed % len(pythons)]) for seed in FUZZ_SEEDS]
    jobs.append((-1, sys.executable))  # and the known crasher

    def check(job: tuple[int, str]) -> str:
        seed, python = job
        path = tmp_path / f"mutant-{seed}.beemodel"
        if seed < 0:
            crashing_bundle(bundle, path)
        else:
            mutated_bundle(bundle, path, seed=seed)
        try:
            check_bundle_in_child(path=path, python=python, timeout_s=60)
        except BundleCrashError as exc:
            assert "refused" in str(exc)
            return "crashed"
        except BundleError:
            return "refused"
        return "passed"

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(check, jobs))
    counts = {kind: outcomes.count(kind) for kind in ("passed", "refused", "crashed")}
    print(
        f"fuzz: {len(jobs)} bundles on {len(pythons)} runtime(s) in {time.monotonic() - started:.0f} s: "
        f"{counts}"
    )
    assert sum(counts.values()) == len(jobs)  # every child's end was one of the three: none took us down
    assert counts["crashed"] >= 1 and counts["refused"] >= 1


def test_a_pass_is_cached_for_the_desktop_and_a_crash_never_is(
    tmp_path: Path, bundle: Path, crasher: Path
) -> None:
    cache = tmp_path / "cache"
    first = check_bundle_in_child(path=bundle, cache_dir=cache)
    again = check_bundle_in_child(path=bundle, cache_dir=cache)
    assert not first.cached and again.cached and again.model_sha256 == first.model_sha256
    for _ in range(2):
        with pytest.raises(BundleError):
            check_bundle_in_child(path=crasher, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
