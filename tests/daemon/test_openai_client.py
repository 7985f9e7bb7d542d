"""Acceptance: the unchanged ``openai`` client against the daemon serving the
real default model (Qwen2.5-Coder-0.5B), with tools, streaming and not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.daemon.conftest import GET_WEATHER, QWEN, SET_LIGHT, TOKEN, DaemonProcess, start_daemon

pytestmark = [pytest.mark.model, pytest.mark.slow]
PROMPT = [{"role": "user", "content": "Turn on the light in the kitchen."}]


@pytest.fixture(scope="module")
def qwen_daemon(
    tmp_path_factory: pytest.TempPathFactory, models_ready: None
) -> Iterator[DaemonProcess]:
    config = {
        "model": {"name": QWEN, "n_threads": 2, "max_tokens": 128},
        "ladder": {"enabled": False},  # the API's shapes are under test, not the climb
    }
    daemon = start_daemon(tmp_path_factory.mktemp("qwen"), config)
    yield daemon
    daemon.stop()


@pytest.fixture
def client(qwen_daemon: DaemonProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{qwen_daemon.url}/v1", api_key=TOKEN, timeout=300) as c:
        yield c
    assert qwen_daemon.alive(), qwen_daemon.log()


def assert_kitchen_light(name: str, arguments: str) -> None:
    assert name == "set_light"
    assert json.loads(arguments) == {"room": "kitchen", "on": True}


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [QWEN]


def test_tool_call_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=QWEN, messages=PROMPT, tools=[SET_LIGHT, GET_WEATHER], tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id
    assert_kitchen_light(call.function.name, call.function.arguments)
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_tool_call_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=QWEN,
        messages=PROMPT,
        tools=[SET_LIGHT, GET_WEATHER],
        tool_choice="required",
        stream=True,
    )
    name, arguments, finish = "", "", None
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    assert delta.index == 0
                    name += (delta.function and delta.function.name) or ""
                    arguments += (delta.function and delta.function.arguments) or ""
                finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert_kitchen_light(name, arguments)


def test_named_tool_choice(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "What's the weather like in Paris?"}],
        tools=[SET_LIGHT, GET_WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower() == "paris"


def test_text_answer_streaming_without_tools(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Reply with the single word: pong"}],
        max_tokens=8,
        stream=True,
    )
    with stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "pong" in text.lower()


def test_errors_reach_the_client_as_typed_exceptions(qwen_daemon: DaemonProcess) -> None:
    url = f"{qwen_daemon.url}/v1"
    bad = openai.OpenAI(base_url=url, api_key="wrong-token-0123456789", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0) as good:
        with pytest.raises(openai.NotFoundError) as missing:
            good.chat.completions.create(model="gpt-4o", messages=PROMPT)
        assert missing.value.code == "model_not_found"
        bad_tool = {"type": "function", "function": {"name": "x y", "parameters": {}}}
        with pytest.raises(openai.BadRequestError) as invalid:
            good.chat.completions.create(model=QWEN, messages=PROMPT, tools=[bad_tool])  # type: ignore[list-item]
        assert invalid.value.code == "invalid_schema"
    assert qwen_daemon.alive()


def test_the_daemon_used_the_journal(qwen_daemon: DaemonProcess, tmp_path: Path) -> None:
    rows = qwen_daemon.rows()
    assert rows and all(r["status"] == "done" for r in rows), rows
    assert {json.loads(r["payload"])["options"]["model"] for r in rows} == {QWEN}
