"""Run BFCL v4 single-turn questions through the agent and report the metrics.

The runner is given what it needs (items, an engine already loaded, a power
probe) and returns a :class:`BenchReport`, plain data with a stable JSON
shape; parsing flags, progress bars and files are the CLI's business.

Per item: the BFCL functions become tools (``normalize_tools``; a name or
schema we cannot accept makes the item a recorded failure, not a crash), the
agent answers with ``tool_choice="auto"`` (the model is never told the
category) and parallel calls allowed by default, the final attempt's calls
are decoded to ``[{name: {arg: value}}]`` and scored with the AST checker,
and the item's energy is read from the probe. An item without functions
(a few live_irrelevance ones) runs with no tools at all.

Metric definitions (the names never change; README, "What it does, measured"):

* ``accuracy``: share of items whose final output passes the BFCL AST check.
* ``valid_at_1``: share whose *first* attempt parsed and passed our verifier
  as a call; for irrelevance categories a plain-text answer counts as valid.
* ``exec_rate``: share whose final call(s) pass our verifier *and* the AST
  check; for relevance categories (no call to verify) it equals accuracy.
* ``p50_s``/``p95_s``: per-item wall time, tool conversion included.
* ``energy_j_per_request``: mean energy per item from the probe.
* ``cost_per_success``: (energy × ``kwh_price`` + what the cloud charged)
  over all items ÷ correct items (``None`` when none is correct).
* ``offload_rate``: share answered by the cloud; ``abstain_rate``: share
  queued or declined (0.0 for the local modes).
* ``routing_precision``/``routing_recall`` (cascade only): of the offloaded
  items, the share the SLM's own answer would have got wrong; of the SLM's
  wrong answers, the share offloaded.

Modes ``llm`` and ``cascade`` go through the :class:`~edge_agent.routing.router.Router`
with a real endpoint (see :func:`routed_solver`); the cloud's cost is its
token price, the device's is the energy it spent waiting and deciding.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.agent import Agent
from edge_agent.bench.bfcl_check import Call, check_item, is_relevance_category
from edge_agent.bench.bfcl_data import BfclItem, category_from_filename, decode_calls, load_items
from edge_agent.config import AgentSettings, RouterSettings
from edge_agent.decoding.calls import ParsedOutput
from edge_agent.decoding.prompts import Message
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.engine.base import Engine
from edge_agent.errors import BenchError, InputError, SchemaError
from edge_agent.ladder import Ladder
from edge_agent.power import EnergySample, PowerProbe, best_probe, cpu_model_name
from edge_agent.records.run import Attempt, Result
from edge_agent.routing.confidence import ConfidenceModel, features_from_result
from edge_agent.routing.router import Cloud, Mode, RoutedResult, Router, cascade_agent_settings

CATEGORIES = frozenset(
    {
        "simple_python",
        "multiple",
        "parallel",
        "parallel_multiple",
        "irrelevance",
        "live_simple",
        "live_multiple",
        "live_parallel",
        "live_parallel_multiple",
        "live_irrelevance",
        "live_relevance",
    }
)
"""The BFCL v4 single-turn categories with Python-typed schemas we can score."""

JOULES_PER_KWH = 3.6e6
OFFLOAD_PREFIX = "offload"

Answer = Result | RoutedResult
Solve = Callable[[list[Message], list[ToolSpec]], Answer]
"""Answers one item's messages with its tools."""
SolverFactory = Callable[[Engine, AgentSettings, int], Solve]
"""Builds a mode's solver from the engine, the agent settings and max_tokens."""


def local_solver(constrained: bool, ladder: Ladder | None = None) -> SolverFactory:
    """The SLM on its own, with or without the grammar; with ``ladder``, the
    local ladder above it (mode ``ladder``, the default configuration)."""

    def factory(engine: Engine, settings: AgentSettings, max_tokens: int) -> Solve:
        def solve(messages: list[Message], tools: list[ToolSpec]) -> Result:
            agent = Agent(engine, tools, settings, max_tokens=max_tokens, ladder=ladder)
            return agent.ask(messages, tool_choice="auto", constrained=constrained)

        return solve

    return factory


