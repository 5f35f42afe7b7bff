"""What a request handler needs, built once per app by the factory (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from sqlalchemy.engine import Engine

from beeaudio.collector.metrics import Metrics
from beeaudio.collector.settings import Settings
from beeaudio.collector.state import StateParams


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine
    admin_token: str
    read_token: str
    defaults: StateParams
    data_dir: Path
    clock_ms: Callable[[], int]
    #: This app's Prometheus registry and metrics (never the process-global default registry).
    metrics: Metrics

    @property
    def webhook_urls(self) -> list[str]:
        return self.settings.webhook_urls()


def get_context(request: Request) -> AppContext:
    return request.app.state.context
