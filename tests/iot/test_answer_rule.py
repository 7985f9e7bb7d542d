"""The one automation answer path: a rule's request asked again without a refused tool.

The daemon's automation jobs (``_answer_automation``) answer through
:func:`answer_rule`. The model is a FAKE here (tests/fakes.py: it says
what the test scripts); what is under test is the retry rule, with the real
agent, registry, sandbox and home tools. The real-model cases, through the
daemon, are in ``test_daemon.py`` and ``test_safety.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from edge_agent.agent import Agent
from edge_agent.decoding.prompts import Message
from edge_agent.iot.automation import answer_rule
from edge_agent.records.run import Result
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.fakes import ScriptedEngine

UNLOCK = (
    '<tool_call>\n{"name": "lock_door", '
    '"arguments": {"door": "front", "locked": false}}\n</tool_call>'
)
LIGHT = (
    '<tool_call>\n{"name": "set_light", '
    '"arguments": {"room": "bedroom", "on": false}}\n</tool_call>'
)
REQUEST: list[Message] = [
    {"role": "user", "content": "Unlock the front door and turn off the bedroom light"}
]


@pytest.fixture()
def tools() -> Registry:
    return Registry.from_dirs().subset(["lock_door", "set_light"])


def asker(engine: ScriptedEngine, tools: Registry, sandbox: ProcessSandbox, *, owner: bool):
    offered: list[list[str]] = []

    def ask(names: Sequence[str], messages: Sequence[Message]) -> Result:
        offered.append(list(names))
        agent = Agent(engine, tools.subset(names), sandbox=sandbox, confirm=lambda c, t: owner)
        return agent.ask(list(messages), tool_choice="required", execute=True)

    return ask, offered


def test_a_refused_call_is_asked_again_without_its_tool(tools: Registry, tmp_path) -> None:
    engine = ScriptedEngine([UNLOCK, LIGHT])
    ask, offered = asker(engine, tools, ProcessSandbox(state_root=tmp_path), owner=False)
    result = answer_rule(ask, ["lock_door", "set_light"], REQUEST)
    assert offered == [["lock_door", "set_light"], ["set_light"]]
    assert [(e.call.name, e.status) for e in result.executions] == [
        ("lock_door", "unconfirmed"),
        ("set_light", "done"),
    ]
    assert "lock_door was refused and not done" in engine.prompts[1]
    # One record: the second answer's steps follow the first's.
    assert [e.step for e in result.executions] == [0, 1]
    assert [a.step for a in result.attempts] == [0, 1]


def test_a_confirmed_call_is_not_asked_again(tools: Registry, tmp_path) -> None:
    engine = ScriptedEngine([UNLOCK, LIGHT])
    ask, offered = asker(engine, tools, ProcessSandbox(state_root=tmp_path), owner=True)
    result = answer_rule(ask, ["lock_door", "set_light"], REQUEST)
    assert offered == [["lock_door", "set_light"]]
    assert [(e.call.name, e.status) for e in result.executions] == [("lock_door", "done")]


def test_no_tool_left_means_no_second_ask(tools: Registry, tmp_path) -> None:
    engine = ScriptedEngine([UNLOCK])
    ask, offered = asker(engine, tools, ProcessSandbox(state_root=tmp_path), owner=False)
    result = answer_rule(ask, ["lock_door"], REQUEST)
    assert offered == [["lock_door"]]
    assert [e.status for e in result.executions] == ["unconfirmed"]