def routed_solver(
    mode: Mode, cloud: Cloud, confidence: ConfidenceModel, routing: RouterSettings
) -> SolverFactory:
    """The router in front of a real endpoint: ``llm`` always offloads,
    ``cascade`` answers locally when verified and P(success) ≥ τ. Tools
    are never executed: the benchmark scores the calls."""

    def factory(engine: Engine, settings: AgentSettings, max_tokens: int) -> Solve:
        local = cascade_agent_settings(settings)

        def solve(messages: list[Message], tools: list[ToolSpec]) -> Answer:
            agent = Agent(engine, tools, local, max_tokens=max_tokens)
            router = Router(agent, confidence, routing, cloud=cloud)
            return router.ask(
                messages, source="bench", tool_choice="auto", execute=False, mode=mode
            )

        return solve

    return factory


MODES: dict[str, SolverFactory | None] = {
    "ladder": None,
    "slm": local_solver(constrained=True),
    "slm-nogrammar": local_solver(constrained=False),
    "llm": None,
    "llm-schema": None,
    "cascade": None,
}
"""Mode name → solver; the routed modes (None here) need a cloud, so their
solver comes from :func:`routed_solver`, and ``ladder`` needs the tiers
(``local_solver(True, ladder)``)."""
ROUTED_MODES = frozenset({"llm", "llm-schema", "cascade"})
SCHEMA_SUFFIX = "+schema"
"""``llm-schema`` asks the endpoint for model ``<model>+schema``: the
stand-in (:mod:`edge_agent.bench.standin`) then enforces each tool's schema
while decoding, the "LLM with schema" row of the ablation."""


@dataclass(frozen=True)
class BenchOptions:
    category: str
    mode: str = "slm"
    parallel: bool = True
    kwh_price: float = 0.30
    max_tokens: int = 256

    def check(self) -> None:
        """Refuse what cannot be run, as one :class:`BenchError` line."""
        if self.category not in CATEGORIES:
            known = ", ".join(sorted(CATEGORIES))
            raise BenchError(f"unknown category {self.category!r}", hint=f"known: {known}")
        if self.mode not in MODES:
            raise BenchError(f"unknown mode {self.mode!r}", hint=f"use one of: {', '.join(MODES)}")
        if not self.kwh_price >= 0:
            raise BenchError(f"the electricity price must be >= 0, got {self.kwh_price}")


@dataclass(frozen=True)
class ItemRecord:
    """One scored item; ``calls`` is None when the output could not be decoded."""

    id: str
    correct: bool
    route: str
    latency_s: float
    calls: list[Call] | None
    reason: str
    prompt_tokens: int
    completion_tokens: int
    energy_j: float
    valid_at_1: bool
    exec_ok: bool
    cloud_cost: float = 0.0
    p_success: float | None = None
    features: dict[str, float] | None = None
    slm_correct: bool | None = None  # cascade: would the SLM's own answer have passed?
    tier: int | str = 0  # which rung answered: a local tier, or "cloud"
    tiers: tuple[dict[str, Any], ...] = ()  # ladder: each tier's own answer, scored

    @classmethod
    def not_run(cls, item_id: str, reason: str, latency_s: float, energy_j: float) -> ItemRecord:
        """An item the model never saw (tools we cannot accept, a prompt too long)."""
        return cls(item_id, False, "none", latency_s, None, reason, 0, 0, energy_j, False, False)

    @property
    def offloaded(self) -> bool:
        return self.route.startswith(OFFLOAD_PREFIX)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "correct": self.correct,
            "route": self.route,
            "latency_s": round(self.latency_s, 4),
            "calls": self.calls,
            "reason": self.reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "energy_j": round(self.energy_j, 4),
            "valid_at_1": self.valid_at_1,
            "exec_ok": self.exec_ok,
            "cloud_cost": round(self.cloud_cost, 8),
            "p_success": None if self.p_success is None else round(self.p_success, 4),
            "features": self.features,
            "slm_correct": self.slm_correct,
            "tier": self.tier,
            "tiers": list(self.tiers),
        }


