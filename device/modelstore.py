"""The model store: verified bundles on disk, an atomic ``current`` pointer and a ``previous`` for rollback.

Layout of the store folder::

    bundles/<sha256 of the bundle file>.beemodel
    current      # one line: the sha256 of the bundle in use
    previous     # the one before, for `beeaudio device rollback`
    checked.json # bundles that loaded and passed their self-test in a child process, per runtime
    refused.json # bundles refused for what they contain (by sha256), kept across restarts

A bundle is copied in (temporary file + fsync + ``os.replace``) only after it passed every check; the
pointers are switched the same way, so a power cut leaves either the old model or the new one, never a
mixture. The running agent reads ``current`` between recordings and picks up a switched model there.
A ``flock`` on ``.lock`` keeps a CLI ``install-model`` and the agent's over-the-air update from interleaving.

Every new bundle is first loaded and self-tested in a child process
(:func:`beeaudio.core.sandbox.check_bundle_in_child`): a model that crashes the TF-Lite runtime kills the
child, not the agent or the command. A bundle refused for its content (format, checksum, self-test, a
crash, a hang) is remembered in ``refused.json``, so an over-the-air update does not fetch it again after a
restart; a bundle that passed is remembered in ``checked.json``, so the agent pays the check once per
bundle and runtime, not at every start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beeaudio.core.bundle import BUNDLE_SUFFIX, BundleError, BundleManifest, read_bundle
from beeaudio.core.errors import BeeaudioError
from beeaudio.core.fsio import file_sha256, fsync_dir, sha256_hex, write_bytes_atomic, write_json
from beeaudio.core.inference import Classifier, RuntimeUnavailableError, resolve_runtime
from beeaudio.core.sandbox import (
    DEFAULT_MEMORY_LIMIT_MB,
    DEFAULT_TIMEOUT_S,
    BundleCheck,
    SandboxError,
    check_bundle_in_child,
)

log = logging.getLogger(__name__)

CHECKED_FILE = "checked.json"
REFUSED_FILE = "refused.json"
#: Refusals kept (newest): enough for any fleet's history of bad bundles, small enough to read each poll.
MAX_REFUSALS = 100


class ModelStoreError(BeeaudioError):
    """A bundle refused (the message says why) or a store operation that cannot be done."""


class BundleRefusedError(ModelStoreError):
    """Refused for what the bundle contains (format, checksum, self-test, a crash or hang of the runtime):
    the same bytes are refused every time, so the store remembers them (``refused.json``)."""


@dataclass(frozen=True)
class ChildCheck:
    """Limits of the child process that loads and self-tests each new bundle."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    python: str | None = None  # the child's interpreter (default: this one)


@dataclass(frozen=True)
class InstalledModel:
    sha256: str  # of the bundle file
    path: Path
    manifest: BundleManifest

    def describe(self) -> str:
        m = self.manifest
        return f"{m.model_name} {m.model_version} ({m.quantization}, bundle sha256 {self.sha256[:12]}…)"


def check_servable(*, manifest: BundleManifest, recording_rate: int | None) -> None:
    """Refuse a model this agent cannot serve: it must have at least two distinct labels (its manifest's
    own check, :meth:`BundleManifest.check`, has made sure the swarm label is one of them), and it must not
    listen above what the device's recorder captures."""
    labels = manifest.labels
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ModelStoreError(f"the model's labels {list(labels)} must be at least two distinct names")
    fc = manifest.feature_config
    if recording_rate is not None and fc.fmax > recording_rate / 2:
        raise ModelStoreError(
            f"the model listens up to {fc.fmax:g} Hz but this device records at {recording_rate} Hz "
            f"(nothing above {recording_rate / 2:g} Hz): record faster or use a model with a lower fmax"
        )


def check_bundle(
    *,
    path: Path,
    runtime: str | None = None,
    recording_rate: int | None = None,
    num_threads: int = 1,
    child: ChildCheck = ChildCheck(),
) -> tuple[BundleManifest, BundleCheck]:
    """Everything a device checks before it runs a bundle, without loading it in this process: members,
    format version, checksum (read_bundle), that the agent can serve it, then load and self-test on this
    device's runtime in a child process. :class:`BundleRefusedError` when the bundle itself is at fault."""
    path = Path(path)
    try:
        manifest = read_bundle(path).manifest
    except BundleError as exc:
        raise BundleRefusedError(f"refused: {exc}") from exc
    check_servable(manifest=manifest, recording_rate=recording_rate)
    try:
        checked = check_bundle_in_child(
            path=path,
            runtime=runtime or None,
            num_threads=num_threads,
            timeout_s=child.timeout_s,
            memory_limit_mb=child.memory_limit_mb,
            python=child.python,
        )
    except BundleError as exc:
        raise BundleRefusedError(f"refused: {exc}") from exc
    except (RuntimeUnavailableError, SandboxError) as exc:  # this device's fault, not the bundle's
        raise ModelStoreError(f"cannot check {path}: {exc}") from exc
    return manifest, checked


