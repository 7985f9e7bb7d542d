"""The cascade's router judged the way RouteLLM judges routers: against a
random router that sends out the same share of requests, and along the
cost-accuracy curve its threshold traces.

Nothing is decoded again. For the same items the ablation has the SLM's
answer (row ``slm``: the cascade's local agent is the same), the LLM's
answer (row ``llm``) and the P(success) the cascade computed (row
``cascade``). At a threshold τ an item whose P is below τ takes the LLM's
answer and pays for both models (the SLM always answers first); the others
keep the SLM's. An item the cascade sent out although P ≥ τ had an answer
that failed verification: it goes out at every τ. (An invalid answer with
P below the run's τ cannot be told apart from a merely unsure one, so below
the run's τ the curve may keep a few of those local; near the run's τ it is
exact.)

A random router sending out a share r has, in expectation, accuracy
(1 − r)·acc_SLM + r·acc_LLM and cost (1 − r)·cost_SLM + r·cost_LLM: it does
not run the SLM on what it sends out, so it is charged less than the cascade
for the same share. The gap recovered is RouteLLM's PGR,
(acc − acc_SLM) / (acc_LLM − acc_SLM), given only when the LLM is the more
accurate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.bench.bfcl_run import JOULES_PER_KWH, OFFLOAD_PREFIX


@dataclass(frozen=True)
class ReplayItem:
    """One item seen by both models; costs in USD."""

    p: float
    forced: bool  # sent out by the cascade with P ≥ its τ: invalid locally
    slm_correct: bool
    llm_correct: bool
    slm_cost: float
    llm_cost: float


@dataclass(frozen=True)
class Point:
    """One router setting: the share sent out, accuracy, mean cost per request."""

    offload_rate: float
    accuracy: float
    cost_per_request: float
    threshold: float | None = None  # None: the random router

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "offload_rate": round(self.offload_rate, 4),
            "accuracy": round(self.accuracy, 4),
            "cost_per_request": self.cost_per_request,
        }


Report = Mapping[str, Any]
"""A ``bench bfcl`` JSON report (one category, one mode)."""


def replay_items(
    slm: Iterable[Report],
    llm: Iterable[Report],
    cascade: Iterable[Report],
    *,
    threshold: float,
    kwh_price: float,
) -> list[ReplayItem]:
    """Items matched by (category, id) across the three rows; items missing
    from any of them are left out."""

    def by_key(reports: Iterable[Report]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(r["category"], i["id"]): i for r in reports for i in r["per_item"]}

    def cost(item: Mapping[str, Any]) -> float:
        return float(item.get("energy_j", 0.0)) / JOULES_PER_KWH * kwh_price + float(
            item.get("cloud_cost", 0.0)
        )

    local, cloud = by_key(slm), by_key(llm)
    items = []
    for key, routed in by_key(cascade).items():
        if key not in local or key not in cloud:
            continue
        p = routed.get("p_success")
        p = 0.0 if p is None else float(p)
        out = str(routed["route"]).startswith(OFFLOAD_PREFIX)
        items.append(
            ReplayItem(
                p=p,
                forced=out and p >= threshold,
                slm_correct=bool(local[key]["correct"]),
                llm_correct=bool(cloud[key]["correct"]),
                slm_cost=cost(local[key]),
                llm_cost=cost(cloud[key]),
            )
        )
    return items


def at_threshold(items: Sequence[ReplayItem], tau: float) -> Point:
    """The cascade at ``tau``, replayed."""
    n = len(items)
    sent = [i.forced or i.p < tau for i in items]
    correct = sum(i.llm_correct if s else i.slm_correct for i, s in zip(items, sent, strict=True))
    cost = sum(i.slm_cost + (i.llm_cost if s else 0.0) for i, s in zip(items, sent, strict=True))
    return Point(sum(sent) / n, correct / n, cost / n, tau)


def curve(items: Sequence[ReplayItem]) -> list[Point]:
    """The cascade at every threshold that changes a decision, from sending
    nothing out (τ = 0) to sending everything out (τ above every P)."""
    taus = sorted({0.0, *(i.p for i in items), 1.0 + 1e-9})
    return [at_threshold(items, tau) for tau in taus]


def random_router(items: Sequence[ReplayItem], rate: float) -> Point:
    """The expected result of sending a random share ``rate`` out."""
    n = len(items)
    slm_acc = sum(i.slm_correct for i in items) / n
    llm_acc = sum(i.llm_correct for i in items) / n
    slm_cost = sum(i.slm_cost for i in items) / n
    llm_cost = sum(i.llm_cost for i in items) / n
    return Point(
        rate, (1 - rate) * slm_acc + rate * llm_acc, (1 - rate) * slm_cost + rate * llm_cost
    )


def gap_recovered(items: Sequence[ReplayItem], accuracy: float) -> float | None:
    """RouteLLM's PGR; None when the LLM is not the more accurate model."""
    n = len(items)
    slm_acc = sum(i.slm_correct for i in items) / n
    llm_acc = sum(i.llm_correct for i in items) / n
    if llm_acc <= slm_acc:
        return None
    return (accuracy - slm_acc) / (llm_acc - slm_acc)


def compare(items: Sequence[ReplayItem], tau: float) -> dict[str, Any]:
    """The cascade at the run's τ beside a random router at the same share."""
    if not items:
        return {}
    cascade = at_threshold(items, tau)
    rand = random_router(items, cascade.offload_rate)
    n = len(items)
    return {
        "n": n,
        "threshold": tau,
        "slm_accuracy": sum(i.slm_correct for i in items) / n,
        "llm_accuracy": sum(i.llm_correct for i in items) / n,
        "cascade": cascade.to_json(),
        "random": rand.to_json(),
        "cascade_gap_recovered": gap_recovered(items, cascade.accuracy),
        "random_gap_recovered": gap_recovered(items, rand.accuracy),
        "curve": [p.to_json() for p in curve(items)],
    }