@dataclass(frozen=True)
class BenchReport:
    options: BenchOptions
    model: str
    items: tuple[ItemRecord, ...]
    energy: EnergySample  # the whole run, for its source and note
    machine: dict[str, Any]
    wall_s: float

    @property
    def n(self) -> int:
        return len(self.items)

    def share(self, predicate: Callable[[ItemRecord], bool]) -> float:
        return sum(1 for i in self.items if predicate(i)) / self.n if self.items else 0.0

    @property
    def energy_j_total(self) -> float:
        return sum(i.energy_j for i in self.items)

    @property
    def cost_total(self) -> float:
        """Device energy at the electricity price plus what the cloud charged."""
        energy = self.energy_j_total / JOULES_PER_KWH * self.options.kwh_price
        return energy + sum(i.cloud_cost for i in self.items)

    @property
    def cost_per_success(self) -> float | None:
        correct = sum(1 for i in self.items if i.correct)
        return self.cost_total / correct if correct else None

    def routing_quality(self) -> tuple[float | None, float | None]:
        """(precision, recall) of the offload decision against the SLM's own
        score; None where the run has no such items."""
        judged = [i for i in self.items if i.slm_correct is not None]
        sent = [i for i in judged if i.offloaded]
        wrong = [i for i in judged if not i.slm_correct]
        precision = sum(1 for i in sent if not i.slm_correct) / len(sent) if sent else None
        recall = sum(1 for i in wrong if i.offloaded) / len(wrong) if wrong else None
        return precision, recall

    def metrics(self) -> dict[str, Any]:
        """The fixed metric names and their values."""
        latencies = [i.latency_s for i in self.items]
        precision, recall = self.routing_quality()
        return {
            "n": self.n,
            "accuracy": self.share(lambda i: i.correct),
            "valid_at_1": self.share(lambda i: i.valid_at_1),
            "exec_rate": self.share(lambda i: i.exec_ok),
            "p50_s": round(percentile(latencies, 50), 4),
            "p95_s": round(percentile(latencies, 95), 4),
            "energy_j_per_request": round(self.energy_j_total / self.n, 4) if self.n else 0.0,
            "offload_rate": self.share(lambda i: i.offloaded),
            "abstain_rate": self.share(lambda i: i.route in ("queued", "declined")),
            "cost_per_success": self.cost_per_success,
            "routing_precision": precision,
            "routing_recall": recall,
            "tier_share": self.tier_share(),
        }

    def tier_share(self) -> dict[str, float]:
        """Share of items each rung answered (``"0"``, ``"1"``, ``"cloud"``)."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[str(item.tier)] = counts.get(str(item.tier), 0) + 1
        return {name: counts[name] / self.n for name in sorted(counts)}

    def to_json(self) -> dict[str, Any]:
        from edge_agent import __version__

        return {
            "benchmark": "bfcl",
            "category": self.options.category,
            "mode": self.options.mode,
            "model": self.model,
            "edge_agent_version": __version__,
            "machine": self.machine,
            "energy_source": self.energy.source,
            "energy_note": self.energy.note,
            **self.metrics(),
            "kwh_price": self.options.kwh_price,
            "energy_j_total": round(self.energy_j_total, 4),
            "wall_s": round(self.wall_s, 3),
            "settings": {"parallel": self.options.parallel, "max_tokens": self.options.max_tokens},
            "per_item": [i.to_json() for i in self.items],
        }


def load_bfcl(
    questions: Path, answers: Path | None, category: str, limit: int | None = None
) -> list[BfclItem]:
    """The items to run, after the checks that make a long run worth starting."""
    if limit is not None and limit < 1:
        raise BenchError(f"--limit must be at least 1, got {limit}")
    named = category_from_filename(questions)
    if named is not None and named != category:
        raise BenchError(f"{questions} holds {named} questions, not {category}")
    if answers is None and not is_relevance_category(category):
        raise BenchError(
            f"category {category} needs --answers: it is scored against ground truth",
            hint="pass the matching file from BFCL's possible_answer folder",
        )
    if not questions.is_file():
        raise BenchError(f"questions file {questions} does not exist")
    if answers is not None and not answers.is_file():
        raise BenchError(f"answers file {answers} does not exist")
    items = load_items(questions, answers, category=category, limit=limit)
    if not items:
        raise BenchError(f"{questions} holds no questions")
    return items


def run_bfcl(  # noqa: PLR0913 - keyword-only options after the inputs
    items: Sequence[BfclItem],
    engine: Engine,
    options: BenchOptions,
    *,
    probe: PowerProbe | None = None,
    on_item: Callable[[ItemRecord], None] | None = None,
    solver: SolverFactory | None = None,
    ladder: Ladder | None = None,
) -> BenchReport:
    """Answer and score every item; ``on_item`` sees each record as it is made.
    The routed modes need ``solver`` (from :func:`routed_solver`); mode
    ``ladder`` climbs ``ladder`` (without one it is tier 0 alone)."""
    options.check()
    probe = probe or best_probe()
    settings = AgentSettings(parallel_calls=options.parallel)
    factory = solver or MODES[options.mode]
    if options.mode == "ladder":
        factory = local_solver(constrained=True, ladder=ladder)
    if factory is None:
        raise BenchError(f"mode {options.mode} needs a cloud endpoint", hint="pass --llm-url")
    solve = factory(engine, settings, options.max_tokens)
    start, t0 = probe.sample(), time.perf_counter()
    records = []
    for item in items:
        record = run_item(item, solve, probe, options.category)
        records.append(record)
        if on_item is not None:
            on_item(record)
    run = EnergySample.between(start, probe.sample())
    wall_s = time.perf_counter() - t0
    return BenchReport(
        options, engine.model_name, tuple(records), run, machine_info(engine), wall_s
    )


def run_item(item: BfclItem, solve: Solve, probe: PowerProbe, category: str) -> ItemRecord:
    """One item: answer, time, measure, score."""
    before, t0 = probe.sample(), time.perf_counter()
    outcome = _answer(item, solve)
    latency_s = time.perf_counter() - t0
    energy = EnergySample.between(before, probe.sample())
    if isinstance(outcome, str):
        return ItemRecord.not_run(item.id, outcome, latency_s, energy.joules)
    return _score(item, outcome, category, latency_s, energy.joules)


def _answer(item: BfclItem, solve: Solve) -> Answer | str:
    """The agent's result, or why the item could not be put to the model."""
    try:
        tools = normalize_tools(item.functions) if item.functions else []
    except SchemaError as exc:
        return f"tools rejected: {exc.one_line()}"
    try:
        return solve(item.messages, tools)
    except (SchemaError, InputError) as exc:
        return f"not run: {exc.one_line()}"


