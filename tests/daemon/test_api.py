"""The HTTP API of a real daemon (SmolLM2): what a real model's answers look
like through it (calls, text, streams, execution). Shapes, errors, auth,
idempotency and metrics, where the model does not matter, are in
``test_api_shapes.py`` (the daemon in-process, with the scripted engine).
The daemon is still up after every test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.daemon.conftest import SET_LIGHT, DaemonProcess, chat_body, sse_events

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture
def api(smol_daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with smol_daemon.client() as client:
        yield client
    assert smol_daemon.alive(), smol_daemon.log()
    assert httpx.get(f"{smol_daemon.url}/healthz", timeout=5).status_code == 200


# ---------------------------------------------------------------- with the model


def test_sampling_fields_are_accepted_and_ignored(api: httpx.Client) -> None:
    """Decoding is greedy: the same answer whatever the sampling settings."""
    plain = chat_body("Say hello.", max_tokens=6)
    sampled = {**plain, "temperature": 1.7, "top_p": 0.3, "seed": 7, "presence_penalty": 0.5,
               "frequency_penalty": 0.2, "user": "someone", "metadata": {"k": "v"}}  # fmt: skip
    first = api.post("/v1/chat/completions", json=plain)
    second = api.post("/v1/chat/completions", json=sampled)
    assert first.status_code == second.status_code == 200, second.text
    content = [r.json()["choices"][0]["message"]["content"] for r in (first, second)]
    assert content[0] == content[1]


def test_tool_call_in_the_standard_shape(api: httpx.Client) -> None:
    choice = {"type": "function", "function": {"name": "set_light"}}
    response = api.post(
        "/v1/chat/completions", json=chat_body(tools=[SET_LIGHT], tool_choice=choice)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert response.headers["x-edge-agent-request-id"] == body["x_edge_agent"]["request_id"]
    (choice_out,) = body["choices"]
    assert choice_out["finish_reason"] == "stop"  # OpenAI's, for a named tool_choice
    message = choice_out["message"]
    assert message["role"] == "assistant"
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "set_light"
    arguments = json.loads(call["function"]["arguments"])  # a JSON *string*
    assert set(arguments) == {"room", "on"}
    assert arguments["room"] in ("kitchen", "bedroom", "living room")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_plain_answer_without_tools(api: httpx.Client) -> None:
    body = api.post("/v1/chat/completions", json=chat_body("Say hello.", max_tokens=8)).json()
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 8


def test_tool_choice_none_answers_in_text(api: httpx.Client) -> None:
    body = chat_body("Say hello.", tools=[SET_LIGHT], tool_choice="none", max_tokens=8)
    choice = api.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] in ("stop", "length")


def test_streaming_tool_call_chunks(api: httpx.Client) -> None:
    choice = {"type": "function", "function": {"name": "set_light"}}
    body = chat_body(
        tools=[SET_LIGHT], tool_choice=choice, stream=True, stream_options={"include_usage": True}
    )
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    name, arguments = "", ""
    for chunk in chunks:
        for choice_out in chunk["choices"]:
            for delta in choice_out["delta"].get("tool_calls", []):
                assert delta["index"] == 0
                name += delta.get("function", {}).get("name", "")
                arguments += delta.get("function", {}).get("arguments", "")
    assert name == "set_light"
    assert set(json.loads(arguments)) == {"room", "on"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"  # a named tool_choice, as OpenAI answers it
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_execute_runs_registry_tools_and_attaches_the_steps(api: httpx.Client) -> None:
    # read_sensor's arguments are enums, so even the 135M test model cannot
    # write an invalid call (with calculate's free-text expression it once
    # wrote a string that never closed): this test is about the API.
    choice = {"type": "function", "function": {"name": "read_sensor"}}
    body = chat_body(
        "What is the temperature in the kitchen?",
        x_edge_agent_tools=["read_sensor"],
        tool_choice=choice,
    )
    response = api.post("/v1/chat/completions", json=body, headers={"x-edge-agent-execute": "true"})
    assert response.status_code == 200, response.text
    out = response.json()
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message  # they ran already: a client must not run them again
    assert isinstance(message["content"], str)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    steps = out["x_edge_agent"]["steps"]
    assert steps, json.dumps(out)[:3000]
    assert steps[0]["name"] == "read_sensor"
    assert steps[0]["status"] in ("done", "failed")
    assert {"sensor", "room"} <= set(steps[0]["arguments"])


def test_client_disconnecting_mid_stream(api: httpx.Client, smol_daemon: DaemonProcess) -> None:
    body = chat_body("Write a long story about a robot.", stream=True, max_tokens=96)
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        rid = response.headers["x-edge-agent-request-id"]
        first = next(sse_events(response.iter_lines()))
        assert first["choices"][0]["delta"] == {"role": "assistant"}
    # the connection is gone; the accepted request is still answered and journaled
    rows = smol_daemon.wait_rows(
        lambda rs: any(r["id"] == rid and r["status"] == "done" for r in rs)
    )
    assert rows
    assert api.get("/v1/models").status_code == 200
