"""One request end to end: prompt → constrained decode → verify → repair.

The agent is built from parts passed in (an engine, a set of tools, typed
settings); it constructs none of them and does no I/O of its own beyond
calling them. A run is plain data: a :class:`Result` holding every
:class:`Attempt`, so telemetry, benchmarks and the CLI read the same record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.calls import ParsedOutput, ToolCall, parse_output
from edge_agent.config import AgentSettings
from edge_agent.engine.base import Engine, Generation
from edge_agent.errors import InputError
from edge_agent.grammar import Grammar, GrammarOptions, build_grammar
from edge_agent.prompts import Message, build_prompt, repair_message, user_message
from edge_agent.registry import Registry
from edge_agent.schema import ToolSpec
from edge_agent.verify import Rule, Verdict, verify_output

AttemptKind = Literal["initial", "repair"]
Outcome = Literal["call", "answer", "invalid"]


@dataclass(frozen=True)
class Attempt:
    """One generation and what the verifier made of it."""

    kind: AttemptKind
    generation: Generation
    parsed: ParsedOutput
    verdicts: tuple[Verdict, ...]
    constrained: bool

    @property
    def valid(self) -> bool:
        """Every proposed call passed; a plain answer counts when allowed."""
        return all(v.ok for v in self.verdicts)

    @property
    def problem(self) -> str:
        return next((v.message for v in self.verdicts if not v.ok), "")


@dataclass(frozen=True)
class Result:
    attempts: tuple[Attempt, ...]
    latency_s: float
    route: str = "local"
    executions: tuple[Any, ...] = field(default=())

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        """Verified calls of the final attempt (empty if it failed)."""
        final = self.final
        return tuple(v.call for v in final.verdicts if v.ok and v.call) if final.valid else ()

    @property
    def text(self) -> str:
        return self.final.parsed.text

    @property
    def outcome(self) -> Outcome:
        if self.calls:
            return "call"
        return "answer" if self.final.valid and self.final.parsed.text else "invalid"

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
            "latency_s": round(self.latency_s, 4),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "outcome": self.outcome,
            "text": self.text,
            "valid_at_1": first.valid and first.parsed.is_call,
            "attempts": [_attempt_json(a) for a in self.attempts],
        }


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    gen = attempt.generation
    lps = [t.logprob for t in gen.tokens]
    return {
        "kind": attempt.kind,
        "raw": gen.text,
        "valid": attempt.valid,
        "problem": attempt.problem,
        "prefill_s": round(gen.timings.prefill_s, 4),
        "decode_s": round(gen.timings.decode_s, 4),
        "min_logprob": round(min(lps), 4) if lps else None,
        "mean_logprob": round(sum(lps) / len(lps), 4) if lps else None,
    }


class Agent:
    """Turns a request into verified tool calls with a local model."""

    def __init__(
        self,
        engine: Engine,
        tools: Registry | Sequence[ToolSpec],
        settings: AgentSettings | None = None,
        *,
        max_tokens: int = 256,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.engine = engine
        self.tools = tools
        self.settings = settings or AgentSettings.model_validate({})
        self.max_tokens = max_tokens
        self.rules = tuple(rules)

    @property
    def specs(self) -> list[ToolSpec]:
        return self.tools.specs() if isinstance(self.tools, Registry) else list(self.tools)

    def ask(
        self,
        request: str | Sequence[Message],
        *,
        tool_choice: str | None = None,
        constrained: bool = True,
    ) -> Result:
        """One request. ``tool_choice``: auto, required, none, or a tool name.
        ``constrained=False`` decodes without a grammar (for ablations)."""
        start = time.perf_counter()
        messages = _messages(request)
        choice = tool_choice or self.settings.tool_choice
        specs = self._offered(choice)
        grammar = self._grammar(specs, choice) if constrained else None
        allow_text = choice in ("auto", "none")
        attempts = [self._attempt("initial", messages, specs, grammar, allow_text)]
        for _ in range(self.settings.repair_attempts):
            last = attempts[-1]
            if last.valid:
                break
            messages = [*messages, _assistant(last), repair_message(last.problem)]
            attempts.append(self._attempt("repair", messages, specs, grammar, allow_text))
        return Result(tuple(attempts), time.perf_counter() - start)

    def _offered(self, choice: str) -> list[ToolSpec]:
        specs = self.specs
        if choice in ("auto", "required", "none"):
            return [] if choice == "none" else specs
        named = [s for s in specs if s.name == choice]
        if not named:
            raise InputError(f"tool_choice names unknown tool {choice!r}")
        return named

    def _grammar(self, specs: list[ToolSpec], choice: str) -> Grammar | None:
        if not specs:
            return None
        options = GrammarOptions(
            parallel=self.settings.parallel_calls,
            allow_text=choice == "auto",
            max_calls=self.settings.max_calls,
        )
        return build_grammar(specs, options)

    def _attempt(
        self,
        kind: AttemptKind,
        messages: list[Message],
        specs: list[ToolSpec],
        grammar: Grammar | None,
        allow_text: bool,
    ) -> Attempt:
        prompt = build_prompt(
            self.engine.chat_template, messages, specs, system=self.settings.system_prompt
        )
        generation = self.engine.generate(prompt, grammar=grammar, max_tokens=self.max_tokens)
        parsed = parse_output(generation.text)
        verdicts: tuple[Verdict, ...]
        if parsed.is_call or parsed.errors:
            verdicts = tuple(verify_output(parsed, self._verifying(specs), self.rules))
        elif allow_text:
            verdicts = (Verdict(True, "ok"),)
        else:
            verdicts = (Verdict(False, "no_call", "no tool was called; call one of the tools"),)
        return Attempt(kind, generation, parsed, verdicts, grammar is not None)

    def _verifying(self, specs: list[ToolSpec]) -> Registry | list[ToolSpec]:
        """Verify against the offered tools only, keeping the registry's
        pydantic models and rules when there is one."""
        if isinstance(self.tools, Registry):
            return self.tools.subset(s.name for s in specs)
        return specs


def _messages(request: str | Sequence[Message]) -> list[Message]:
    if isinstance(request, str):
        if not request.strip():
            raise InputError("the prompt is empty", hint="pass a non-empty prompt")
        return [user_message(request)]
    return [dict(m) for m in request]


def _assistant(attempt: Attempt) -> Message:
    return {"role": "assistant", "content": attempt.generation.text}
