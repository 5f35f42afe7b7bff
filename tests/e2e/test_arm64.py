"""The Pi path, on ARM: the beeaudio-edge wheel in an emulated Raspberry Pi OS userland (Debian bookworm under
qemu-user, built by ``.ci/arm64.sh``), against this x86 process.

* arm64 (the 64-bit Pi OS stack, ai-edge-litert, as a Pi 4: QEMU_CPU cortex-a72) and armhf (the 32-bit one,
  tflite-runtime 2.14 with Debian's numpy and no soxr, as a Pi 2: cortex-a7): the trained int8 bundle loads
  (checksum and self-test on that runtime), WAV, MP3 and FLAC are classified, and every window's
  probabilities are the x86 ones within the bundle's self-test tolerance;
* the self-test tolerance (the manifest's ``selftest`` section) passes the ARM result and refuses a wrong
  model, on ARM and here;
* the agent (``beeaudio device run --once``) in the userland delivers every window's event to a real
  collector on the host (the userland shares the host's network, so 127.0.0.1 reaches it).

qemu emulates the instructions exactly, so results are the ARM kernels' own; its speed is not a Pi's.
Without the userlands (``BEEAUDIO_ARM64_*``, ``BEEAUDIO_ARMHF_*``) the tests skip; with ``CI=true`` they fail.
"""

from __future__ import annotations

import io
import json
import secrets
import urllib.request
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beeaudio.collector.launch import free_port, start_collector
from beeaudio.core import audio
from beeaudio.core.bundle import (
    SELFTEST_MEMBER,
    BundleError,
    QuantParams,
    default_selftest_atol,
    read_bundle,
    selftest_tolerance,
)
from beeaudio.core.inference import Classifier, ModelRunner
from beeaudio.desktop import codec
from beeaudio.device.agent import Identity, analyse_file
from beeaudio.device.sources import source_id_of
from tests.fixtures.arm64 import ARCHES, Userland, userland
from tests.fixtures.device import hive_audio, write_config, write_recordings
from tests.fixtures.tflite_models import built_model, rewrite_bundle

pytestmark = pytest.mark.slow

RATE = 16000  # what arecord writes; the model runs at 8 kHz, so every clip is resampled
HIVE, DEVICE = "hive-arm", "dev-arm"

# Runs in the userland. Prints one JSON object on its last line.
EMULATED_SCRIPT = r"""
import importlib.util, json, platform, sys
import numpy
from beeaudio.core import audio
from beeaudio.core.bundle import BundleError
from beeaudio.core.inference import Classifier

bundle, wrong, clips = sys.argv[1], sys.argv[2], sys.argv[3:]
classifier = Classifier.load(bundle)  # checksum and self-test, on this machine's runtime
try:
    Classifier.load(wrong)
    wrong_error = None
except BundleError as exc:
    wrong_error = str(exc)
results = {}
for clip in clips:
    result = classifier.classify_file(clip)
    results[clip] = {
        "source_format": result.source_format,
        "windows": [[w.probabilities[label] for label in classifier.labels] for w in result.windows],
    }
print(json.dumps({
    "machine": platform.machine(),
    "runtime": classifier.runtime,
    "numpy": numpy.__version__,
    "resampler": audio.RESAMPLER,
    "soxr_installed": importlib.util.find_spec("soxr") is not None,
    "heavy_imported": sorted(m for m in ("tensorflow", "keras", "librosa") if m in sys.modules),
    "selftest": classifier.predict(classifier.bundle.selftest.features).tolist(),
    "wrong_error": wrong_error,
    "results": results,
}))
"""


