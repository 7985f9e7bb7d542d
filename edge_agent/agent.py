"""One request end to end: prompt → constrained decode → verify → repair →
execute → (feed results back, next step).

The agent is built from parts passed in (an engine, a set of tools, a
sandbox, typed settings); it constructs none of them and does no I/O of its
own beyond calling them. A run is plain data: a :class:`Result` holding every
:class:`Attempt` and :class:`Execution`, so telemetry, benchmarks and the CLI
read the same record.

Multi-step: after the calls of one step have run, their results go back to
the model as ``tool`` messages and it may call again or answer in text, up to
``max_steps``. A call identical to one already executed ends the loop rather
than running twice: small models like to repeat themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_agent.calls import ParsedOutput, ToolCall, parse_output
from edge_agent.config import AgentSettings
from edge_agent.engine.base import Engine, Generation
from edge_agent.engine.prefix_cache import PrefixCache, WarmPrefix
from edge_agent.errors import InputError
from edge_agent.grammar import Grammar, GrammarOptions, build_grammar
from edge_agent.prompts import (
    Message,
    build_prompt,
    repair_message,
    system_text,
    tool_result_message,
    user_message,
)
from edge_agent.ratelimit import RateLimiter
from edge_agent.registry import Registry, Tool, validate_args
from edge_agent.schema import ToolSpec
from edge_agent.tool_select import select_tools
from edge_agent.verify import Rule, Verdict, verify_output

AttemptKind = Literal["initial", "repair"]
Outcome = Literal["call", "answer", "invalid"]
ExecStatus = Literal["done", "failed", "unconfirmed", "skipped"]
Confirm = Callable[[ToolCall, Tool], bool]


class _Runner(Protocol):
    """The sandbox interface (``edge_agent.sandbox.base.Sandbox``)."""

    def run(self, tool: Tool, arguments: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Attempt:
    """One generation and what the verifier made of it."""

    kind: AttemptKind
    generation: Generation
    parsed: ParsedOutput
    verdicts: tuple[Verdict, ...]
    constrained: bool
    step: int = 0

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
    sandbox's ``SandboxResult``; None when it was not run)."""

    step: int
    call: ToolCall
    status: ExecStatus
    result: Any = None
    reason: str = ""

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

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        """Verified calls of every step, in order (executed or not)."""
        calls: list[ToolCall] = []
        for step in sorted({a.step for a in self.attempts}):
            last = [a for a in self.attempts if a.step == step][-1]
            if last.valid:
                calls += [v.call for v in last.verdicts if v.ok and v.call]
        return tuple(calls)

    @property
    def text(self) -> str:
        return self.final.parsed.text

    @property
    def outcome(self) -> Outcome:
        if self.calls:
            return "call"
        return "answer" if self.final.valid and self.final.parsed.text else "invalid"

    @property
    def executed_ok(self) -> bool:
        """Every call that was made ran without error (ExecRate's numerator)."""
        return bool(self.executions) and all(e.ok for e in self.executions)

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
            "executions": [e.to_json() for e in self.executions],
            "attempts": [_attempt_json(a) for a in self.attempts],
        }


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    gen = attempt.generation
    lps = [t.logprob for t in gen.tokens]
    return {
        "step": attempt.step,
        "kind": attempt.kind,
        "raw": gen.text,
        "valid": attempt.valid,
        "problem": attempt.problem,
        "prefill_s": round(gen.timings.prefill_s, 4),
        "decode_s": round(gen.timings.decode_s, 4),
        "min_logprob": round(min(lps), 4) if lps else None,
        "mean_logprob": round(sum(lps) / len(lps), 4) if lps else None,
    }


def system_for(
    settings: AgentSettings, specs: Sequence[ToolSpec], *, allow_text: bool
) -> str | None:
    """The system text an agent puts ahead of ``specs``. A prefix cache that
    warms the tool block must render the same text, or no prompt matches it."""
    may_decline = bool(specs) and allow_text and settings.decline_hint
    return system_text(settings.system_prompt, may_decline=may_decline)


