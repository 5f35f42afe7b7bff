"""Model registry: upload verified bundles, refuse broken ones, publish to a hive or all, the device's model
with ETag/304/204, and the file download limited to what was published for the device's hive."""

from __future__ import annotations

import hashlib

from tests.fixtures.collector import ADMIN, READER, bearer, fake_bundle_bytes


def _upload(collector, content: bytes, *, multipart: bool = False):
    if multipart:
        return collector.client.post("/api/v1/models", files={"file": ("m.beemodel", content)}, headers=ADMIN)
    return collector.client.post(
        "/api/v1/models", content=content, headers={**ADMIN, "Content-Type": "application/octet-stream"}
    )


def test_upload_publish_and_serve(collector) -> None:
    collector.add_hive("h1")
    collector.add_hive("h2")
    d1 = collector.add_device("h1", "d1")
    d2 = collector.add_device("h2", "d2")
    v3 = fake_bundle_bytes(model_version="3")
    v4 = fake_bundle_bytes(model_version="4")
    up3 = _upload(collector, v3)
    assert up3.status_code == 201, up3.text
    model3 = up3.json()
    assert model3["sha256"] == hashlib.sha256(v3).hexdigest() and model3["model_version"] == "3"
    assert _upload(collector, v3).json()["model_id"] == model3["model_id"]  # same bytes, same model
    model4 = _upload(collector, v4, multipart=True).json()

    # Nothing published yet.
    assert collector.client.get("/api/v1/devices/d1/model", headers=bearer(d1["token"])).status_code == 204
    publish = collector.client.post(
        f"/api/v1/models/{model3['model_id']}/publish", json={"hive_id": None}, headers=ADMIN
    )
    assert publish.status_code == 200, publish.text
    collector.clock.advance(1)
    collector.client.post(
        f"/api/v1/models/{model4['model_id']}/publish", json={"hive_id": "h1"}, headers=ADMIN
    )

    got1 = collector.client.get("/api/v1/devices/d1/model", headers=bearer(d1["token"]))
    got2 = collector.client.get("/api/v1/devices/d2/model", headers=bearer(d2["token"]))
    assert got1.json()["model_version"] == "4" and got2.json()["model_version"] == "3"
    assert got1.headers["etag"] == f'"{model4["sha256"]}"'
    same = collector.client.get(
        "/api/v1/devices/d1/model", headers={**bearer(d1["token"]), "If-None-Match": got1.headers["etag"]}
    )
    assert same.status_code == 304

    url = got1.json()["download_url"]
    file = collector.client.get(url, headers=bearer(d1["token"]))
    assert file.status_code == 200 and file.content == v4
    assert hashlib.sha256(file.content).hexdigest() == got1.json()["sha256"]
    # d2's hive runs v3: it may not fetch v4, but the admin and the read token may.
    assert collector.client.get(url, headers=bearer(d2["token"])).status_code == 403
    assert collector.client.get(url, headers=READER).status_code == 200
    assert collector.client.get("/api/v1/models", headers=READER).status_code == 200


def test_broken_bundles_are_refused_with_a_reason(collector, tmp_path) -> None:
    import io
    import zipfile

    good = fake_bundle_bytes()
    assert _upload(collector, b"").status_code == 422
    not_zip = _upload(collector, b"hello, I am not a zip")
    assert not_zip.status_code == 422 and "zip" in not_zip.json()["detail"]
    # Same manifest, altered model bytes: the checksum no longer matches.
    source = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            data = source.read(name)
            archive.writestr(name, data + b"tampered" if name == "model.tflite" else data)
    tampered = _upload(collector, out.getvalue())
    assert tampered.status_code == 422 and "checksum" in tampered.json()["detail"]
    assert str(tmp_path) not in tampered.json()["detail"]
    assert collector.client.get("/api/v1/models", headers=ADMIN).json() == []
    assert collector.client.post("/api/v1/models/nope/publish", json={}, headers=ADMIN).status_code == 404
    assert list((tmp_path / "data" / "models").glob("*.tmp")) == []