def _selftest_with(source: Path, target: Path, expected: np.ndarray) -> Path:
    """``source`` with the self-test's expected outputs replaced (the tolerance and windows kept)."""
    test = read_bundle(source).selftest
    buffer = io.BytesIO()
    np.savez(buffer, features=test.features, expected=expected.astype(np.float32), atol=np.float64(test.atol))
    return rewrite_bundle(source=source, target=target, replace={SELFTEST_MEMBER: buffer.getvalue()})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> dict[str, Path]:
    """The bundle, a wrong-model variant of it, and WAV/MP3/FLAC clips, in one folder (bound into the
    userland)."""
    folder = tmp_path_factory.mktemp("arm")
    bundle = folder / "tiny-int8.beemodel"
    bundle.write_bytes(tiny_bundle.read_bytes())
    # A wrong model: another network (seeded random weights over the same features), its outputs for the
    # bundle's self-test windows as the expected ones. A device must refuse the bundle.
    test = read_bundle(bundle).selftest
    wrong = ModelRunner(model_bytes=built_model(quantization="int8").model_bytes).run(test.features)
    clips = {
        "wav": audio.write_wav(
            folder / "normal.wav", audio=hive_audio(seconds=8.0, seed=2), sample_rate=RATE
        ),
        "mp3": codec.encode_mp3(
            audio=hive_audio(seconds=8.0, seed=3, state="swarm"),
            sample_rate=RATE,
            path=folder / "swarm.mp3",
            bitrate_kbps=64,
        ),
        "flac": folder / "normal.flac",
    }
    sf.write(clips["flac"], hive_audio(seconds=8.0, seed=4), RATE, format="FLAC", subtype="PCM_16")
    return {
        "folder": folder,
        "bundle": bundle,
        "wrong": _selftest_with(bundle, folder / "wrong-model.beemodel", wrong),
        **clips,
    }


def _reference(work: dict[str, Path], *, resampler: str) -> dict[str, np.ndarray]:
    """Per-window probabilities in this x86 process (ai-edge-litert, XNNPACK) with either resampler."""
    with pytest.MonkeyPatch.context() as patch:
        if resampler == "sinc":
            patch.setattr(audio, "soxr", None)
        classifier = Classifier.load(work["bundle"])
        return {
            kind: np.array(
                [
                    [w.probabilities[x] for x in classifier.labels]
                    for w in classifier.classify_file(work[kind]).windows
                ]
            )
            for kind in ("wav", "mp3", "flac")
        }


@pytest.fixture(scope="module", params=sorted(ARCHES))
def emulated(request: pytest.FixtureRequest, work: dict[str, Path]) -> tuple[Userland, dict]:
    """The userland, and what EMULATED_SCRIPT printed there."""
    land = userland(request.param)
    script = work["folder"] / "emulated.py"
    script.write_text(EMULATED_SCRIPT, encoding="utf-8")
    clips = [work[kind] for kind in ("wav", "mp3", "flac")]
    done = land.run(
        [land.python, "-P", script, work["bundle"], work["wrong"], *clips],
        binds=[work["folder"]],
        timeout=900,
    )
    assert done.returncode == 0, f"{land.name}: {done.stderr[-3000:]}"
    return land, json.loads(done.stdout.strip().splitlines()[-1])


def test_the_bundle_classifies_wav_mp3_and_flac_on_arm_as_on_x86(
    emulated: tuple[Userland, dict], work: dict[str, Path], record_property: pytest.RecordProperty
) -> None:
    land, report = emulated
    assert report["machine"] == land.arch.machine
    assert report["runtime"] == land.arch.runtime
    assert report["resampler"] == land.arch.resampler
    assert report["soxr_installed"] == (land.arch.resampler == "soxr")
    assert report["heavy_imported"] == []
    atol = read_bundle(work["bundle"]).manifest.selftest.atol
    # Against x86 with the same resampler: only the runtime differs. With soxr's: the resampler too.
    for resampler in sorted({land.arch.resampler, "soxr"}):
        reference = _reference(work, resampler=resampler)
        worst = 0.0
        for kind, fmt in (("wav", "WAV"), ("mp3", "MP3"), ("flac", "FLAC")):
            got = report["results"][str(work[kind])]
            assert got["source_format"] == fmt
            probabilities = np.array(got["windows"])
            assert probabilities.shape == reference[kind].shape
            worst = max(worst, float(np.max(np.abs(probabilities - reference[kind]))))
        record_property(f"{land.name}_vs_x86_{resampler}_max_abs_diff", worst)
        steps = worst * 256
        print(
            f"{land.name} vs x86 ({resampler} on x86): max |Δp| {worst:.4f} ({steps:.1f} output steps);"
            f" atol {atol:.4f}"
        )
        assert worst <= atol, f"{land.name} differs from x86 ({resampler}) by {worst:.4g} > {atol:.4g}"


