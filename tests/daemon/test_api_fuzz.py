"""The live daemon fuzzed through its own OpenAPI document (schemathesis).

Bounded and loopback-only: the SmolLM2 daemon of the API tests, a capped
number of generated requests per operation, no example database. Every
response must be one the document declares (status, content type, body
schema), and none may be a server error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, checks

from tests.daemon.conftest import TOKEN, DaemonProcess, chat_body

pytestmark = [pytest.mark.model, pytest.mark.slow]

# Per operation; 60 keeps CI to about a minute. The closing figures were
# taken with EDGE_AGENT_API_FUZZ_EXAMPLES=10000 (see the README).
EXAMPLES = int(os.environ.get("EDGE_AGENT_API_FUZZ_EXAMPLES", "60"))
# Bytes the daemon may grow by from a quarter of the way in to the end. The
# first requests make memory resident for good: llama.cpp's KV cache, mapped
# at load, is touched page by page as longer prompts arrive, and llguidance's
# view of the vocabulary and the bounded grammar and validator caches fill.
# Measured at 10,000 requests (README): +50 MiB over the first 250, then
# +6.4 MiB over the next 9,750.
RSS_GROWTH_LIMIT = 32 * 1024 * 1024
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# One request down each path the fuzzer will take: words, a tool call, a
# stream, log-probabilities, a JSON answer.
WARM_UP = [
    chat_body("Say hello", max_tokens=8),
    chat_body("Weather in Paris?", tools=[WEATHER], max_tokens=32),
    chat_body("Say hello", max_tokens=8, stream=True),
    chat_body("Say hello", max_tokens=8, logprobs=True, top_logprobs=2),
    chat_body(
        "A colour",
        max_tokens=16,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "c",
                "schema": {
                    "type": "object",
                    "properties": {"c": {"type": "string"}},
                    "required": ["c"],
                },
            },
        },
    ),
]
RSS_EVERY = 250  # requests between RSS samples
WARM_AT = max(1, EXAMPLES // 4)  # growth is measured from here to the end
# Where to write the samples as JSON (for the README's figures); unset: printed only.
RSS_LOG = os.environ.get("EDGE_AGENT_API_FUZZ_RSS_LOG")
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


def fuzz(
    operation: APIOperation, daemon: DaemonProcess, samples: list[tuple[int, int]]
) -> Counter[int]:
    """``EXAMPLES`` generated requests to one operation, each validated;
    returns how often each status came back. Appends (requests so far,
    daemon RSS in KiB) to ``samples`` every ``RSS_EVERY`` requests."""
    statuses: Counter[int] = Counter()
    process = psutil.Process(daemon.proc.pid)

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
        done = statuses.total()
        if done % RSS_EVERY == 0 or done == WARM_AT:
            samples.append((done, process.memory_info().rss // 1024))

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
    at_rest = process.memory_info().rss
    with smol_daemon.client() as client:
        for body in WARM_UP:
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    warm = process.memory_info().rss
    samples: list[tuple[int, int]] = [(0, warm // 1024)]
    statuses = fuzz(operation, smol_daemon, samples)
    after = process.memory_info().rss
    samples.append((statuses.total(), after // 1024))
    before = next((kib * 1024 for n, kib in samples if n >= WARM_AT), after)
    if RSS_LOG:
        name = path.strip("/").replace("/", "_")
        Path(RSS_LOG).with_suffix(f".{name}.json").write_text(json.dumps(samples))
    assert max(statuses) < 500, statuses
    if path == "/v1/chat/completions":  # the model answered some; others were refused
        assert statuses[200] > 0 and statuses[400] > 0, statuses
    assert after - before < RSS_GROWTH_LIMIT, (before, after)
    print(
        path,
        dict(statuses),
        f"RSS at rest {at_rest // 1024} KiB, after warm-up {warm // 1024} KiB,"
        f" at request {WARM_AT} {before // 1024} KiB, at the end {after // 1024} KiB",
        samples,
    )
