"""Property-based fuzzing of the collector's own OpenAPI with schemathesis: no input gives a 5xx, and every
answer is one the schema documents (issue 14, item 14): its status code, its content type, its headers
and its body (``response_schema_conformance``) — so a client generated from ``/openapi.json`` can rely on
it, refusals included (``{"detail": ...}``, 503 with ``Retry-After``).

Runs against SQLite and PostgreSQL (PostgreSQL refuses things SQLite takes, e.g. NUL in text), with the
admin token everywhere and a real device token on the device endpoints, so requests get past auth.
``BEEAUDIO_FUZZ_EXAMPLES`` (default 6 per operation and database) makes a longer run, e.g. 300.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.collector import ADMIN, Collector, bearer

#: A fuzz run: the full suite's, not the edit loop's.
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("BEEAUDIO_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_target(collector: Collector) -> dict[str, Any]:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    return {"collector": collector, "device": device}


@pytest.fixture
def api_schema(fuzz_target: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_target["collector"].app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors_and_answers_as_documented(case: Any, fuzz_target: dict[str, Any]) -> None:
    path = case.operation.path
    device_side = path in ("/api/v1/events", "/api/v1/devices/{device_id}/heartbeat")
    headers = bearer(fuzz_target["device"]["token"]) if device_side else dict(ADMIN)
    # Half the time aim at the device's own id so the handler behind the 403 is exercised too.
    own = zlib.crc32(str(case.body).encode()) % 2 == 0
    if device_side and case.path_parameters and "device_id" in case.path_parameters and own:
        case.path_parameters["device_id"] = "d1"
    response = case.call(headers={**(case.headers or {}), **headers})
    case.validate_response(response, checks=CHECKS)
