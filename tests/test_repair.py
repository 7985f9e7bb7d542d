"""The one local repair: a call that fails a tool's own rule goes back to the
real model with the verifier's message, and both attempts are recorded.

Measured on these prompts with the default SLM, the repair fixes the two
out-of-range requests below; the cases it cannot fix must end invalid, with
nothing executed.
"""

from __future__ import annotations

import pytest

from edge_agent.agent import Agent
from edge_agent.toolbox.registry import Registry, Tool


@pytest.fixture(scope="module")
def agent(qwen) -> Agent:
    def multiple_of_ten(tool: Tool, args: dict) -> str | None:
        if tool.name == "set_light" and args.get("brightness", 100) % 10:
            return "brightness must be a multiple of 10"
        return None

    return Agent(qwen, Registry.from_dirs(), rules=[multiple_of_ten])


@pytest.mark.parametrize(
    ("prompt", "tool", "argument", "bound"),
    [("Heat the kitchen to 40 degrees", "set_thermostat", "temperature_c", 30)],
)
def test_repair_fixes_out_of_range(agent, prompt, tool, argument, bound) -> None:
    result = agent.ask(prompt, execute=False)
    first, repair = result.attempts
    assert not first.valid and first.verdicts[0].stage == "schema"
    assert "maximum" in first.problem and argument in first.problem
    assert repair.kind == "repair" and repair.valid
    [call] = result.calls
    assert call.name == tool and call.arguments[argument] <= bound


def test_a_dangerous_tool_out_of_range_is_refused_not_repaired(agent) -> None:
    # Was repaired to some valid number (100 here: a valve fully open); a
    # dangerous tool's out-of-range value is now refused with the reason
    # (tests/test_dangerous_bounds.py has the rest).
    result = agent.ask("Set the garden valve to 150 percent", execute=False)
    [first] = result.attempts
    assert not first.valid and first.verdicts[0].stage == "schema"
    assert "150 is greater than the maximum of 100" in first.problem
    assert result.outcome == "invalid" and result.calls == ()


def test_unrepaired_call_is_invalid_and_not_run(qwen, agent, tmp_path) -> None:
    from edge_agent.sandbox import ProcessSandbox

    runner = Agent(qwen, agent.tools, rules=agent.rules[:1])
    runner.sandbox = ProcessSandbox(state_root=tmp_path)
    result = runner.ask("Dim the kitchen light to 33 percent")
    assert [a.kind for a in result.attempts] == ["initial", "repair"]
    assert all(not a.valid for a in result.attempts)
    assert result.attempts[0].verdicts[0].stage == "rules"
    assert result.outcome == "invalid" and result.calls == () and result.executions == ()
