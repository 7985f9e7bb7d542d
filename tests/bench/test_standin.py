"""The ablation's cloud stand-in, started the way ``bench ablation`` starts it
(:func:`standin_llm`: a separate process, TLS with a throwaway CA, a bearer
token) and driven through the ``openai`` client, as a user's code would
drive a hosted model. The real 1.5B answers; nothing is scripted."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from edge_agent.bench.cloud import Endpoint, standin_llm
from edge_agent.bench.standin import SCHEMA_SUFFIX
from edge_agent.models import fetch_model
from tests.conftest import TEST_THREADS

LLM = "qwen2.5-coder-1.5b"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a kitchen timer.",
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 120}},
            "required": ["minutes"],
        },
    },
}


@dataclass
class Standin:
    endpoint: Endpoint
    client: openai.OpenAI


@pytest.fixture(scope="module")
def standin() -> Iterator[Standin]:
    fetch_model(LLM, progress=False)
    with standin_llm(LLM, TEST_THREADS) as endpoint:
        assert endpoint.token_file is not None and endpoint.ca is not None
        http = httpx.Client(verify=ssl.create_default_context(cafile=str(endpoint.ca)))
        token = endpoint.token_file.read_text().strip()
        client = openai.OpenAI(base_url=endpoint.url, api_key=token, http_client=http)
        yield Standin(endpoint, client)
        http.close()


def ask(s: Standin, text: str, tools: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("model", s.endpoint.model)
    return s.client.chat.completions.create(
        messages=[{"role": "user", "content": text}], tools=tools, temperature=0, **kwargs
    )


def calls(answer: Any) -> list[tuple[str, dict[str, Any]]]:
    message = answer.choices[0].message
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def test_required_gets_a_tool_call_even_for_small_talk(standin: Standin) -> None:
    answer = ask(standin, "Hello there, how are you today?", [WEATHER], tool_choice="required")
    assert answer.choices[0].finish_reason == "tool_calls"
    (name, _args), *_ = calls(answer)
    assert name == "get_weather"


def test_native_parallel_calls_come_back_as_tool_calls(standin: Standin) -> None:
    """Two ``<tool_call>`` blocks in one answer, in the model's own format."""
    text = "Find the weather in Paris. Also find the weather in Tokyo."
    answer = ask(standin, text, [WEATHER], tool_choice="required")
    got = calls(answer)
    assert [name for name, _ in got] == ["get_weather", "get_weather"]
    assert [args["city"] for _, args in got] == ["Paris", "Tokyo"]
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


def test_auto_without_schema_is_free_and_parsed(standin: Standin) -> None:
    """No grammar: the 1.5B writes its call as it likes (a fenced JSON
    block, here) and the server still returns it as a tool call."""
    answer = ask(standin, "What is the weather in Oslo?", [WEATHER])
    assert [name for name, _ in calls(answer)] == ["get_weather"]
    assert calls(answer)[0][1]["city"] == "Oslo"


def test_named_tool_and_none(standin: Standin) -> None:
    named = ask(
        standin,
        "I need ten minutes for the eggs.",
        [WEATHER, TIMER],
        tool_choice={"type": "function", "function": {"name": "set_timer"}},
    )
    assert calls(named) == [("set_timer", {"minutes": 10})]
    none = ask(standin, "What is the weather in Oslo?", [WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content


def test_schema_model_keeps_arguments_inside_the_schema(standin: Standin) -> None:
    models = [m.id for m in standin.client.models.list().data]
    assert models == ["llm", "llm" + SCHEMA_SUFFIX]
    answer = ask(
        standin,
        "Set a timer for three hours.",
        [TIMER],
        tool_choice="required",
        model="llm" + SCHEMA_SUFFIX,
    )
    ((name, args),) = calls(answer)
    assert name == "set_timer" and 1 <= args["minutes"] <= 120


def test_refusals_are_openai_errors(standin: Standin) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown model"):
        ask(standin, "hi", [WEATHER], model="gpt-9")
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        ask(
            standin,
            "hi",
            [WEATHER],
            tool_choice={"type": "function", "function": {"name": "set_timer"}},
        )
    bad = openai.OpenAI(
        base_url=standin.endpoint.url, api_key="wrong", http_client=standin.client._client
    )
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