def test_the_selftest_tolerance_passes_arm_and_refuses_a_wrong_model(
    emulated: tuple[Userland, dict], work: dict[str, Path], tmp_path: Path
) -> None:
    _, report = emulated
    bundle = read_bundle(work["bundle"])
    tolerance = bundle.manifest.selftest
    assert tolerance is not None and tolerance.atol == pytest.approx(bundle.selftest.atol)
    assert tolerance.logit_scale is not None and tolerance.activation == "softmax"
    arm = np.array(report["selftest"])
    # On ARM: the right model passed its self-test (Classifier.load), the wrong one was refused.
    assert float(np.max(np.abs(arm - bundle.selftest.expected))) <= tolerance.atol
    assert report["wrong_error"] is not None and "self-test failed" in report["wrong_error"], report[
        "wrong_error"
    ]
    # Here: a bundle whose expected outputs are the ARM ones loads on x86; the wrong model's does not.
    Classifier.load(_selftest_with(work["bundle"], tmp_path / "arm-expected.beemodel", arm))
    with pytest.raises(BundleError, match="self-test failed"):
        Classifier.load(work["wrong"])
    # And the tolerance is no wider than it must be: one more output step than allowed beyond the ARM
    # result is refused.
    beyond = arm + np.array([tolerance.atol + 1 / 256, 0.0], dtype=np.float32)
    with pytest.raises(BundleError, match="self-test failed"):
        Classifier.load(_selftest_with(work["bundle"], tmp_path / "beyond.beemodel", beyond))


def test_an_older_bundle_without_the_manifest_section_keeps_its_npz_tolerance(
    work: dict[str, Path], tmp_path: Path
) -> None:
    """Bundles written before the ``selftest`` section: the atol in selftest.npz, as before."""
    with zipfile.ZipFile(work["bundle"]) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest.pop("selftest")
    older = rewrite_bundle(
        source=work["bundle"],
        target=tmp_path / "older.beemodel",
        replace={"manifest.json": json.dumps(manifest).encode()},
    )
    loaded = read_bundle(older)
    assert (
        loaded.manifest.selftest is None and loaded.selftest.atol == read_bundle(work["bundle"]).selftest.atol
    )
    Classifier.load(older)
    # A section that disagrees with selftest.npz is an altered bundle.
    manifest["selftest"] = {"atol": 0.5, "rule": "made up"}
    altered = rewrite_bundle(
        source=work["bundle"],
        target=tmp_path / "altered.beemodel",
        replace={"manifest.json": json.dumps(manifest).encode()},
    )
    with pytest.raises(BundleError, match="altered"):
        read_bundle(altered)


def test_the_int8_tolerance_follows_the_logit_scale() -> None:
    """One logit step through the softmax's slope plus two output steps; a confident model (coarse logits)
    needs more than the former fixed 4 output steps, and a measured spread between kernels widens it."""
    out = QuantParams(scale=1 / 256, zero_point=-128)

    def atol(logit_scale: float, **kwargs: object) -> float:
        logits = QuantParams(scale=logit_scale, zero_point=0)
        return selftest_tolerance(
            quantization="int8", output_quant=out, logit_quant=logits, activation="softmax", **kwargs
        ).atol

    assert atol(0.034074) == pytest.approx(0.034074 / 2 + 2 / 256)  # the tiny model: 6.4 output steps
    legacy = default_selftest_atol(quantization="int8", output_quant=out)
    assert legacy == pytest.approx(4 / 256)
    assert atol(0.16) == pytest.approx(0.08 + 2 / 256) and atol(0.16) > 5 * legacy
    assert atol(0.034074, measured=0.05, measured_windows=56) == pytest.approx(0.05 + 2 / 256)
    # Without the model's logits (nothing inspected): the rule older bundles were written with.
    assert selftest_tolerance(quantization="int8", output_quant=out).atol == legacy
    assert selftest_tolerance(quantization="float32").atol == 1e-4