def _score(
    item: BfclItem, answer: Answer, category: str, latency_s: float, energy_j: float
) -> ItemRecord:
    if isinstance(answer, Result):
        return _score_local(item, answer, category, latency_s, energy_j)
    return _score_routed(item, answer, category, latency_s, energy_j)


def _score_local(
    item: BfclItem, result: Result, category: str, latency_s: float, energy_j: float
) -> ItemRecord:
    calls = decoded_calls(result.final.parsed)
    check = check_item(category, item.functions, calls, item.ground_truth)
    first, final = result.attempts[0], result.final
    # Every tier's own answer, tier 0's alone included: its call margin lets a
    # run at one call bias be replayed at another (benchmarks/call_bias_replay.py).
    tiers = _tier_answers(item, result, category)
    verified = final.valid and final.parsed.is_call
    return ItemRecord(
        id=item.id,
        correct=check.correct,
        route=result.route,
        latency_s=latency_s,
        calls=calls,
        reason=check.reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        energy_j=energy_j,
        valid_at_1=first.valid and (first.parsed.is_call or "irrelevance" in category),
        exec_ok=check.correct and (verified or is_relevance_category(category)),
        features=features_from_result(result).to_json(),
        p_success=final.p_success,
        tier=result.tier,
        tiers=tiers,
    )


def _tier_answers(item: BfclItem, result: Result, category: str) -> tuple[dict[str, Any], ...]:
    """Each tier's own last answer, scored, with its P(success) and time, so
    a run with every item climbing can be replayed at any threshold."""
    out = []
    for tier in sorted({a.tier for a in result.attempts}):
        attempts = [a for a in result.attempts if a.tier == tier and a.step == 0]
        calls = decoded_calls(attempts[-1].parsed)
        check = check_item(category, item.functions, calls, item.ground_truth)
        seconds = sum(a.generation.timings.total_s for a in attempts)
        p = attempts[-1].p_success
        out.append(
            {
                "tier": tier,
                "correct": check.correct,
                "valid": attempts[-1].valid,
                "p_success": None if p is None else round(p, 4),
                "seconds": round(seconds, 4),
                "attempts": len(attempts),
                "first": _first_token(attempts[0]),
            }
        )
    return tuple(out)


