"""Load and self-test a model bundle in a child process, so that a model that crashes the TF-Lite runtime
refuses the bundle instead of killing the caller.

A TF-Lite runtime is native code, and not every one verifies a model before it runs it: tflite-runtime
2.14 (the only runtime for 32-bit Raspberry Pi OS) dies with SIGSEGV on most models with a few bytes
changed, checksum recomputed. No Python code survives that in its own process, so every *new* bundle is
first loaded and self-tested by ``python -P -m beeaudio.core.sandbox BUNDLE`` (:func:`check_bundle_in_child`);
only when the child says it passed does the caller load the bundle itself. The child runs the very code the
caller will (:meth:`beeaudio.core.inference.Classifier.load` with the same runtime and threads), so a bundle
that passed there loads in the caller too.

The child reports on a private copy of its standard output, one JSON object per line: each stage as it
enters it (``read``, ``load``, ``selftest``), then ``{"ok": {...}}`` or ``{"error": "...", "kind": "..."}``.
A child that dies tells, by the last stage it announced, what it was doing. Native code that prints to
file descriptor 1 writes into the child's stderr instead, so it cannot garble the report. The child also
caps its own address space (``RLIMIT_AS``): a model that asks for gigabytes fails there, not on the device.

A desktop caller that checks the same bundles again and again (``beeaudio classify``) can pass a
``cache_dir``: a bundle that passed is remembered there by its sha256, the runtime and its version and the
thread count, and not checked again (the check costs a Python start-up, ~0.5 s). The device keeps its own
record in its model store instead.

Only the standard library and the bundle reader at import time (the child imports the inference code);
the device and the collector both use it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from beeaudio.core.bundle import BundleError
from beeaudio.core.errors import BeeaudioError

log = logging.getLogger(__name__)

#: Seconds a child may take to start, load and self-test a bundle. Python, numpy and a runtime start in
#: about 0.3 s on a desktop and a few seconds on a Pi Zero; a minute means the runtime hangs on the model.
DEFAULT_TIMEOUT_S = 60.0
#: Address space the child may use. A hive model loads in under 200 MB of it (Python, numpy and the
#: runtime included); 1 GB leaves room for larger models and refuses the ones that would take a Pi's RAM.
DEFAULT_MEMORY_LIMIT_MB = 1024

#: What the child was doing when it announced a stage, for the message when it dies there.
_STAGE_TEXT = {
    "start": "starting",
    "read": "reading the bundle",
    "load": "loading",
    "selftest": "running its self-test",
}
#: How much of the child's stderr goes into the log when it fails (the runtime's last words).
_STDERR_TAIL_BYTES = 4000
#: The distribution of each runtime module, for the version in a cached check's key.
_RUNTIME_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                          "tensorflow": "tensorflow"}  # fmt: skip


class BundleCrashError(BundleError):
    """The model crashed the TF-Lite runtime, hung it, or ran it out of memory, in the child: refused."""


class SandboxError(BeeaudioError):
    """The child could not check the bundle for a reason that is not the bundle's (e.g. no Python there)."""


@dataclass(frozen=True)
class BundleCheck:
    """What the child found: the bundle loaded and passed its self-test on ``runtime``."""

    path: str
    runtime: str
    model_name: str
    model_version: str
    model_sha256: str
    selftest_windows: int
    selftest_max_delta: float
    seconds: float  # the child's whole run, start-up included: the cost of the check
    cached: bool = False  # found in ``cache_dir``: no child this time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_check_cache() -> Path:
    """``$BEEAUDIO_CACHE/bundle-checks`` (default ``~/.cache/beeaudio``), beside the feature cache."""
    return Path(os.environ.get("BEEAUDIO_CACHE") or Path.home() / ".cache" / "beeaudio") / "bundle-checks"


