"""Which answers climb the ladder, fast: tier 0 and tier 1 are the named
FAKE engine (tests/fakes.py), saying what each test scripts; the agent,
registry, verifier and ladder are real. The real models climbing are in
``test_ladder.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.ladder import Ladder, Tier
from edge_agent.toolbox.registry import Registry
from tests.fakes import ScriptedEngine


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


LOCK = call("lock_door", door="back", locked=True)
UNLOCK = call("lock_door", door="back", locked=False)
LIGHT = call("set_light", room="kitchen", on=True)


@pytest.fixture(scope="module")
def home() -> Registry:
    return Registry.from_dirs().subset(["set_light", "lock_door"])


def ladder(
    tier1: ScriptedEngine,
    *,
    unsure: bool,
    dangerous: bool,
    tau0: float = 0.99,
    **rules: bool,
) -> Ladder:
    tiers = (Tier("tier-1-fake", tier1, threshold=0.6),)
    judge = lambda attempts: 0.5  # noqa: E731 - every answer is unsure at τ0 0.99
    return Ladder(tau0, tiers, judge, unsure=unsure, dangerous=dangerous, **rules)


def test_a_dangerous_call_is_decided_again_by_the_top_tier(home: Registry) -> None:
    tier0, tier1 = ScriptedEngine([LOCK]), ScriptedEngine([UNLOCK])
    agent = Agent(tier0, home, ladder=ladder(tier1, unsure=False, dangerous=True))
    result = agent.ask("Unlock the back door", execute=False)
    assert [a.tier for a in result.attempts] == [0, 1]
    assert result.tier == 1 and result.calls[0].arguments == {"door": "back", "locked": False}


def test_a_safe_call_stays_on_tier_0_when_only_dangerous_calls_climb(home: Registry) -> None:
    tier0, tier1 = ScriptedEngine([LIGHT]), ScriptedEngine([LOCK])
    agent = Agent(tier0, home, ladder=ladder(tier1, unsure=False, dangerous=True))
    result = agent.ask("Kitchen light on", execute=False)
    assert result.tier == 0 and tier1.prompts == []


def test_without_the_rule_a_dangerous_call_stays_when_sure_enough(home: Registry) -> None:
    tier0, tier1 = ScriptedEngine([LOCK]), ScriptedEngine([UNLOCK])
    agent = Agent(tier0, home, ladder=ladder(tier1, unsure=True, dangerous=False, tau0=0.4))
    assert agent.ask("Lock the back door", execute=False).tier == 0
    assert tier1.prompts == []


def test_an_unsure_answer_climbs_only_when_climbing_on_confidence_is_on(home: Registry) -> None:
    for unsure, tier in ((True, 1), (False, 0)):
        tier0, tier1 = ScriptedEngine([LIGHT]), ScriptedEngine([LIGHT])
        agent = Agent(tier0, home, ladder=ladder(tier1, unsure=unsure, dangerous=True))
        assert agent.ask("Kitchen light on", execute=False).tier == tier  # P 0.5 < τ 0.99


@pytest.mark.parametrize("draft", [True, False])
def test_the_call_below_is_the_draft_of_the_tier_above(home: Registry, *, draft: bool) -> None:
    tier0, tier1 = ScriptedEngine([LOCK]), ScriptedEngine([UNLOCK])
    agent = Agent(tier0, home, ladder=ladder(tier1, unsure=False, dangerous=True, draft=draft))
    agent.ask("Unlock the back door", execute=False)
    assert tier0.drafts == [None]
    assert tier1.drafts == [LOCK if draft else None]


@pytest.mark.parametrize("keep", [True, False])
def test_a_decline_climbs_only_without_keep_declines(home: Registry, *, keep: bool) -> None:
    tier0, tier1 = ScriptedEngine(["No tool can order food."]), ScriptedEngine([LIGHT])
    agent = Agent(
        tier0, home, ladder=ladder(tier1, unsure=True, dangerous=True, keep_declines=keep)
    )
    result = agent.ask("Order me a pizza", execute=False)
    assert result.tier == (0 if keep else 1)
    assert len(tier1.prompts) == (0 if keep else 1)
