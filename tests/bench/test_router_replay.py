"""The cascade's router against a random router, replayed from recorded
runs: the arithmetic on hand-made reports (no model is needed to judge a
router once its P(success) per item is recorded)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.bench.bfcl_run import JOULES_PER_KWH
from edge_agent.bench.router_replay import (
    ReplayItem,
    at_threshold,
    compare,
    curve,
    gap_recovered,
    random_router,
    replay_items,
)


def report(category: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"category": category, "per_item": items}


def test_items_are_matched_by_category_and_id_and_priced() -> None:
    joules = JOULES_PER_KWH / 0.30  # 1 USD of electricity at 0.30 / kWh
    slm = [report("multiple", [{"id": "a", "correct": True, "energy_j": joules}])]
    slm.append(report("simple", [{"id": "a", "correct": False}]))
    llm = [report("multiple", [{"id": "a", "correct": False, "cloud_cost": 2.0}])]
    llm.append(report("simple", [{"id": "a", "correct": True, "cloud_cost": 3.0}]))
    cascade = [report("multiple", [{"id": "a", "route": "local", "p_success": 0.9}])]
    cascade.append(report("simple", [{"id": "a", "route": "offload:https", "p_success": 0.8}]))
    cascade.append(report("simple", [{"id": "lost", "route": "local", "p_success": 0.1}]))
    items = replay_items(slm, llm, cascade, threshold=0.6, kwh_price=0.30)
    assert items == [
        ReplayItem(0.9, False, True, False, pytest.approx(1.0), 2.0),  # type: ignore[arg-type]
        # sent out although P ≥ τ: its local answer was invalid, it goes out at every τ
        ReplayItem(0.8, True, False, True, 0.0, 3.0),
    ]


ITEMS = [
    # p, forced, slm right, llm right, costs
    ReplayItem(0.95, False, True, True, 1.0, 10.0),
    ReplayItem(0.90, False, True, False, 1.0, 10.0),
    ReplayItem(0.40, False, False, True, 1.0, 10.0),
    ReplayItem(0.30, False, False, True, 1.0, 10.0),
    ReplayItem(0.99, True, False, True, 1.0, 10.0),
]


def test_a_threshold_replayed() -> None:
    point = at_threshold(ITEMS, 0.5)
    assert point.offload_rate == pytest.approx(3 / 5)  # the two unsure and the forced one
    assert point.accuracy == pytest.approx(5 / 5)
    assert point.cost_per_request == pytest.approx((5 * 1.0 + 3 * 10.0) / 5)


def test_the_curve_runs_from_nothing_sent_out_to_everything() -> None:
    points = curve(ITEMS)
    assert points[0].offload_rate == pytest.approx(1 / 5)  # only the forced one
    assert points[-1].offload_rate == 1.0 and points[-1].accuracy == pytest.approx(4 / 5)
    rates = [p.offload_rate for p in points]
    assert rates == sorted(rates)


def test_random_router_and_gap_recovered() -> None:
    # SLM alone 2/5, LLM alone 4/5: at r = 0.6 a random router expects 0.64.
    rand = random_router(ITEMS, 0.6)
    assert rand.accuracy == pytest.approx(0.4 * 0.4 + 0.6 * 0.8)
    assert rand.cost_per_request == pytest.approx(0.4 * 1.0 + 0.6 * 10.0)
    assert gap_recovered(ITEMS, 0.8) == pytest.approx(1.0)
    assert gap_recovered(ITEMS, rand.accuracy) == pytest.approx(0.6)
    worse_llm = [ReplayItem(0.5, False, True, False, 1.0, 1.0)]
    assert gap_recovered(worse_llm, 1.0) is None


def test_compare_puts_the_cascade_beside_a_random_router_at_its_share() -> None:
    result = compare(ITEMS, 0.5)
    assert result["cascade"]["offload_rate"] == result["random"]["offload_rate"] == 0.6
    assert result["cascade"]["accuracy"] == 1.0 > result["random"]["accuracy"]
    assert result["cascade_gap_recovered"] == pytest.approx(1.5)  # beats the LLM alone
    assert compare([], 0.5) == {}