def _cache_entry(*, cache_dir: Path, path: Path, runtime: str | None, num_threads: int) -> Path | None:
    """Where a passed check of this bundle on this runtime (name and version) would be remembered."""
    from importlib import metadata

    from beeaudio.core.fsio import file_sha256

    try:
        name = runtime or next(n for n in _RUNTIME_DISTRIBUTIONS if importlib.util.find_spec(n) is not None)
        version = metadata.version(_RUNTIME_DISTRIBUTIONS[name])
        sha = file_sha256(path)
    except (StopIteration, KeyError, metadata.PackageNotFoundError, OSError, ValueError):
        return None
    return Path(cache_dir) / f"{sha}.{name}-{version}.t{num_threads}.json"


def _cached(entry: Path | None) -> BundleCheck | None:
    if entry is None:
        return None
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
        return BundleCheck(**{**data, "seconds": 0.0, "cached": True})
    except (OSError, ValueError, TypeError):
        return None


def _remember(entry: Path | None, check: BundleCheck) -> None:
    if entry is None:
        return
    from beeaudio.core.fsio import write_text_atomic

    try:
        write_text_atomic(entry, json.dumps(check.to_json()))
    except OSError as exc:  # a cache: never the reason a check fails
        log.debug("cannot remember the bundle check in %s: %s", entry, exc)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _tail(handle: Any) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - _STDERR_TAIL_BYTES))
    return handle.read().decode("utf-8", "replace").strip()


def _parse_report(text: str) -> tuple[str, dict[str, Any] | None]:
    """The last stage announced and the final message (``ok`` or ``error``), if any."""
    stage, final = "start", None
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        if "stage" in item:
            stage = str(item["stage"])
        elif "ok" in item or "error" in item:
            final = item
    return stage, final


def check_bundle_in_child(
    *,
    path: Path,
    runtime: str | None = None,
    num_threads: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    python: str | None = None,
    cache_dir: Path | None = None,
) -> BundleCheck:
    """Load and self-test ``path`` in a child process; return what it found.

    Raises :class:`BundleCrashError` when the child dies by a signal (e.g. "the model crashed the TF-Lite
    runtime (SIGSEGV) while loading: refused"), takes longer than ``timeout_s`` or exceeds
    ``memory_limit_mb`` (0: no limit); :class:`beeaudio.core.bundle.BundleError` for the refusals a load in
    this process would give (checksum, self-test, ...);
    :class:`beeaudio.core.inference.RuntimeUnavailableError`
    when the runtime is not installed; :class:`SandboxError` when the child cannot run at all. ``python``
    is the interpreter of the child (default: this one). ``cache_dir``: remember passes there, and skip
    the child for a bundle that passed before on the same runtime version (only for ``python`` None).
    """
    path = Path(path)
    entry = None
    if cache_dir is not None and python is None:
        entry = _cache_entry(cache_dir=cache_dir, path=path, runtime=runtime, num_threads=num_threads)
        found = _cached(entry)
        if found is not None:
            return found
    check = _run_child(
        path=path,
        runtime=runtime,
        num_threads=num_threads,
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        python=python,
    )
    _remember(entry, check)
    return check


