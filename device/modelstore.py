"""The model store: verified bundles on disk, an atomic ``current`` pointer and a ``previous`` for rollback.

Layout of the store folder::

    bundles/<sha256 of the bundle file>.beemodel
    current      # one line: the sha256 of the bundle in use
    previous     # the one before, for `beeaudio device rollback`

A bundle is copied in (temporary file + fsync + ``os.replace``) only after it passed every check; the
pointers are switched the same way, so a power cut leaves either the old model or the new one, never a
mixture. The running agent reads ``current`` between recordings and picks up a switched model there.
A ``flock`` on ``.lock`` keeps a CLI ``install-model`` and the agent's over-the-air update from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from beeaudio.core.bundle import BUNDLE_SUFFIX, BundleError, BundleManifest, read_bundle
from beeaudio.core.errors import BeeaudioError
from beeaudio.core.fsio import file_sha256, sha256_hex, write_bytes_atomic
from beeaudio.core.inference import Classifier

log = logging.getLogger(__name__)


class ModelStoreError(BeeaudioError):
    """A bundle refused (the message says why) or a store operation that cannot be done."""


@dataclass(frozen=True)
class InstalledModel:
    sha256: str  # of the bundle file
    path: Path
    manifest: BundleManifest

    def describe(self) -> str:
        m = self.manifest
        return f"{m.model_name} {m.model_version} ({m.quantization}, bundle sha256 {self.sha256[:12]}…)"


def check_servable(*, manifest: BundleManifest, recording_rate: int | None) -> None:
    """Refuse a model this agent cannot serve: it must name a swarm label among at least two labels, and it
    must not listen above what the device's recorder captures."""
    labels = manifest.labels
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ModelStoreError(f"the model's labels {list(labels)} must be at least two distinct names")
    if manifest.swarm_label not in labels:
        raise ModelStoreError(
            f"the model's swarm label {manifest.swarm_label!r} is not among its labels {list(labels)}: "
            "the agent could not report a swarm score"
        )
    fc = manifest.feature_config
    if recording_rate is not None and fc.fmax > recording_rate / 2:
        raise ModelStoreError(
            f"the model listens up to {fc.fmax:g} Hz but this device records at {recording_rate} Hz "
            f"(nothing above {recording_rate / 2:g} Hz): record faster or use a model with a lower fmax"
        )


def verify_bundle(*, path: Path, runtime: str | None = None, recording_rate: int | None = None) -> Classifier:
    """Everything a device checks before it runs a bundle: members, format version, checksum (read_bundle),
    the self-test on this device's runtime, and that the agent can serve it. Returns the loaded classifier."""
    try:
        bundle = read_bundle(Path(path))
    except BundleError as exc:
        raise ModelStoreError(f"refused: {exc}") from exc
    check_servable(manifest=bundle.manifest, recording_rate=recording_rate)
    try:
        return Classifier.from_bundle(bundle, runtime=runtime or None, selftest=True)
    except BundleError as exc:
        raise ModelStoreError(f"refused: {exc}") from exc


