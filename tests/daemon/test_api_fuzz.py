"""The live daemon fuzzed through its own OpenAPI document (schemathesis).

Bounded and loopback-only: the SmolLM2 daemon of the API tests, a capped
number of generated requests per operation, no example database. Every
response must be one the document declares (status, content type, body
schema), and none may be a server error.
"""

from __future__ import annotations

import os
from collections import Counter

import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, checks

from tests.daemon.conftest import TOKEN, DaemonProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

# Per operation; 60 keeps CI to about a minute. The closing figures were
# taken with EDGE_AGENT_API_FUZZ_EXAMPLES=10000 (see the README).
EXAMPLES = int(os.environ.get("EDGE_AGENT_API_FUZZ_EXAMPLES", "60"))
RSS_GROWTH_LIMIT = 64 * 1024 * 1024  # bytes the daemon may grow by over one run
# Not positive_data_acceptance: a request can fit the schema and still be
# refused for what it says (an empty last message, a tool result with no
# call before it), with a 400 the document declares.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def fuzz(operation: APIOperation, daemon: DaemonProcess) -> Counter[int]:
    """``EXAMPLES`` generated requests to one operation, each validated;
    returns how often each status came back."""
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure in CI is reproducible
        suppress_health_check=list(HealthCheck),
    )
    def one(case: Case) -> None:
        response = case.call_and_validate(
            headers={"authorization": f"Bearer {TOKEN}"}, timeout=120, checks=CHECKS
        )
        statuses[response.status_code] += 1

    one()
    assert daemon.alive(), daemon.log()
    return statuses


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/healthz"])
def test_no_server_error_and_no_undeclared_response(smol_daemon: DaemonProcess, path: str) -> None:
    schema = schemathesis.openapi.from_url(
        f"{smol_daemon.url}/openapi.json", headers={"authorization": f"Bearer {TOKEN}"}
    )
    operations = [r.ok() for r in schema.get_all_operations()]
    (operation,) = [o for o in operations if o.path == path]
    process = psutil.Process(smol_daemon.proc.pid)
    before = process.memory_info().rss
    statuses = fuzz(operation, smol_daemon)
    after = process.memory_info().rss
    assert max(statuses) < 500, statuses
    if path == "/v1/chat/completions":  # the model answered some; others were refused
        assert statuses[200] > 0 and statuses[400] > 0, statuses
    assert after - before < RSS_GROWTH_LIMIT, (before, after)
    print(path, dict(statuses), f"RSS {before // 1024} -> {after // 1024} KiB")