def _run_child(
    *,
    path: Path,
    runtime: str | None,
    num_threads: int,
    timeout_s: float,
    memory_limit_mb: int,
    python: str | None,
) -> BundleCheck:
    command = [python or sys.executable, "-P", "-m", "beeaudio.core.sandbox", str(path.resolve())]
    command += ["--threads", str(num_threads), "--memory-limit-mb", str(int(memory_limit_mb))]
    if runtime:
        command += ["--runtime", runtime]
    # -P keeps the caller's working folder off the child's path. The same interpreter gets the folder this
    # beeaudio is imported from instead (a checkout run without installing checks with the same code);
    # another interpreter (another environment) uses its own beeaudio.
    env = dict(os.environ)
    if python is None:
        home = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH", "")) if p)
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        try:
            # stdin closed, its own stderr file: nothing the runtime does can block on or garble ours.
            # No preexec_fn (unsafe in a threaded agent): the child limits itself.
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            stage, _ = _parse_report((exc.stdout or b"").decode("utf-8", "replace"))
            log.warning("bundle check of %s timed out; the child said: %s", path, _tail(stderr))
            raise BundleCrashError(
                f"{path}: the model hung the TF-Lite runtime (no answer within {timeout_s:g} s) while "
                f"{_STAGE_TEXT.get(stage, stage)}: refused"
            ) from None
        except OSError as exc:
            raise SandboxError(f"cannot start the bundle check {command[0]}: {exc}") from exc
        seconds = time.monotonic() - started
        stage, final = _parse_report(done.stdout.decode("utf-8", "replace"))
        if done.returncode < 0:
            name = _signal_name(done.returncode)
            log.warning("bundle check of %s died by %s; the child said: %s", path, name, _tail(stderr))
            raise BundleCrashError(
                f"{path}: the model crashed the TF-Lite runtime ({name}) while "
                f"{_STAGE_TEXT.get(stage, stage)}: refused"
            )
        if done.returncode == 0 and final is not None and isinstance(final.get("ok"), dict):
            ok = final["ok"]
            return BundleCheck(
                path=str(path),
                runtime=str(ok["runtime"]),
                model_name=str(ok["model_name"]),
                model_version=str(ok["model_version"]),
                model_sha256=str(ok["model_sha256"]),
                selftest_windows=int(ok["selftest_windows"]),
                selftest_max_delta=float(ok["selftest_max_delta"]),
                seconds=round(seconds, 3),
            )
        if final is not None and "error" in final:
            message, kind = str(final["error"]), str(final.get("kind", ""))
            if kind == "runtime":
                from beeaudio.core.inference import RuntimeUnavailableError

                raise RuntimeUnavailableError(message)
            if kind == "memory":
                raise BundleCrashError(
                    f"{path}: the model needs more than {memory_limit_mb} MB of memory while "
                    f"{_STAGE_TEXT.get(stage, stage)}: refused"
                )
            if kind == "bundle":
                raise BundleError(message)
            raise SandboxError(f"the bundle check of {path} failed: {message}")
        raise SandboxError(
            f"the bundle check of {path} exited with code {done.returncode} without a report: "
            f"{_tail(stderr)[-500:]}"
        )


# -- the child -----------------------------------------------------------------------------------------------
def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    import resource

    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m beeaudio.core.sandbox", description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--runtime", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    args = parser.parse_args(argv)

    # The report goes to a private copy of fd 1; fd 1 itself then points at stderr, so whatever native
    # code prints cannot be mistaken for the report.
    report = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    import faulthandler

    faulthandler.enable()  # a Python traceback in the log before the signal kills the child

    def say(item: dict[str, Any]) -> None:
        report.write(json.dumps(item) + "\n")
        report.flush()

    try:
        _limit_memory(args.memory_limit_mb)
        from beeaudio.core.bundle import read_bundle
        from beeaudio.core.inference import Classifier, RuntimeUnavailableError
    except (ImportError, MemoryError, OSError, ValueError) as exc:
        say({"error": f"cannot start: {type(exc).__name__}: {exc}", "kind": "internal"})
        return 1
    try:
        say({"stage": "read"})
        bundle = read_bundle(args.bundle)
        say({"stage": "load"})
        classifier = Classifier.from_bundle(
            bundle, runtime=args.runtime, num_threads=args.threads, selftest=False
        )
        say({"stage": "selftest"})
        delta = classifier.run_selftest()
    except MemoryError:
        say({"error": "out of memory", "kind": "memory"})
        return 1
    except BundleError as exc:
        say({"error": str(exc), "kind": "bundle"})
        return 1
    except RuntimeUnavailableError as exc:
        say({"error": str(exc), "kind": "runtime"})
        return 1
    except Exception as exc:  # anything else the runtime raises on this model is the model's refusal
        say({"error": f"{args.bundle}: the runtime cannot use the model: {type(exc).__name__}: {exc}",
             "kind": "bundle"})  # fmt: skip
        return 1
    m = bundle.manifest
    say(
        {
            "ok": {
                "runtime": classifier.runtime,
                "model_name": m.model_name,
                "model_version": m.model_version,
                "model_sha256": m.model_sha256,
                "selftest_windows": len(bundle.selftest.features),
                "selftest_max_delta": float(delta),
            }
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
