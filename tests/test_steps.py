"""How many model steps a request takes once its calls have run.

The model is a FAKE here (tests/fakes.py: it says what the test scripts):
what is under test is the agent's step rule, with the real registry, the
real sandbox and the real home tools."""

from __future__ import annotations

import pytest

from edge_agent.agent import Agent, depends_on_result
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.fakes import ScriptedEngine

READ = (
    '<tool_call>\n{"name": "read_sensor", '
    '"arguments": {"sensor": "temperature", "room": "bedroom"}}\n</tool_call>'
)
LIGHT = (
    '<tool_call>\n{"name": "set_light", '
    '"arguments": {"room": "bedroom", "on": false}}\n</tool_call>'
)


@pytest.fixture()
def parts(tmp_path) -> tuple[Registry, ProcessSandbox]:
    tools = Registry.from_dirs().subset(["read_sensor", "set_light"])
    return tools, ProcessSandbox(state_root=tmp_path)


def test_an_action_takes_one_step(parts) -> None:
    tools, sandbox = parts
    engine = ScriptedEngine([LIGHT, LIGHT])
    result = Agent(engine, tools, sandbox=sandbox).ask("Turn off the bedroom light")
    assert len(engine.prompts) == 1 and result.steps == 1
    assert [e.status for e in result.executions] == ["done"]
    assert result.answer == "Bedroom light off."


def test_a_question_is_answered_from_the_read_without_another_step(parts) -> None:
    tools, sandbox = parts
    engine = ScriptedEngine([READ, LIGHT])
    result = Agent(engine, tools, sandbox=sandbox).ask("How warm is the bedroom?")
    assert len(engine.prompts) == 1
    assert result.answer == "The temperature in the bedroom is 21.0 °C."


def test_a_request_that_depends_on_the_read_takes_a_second_step(parts) -> None:
    tools, sandbox = parts
    engine = ScriptedEngine([READ, LIGHT])
    request = "If the bedroom is warmer than 20 degrees, turn its light off"
    result = Agent(engine, tools, sandbox=sandbox).ask(request)
    assert len(engine.prompts) == 2 and result.steps == 2
    assert [e.call.name for e in result.executions] == ["read_sensor", "set_light"]
    assert '"value": 21.0' in engine.prompts[1]  # the model saw what was read
    assert [c.name for c in result.calls] == ["read_sensor", "set_light"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the humidity in the bathroom?", False),
        ("Turn on the kitchen light", False),
        ("If it is above 25 degrees, open the garden valve", True),
        ("Check the door, then lock it", True),
        ("如果卧室太热就打开风扇", True),
        ("客厅的温度是多少?", False),
    ],
)
def test_follow_up_cues(text: str, expected: bool) -> None:
    assert depends_on_result(text) is expected
