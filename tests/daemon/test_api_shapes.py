"""The HTTP API's shapes, errors and auth, where what the model says does
not matter: the real daemon and app in this process, with the named FAKE
engine (tests/daemon/in_process.py), so these run in seconds. Every bad
input gets the right status in OpenAI's error shape, and the daemon is
still up afterwards (checked after every test). What a real model answers
through a real ``edge-agent run`` is in ``test_api.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.conftest import SET_LIGHT, TOKEN, assert_error, chat_body, sse_events
from tests.daemon.in_process import InProcessDaemon, in_process_daemon
from tests.fakes import ScriptedEngine

FAKE = "scripted-fake"


def body(content: str = "Turn on the kitchen light", **extra: Any) -> dict[str, Any]:
    return {**chat_body(content, **extra), "model": FAKE}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    engine = ScriptedEngine(["Hello."], name=FAKE)
    folder = tmp_path_factory.mktemp("api-shapes")
    with in_process_daemon(folder, engine, {"server": {"max_body_bytes": 4096}}) as daemon:
        yield daemon


@pytest.fixture
def api(fake: InProcessDaemon) -> Iterator[httpx.Client]:
    with fake.client() as client:
        yield client
    assert httpx.get(f"{fake.url}/healthz", timeout=5).status_code == 200


def test_healthz_needs_no_token_and_says_nothing_more(fake: InProcessDaemon) -> None:
    response = httpx.get(f"{fake.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_models_lists_the_loaded_model(api: httpx.Client) -> None:
    body = api.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [FAKE]
    assert body["data"][0]["object"] == "model"


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": f"Basic {TOKEN}"},
     {"authorization": f"Bearer {TOKEN}x"}],
    ids=["missing", "wrong", "not-bearer", "longer"],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/v1/chat/completions"])
def test_missing_or_wrong_token_is_401(
    fake: InProcessDaemon, headers: dict[str, str], path: str
) -> None:
    with httpx.Client(base_url=fake.url, headers=headers, timeout=10) as client:
        response = client.post(path, json=body()) if "chat" in path else client.get(path)
    error = assert_error(response, 401, "invalid_api_key")
    assert TOKEN not in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_invalid_json_is_400(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", content=b'{"model": "scripted-fake", "messa')
    assert_error(response, 400, "invalid_json")
    response = api.post("/v1/chat/completions", content=b"\xff\xfe not utf-8")
    assert_error(response, 400, "invalid_json")


def test_deeply_nested_json_is_400_not_500(api: httpx.Client) -> None:
    """Past the JSON decoder's recursion limit (about 1,000 levels) the body
    is refused as a client error, and the daemon keeps serving. 2,000 levels
    stay under this daemon's 4 KiB body limit."""
    body = b"[" * 2000 + b"1" + b"]" * 2000
    error = assert_error(api.post("/v1/chat/completions", content=body), 400, "invalid_json")
    assert "nested too deeply" in error["message"]
    assert api.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2], None),
        ({"model": FAKE}, "messages"),
        ({"model": FAKE, "messages": []}, "messages"),
        ({"model": FAKE, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": FAKE, "messages": [{"role": "user", "content": " "}]}, "messages"),
        (body(n=2), "n"),
        (body(tool_choice="required"), "tool_choice"),
        (body(tools=[SET_LIGHT], tool_choice={"type": "function",
                                                     "function": {"name": "nope"}}),
         "tool_choice"),
        (body(x_edge_agent_tools=["no_such_tool"]), "x_edge_agent_tools"),
        (body(tools=[SET_LIGHT], x_edge_agent_execute=True), "tools"),
    ],
    ids=["not-object", "no-messages", "empty-messages", "bad-role", "empty-prompt", "n=2",
         "required-without-tools", "unknown-named-tool", "unknown-registry-tool",
         "execute-inline-tools"],
)  # fmt: skip
def test_invalid_request_is_400(api: httpx.Client, body: object, param: str | None) -> None:
    error = assert_error(api.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param or (param and error["param"].startswith(param)), error


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}},
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
         "properties": {"x": {"type": "integer", "minimum": "zero"}}}}},
        {"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/nowhere"}}},
    ],
    ids=["name", "not-object", "metaschema", "dangling-ref"],
)  # fmt: skip
def test_invalid_tool_schema_is_400(api: httpx.Client, tool: dict) -> None:
    response = api.post("/v1/chat/completions", json=body(tools=[tool]))
    error = assert_error(response, 400, "invalid_schema")
    assert error["param"] == "tools"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"frobnicate": True}, "frobnicate"),
        ({"messages": [{"role": "user", "content": "hi", "audio": {"id": "a"}}]},
         "messages.0.audio"),
        ({"stream_options": {"include_usage": True, "chunk_size": 3}},
         "stream_options.chunk_size"),
    ],
    ids=["logit_bias", "functions", "made-up", "in-a-message", "in-stream-options"],
)  # fmt: skip
def test_an_unsupported_field_is_a_400_that_names_it(
    api: httpx.Client, extra: dict, param: str
) -> None:
    response = api.post("/v1/chat/completions", json={**body(), **extra})
    error = assert_error(response, 400, "unsupported_parameter")
    assert error["param"] == param
    assert repr(param) in error["message"]


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_request"),
        ({"stop": [""]}, "stop", "invalid_request"),
        ({"top_logprobs": 3}, "top_logprobs", "invalid_request"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_request"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "invalid_request"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
          {"type": "objekt"}}}}, "response_format", "invalid_schema"),
        ({"response_format": {"type": "json_object"}, "tools": [SET_LIGHT]}, "response_format",
         "unsupported_parameter"),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "invalid_request"),
    ],
    ids=["five-stops", "empty-stop", "top-without-logprobs", "too-many-top", "schema-missing",
         "schema-invalid", "format-with-tools", "unknown-format"],
)  # fmt: skip
def test_answer_options_are_checked(api: httpx.Client, extra: dict, param: str, code: str) -> None:
    error = assert_error(api.post("/v1/chat/completions", json={**body(), **extra}), 400, code)
    assert error["param"] == param, error


