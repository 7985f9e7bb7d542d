"""A value out of range for a dangerous tool is refused with its reason, never bent into range.

Before, "open the garden valve to 500 percent" became a valid
``set_valve(open_percent=50)`` on the llguidance engine (the mask let "50"
through and stopped the next "0"), and ``open_percent=100`` after the repair
turn on the GBNF engine: a valve opened to a value nobody asked for. For tools marked
``dangerous`` the grammar now leaves numeric bounds to the verifier, and a
dangerous tool's schema failure is not repaired (asked to fix "500", a small
model picks some valid number). Real model, both grammar engines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.decoding.grammar import GrammarOptions, build_grammar
from edge_agent.engine.guided import GuidedLlamaEngine
from edge_agent.engine.llama import LlamaEngine
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry

pytestmark = pytest.mark.model


@pytest.fixture(params=["llguidance", "gbnf"])
def engine(request: pytest.FixtureRequest, qwen: LlamaEngine) -> LlamaEngine | GuidedLlamaEngine:
    return GuidedLlamaEngine(qwen) if request.param == "llguidance" else qwen


def ask(engine: LlamaEngine | GuidedLlamaEngine, tool: str, request: str, state: Path):
    tools = Registry.from_dirs().subset([tool])
    agent = Agent(engine, tools, sandbox=ProcessSandbox(state_root=state))
    return agent.ask(request, tool_choice="required", execute=True)


def test_a_valve_asked_for_500_percent_is_refused_with_the_reason(
    engine: LlamaEngine | GuidedLlamaEngine, tmp_path: Path
) -> None:
    result = ask(engine, "set_valve", "Open the garden valve to 500 percent", tmp_path)
    assert result.executions == ()  # nothing ran
    assert result.outcome == "invalid"
    assert len(result.attempts) == 1  # no repair that would pick some valid number
    assert "500 is greater than the maximum of 100" in result.final.problem


def test_an_in_range_valve_request_still_runs(
    engine: LlamaEngine | GuidedLlamaEngine, tmp_path: Path
) -> None:
    result = ask(engine, "set_valve", "Open the garden valve to 40 percent", tmp_path)
    assert [(e.call.arguments, e.status) for e in result.executions] == [
        ({"valve": "garden", "open_percent": 40}, "unconfirmed")  # dangerous: asks the owner
    ]


def test_only_dangerous_tools_lose_their_decode_time_bounds() -> None:
    specs = [t.spec for t in Registry.from_dirs().subset(["set_valve", "set_light"])]
    grammar = build_grammar(specs, GrammarOptions(verifier_bounds=frozenset({"set_valve"})))
    valve = next(line for line in grammar.lark.splitlines() if line.startswith("set-valve-args:"))
    light = next(line for line in grammar.lark.splitlines() if line.startswith("set-light-args:"))
    assert "json-int" in valve and "%json" not in valve
    assert "brightness-json" in light  # set_light keeps 0..100 at decode time
