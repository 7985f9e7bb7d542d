"""The local ladder: bigger models on the device that a request climbs to
when the model below is unsure.

Tier 0 is the agent's own engine (the default 0.5B). Above it sit the
:class:`Tier` objects of a :class:`Ladder`, in order (tier 1 is the 1.5B in
the default configuration). A step climbs one rung when the rung below gave
no verified answer after its repair, or when its calibrated P(success) is
below its threshold. The top rung's answer is the device's answer; whether
*that* goes to the cloud is the router's decision, made after the ladder.

By default only one kind of answer climbs: a call to a tool marked
``dangerous`` (a lock, a valve), which the top tier decides again, because a
valid but wrong call there is the worst outcome there is
(``ladder.dangerous``). Climbing on low confidence is ``ladder.climb_unsure``.

A tier that climbs from a call reads that call as a draft (``ladder.draft``):
it checks the draft in one batch and decodes only from its first
disagreement, so a climb costs less and answers the same. With climbing on
confidence, a tier's valid text answer ("no tool fits") ends the climb
(``ladder.keep_declines``): the 1.5B declines even less often than the 0.5B.

The ladder is offline and free, so it comes before any offload. It costs
time only for the requests that climb, and memory for the bigger model,
which is loaded on first use (``ask``) or at start (the daemon).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.engine.base import Engine
from edge_agent.records.run import Attempt

Judge = Callable[[Sequence[Attempt]], float]
"""P(success) of one step's attempts (initial, then repairs) on one tier."""


def never() -> bool:
    return False


def sampler(rate: float, rng: random.Random | None = None) -> Callable[[], bool]:
    """True for a random share ``rate`` of calls: which sure answers get a
    shadow check. Random, not every n-th, so the labels are an unbiased
    sample of the sure answers."""
    if rate <= 0:
        return never
    draw = (rng or random.Random()).random  # noqa: S311 - a sample, not a secret
    return lambda: draw() < rate


class Tier:
    """One rung above tier 0: a model, loaded once on first use, and the
    P(success) its answers must reach before the request stops climbing."""

    def __init__(
        self,
        name: str,
        engine: Engine | Callable[[], Engine],
        *,
        threshold: float,
        on_load: Callable[[Engine], None] | None = None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self._engine: Engine | None = None if callable(engine) else engine
        self._load = engine if callable(engine) else None
        self._on_load = on_load
        self._lock = threading.Lock()
        self.load_s = 0.0

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        """The model, loading it (and warming its tool block) the first time."""
        with self._lock:
            if self._engine is None:
                assert self._load is not None
                started = time.perf_counter()
                engine = self._load()
                if self._on_load is not None:
                    self._on_load(engine)
                self.load_s = time.perf_counter() - started
                self._engine = engine
            return self._engine

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"Tier({self.name!r}, threshold={self.threshold}, {state})"


@dataclass(frozen=True)
class Ladder:
    """Tier 0's threshold, the tiers above it, and the judge of each answer.

    ``shadow`` picks the sure tier-0 answers that tier 1 answers as well, only
    to compare (a *shadow check*): the confidence model is otherwise fitted
    only on answers that climbed or went to the cloud, never on the sure ones
    it let through, so it cannot see its own confident mistakes."""

    threshold: float
    tiers: tuple[Tier, ...]
    judge: Judge
    shadow: Callable[[], bool] = never
    unsure: bool = True  # climb on P < τ or an answer still invalid after its repair
    dangerous: bool = False  # a call to a dangerous tool is decided by the top tier
    parallel: bool = False  # the tiers above tier 0 may make several calls in one answer
    draft: bool = False  # a tier that climbs from a call reads that call as its draft
    keep_declines: bool = False  # a valid text answer (no tool fits) does not climb

    def threshold_of(self, tier: int) -> float | None:
        """τ of ``tier`` (0 = the agent's engine); None for the top rung,
        which has nothing local above it."""
        if tier >= len(self.tiers):
            return None
        return self.threshold if tier == 0 else self.tiers[tier - 1].threshold

    def settles(
        self, attempts: Sequence[Attempt], tier: int, *, dangerous_call: bool = False
    ) -> tuple[bool, float]:
        """Whether ``tier``'s attempts end the climb, and their P(success).
        ``dangerous_call``: the answer calls a tool marked dangerous (locks,
        valves), which the top tier decides again when ``dangerous`` is on."""
        p = self.judge(attempts)
        tau = self.threshold_of(tier)
        if tau is None:
            return True, p
        if self.dangerous and dangerous_call:
            return False, p
        last = attempts[-1]
        if self.keep_declines and last.valid and not last.parsed.is_call:
            return True, p
        return not self.unsure or (last.valid and p >= tau), p


@dataclass(frozen=True)
class Calibration:
    """The threshold an error budget allows, and what it achieves on the
    calibration items: how many answers the tier keeps (P ≥ τ), how many of
    those are wrong, and the risk-controlled bound on the wrong share."""

    threshold: float
    kept: int
    wrong: int
    bound: float
    n: int

    @property
    def error_rate(self) -> float:
        """Wrong answers the tier keeps, as a share of all requests."""
        return self.wrong / self.n if self.n else 0.0

    @property
    def keep_rate(self) -> float:
        return self.kept / self.n if self.n else 0.0


def threshold_for(
    scored: Sequence[tuple[float, bool]], max_error: float, *, ceiling: float = 1.0
) -> Calibration:
    """The lowest τ at which a tier's kept wrong answers stay within ``max_error``.

    ``scored`` holds (P(success), correct) of a tier's answers on items the
    confidence model was not fitted on. The controlled risk is the share of
    *all* requests that get a wrong answer the tier kept (P ≥ τ) instead of
    climbing. That loss only grows as τ falls, so conformal risk control
    applies: the bound (wrong + 1) / (n + 1) is valid for a new request
    exchangeable with the calibration items, and the lowest τ whose bound is
    within budget is the answer. With none, τ is ``ceiling``: the tier keeps
    nothing and every request climbs.
    """
    ordered = sorted(scored, key=lambda pc: -pc[0])
    n = len(ordered)
    best = Calibration(ceiling, 0, 0, 1 / (n + 1), n)
    wrong = 0
    for index, (p, correct) in enumerate(ordered):
        wrong += not correct
        if index + 1 < n and ordered[index + 1][0] == p:
            continue  # a τ keeps every answer with the same P
        bound = (wrong + 1) / (n + 1)
        if bound > max_error:
            break
        best = Calibration(p, index + 1, wrong, bound, n)
    return best


__all__ = ["Calibration", "Judge", "Ladder", "Tier", "never", "sampler", "threshold_for"]
