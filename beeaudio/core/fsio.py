"""Files written atomically, and file checksums: one implementation for every room.

Run folders, reports, manifests, spool recordings, bundles and pointers are read while they are written (a
dashboard polls a report, a device watches its spool folder, a power cut can strike mid-write), so every
writer here writes a temporary file in the target's folder and renames it into place: a reader sees the old
file or the new one, never half of either. ``durable=True`` also fsyncs the file and its folder before
returning, for what must survive a power cut (the device's model pointers and bundles, an exported bundle);
the rest skips the fsyncs, which cost tens of milliseconds each on an SD card.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """Metrics arrive as numpy scalars and arrays, paths and datetimes; files hold plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, datetime)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=json_default) + "\n"


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry itself is data on POSIX file systems)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: Path, *, mode: int = 0o644, durable: bool = False, suffix: str = ".part"
) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (soundfile, zipfile, ffmpeg).

    On a clean exit the temporary file gets ``mode`` and replaces ``path``; on any exception it is removed
    and ``path`` is untouched. The temporary name starts with a dot and ends with ``suffix``, so a spool
    watcher never takes it for a recording.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if durable:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); ``mode`` 0o600 for secrets."""
    with atomic_path(path, mode=mode, durable=durable, suffix=".tmp") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644, durable: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode, durable=durable)


def write_json(path: Path, payload: Any, *, private: bool = False, durable: bool = False) -> Path:
    """Write ``payload`` as JSON atomically; ``private`` files (they hold tokens) are readable by their owner
    only."""
    return write_text_atomic(path, dumps(payload), mode=0o600 if private else 0o644, durable=durable)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content, read in 1 MiB blocks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
