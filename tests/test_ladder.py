"""The local ladder with the real models: tier 0 (Qwen2.5-Coder-0.5B) first,
tier 1 (Qwen2.5-Coder-1.5B) only when tier 0 is unsure or still invalid
after its repair; tier 1 off when the machine lacks the memory for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.agent import Agent
from edge_agent.assemble import Assembly
from edge_agent.config import EdgeAgentConfig
from edge_agent.engine.base import Engine
from edge_agent.engine.llama import LlamaEngine
from edge_agent.ladder import Ladder, Tier
from edge_agent.toolbox.registry import Registry
from tests.conftest import TEST_THREADS
from tests.fakes import ScriptedEngine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def qwen15() -> Iterator[LlamaEngine]:
    from edge_agent.models import fetch_model, resolve_model

    fetch_model("qwen2.5-coder-1.5b", progress=False)
    path = resolve_model("qwen2.5-coder-1.5b").path
    yield LlamaEngine(path, n_ctx=4096, n_threads=TEST_THREADS, name="qwen2.5-coder-1.5b")


@pytest.fixture(scope="module")
def home() -> Registry:
    return Registry.from_dirs().subset(["set_light", "lock_door", "read_sensor"])


def _ladder(tau0: float, tier1: Engine) -> Ladder:
    judge = Assembly(EdgeAgentConfig())._judge  # the shipped confidence model
    return Ladder(tau0, (Tier("qwen2.5-coder-1.5b", tier1, threshold=0.6),), judge)


def test_an_unsure_answer_climbs_to_tier_1(
    qwen: LlamaEngine, qwen15: LlamaEngine, home: Registry
) -> None:
    # τ = 1.0: no answer is sure enough to stay on tier 0.
    agent = Agent(qwen, home, ladder=_ladder(1.0, qwen15))
    result = agent.ask("Unlock the back door", execute=False)
    assert result.tier == 1
    assert {a.tier for a in result.attempts} == {0, 1}
    assert result.final.tier == 1 and result.final.p_success is not None
    assert [c.to_dict() for c in result.calls] == [
        {"name": "lock_door", "arguments": {"door": "back", "locked": False}}
    ]


def test_a_sure_answer_stays_on_tier_0_and_never_loads_tier_1(
    qwen: LlamaEngine, home: Registry
) -> None:
    def never() -> Engine:
        raise AssertionError("tier 1 was loaded for a request tier 0 was sure of")

    judge = Assembly(EdgeAgentConfig())._judge
    tier1 = Tier("qwen2.5-coder-1.5b", never, threshold=0.6)
    agent = Agent(qwen, home, ladder=Ladder(0.0, (tier1,), judge))
    result = agent.ask("Turn on the kitchen light", execute=False)
    assert result.tier == 0 and not tier1.loaded
    assert result.calls[0].arguments["room"] == "kitchen"


def test_a_call_still_invalid_after_its_repair_climbs(qwen15: LlamaEngine, home: Registry) -> None:
    # FAKE tier 0: a model that names a room the tool does not have, twice
    # (the initial attempt and its repair). The real 0.5B does this only by
    # chance; the real 1.5B above it must then answer.
    call = '{"name": "set_light", "arguments": {"room": "attic", "on": true}}'
    wrong = f"<tool_call>\n{call}\n</tool_call>"
    tier0 = ScriptedEngine([wrong])
    agent = Agent(tier0, home, ladder=_ladder(0.0, qwen15))
    result = agent.ask("Turn off the bedroom light", execute=False)
    assert len(tier0.prompts) == 2  # the initial attempt and one repair
    assert [a.tier for a in result.attempts] == [0, 0, 1]
    assert result.tier == 1 and result.final.valid
    args = result.calls[0].arguments
    assert args["room"] == "bedroom" and args["on"] is False


def test_tier_1_is_off_without_the_memory_for_it(home: Registry) -> None:
    config = EdgeAgentConfig.model_validate(
        {"ladder": {"enabled": True, "memory_headroom_mb": 65536}}
    )
    parts = Assembly(config)
    [status] = parts.tier_status()
    assert not status.on
    assert "MiB free" in status.detail and "tier 0 answers alone" in status.detail
    agent = parts.agent(home)
    assert agent.ladder is None
    result = agent.ask("Turn on the kitchen light", execute=False)
    assert result.tier == 0 and result.calls[0].name == "set_light"


def test_tier_1_is_off_without_its_model_file(home: Registry) -> None:
    config = EdgeAgentConfig.model_validate(
        {"ladder": {"enabled": True, "tiers": [{"name": "/nonexistent/bigger.gguf"}]}}
    )
    [status] = Assembly(config).tier_status()
    assert not status.on and "does not exist" in status.detail


def test_by_default_a_dangerous_call_is_decided_by_tier_1(home: Registry) -> None:
    """The default configuration: the 0.5B answers, and only a call to a
    dangerous tool (here a lock) climbs. The 0.5B reads "unlock" as
    ``locked: true``; the 1.5B reads it right (benchmarks/data/home_tuning.json)."""
    parts = Assembly(EdgeAgentConfig())
    agent = parts.agent(home)
    assert agent.ladder is not None and not agent.ladder.unsure and agent.ladder.dangerous
    light = agent.ask("Turn on the kitchen light", execute=False)
    assert light.tier == 0 and not agent.ladder.tiers[0].loaded
    result = agent.ask("Unlock the back door", execute=False)
    assert [a.tier for a in result.attempts] == [0, 1]
    assert result.attempts[0].parsed.calls[0].name == "lock_door"
    assert [c.to_dict() for c in result.calls] == [
        {"name": "lock_door", "arguments": {"door": "back", "locked": False}}
    ]
    # Tier 1 read tier 0's call as its draft and took it up to the flag it
    # disagrees with (ladder.draft, on by default).
    stats = result.attempts[1].generation.stats  # type: ignore[attr-defined]
    assert 0 < stats.draft_accepted < stats.drafted