def verify_bundle(
    *,
    path: Path,
    runtime: str | None = None,
    recording_rate: int | None = None,
    num_threads: int = 1,
    child: ChildCheck = ChildCheck(),
) -> Classifier:
    """:func:`check_bundle`, then load the bundle in this process (safe now: it passed in the child) and
    return the classifier."""
    check_bundle(
        path=path, runtime=runtime, recording_rate=recording_rate, num_threads=num_threads, child=child
    )
    try:
        return Classifier.load(Path(path), runtime=runtime or None, num_threads=num_threads, selftest=True)
    except BundleError as exc:
        raise BundleRefusedError(f"refused: {exc}") from exc


class ModelStore:
    def __init__(self, *, root: Path, child: ChildCheck = ChildCheck()) -> None:
        self.root = Path(root)
        self.bundles = self.root / "bundles"
        self.child = child

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

    def previous_sha(self) -> str | None:
        return self._pointer("previous")

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
        self,
        *,
        source: Path,
        runtime: str | None = None,
        recording_rate: int | None = None,
        num_threads: int = 1,
    ) -> InstalledModel:
        """Verify ``source`` (in a child process) and make it the current model; the current one becomes
        ``previous``.

        Nothing changes when any check fails (:class:`ModelStoreError` says which); a bundle refused for
        its content is remembered (:meth:`refusal`). An install by hand always checks again, and a bundle
        that passes is forgotten as refused (a runtime upgrade may have fixed it)."""
        source = Path(source)
        if not source.is_file():
            raise BundleRefusedError(f"refused: {source}: no such bundle file")
        self.root.mkdir(parents=True, exist_ok=True)
        # The bytes checked are the bytes installed: a private copy is checked, then renamed into place,
        # so a file changed meanwhile at ``source`` cannot slip in unchecked.
        fd, name = tempfile.mkstemp(prefix=".incoming.", suffix=BUNDLE_SUFFIX, dir=self.root)
        incoming = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle, source.open("rb") as original:
                for block in iter(lambda: original.read(1 << 20), b""):
                    handle.write(block)
            sha = file_sha256(incoming)
            try:
                manifest, checked = check_bundle(
                    path=incoming,
                    runtime=runtime,
                    recording_rate=recording_rate,
                    num_threads=num_threads,
                    child=self.child,
                )
            except BundleRefusedError as exc:
                message = str(exc).replace(str(incoming), str(source))
                self._remember_refusal(sha=sha, model_sha=_model_sha_of(incoming), reason=message)
                raise BundleRefusedError(message) from exc
            except ModelStoreError as exc:
                raise ModelStoreError(str(exc).replace(str(incoming), str(source))) from exc
            installed = self._switch_to(
                incoming=incoming, sha=sha, manifest=manifest, runtime=checked.runtime
            )
        finally:
            incoming.unlink(missing_ok=True)
        log.info("installed model %s (checked in a child in %.2f s)", installed.describe(), checked.seconds)
        return installed

    def _switch_to(
        self, *, incoming: Path, sha: str, manifest: BundleManifest, runtime: str
    ) -> InstalledModel:
        with self._locked():
            self.bundles.mkdir(parents=True, exist_ok=True)
            target = self.bundles / f"{sha}{BUNDLE_SUFFIX}"
            if not target.exists():
                os.chmod(incoming, 0o644)  # mkstemp's 0600 would hide it from a status-reading user
                with incoming.open("rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(incoming, target)
                fsync_dir(self.bundles)
            if file_sha256(target) != sha:
                raise ModelStoreError(f"storing bundle {sha[:12]} changed its content: disk problem?")
            self._record_check(sha=sha, runtime=runtime)
            self._forget_refusal(sha)
            old = self.current_sha()
            if old == sha:
                log.info("model %s is already the current one", sha[:12])
            else:
                if old is not None:
                    write_bytes_atomic(self.root / "previous", f"{old}\n".encode(), durable=True)
                write_bytes_atomic(self.root / "current", f"{sha}\n".encode(), durable=True)
            self._prune()
        return InstalledModel(sha256=sha, path=target, manifest=manifest)

    def install_bytes(
        self,
        *,
        data: bytes,
        expected_sha256: str | None = None,
        runtime: str | None = None,
        recording_rate: int | None = None,
        num_threads: int = 1,
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
            return self.install(
                source=Path(tmp), runtime=runtime, recording_rate=recording_rate, num_threads=num_threads
            )
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
        """Keep only the bundles the pointers name (a Pi's SD card is small), and their check records."""
        keep = {self.current_sha(), self._pointer("previous")}
        for path in self.bundles.glob(f"*{BUNDLE_SUFFIX}"):
            if path.name.removesuffix(BUNDLE_SUFFIX) not in keep:
                path.unlink(missing_ok=True)
        checked = self._read_json(CHECKED_FILE)
        if set(checked) - keep:
            write_json(
                self.root / CHECKED_FILE, {k: v for k, v in checked.items() if k in keep}, durable=True
            )

    # -- what was checked and what was refused ---------------------------------------------------------
    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.root / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A damaged record only costs a check again (checked) or a download again (refused).
            log.warning("ignoring the unreadable %s: %s", self.root / name, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def refusal(self, sha256: str) -> str | None:
        """Why the bundle with this sha256 (of the bundle file or of its model) was refused, or None."""
        for file_sha, entry in self._read_json(REFUSED_FILE).items():
            if sha256 and sha256 in (file_sha, entry.get("model_sha256")):
                return str(entry.get("reason", "refused"))
        return None

    def refusals(self) -> dict[str, dict[str, Any]]:
        return self._read_json(REFUSED_FILE)

    def _remember_refusal(self, *, sha: str, model_sha: str, reason: str) -> None:
        try:
            with self._locked():
                refused = self._read_json(REFUSED_FILE)
                refused.pop(sha, None)
                refused[sha] = {"model_sha256": model_sha, "reason": reason[:2000], "at": time.time()}
                newest = dict(list(refused.items())[-MAX_REFUSALS:])
                write_json(self.root / REFUSED_FILE, newest, durable=True)
        except OSError as exc:  # a full disk must not turn a refusal into a crash; it is only a cache
            log.warning("cannot remember the refusal of %s: %s", sha[:12], exc)
        log.warning("bundle %s refused and remembered: %s", sha[:12], reason)

    def _forget_refusal(self, sha: str) -> None:
        refused = self._read_json(REFUSED_FILE)
        if sha in refused:
            del refused[sha]
            write_json(self.root / REFUSED_FILE, refused, durable=True)

    def _record_check(self, *, sha: str, runtime: str) -> None:
        checked = self._read_json(CHECKED_FILE)
        runtimes = sorted(set(checked.get(sha, [])) | {runtime})
        if checked.get(sha) != runtimes:
            checked[sha] = runtimes
            write_json(self.root / CHECKED_FILE, checked, durable=True)

    def ensure_checked(self, *, sha256: str, runtime: str | None = None, num_threads: int = 1) -> None:
        """Before this process loads a stored bundle: refuse it if it was refused before, else load and
        self-test it in a child unless that was done already on this runtime. The agent calls it before
        every model switch and at start (a bundle stored by an older beeaudio was never checked so)."""
        reason = self.refusal(sha256)
        if reason is not None:
            raise BundleRefusedError(f"bundle {sha256[:12]} was refused before: {reason}")
        try:
            resolved, _ = resolve_runtime(runtime or None)
        except RuntimeUnavailableError as exc:
            raise ModelStoreError(str(exc)) from exc
        if resolved in self._read_json(CHECKED_FILE).get(sha256, []):
            return
        path = self.bundles / f"{sha256}{BUNDLE_SUFFIX}"
        try:
            checked = check_bundle_in_child(
                path=path,
                runtime=runtime or None,
                num_threads=num_threads,
                timeout_s=self.child.timeout_s,
                memory_limit_mb=self.child.memory_limit_mb,
                python=self.child.python,
            )
        except BundleError as exc:
            self._remember_refusal(sha=sha256, model_sha=_model_sha_of(path), reason=f"refused: {exc}")
            raise BundleRefusedError(f"refused: {exc}") from exc
        except (RuntimeUnavailableError, SandboxError) as exc:
            raise ModelStoreError(f"cannot check {path}: {exc}") from exc
        with self._locked():
            self._record_check(sha=sha256, runtime=checked.runtime)


def _model_sha_of(path: Path) -> str:
    """The manifest's model sha256 of a bundle, or "" when it cannot be read (the collector may announce
    either sha256)."""
    try:
        return read_bundle(path).manifest.model_sha256
    except BundleError:
        return ""
