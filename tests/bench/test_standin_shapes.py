"""The stand-in's request and answer shapes, with the scripted FAKE engine:
what the model says is set by the test, so these check the server's own
rules (tool_choice, parsing, refusals). The real 1.5B behind the real
server is in test_standin.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge_agent.bench.standin import SCHEMA_SUFFIX, StandIn, _message, create_app
from edge_agent.errors import InputError
from tests.fakes import ScriptedEngine

LIGHT = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Switch a light.",
        "parameters": {
            "type": "object",
            "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
            "required": ["room", "on"],
        },
    },
}
TWO_CALLS = (
    '<tool_call>\n{"name": "set_light", "arguments": {"room": "kitchen", "on": false}}\n'
    '</tool_call>\n<tool_call>\n{"name": "set_light", "arguments": {"room": "hall", "on": false}}'
    "\n</tool_call>"
)


def body(**extra: Any) -> dict[str, Any]:
    base = {"model": "llm", "messages": [{"role": "user", "content": "lights off"}]}
    return {**base, "tools": [LIGHT], **extra}


def test_native_blocks_become_tool_calls() -> None:
    engine = ScriptedEngine([TWO_CALLS])
    answer = StandIn(engine, "llm").answer(body())
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in
           choice["message"]["tool_calls"]]  # fmt: skip
    assert got == [("set_light", {"room": "kitchen", "on": False}),
                   ("set_light", {"room": "hall", "on": False})]  # fmt: skip
    assert answer["usage"]["total_tokens"] == sum(
        answer["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )
    assert "set_light" in engine.prompts[0]  # the tools are in the prompt


def test_a_malformed_call_goes_out_as_text_for_the_client_to_refuse() -> None:
    text = '<tool_call>\n{"name": "set_light", "arguments": {"room": \n</tool_call>'
    answer = StandIn(ScriptedEngine([text]), "llm").answer(body())
    message = answer["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"] == text


def test_tool_choice_none_leaves_the_tools_out() -> None:
    engine = ScriptedEngine(["Done."])
    answer = StandIn(engine, "llm").answer(body(tool_choice="none"))
    assert answer["choices"][0]["message"]["content"] == "Done."
    assert "set_light" not in engine.prompts[0]


def test_history_calls_reach_the_template_as_objects() -> None:
    """Chat templates (Qwen's among them) render a call's arguments with
    ``tojson``: given the API's JSON string they would quote it twice."""
    function = {"name": "set_light", "arguments": '{"room": "hall", "on": true}'}
    call = {"id": "c1", "type": "function", "function": function}
    message = _message({"role": "assistant", "content": None, "tool_calls": [call]})
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "set_light", "arguments": {"room": "hall", "on": True}}],
    }
    broken = {"type": "function", "function": {"name": "set_light", "arguments": "{"}}
    with pytest.raises(InputError, match="not JSON"):
        _message({"role": "assistant", "tool_calls": [broken]})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model": "gpt-9"}, "unknown model"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among"),
        ({"tool_choice": "sometimes"}, "tool_choice must be"),
        ({"tools": [], "tool_choice": "required"}, "no tools were given"),
        ({"messages": []}, "messages must be"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_refusals(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        StandIn(ScriptedEngine(["x"]), "llm").answer(body(**extra))


def test_the_http_door() -> None:
    app = create_app(StandIn(ScriptedEngine([TWO_CALLS]), "llm"), "secret")
    client = TestClient(app)
    auth = {"Authorization": "Bearer secret"}
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers=auth).json()["data"]
    assert [m["id"] for m in models] == ["llm", "llm" + SCHEMA_SUFFIX]
    bad = client.post("/v1/chat/completions", headers=auth, content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    refused = client.post("/v1/chat/completions", headers=auth, json=body(model="x"))
    assert refused.status_code == 400 and "unknown model" in refused.json()["error"]["message"]
    ok = client.post("/v1/chat/completions", headers=auth, json=body())
    assert ok.status_code == 200 and len(ok.json()["choices"][0]["message"]["tool_calls"]) == 2
