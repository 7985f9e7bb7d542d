"""HTTPS offload against real servers: llama-cpp-python's OpenAI server over
TLS with a bearer token, and a scripted HTTPS server for faults on demand."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.errors import ConfigError, OffloadError
from edge_agent.routing.offload import OffloadRequest, OffloadTransport
from edge_agent.routing.offload.https import HttpsOffloadSettings, HttpsTransport
from edge_agent.toolbox.verify import verify_call
from tests.offload.conftest import (
    Answer,
    LlmServer,
    Pki,
    completion,
    free_port,
    tool_call,
    write_secret,
)

HOME_TOOLS = normalize_tools(
    [
        {
            "name": "set_light",
            "description": "Turn a room's light on or off.",
            "parameters": {
                "type": "object",
                "properties": {
                    "room": {"type": "string", "enum": ["kitchen", "bedroom", "living_room"]},
                    "on": {"type": "boolean", "description": "true = on, false = off"},
                },
                "required": ["room", "on"],
            },
        },
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    ]
)
SYSTEM = {"role": "system", "content": "You control a smart home. Use the functions."}


def light_request(key: str = "req-1", **overrides: Any) -> OffloadRequest:
    values: dict[str, Any] = {
        "messages": [SYSTEM, {"role": "user", "content": "Turn on the kitchen light."}],
        "tools": HOME_TOOLS,
        "idempotency_key": key,
    }
    return OffloadRequest(**{**values, **overrides})


def scripted_settings(
    base_url: str, pki: Pki, tmp_path: Path, **overrides: Any
) -> HttpsOffloadSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "ca_bundle": pki.ca_file,
        "token_file": write_secret(tmp_path / "token", "scripted-token"),
        "backoff_base_s": 0.01,
        "read_timeout_s": 5,
    }
    return HttpsOffloadSettings(**{**values, **overrides})


def failure(settings: HttpsOffloadSettings, **kwargs: Any) -> OffloadError:
    """The OffloadError that ``light_request()`` raises through a new transport."""
    with HttpsTransport(settings, **kwargs) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    return err.value


def check_verified(calls: tuple[Any, ...], tools: list[ToolSpec]) -> None:
    assert calls, "expected a tool call"
    for call in calls:
        verdict = verify_call(call, tools)
        assert verdict.ok, verdict.message


# --- against the real llama.cpp server ----------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_real_llm_returns_a_verified_tool_call(llm_server: LlmServer) -> None:
    with HttpsTransport(llm_server.settings()) as transport:
        assert isinstance(transport, OffloadTransport)
        reply = transport.send(light_request())
    assert reply.transport == "https"
    assert [c.name for c in reply.calls] == ["set_light"]
    assert reply.calls[0].arguments["room"] == "kitchen"
    assert reply.calls[0].arguments["on"] is True
    check_verified(reply.calls, HOME_TOOLS)
    assert reply.prompt_tokens > 50 and reply.completion_tokens > 0
    assert reply.model and reply.latency_s > 0


@pytest.mark.model
def test_wrong_ca_is_a_permanent_tls_error(llm_server: LlmServer, other_ca_file: Path) -> None:
    settings = llm_server.settings(ca_bundle=other_ca_file, max_retries=3)
    attempts: list[float] = []
    error = failure(settings, sleep=attempts.append)
    assert error.retryable is False
    assert "TLS handshake" in error.message
    assert "certificate verify failed" in error.message
    assert "ca_bundle" in error.hint
    assert attempts == []  # never retried


@pytest.mark.model
def test_wrong_token_is_401_and_never_shown(
    llm_server: LlmServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-secret-" + "x" * 20
    settings = llm_server.settings(token_file=write_secret(tmp_path / "t", wrong), max_retries=3)
    caplog.set_level(logging.DEBUG)
    error = failure(settings)
    with HttpsTransport(settings) as transport:
        shown = " ".join([str(error), error.one_line(), repr(error), repr(transport)])
    assert error.retryable is False
    assert "HTTP 401" in error.message
    assert "token" in error.hint
    for secret in (wrong, llm_server.token):
        assert secret not in shown
        assert secret not in caplog.text


# --- TLS and token handling (scripted server) ---------------------------------


def test_certificate_for_another_host_is_refused(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer()], cert=pki.leaf("example.invalid"))
    error = failure(scripted_settings(server.base_url, pki, tmp_path))
    assert error.retryable is False
    assert "TLS handshake" in error.message
    assert "mismatch" in error.message or "match" in error.message
    assert server.received == []


def test_group_readable_token_file_is_refused(tmp_path: Path, pki: Pki) -> None:
    token = write_secret(tmp_path / "token", "very-secret-value", mode=0o644)
    settings = HttpsOffloadSettings(base_url="https://127.0.0.1:1/v1", token_file=token)
    with pytest.raises(ConfigError) as err:
        HttpsTransport(settings)
    error = err.value
    assert "0644" in error.message and str(token) in error.message
    assert "chmod 600" in error.hint
    assert "very-secret-value" not in error.one_line()


def test_token_from_environment(
    scripted: Any, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scripted([Answer()])
    monkeypatch.setenv("EA_TEST_TOKEN", "env-token-123")
    settings = scripted_settings(
        server.base_url, pki, tmp_path, token_file=None, token_env="EA_TEST_TOKEN"
    )
    with HttpsTransport(settings) as transport:
        transport.send(light_request())
        assert "env-token-123" not in repr(transport)
    assert server.received[0].headers["authorization"] == "Bearer env-token-123"
    monkeypatch.delenv("EA_TEST_TOKEN")
    with pytest.raises(ConfigError, match="EA_TEST_TOKEN is not set"):
        HttpsTransport(settings)


def test_plain_http_is_refused() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        HttpsTransport(HttpsOffloadSettings(base_url="http://127.0.0.1:9/v1"))


# --- retries --------------------------------------------------------------------


@pytest.mark.slow  # waits out a real Retry-After
def test_503_with_retry_after_is_retried_with_the_same_key(
    scripted: Any, pki: Pki, tmp_path: Path
) -> None:
    busy = Answer(503, {"error": "overloaded"}, {"Retry-After": "1"})
    ok = Answer(
        body=completion(tool_calls=[tool_call("set_light", {"room": "kitchen", "on": True})])
    )
    server = scripted([busy, busy, ok])
    started = time.monotonic()
    with HttpsTransport(scripted_settings(server.base_url, pki, tmp_path, max_retries=2)) as t:
        reply = t.send(light_request(key="key-abc"))
    elapsed = time.monotonic() - started
    assert len(server.received) == 3
    assert {r.headers["idempotency-key"] for r in server.received} == {"key-abc"}
    assert all(r.path == "/v1/chat/completions" for r in server.received)
    assert elapsed >= 2.0  # both Retry-After waits honoured
    check_verified(reply.calls, HOME_TOOLS)
    assert (reply.prompt_tokens, reply.completion_tokens) == (42, 7)
    assert reply.latency_s >= 2.0


def test_400_is_never_retried(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(400, {"error": {"message": "bad tools"}})])
    error = failure(scripted_settings(server.base_url, pki, tmp_path, max_retries=3))
    assert len(server.received) == 1
    assert error.retryable is False
    assert "HTTP 400" in error.message and "bad tools" in error.message


def test_persistent_500_gives_up_retryable(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(500, {"error": "boom"})])
    pauses: list[float] = []
    settings = scripted_settings(server.base_url, pki, tmp_path, max_retries=2, backoff_base_s=0.2)
    error = failure(settings, sleep=pauses.append)
    assert len(server.received) == 3
    assert error.retryable is True
    assert "gave up after 3 attempts" in error.message
    # full jitter: each pause is in [0, base * 2**n]
    assert len(pauses) == 2 and 0 <= pauses[0] <= 0.2 and 0 <= pauses[1] <= 0.4


def test_connection_refused_is_retryable_after_the_retries(pki: Pki, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/v1"
    pauses: list[float] = []
    error = failure(scripted_settings(url, pki, tmp_path, max_retries=2), sleep=pauses.append)
    assert error.retryable is True
    assert "cannot reach" in error.message and "ConnectError" in error.message
    assert "gave up after 3 attempts" in error.message
    assert len(pauses) == 2


def test_read_timeout_is_retried(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(delay_s=1.0), Answer()])
    settings = scripted_settings(server.base_url, pki, tmp_path, max_retries=1, read_timeout_s=0.3)
    with HttpsTransport(settings) as t:
        reply = t.send(light_request())
    assert len(server.received) == 2
    assert reply.text == "hello"


def test_connection_closed_mid_response_is_retryable(
    scripted: Any, pki: Pki, tmp_path: Path
) -> None:
    server = scripted([Answer(truncate=True)])
    error = failure(scripted_settings(server.base_url, pki, tmp_path, max_retries=1))
    assert len(server.received) == 2
    assert error.retryable is True


def test_retry_after_beyond_the_cap_stops_at_once(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(429, {"error": "slow down"}, {"Retry-After": "3600"})])
    error = failure(scripted_settings(server.base_url, pki, tmp_path, max_retries=3))
    assert len(server.received) == 1
    assert error.retryable is True and "3600s" in error.message


# --- answer shapes --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}\n```',
        '{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}',
        '<tool_call>\n{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}'
        "\n</tool_call>",
    ],
    ids=["fenced", "bare", "tagged"],
)
def test_call_as_json_in_content(content: str, scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(body=completion(content=content))])
    with HttpsTransport(scripted_settings(server.base_url, pki, tmp_path)) as t:
        reply = t.send(light_request())
    assert [c.to_dict() for c in reply.calls] == [
        {"name": "set_light", "arguments": {"room": "kitchen", "on": True}}
    ]
    check_verified(reply.calls, HOME_TOOLS)


def test_plain_text_answer(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(body=completion(content="  No tool fits that.  "))])
    with HttpsTransport(scripted_settings(server.base_url, pki, tmp_path)) as t:
        reply = t.send(light_request())
    assert reply.calls == () and reply.text == "No tool fits that." and reply.errors == ()


def test_malformed_call_arguments_are_recorded_not_raised(
    scripted: Any, pki: Pki, tmp_path: Path
) -> None:
    broken = {"id": "c", "type": "function", "function": {"name": "set_light", "arguments": "{on"}}
    server = scripted([Answer(body=completion(tool_calls=[broken]))])
    with HttpsTransport(scripted_settings(server.base_url, pki, tmp_path)) as t:
        reply = t.send(light_request())
    assert reply.calls == ()
    assert reply.errors and "set_light" in reply.errors[0]


def test_200_that_is_not_json_is_permanent(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer(body="<html>login page</html>")])
    error = failure(scripted_settings(server.base_url, pki, tmp_path, max_retries=3))
    assert error.retryable is False and len(server.received) == 1


def test_request_body_is_openai_shaped(scripted: Any, pki: Pki, tmp_path: Path) -> None:
    server = scripted([Answer()])
    settings = scripted_settings(server.base_url, pki, tmp_path, model="big-model")
    with HttpsTransport(settings) as t:
        t.send(light_request(max_tokens=64))
        t.send(light_request(tool_choice="set_light", model="other"))
        t.send(light_request(tools=[]))
    first, named, no_tools = (r.body for r in server.received)
    assert first["model"] == "big-model" and first["max_tokens"] == 64
    assert first["tools"] == [t.to_openai() for t in HOME_TOOLS]
    assert first["tool_choice"] == "auto" and first["temperature"] == 0
    assert named["model"] == "other"
    assert named["tool_choice"] == {"type": "function", "function": {"name": "set_light"}}
    assert "tools" not in no_tools and "tool_choice" not in no_tools