def _admin(url: str, token: str, method: str, path: str, body: object = None) -> dict:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("name", sorted(ARCHES))
def test_the_agent_on_arm_delivers_every_window_to_a_collector_on_the_host(
    name: str, work: dict[str, Path], tmp_path: Path
) -> None:
    land = userland(name)
    port, admin = free_port(), "adm-" + secrets.token_hex(16)
    collector = start_collector(
        log_path=tmp_path / "collector.log",
        db_url=f"sqlite:///{tmp_path / 'collector.db'}",
        port=port,
        env={"BEEAUDIO_ADMIN_TOKEN": admin},
        extra_args=["--local"],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _admin(url, admin, "POST", "/api/v1/hives", {"name": "ARM hive", "hive_id": HIVE})
        token = _admin(url, admin, "POST", f"/api/v1/hives/{HIVE}/devices", {"device_id": DEVICE})["token"]
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        recordings = write_recordings(folder=tmp_path / "rec", count=3, seconds=6.0, start=start, mp3_every=3)
        flac = tmp_path / "rec" / (start + timedelta(seconds=18)).strftime("%Y%m%d-%H%M%S.flac")
        sf.write(flac, hive_audio(seconds=6.0, seed=9), RATE, format="FLAC", subtype="PCM_16")
        recordings.append(flac)
        (tmp_path / "spool").mkdir()
        config = write_config(
            tmp_path / "device.toml",
            {
                "device": {"device_id": DEVICE, "hive_id": HIVE, "state_dir": str(tmp_path / "state")},
                "source": {"path": str(tmp_path / "spool")},
                "collector": {
                    "url": url,
                    "token": token,
                    "heartbeat_interval_s": 5.0,
                    "ota_poll_interval_s": 0,
                },
            },
        )
        binds = [tmp_path, work["folder"]]
        installed = land.beeaudio(
            "device", "install-model", str(work["bundle"]), "--config", str(config), binds=binds
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        run = land.beeaudio(
            "device", "run", "--config", str(config), "--once", "--input", str(tmp_path / "rec"), binds=binds
        )
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]

        events, cursor = [], None
        while True:
            page = _admin(
                url,
                admin,
                "GET",
                f"/api/v1/hives/{HIVE}/events?limit=500" + (f"&cursor={cursor}" if cursor else ""),
            )
            events += page["events"]
            if not (cursor := page.get("next_cursor")):
                break
    finally:
        collector.stop(timeout_s=20)

    # The same events as this x86 process computes for the same files: same ids, probabilities within the
    # self-test tolerance (armhf: another resampler and runtime too).
    classifier = Classifier.load(work["bundle"])
    identity = Identity(device_id=DEVICE, hive_id=HIVE)
    expected = {}
    for path in recordings:
        for event in analyse_file(
            path=path, classifier=classifier, identity=identity, source_id=source_id_of(path),
            name_time_formats=("%Y%m%d-%H%M%S",),
        ):  # fmt: skip
            expected[event.event_id] = event
    got = {event["event_id"]: event for event in events}
    assert len(events) == len(got) == len(expected) == 4 * 5
    assert set(got) == set(expected)
    atol = read_bundle(work["bundle"]).manifest.selftest.atol
    for event_id, event in got.items():
        reference = expected[event_id].probabilities
        assert event["model_name"] == "tiny-dnn"
        assert max(abs(event["probabilities"][k] - reference[k]) for k in reference) <= atol
    assert {event["source_format"] for event in events} == {"WAV", "MP3", "FLAC"}