def test_a_tool_result_must_answer_an_earlier_call(api: httpx.Client) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "set_light", "arguments": '{"room": "kitchen", "on": true}'},
    }
    messages = [{"role": "user", "content": "Kitchen light on"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_2", "content": '{"ok": true}'}]  # fmt: skip
    request = {**body(tools=[SET_LIGHT]), "messages": messages}
    error = assert_error(api.post("/v1/chat/completions", json=request), 400, "invalid_request")
    assert error["param"] == "messages.2.tool_call_id"
    assert "call_2" in error["message"]


def test_the_openapi_document_describes_the_served_model(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    request = document["components"]["schemas"]["ChatRequest"]
    assert request["properties"]["model"]["enum"] == [FAKE]
    assert request["additionalProperties"] is False
    assert "temperature" in request["properties"]  # accepted and ignored, so documented
    assert set(document["paths"]) >= {"/v1/chat/completions", "/v1/models", "/healthz"}


def test_unknown_model_is_404(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", json={**body(), "model": "gpt-4o"})
    error = assert_error(response, 404, "model_not_found")
    assert error["param"] == "model"


def test_oversized_body_is_413_declared_or_streamed(api: httpx.Client) -> None:
    big = json.dumps(body("x" * 10_000)).encode()  # the test daemon allows 4096 bytes
    assert_error(api.post("/v1/chat/completions", content=big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    try:
        response = api.post("/v1/chat/completions", content=chunks())
    except httpx.TransportError:
        return  # the daemon closed the connection before we finished sending: also fine
    assert_error(response, 413, "body_too_large")


def test_unknown_route_and_method_use_the_error_shape(api: httpx.Client) -> None:
    assert_error(api.get("/v1/nothing"), 404, "not_found")
    assert_error(api.get("/v1/chat/completions"), 405, "method_not_allowed")


# ---------------------------------------------------------------- answers the fake scripts


def call_text(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture
def says(fake: InProcessDaemon) -> Any:
    """``says(text, ...)``: what the fake answers to this test's requests."""

    def script(*texts: str) -> ScriptedEngine:
        fake.engine.texts = list(texts)
        fake.engine.prompts.clear()
        return fake.engine

    return script


def test_a_call_in_the_standard_shape(api: httpx.Client, says: Any) -> None:
    says(call_text("set_light", {"room": "bedroom", "on": False}))
    response = api.post("/v1/chat/completions", json=body(tools=[SET_LIGHT]))
    assert response.status_code == 200, response.text
    out = response.json()
    assert response.headers["x-edge-agent-request-id"] == out["x_edge_agent"]["request_id"]
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "set_light"
    assert json.loads(call["function"]["arguments"]) == {"room": "bedroom", "on": False}
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_a_call_the_verifier_refuses_is_never_handed_out_and_says_why(
    api: httpx.Client, says: Any
) -> None:
    engine = says(call_text("set_light", {"room": "attic", "on": True}))
    response = api.post("/v1/chat/completions", json=body(tools=[SET_LIGHT]))
    assert len(engine.prompts) == 2  # the answer and one repair
    assert response.status_code == 200, response.text
    out = response.json()
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message
    assert message["content"].startswith("No valid call was made: set_light: argument 'room'")
    assert out["x_edge_agent"]["outcome"] == "invalid"
    assert "'attic' is not one of" in out["x_edge_agent"]["problem"]


def test_a_streamed_call_arrives_as_tool_call_deltas(api: httpx.Client, says: Any) -> None:
    says(call_text("set_light", {"room": "kitchen", "on": True}))
    request = body(tools=[SET_LIGHT], stream=True, stream_options={"include_usage": True})
    with api.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [d for c in chunks for ch in c["choices"] for d in ch["delta"].get("tool_calls", [])]
    name = "".join(d.get("function", {}).get("name", "") for d in deltas)
    arguments = "".join(d.get("function", {}).get("arguments", "") for d in deltas)
    assert name == "set_light" and json.loads(arguments) == {"room": "kitchen", "on": True}
    assert not any(ch["delta"].get("content") for c in chunks for ch in c["choices"])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_execute_runs_the_registry_tool_and_answers_with_its_sentence(
    api: httpx.Client, says: Any
) -> None:
    says(call_text("read_sensor", {"sensor": "temperature", "room": "kitchen"}))
    request = body("How warm is the kitchen?", x_edge_agent_tools=["read_sensor"])
    response = api.post(
        "/v1/chat/completions", json=request, headers={"x-edge-agent-execute": "true"}
    )
    assert response.status_code == 200, response.text
    out = response.json()
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message  # they ran already: a client must not run them again
    assert "kitchen" in message["content"].lower()
    [step] = out["x_edge_agent"]["steps"]
    assert step["name"] == "read_sensor" and step["status"] == "done"
    assert step["arguments"] == {"sensor": "temperature", "room": "kitchen"}


def test_an_idempotency_key_answers_once(api: httpx.Client, says: Any) -> None:
    engine = says("Hi there.")
    request, key = body("Say hi."), {"idempotency-key": "shapes-key-1"}
    first = api.post("/v1/chat/completions", json=request, headers=key)
    again = api.post("/v1/chat/completions", json=request, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert len(engine.prompts) == 1
    too_long = {"idempotency-key": "k" * 300}
    assert_error(api.post("/v1/chat/completions", json=request, headers=too_long), 400)


def test_metrics_count_requests_and_tokens(api: httpx.Client, says: Any) -> None:
    says("Hi there.")
    api.post("/v1/chat/completions", json=body("Say hi."))
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    http = {
        (s.labels["route"], s.labels["status"])
        for s in families["edge_agent_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert ("/v1/chat/completions", "200") in http
    tokens = {
        s.labels["kind"]: s.value
        for s in families["edge_agent_tokens"].samples
        if s.name.endswith("_total")
    }
    assert tokens["prompt"] > 0 and tokens["completion"] > 0
    assert {"edge_agent_queue_depth", "edge_agent_busy"} <= set(families)