class ModelStore:
    def __init__(self, *, root: Path) -> None:
        self.root = Path(root)
        self.bundles = self.root / "bundles"

    # -- reading ---------------------------------------------------------------------------------------
    def _pointer(self, name: str) -> str | None:
        try:
            value = (self.root / name).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return value or None

    def current_sha(self) -> str | None:
        """Cheap (one small read): the running loop calls it between recordings."""
        return self._pointer("current")

    def _installed(self, sha: str | None) -> InstalledModel | None:
        if sha is None:
            return None
        path = self.bundles / f"{sha}{BUNDLE_SUFFIX}"
        try:
            manifest = read_bundle(path).manifest
        except BundleError as exc:
            raise ModelStoreError(f"the stored bundle {path} is unusable: {exc}") from exc
        return InstalledModel(sha256=sha, path=path, manifest=manifest)

    def current(self) -> InstalledModel | None:
        return self._installed(self.current_sha())

    def previous(self) -> InstalledModel | None:
        return self._installed(self._pointer("previous"))

    def current_path(self) -> Path:
        sha = self.current_sha()
        if sha is None:
            raise ModelStoreError(
                f"no model installed in {self.root}: run `beeaudio device install-model FILE` first"
            )
        return self.bundles / f"{sha}{BUNDLE_SUFFIX}"

    # -- changing --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def install(
        self, *, source: Path, runtime: str | None = None, recording_rate: int | None = None
    ) -> InstalledModel:
        """Verify ``source`` and make it the current model; the current one becomes ``previous``.

        Nothing changes when any check fails (:class:`ModelStoreError` says which)."""
        source = Path(source)
        classifier = verify_bundle(path=source, runtime=runtime, recording_rate=recording_rate)
        sha = file_sha256(source)
        with self._locked():
            self.bundles.mkdir(parents=True, exist_ok=True)
            target = self.bundles / f"{sha}{BUNDLE_SUFFIX}"
            if not target.exists():
                write_bytes_atomic(target, source.read_bytes(), durable=True)
            if file_sha256(target) != sha:
                raise ModelStoreError(f"copying {source} into the store changed its content: disk problem?")
            old = self.current_sha()
            if old == sha:
                log.info("model %s is already the current one", sha[:12])
            else:
                if old is not None:
                    write_bytes_atomic(self.root / "previous", f"{old}\n".encode(), durable=True)
                write_bytes_atomic(self.root / "current", f"{sha}\n".encode(), durable=True)
            self._prune()
        installed = InstalledModel(sha256=sha, path=target, manifest=classifier.manifest)
        log.info("installed model %s", installed.describe())
        return installed

    def install_bytes(
        self,
        *,
        data: bytes,
        expected_sha256: str | None = None,
        runtime: str | None = None,
        recording_rate: int | None = None,
    ) -> InstalledModel:
        """Install a downloaded bundle (over the air). ``expected_sha256`` is what the collector announced:
        the sha256 of the bundle file or of its model; a mismatch is refused before anything else."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=BUNDLE_SUFFIX, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if expected_sha256:
                file_sha = sha256_hex(data)
                model_sha = ""
                with contextlib.suppress(BundleError):
                    model_sha = read_bundle(Path(tmp)).manifest.model_sha256
                if expected_sha256 not in (file_sha, model_sha):
                    raise ModelStoreError(
                        f"refused: the download's sha256 {file_sha} (model {model_sha or '?'}) is not the "
                        f"announced {expected_sha256}: damaged or tampered download"
                    )
            return self.install(source=Path(tmp), runtime=runtime, recording_rate=recording_rate)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def rollback(self) -> InstalledModel:
        """Switch back to the previous model (which then becomes ``previous`` in turn)."""
        with self._locked():
            old, new = self.current_sha(), self._pointer("previous")
            if new is None:
                raise ModelStoreError("no previous model to roll back to")
            if not (self.bundles / f"{new}{BUNDLE_SUFFIX}").is_file():
                raise ModelStoreError(f"the previous bundle {new[:12]} is missing from {self.bundles}")
            if old is not None:
                write_bytes_atomic(self.root / "previous", f"{old}\n".encode(), durable=True)
            write_bytes_atomic(self.root / "current", f"{new}\n".encode(), durable=True)
        installed = self.current()
        assert installed is not None
        log.info("rolled back to %s", installed.describe())
        return installed

    def _prune(self) -> None:
        """Keep only the bundles the pointers name (a Pi's SD card is small)."""
        keep = {self.current_sha(), self._pointer("previous")}
        for path in self.bundles.glob(f"*{BUNDLE_SUFFIX}"):
            if path.name.removesuffix(BUNDLE_SUFFIX) not in keep:
                path.unlink(missing_ok=True)
