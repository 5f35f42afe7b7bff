"""``GET /metrics``: the Prometheus text exposition of this process (``beeaudio.collector.metrics``).

It needs the read token (or the admin token): the figures say how many hives swarm and which devices
fall behind, which is what the read token guards everywhere else. Prometheus sends it with
``authorization: {credentials_file: ...}`` (docs/collector.md has a scrape config).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from beeaudio.collector.auth import Principal, require_reader
from beeaudio.collector.context import AppContext, get_context

METRICS_PATH = "/metrics"

router = APIRouter(tags=["metrics"])


@router.get(METRICS_PATH, include_in_schema=False)
async def get_metrics(
    _: Principal = Depends(require_reader), context: AppContext = Depends(get_context)
) -> Response:
    # The database gauges are read while the exposition is generated: off the event loop.
    body = await run_in_threadpool(generate_latest, context.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