class Agent:
    """Turns a request into verified tool calls with a local model, and runs
    them in a sandbox when one is given."""

    def __init__(  # noqa: PLR0913 - all keyword-only after the first three
        self,
        engine: Engine,
        tools: Registry | Sequence[ToolSpec],
        settings: AgentSettings | None = None,
        *,
        max_tokens: int = 256,
        rules: Sequence[Rule] = (),
        sandbox: _Runner | None = None,
        confirm: Confirm | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.engine = engine
        self.tools = tools
        self.settings = settings or AgentSettings.model_validate({})
        self.max_tokens = max_tokens
        self.sandbox = sandbox
        self.confirm = confirm
        # A daemon passes one limiter to every request's Agent, so a tool's
        # rate limit holds across requests and not just within one.
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.rules = (*rules, self.limiter.rule)

    @property
    def specs(self) -> list[ToolSpec]:
        return self.tools.specs() if isinstance(self.tools, Registry) else list(self.tools)

    def ask(
        self,
        request: str | Sequence[Message],
        *,
        tool_choice: str | None = None,
        constrained: bool = True,
        execute: bool = True,
    ) -> Result:
        """One request. ``tool_choice``: auto, required, none, or a tool name.
        ``constrained=False`` decodes without a grammar (for ablations);
        ``execute=False`` proposes calls without running them."""
        start = time.perf_counter()
        messages = _messages(request)
        choice = tool_choice or self.settings.tool_choice
        attempts: list[Attempt] = []
        executions: list[Execution] = []
        can_run = execute and self.sandbox is not None and isinstance(self.tools, Registry)
        for step in range(self.settings.max_steps if can_run else 1):
            step_choice = choice if step == 0 else "auto"
            done = self._decide(messages, step_choice, constrained, step)
            attempts += done
            calls = _verified(done[-1])
            if not can_run or not calls:
                break
            ran = self._run_calls(calls, step, executions)
            executions += ran
            if not ran or any(e.status != "done" for e in ran):
                break
            messages = [*messages, _assistant(done[-1]), *(_result_message(e) for e in ran)]
        return Result(tuple(attempts), time.perf_counter() - start, executions=tuple(executions))

    def _decide(
        self, messages: list[Message], choice: str, constrained: bool, step: int
    ) -> list[Attempt]:
        """The initial attempt and up to ``repair_attempts`` repairs."""
        specs = self._offered(choice, messages)
        grammar = self._grammar(specs, choice) if constrained else None
        allow_text = choice in ("auto", "none")
        attempt = self._attempt("initial", messages, specs, grammar, allow_text)
        attempts = [replace(attempt, step=step)]
        for _ in range(self.settings.repair_attempts):
            last = attempts[-1]
            if last.valid:
                break
            messages = [*messages, _assistant(last), repair_message(last.problem)]
            attempt = self._attempt("repair", messages, specs, grammar, allow_text)
            attempts.append(replace(attempt, step=step))
        return attempts

    def _run_calls(
        self, calls: list[ToolCall], step: int, before: list[Execution]
    ) -> list[Execution]:
        assert isinstance(self.tools, Registry) and self.sandbox is not None
        seen = {self._call_key(e.call) for e in before}
        ran: list[Execution] = []
        for call in calls:
            if self._call_key(call) in seen:
                continue  # a repeat of an executed call: stop, don't run it twice
            tool = self.tools.get(call.name)
            if tool.policy.requires_confirmation and not self._confirmed(call, tool):
                reason = f"{call.name} needs confirmation and was not confirmed"
                ran.append(Execution(step, call, "unconfirmed", reason=reason))
                break
            self.limiter.record(tool)
            result = self.sandbox.run(tool, call.arguments)
            ran.append(Execution(step, call, "done" if result.ok else "failed", result))
        return ran

    def _call_key(self, call: ToolCall) -> str:
        """A call with its defaults filled in, so ``set_light(kitchen, on)`` and
        ``set_light(kitchen, on, brightness=100)`` count as the same call."""
        assert isinstance(self.tools, Registry)
        args = call.arguments
        model = validate_args(self.tools.get(call.name), args)
        if model is not None:
            args = model.model_dump(mode="json")
        return json.dumps([call.name, args], sort_keys=True, default=str)

    def _confirmed(self, call: ToolCall, tool: Tool) -> bool:
        return self.confirm is not None and bool(self.confirm(call, tool))

    def _offered(self, choice: str, messages: Sequence[Message]) -> list[ToolSpec]:
        stable = self._stable_tools(choice)
        return self._selected(self.specs, messages) if stable is None else stable

    def _stable_tools(self, choice: str) -> list[ToolSpec] | None:
        """The tools every request with this ``tool_choice`` is offered; None
        when they are picked per request (past ``select_tools_above``)."""
        if choice == "none":
            return []
        if choice in ("auto", "required"):
            return None if len(self.specs) > self.settings.select_tools_above else self.specs
        named = [s for s in self.specs if s.name == choice]
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

    def _selected(self, specs: list[ToolSpec], messages: Sequence[Message]) -> list[ToolSpec]:
        """All tools, or past ``select_tools_above`` the best BM25 matches for
        the user's last message: a long tool block is slow to read, and small
        models choose worse among many tools."""
        users = [m for m in messages if m.get("role") == "user"]
        query = str(users[-1].get("content") or "") if users else ""
        k, above = self.settings.select_tools_k, self.settings.select_tools_above
        return select_tools(query, specs, k=k, max_tools=above)

    def warm(self, folder: Path, *, tool_choice: str | None = None) -> WarmPrefix | None:
        """Make the system prompt and tool block of a request with this
        agent's tools resident in the KV cache, from ``folder`` when an earlier
        process saved it, else by reading it once and saving it there. None
        when there is nothing stable to warm: no llama.cpp engine, no tools, or
        tools selected per request."""
        llm = getattr(self.engine, "llama", None)
        choice = tool_choice or self.settings.tool_choice
        specs = self._stable_tools(choice)
        if llm is None or not specs:
            return None
        system = self.system(specs, allow_text=choice == "auto")
        return PrefixCache(folder).warm_tools(llm, self.engine.chat_template, specs, system=system)

    def system(self, specs: Sequence[ToolSpec], allow_text: bool) -> str | None:
        """The system text ahead of ``specs``; see :func:`system_for`."""
        return system_for(self.settings, specs, allow_text=allow_text)

    def _attempt(
        self,
        kind: AttemptKind,
        messages: list[Message],
        specs: list[ToolSpec],
        grammar: Grammar | None,
        allow_text: bool,
    ) -> Attempt:
        prompt = build_prompt(
            self.engine.chat_template, messages, specs, system=self.system(specs, allow_text)
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


def _verified(attempt: Attempt) -> list[ToolCall]:
    if not attempt.valid:
        return []
    return [v.call for v in attempt.verdicts if v.ok and v.call is not None]


def _result_message(execution: Execution) -> Message:
    result = execution.result
    if result is None:
        payload: Any = {"error": execution.reason}
    else:
        payload = result.value if result.ok else {"error": result.error}
    return tool_result_message(execution.call.name, payload)


def _messages(request: str | Sequence[Message]) -> list[Message]:
    if isinstance(request, str):
        if not request.strip():
            raise InputError("the prompt is empty", hint="pass a non-empty prompt")
        return [user_message(request)]
    return [dict(m) for m in request]


def _assistant(attempt: Attempt) -> Message:
    return {"role": "assistant", "content": attempt.generation.text}
