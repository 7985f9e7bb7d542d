"""A run as plain data: :class:`Attempt`, :class:`Execution`, :class:`Result`.

These records sit below the pipeline so that everything reading a run (the
journal, the confidence model, the router, benchmarks, the CLI) imports them
without importing the agent that produces them. They need only the engine's
base types and the call envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from edge_agent.decoding.calls import ParsedOutput, ToolCall
from edge_agent.engine.base import Generation
from edge_agent.toolbox.verify import Verdict

AttemptKind = Literal["initial", "repair", "shadow"]
"""``shadow``: the tier above answering a request its tier below was sure
of, only to check it (a label for calibration); never the answer."""
Outcome = Literal["call", "answer", "invalid"]
ExecStatus = Literal["done", "failed", "unconfirmed", "skipped"]


@dataclass(frozen=True)
class Attempt:
    """One generation and what the verifier made of it. ``tier`` is the rung
    of the local ladder whose model produced it (0 = the default model)."""

    kind: AttemptKind
    generation: Generation
    parsed: ParsedOutput
    verdicts: tuple[Verdict, ...]
    constrained: bool
    step: int = 0
    tier: int = 0
    p_success: float | None = None

    @property
    def valid(self) -> bool:
        """Every proposed call passed; a plain answer counts when allowed."""
        return all(v.ok for v in self.verdicts)

    @property
    def problem(self) -> str:
        return next((v.message for v in self.verdicts if not v.ok), "")


@dataclass(frozen=True)
class Execution:
    """One verified call and what running it did (``result`` is the
    sandbox's ``SandboxResult``; None when it was not run). ``said`` is the
    sentence a person reads about it, rendered from the result."""

    step: int
    call: ToolCall
    status: ExecStatus
    result: Any = None
    reason: str = ""
    said: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.call.to_dict(), "status": self.status}
        if self.result is not None:
            out["result"] = self.result.value if self.ok else None
            out["error"] = self.result.error
        if self.reason:
            out["reason"] = self.reason
        if self.said:
            out["said"] = self.said
        return out


@dataclass(frozen=True)
class Result:
    attempts: tuple[Attempt, ...]
    latency_s: float
    route: str = "local"
    executions: tuple[Execution, ...] = field(default=())

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    def followed_by(self, later: Result) -> Result:
        """This run and a later one on the same request as one result: the
        later run's steps come after this one's (an automation request asked
        again without a refused tool keeps both in its record)."""
        offset = 1 + max(a.step for a in self.attempts)
        return Result(
            attempts=(*self.attempts, *(replace(a, step=a.step + offset) for a in later.attempts)),
            latency_s=self.latency_s + later.latency_s,
            route=later.route,
            executions=(
                *self.executions,
                *(replace(e, step=e.step + offset) for e in later.executions),
            ),
        )

    @property
    def tier(self) -> int:
        """The ladder rung whose answer the first step settled on."""
        first_step = [a for a in self.attempts if a.step == self.attempts[0].step]
        return first_step[-1].tier

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        """Verified calls of every step, in order (executed or not); a call a
        later step proposed again, which the agent never runs twice, is
        listed once."""
        calls: list[ToolCall] = []
        seen: set[str] = set()
        for step in sorted({a.step for a in self.attempts}):
            last = [a for a in self.attempts if a.step == step][-1]
            if not last.valid:
                continue
            for call in (v.call for v in last.verdicts if v.ok and v.call):
                key = call.key()
                if key not in seen:
                    seen.add(key)
                    calls.append(call)
        return tuple(calls)

    @property
    def text(self) -> str:
        return self.final.parsed.text

    @property
    def answer(self) -> str:
        """What a person reads: the model's text when it answered in words,
        else one sentence per call that ran (or why it did not)."""
        if self.text:
            return self.text
        return " ".join(e.said for e in self.executions if e.said)

    @property
    def outcome(self) -> Outcome:
        if self.calls:
            return "call"
        return "answer" if self.final.valid and self.final.parsed.text else "invalid"

    @property
    def steps(self) -> int:
        """Model steps taken (a repair is part of its step)."""
        return len({a.step for a in self.attempts})

    @property
    def prompt_tokens(self) -> int:
        return sum(a.generation.prompt_tokens for a in self.attempts)

    @property
    def completion_tokens(self) -> int:
        return sum(a.generation.completion_tokens for a in self.attempts)

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape; fields may be added, never changed."""
        first = self.attempts[0]
        return {
            "tool_calls": [c.to_dict() for c in self.calls],
            "route": self.route,
            "tier": self.tier,
            "latency_s": round(self.latency_s, 4),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "outcome": self.outcome,
            "text": self.text,
            "answer": self.answer,
            "steps": self.steps,
            "valid_at_1": first.valid and first.parsed.is_call,
            "executions": [e.to_json() for e in self.executions],
            "attempts": [_attempt_json(a) for a in self.attempts],
        }


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    gen = attempt.generation
    lps = [t.logprob for t in gen.tokens]
    return {
        "step": attempt.step,
        "tier": attempt.tier,
        "kind": attempt.kind,
        "raw": gen.text,
        "valid": attempt.valid,
        "problem": attempt.problem,
        "p_success": None if attempt.p_success is None else round(attempt.p_success, 4),
        "prefill_s": round(gen.timings.prefill_s, 4),
        "decode_s": round(gen.timings.decode_s, 4),
        "min_logprob": round(min(lps), 4) if lps else None,
        "mean_logprob": round(sum(lps) / len(lps), 4) if lps else None,
    }
