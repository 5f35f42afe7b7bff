"""Plain-JSON files written atomically: run folders, reports and manifests are read while they are written."""

from __future__ import annotations

import json
import os
import tempfile
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


def write_json(path: Path, payload: Any, *, private: bool = False) -> Path:
    """Write ``payload`` atomically; ``private`` files (they hold tokens) are readable by their owner only."""
    path = Path(path)
    text = dumps(payload)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
