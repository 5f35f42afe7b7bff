"""The device's model store: verify before switching, refuse with a reason, roll back, update over the air."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.bundle import read_bundle
from beeaudio.core.fsio import file_sha256
from beeaudio.device.client import CollectorClient
from beeaudio.device.modelstore import BundleRefusedError, ModelStore, ModelStoreError, check_servable
from beeaudio.device.uplink import check_model_update
from tests.fixtures.device import FakeCollector, fake_collector, run_cli
from tests.fixtures.tflite_models import rewrite_bundle as fixture_rewrite_bundle


def rewrite_bundle(source: Path, target: Path, **replace: bytes) -> Path:
    """Copy a bundle, replacing some members' bytes (to build broken bundles), its content digest
    recomputed so that the check behind it is the one met."""
    return fixture_rewrite_bundle(source=source, target=target, replace=replace)


def edited_manifest(source: Path, **changes: object) -> bytes:
    with zipfile.ZipFile(source) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest.update(changes)
    return json.dumps(manifest).encode()


def test_install_switch_and_rollback(tmp_path, bundle, bundle_f32):
    store = ModelStore(root=tmp_path / "models")
    assert store.current() is None
    with pytest.raises(ModelStoreError, match="no model installed"):
        store.current_path()
    first = store.install(source=bundle)
    assert first.sha256 == file_sha256(bundle)
    assert store.current_path() == store.bundles / f"{first.sha256}.beemodel"
    assert store.previous() is None
    with pytest.raises(ModelStoreError, match="no previous model"):
        store.rollback()
    second = store.install(source=bundle_f32)
    assert store.current_sha() == second.sha256 and store.previous().sha256 == first.sha256
    assert (store.root / "current").read_text().strip() == second.sha256
    back = store.rollback()
    assert back.sha256 == first.sha256
    assert store.previous().sha256 == second.sha256  # rollback is itself undoable
    # Only the bundles the pointers name are kept, and no temporary files are left behind.
    assert sorted(p.name for p in store.bundles.iterdir()) == sorted(
        f"{s}.beemodel" for s in (first.sha256, second.sha256)
    )
    assert not [p for p in store.root.rglob("*") if p.name.startswith(".") and p.name != ".lock"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("checksum", "checksum mismatch"),
        ("selftest", "self-test failed"),
        ("format", "format version"),
        ("not_zip", "not a zip"),
        ("swarm_label", "swarm_label"),
    ],
)
def test_refusals_leave_the_current_model(tmp_path, bundle, breakage, message):
    store = ModelStore(root=tmp_path / "models")
    good = store.install(source=bundle)
    bad = tmp_path / f"bad-{breakage}.beemodel"
    if breakage == "checksum":
        with zipfile.ZipFile(bundle) as archive:
            model = bytearray(archive.read("model.tflite"))
        model[len(model) // 2] ^= 0xFF
        rewrite_bundle(bundle, bad, **{"model.tflite": bytes(model)})
    elif breakage == "selftest":
        selftest = read_bundle(bundle).selftest
        buffer = io.BytesIO()
        np.savez(buffer, features=selftest.features, expected=1.0 - selftest.expected, atol=selftest.atol)
        rewrite_bundle(bundle, bad, **{"selftest.npz": buffer.getvalue()})
    elif breakage == "format":
        rewrite_bundle(bundle, bad, **{"manifest.json": edited_manifest(bundle, format_version=99)})
    elif breakage == "not_zip":
        bad.write_bytes(b"this is not a bundle")
    else:
        rewrite_bundle(bundle, bad, **{"manifest.json": edited_manifest(bundle, swarm_label="queen")})
    with pytest.raises(ModelStoreError, match=message):
        store.install(source=bad)
    assert store.current_sha() == good.sha256
    assert store.previous() is None


def test_a_model_the_recorder_cannot_feed_is_refused(tmp_path, bundle):
    manifest = read_bundle(bundle).manifest
    check_servable(manifest=manifest, recording_rate=16000)
    with pytest.raises(ModelStoreError, match="records at 1000 Hz"):
        check_servable(manifest=manifest, recording_rate=1000)
    store = ModelStore(root=tmp_path / "models")
    with pytest.raises(ModelStoreError, match="listens up to"):
        store.install(source=bundle, recording_rate=1000)
    assert store.current_sha() is None


def test_download_with_wrong_checksum_is_refused(tmp_path, bundle):
    store = ModelStore(root=tmp_path / "models")
    with pytest.raises(ModelStoreError, match="not the announced"):
        store.install_bytes(data=bundle.read_bytes(), expected_sha256="0" * 64)
    assert store.current_sha() is None
    installed = store.install_bytes(data=bundle.read_bytes(), expected_sha256=file_sha256(bundle))
    assert installed.sha256 == store.current_sha()
    assert not list(store.root.glob(".download*"))


def _offer(collector: FakeCollector, bundle_bytes: bytes, model_id: str) -> str:
    sha = hashlib.sha256(bundle_bytes).hexdigest()
    etag = f'"{sha}"'
    offer = {"model_id": model_id, "model_name": "m", "model_version": model_id, "sha256": sha,
             "size": len(bundle_bytes), "download_url": f"/api/v1/models/{model_id}/file"}  # fmt: skip
    collector.routes["/api/v1/devices/dev-1/model"] = (200, {"ETag": etag}, json.dumps(offer).encode())
    collector.routes[f"/api/v1/models/{model_id}/file"] = (200, {"ETag": etag}, bundle_bytes)
    return sha


def test_over_the_air_update(tmp_path, bundle, bundle_f32):
    store = ModelStore(root=tmp_path / "models")
    store.install(source=bundle)
    with fake_collector() as collector:
        client = CollectorClient(base_url=collector.url, token="tok", timeout_s=10)
        # Nothing published: 204.
        collector.routes["/api/v1/devices/dev-1/model"] = (204, {}, b"")
        assert check_model_update(client=client, device_id="dev-1", store=store) is None

        sha = _offer(collector, bundle_f32.read_bytes(), "m2")
        installed = check_model_update(client=client, device_id="dev-1", store=store)
        assert installed is not None and installed.sha256 == sha == store.current_sha()
        assert store.previous().sha256 == file_sha256(bundle)
        # Asked again: the device says what it has (If-None-Match) and the collector answers 304.
        assert check_model_update(client=client, device_id="dev-1", store=store) is None
        last_get = [h for m, p, h, _ in collector.requests if p.endswith("/model")][-1]
        assert last_get["If-None-Match"] == f'"{sha}"'
        assert last_get["Authorization"] == "Bearer tok"

        # A broken bundle is offered: refused, the running model stays, and it is not fetched again.
        broken = bytearray(bundle.read_bytes())
        broken[len(broken) // 3] ^= 0xFF
        _offer(collector, bytes(broken), "m3")
        refused: set[str] = set()
        with pytest.raises(ModelStoreError):
            check_model_update(client=client, device_id="dev-1", store=store, refused=refused)
        assert store.current_sha() == sha
        downloads = sum(1 for _, p, _, _ in collector.requests if p == "/api/v1/models/m3/file")
        assert check_model_update(client=client, device_id="dev-1", store=store, refused=refused) is None
        assert sum(1 for _, p, _, _ in collector.requests if p == "/api/v1/models/m3/file") == downloads


def test_cli_install_refuse_and_rollback(tmp_path, bundle, bundle_f32):
    state = str(tmp_path / "state")
    nothing = run_cli("device", "rollback", "--state-dir", state)
    assert nothing.returncode == 1 and "no previous model" in nothing.stderr
    bad = tmp_path / "bad.beemodel"
    bad.write_bytes(b"PK\x03\x04 not really")
    refused = run_cli("device", "install-model", str(bad), "--state-dir", state)
    assert refused.returncode == 1 and "refused" in refused.stderr
    for path in (bundle, bundle_f32):
        assert run_cli("device", "install-model", str(path), "--state-dir", state).returncode == 0
    back = run_cli("device", "rollback", "--state-dir", state)
    assert back.returncode == 0 and "rolled back to" in back.stdout
    status = json.loads(run_cli("device", "status", "--state-dir", state, "--json").stdout)
    assert status["model"].endswith(f"bundle sha256 {file_sha256(bundle)[:12]}…)")
    assert status["previous_model"].endswith(f"bundle sha256 {file_sha256(bundle_f32)[:12]}…)")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model_name": "h" * 5000}, "model_name"),
        ({"feature_config": {"window_seconds": 1e6}}, "window_seconds"),
        ({"feature_config": {"hop_seconds": 1e-9}}, "hop_seconds"),
    ],
    ids=["name-5000", "window-1e6", "hop-1e-9"],
)
def test_a_bundle_this_device_could_not_serve_is_refused_and_remembered(
    tmp_path, model_bundles, changes: dict, field: str
):
    """Installed before (its self-test passes): then every event was dead-lettered and every heartbeat
    refused, every recording quarantined, or a 30 s file took 224,001 windows (issue 14, item 5)."""
    store = ModelStore(root=tmp_path / "models")
    good = store.install(source=model_bundles.v3)
    with zipfile.ZipFile(model_bundles.v3) as archive:
        features = json.loads(archive.read("manifest.json"))["feature_config"]
    edits = {k: {**features, **v} if k == "feature_config" else v for k, v in changes.items()}
    bad = rewrite_bundle(
        model_bundles.v3,
        tmp_path / "bad.beemodel",
        **{"manifest.json": edited_manifest(model_bundles.v3, **edits)},
    )
    with pytest.raises(BundleRefusedError, match=field):
        store.install(source=bad)
    assert store.current_sha() == good.sha256
    assert field in (store.refusal(file_sha256(bad)) or "")