def _first_token(attempt: Attempt) -> dict[str, Any] | None:
    """Whether the first answer opened a call, and the engine's call margin
    (best call-opening logit minus best other, see ``call_bias`` in
    :mod:`edge_agent.engine.guided`) when it had a call-intent rule: with
    it, a run at one bias can be replayed at any other."""
    scores = attempt.generation.tokens
    if not scores:
        return None
    stats = getattr(attempt.generation, "stats", None)
    margin = getattr(stats, "call_margin", None)
    return {
        "call": scores[0].text.strip().startswith("<tool_call>"),
        "margin": None if margin is None else round(margin, 4),
    }


def _score_routed(
    item: BfclItem, routed: RoutedResult, category: str, latency_s: float, energy_j: float
) -> ItemRecord:
    calls = decoded_calls(routed.final_parsed)
    check = check_item(category, item.functions, calls, item.ground_truth)
    local = routed.result
    prompt, completion = (local.prompt_tokens, local.completion_tokens) if local else (0, 0)
    if routed.offload is not None:
        prompt += routed.offload.reply.prompt_tokens
        completion += routed.offload.reply.completion_tokens
    if local is not None:
        first = local.attempts[0]
        valid_at_1 = first.valid and (first.parsed.is_call or "irrelevance" in category)
        slm_calls = decoded_calls(local.final.parsed) if local.final.valid else None
        slm_check = check_item(category, item.functions, slm_calls, item.ground_truth)
        slm_correct: bool | None = slm_check.correct
    else:  # llm mode: the cloud's reply is the first output
        valid_at_1 = routed.offload is not None and routed.offload.valid
        slm_correct = None
    return ItemRecord(
        id=item.id,
        correct=check.correct,
        route=routed.route,
        latency_s=latency_s,
        calls=calls,
        reason=check.reason if routed.route != "declined" else routed.reason,
        prompt_tokens=prompt,
        completion_tokens=completion,
        energy_j=energy_j,
        valid_at_1=valid_at_1,
        exec_ok=check.correct and (bool(routed.calls) or is_relevance_category(category)),
        cloud_cost=routed.decision.cost or 0.0,
        p_success=routed.decision.p,
        features=routed.features.to_json() if routed.features else None,
        slm_correct=slm_correct,
        tier="cloud" if routed.offload is not None else 0,
    )


def decoded_calls(parsed: ParsedOutput) -> list[Call] | None:
    """The output as the checker reads it: None if any fragment failed to parse
    (BFCL fails the whole decode then), [] for a plain-text answer."""
    if parsed.errors:
        return None
    try:
        return decode_calls([c.to_dict() for c in parsed.calls])
    except InputError:
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Interpolated percentile (q in 0..100, numpy's default method), the
    usual choice for comparing benchmark runs; 0 if empty. The journal's
    ``/metrics`` use nearest rank instead (``journal.percentile``)."""
    return float(np.percentile(values, q)) if len(values) else 0.0


def machine_info(engine: Engine | None = None) -> dict[str, Any]:
    """Where the run happened, for the record."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model_name(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "threads": getattr(engine, "n_threads", None),
    }
    try:
        info["llama_cpp_python"] = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        info["llama_cpp_python"] = None
    return info


def summary_table(report: BenchReport) -> str:
    """The metrics as an aligned two-column table for a terminal."""
    m = report.metrics()
    cps = m["cost_per_success"]
    rows = [
        ("items", str(m["n"])),
        ("accuracy", f"{m['accuracy']:.3f}"),
        ("valid@1", f"{m['valid_at_1']:.3f}"),
        ("exec rate", f"{m['exec_rate']:.3f}"),
        ("p50 latency (s)", f"{m['p50_s']:.3f}"),
        ("p95 latency (s)", f"{m['p95_s']:.3f}"),
        ("energy/request (J)", f"{m['energy_j_per_request']:.3f}"),
        ("offload rate", f"{m['offload_rate']:.3f}"),
        ("abstain rate", f"{m['abstain_rate']:.3f}"),
        ("cost/success", "n/a" if cps is None else f"{cps:.3g} @ {report.options.kwh_price}/kWh"),
        ("energy source", report.energy.source),
    ]
    opts = report.options
    title = f"BFCL {opts.category} | mode {opts.mode} | model {report.model}"
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
