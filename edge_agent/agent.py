"""One request end to end: prompt → constrained decode → verify → repair →
execute → (feed results back, next step).

The agent is built from parts passed in (an engine, a set of tools, a
sandbox, typed settings); it constructs none of them and does no I/O of its
own beyond calling them. A run is plain data: a :class:`Result` holding every
:class:`Attempt` and :class:`Execution`, so telemetry, benchmarks and the CLI
read the same record.

Each step climbs the local ladder when one is given: the default model
answers first, and a bigger local model only when it is unsure or its call
fails verification after one repair (:mod:`edge_agent.ladder`).

Steps: one, when one is enough. After the calls of a step have run, the
person reads one sentence per call (:mod:`edge_agent.toolbox.sentences`). Another
step, with the results fed back as ``tool`` messages, is taken only when a
read ran and the request goes on past it ("if it is warm, ..."), up to
``max_steps``. A call identical to one already executed is never run twice:
small models like to repeat themselves.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from edge_agent.config import AgentSettings
from edge_agent.decoding.calls import ParsedOutput, ToolCall, parse_output, render_call
from edge_agent.decoding.grammar import Grammar, GrammarOptions, build_grammar
from edge_agent.decoding.prompts import (
    Message,
    build_prompt,
    repair_message,
    system_text,
    tool_result_message,
    user_message,
)
from edge_agent.decoding.schema import ToolSpec
from edge_agent.decoding.tool_select import select_tools
from edge_agent.engine.base import Engine
from edge_agent.engine.prefix_cache import PrefixCache, WarmPrefix
from edge_agent.errors import InputError
from edge_agent.ladder import Ladder
from edge_agent.records.run import Attempt, AttemptKind, ExecStatus, Execution, Result
from edge_agent.toolbox.ratelimit import RateLimiter
from edge_agent.toolbox.registry import Registry, Tool, validate_args
from edge_agent.toolbox.sentences import said
from edge_agent.toolbox.verify import Rule, Verdict, verify_output

Confirm = Callable[[ToolCall, Tool], bool]

ANSWER_FROM_RESULTS = (
    "The tool results are in the conversation above. Answer the user's question from them "
    "in one or two plain sentences. Do not call a tool and do not repeat the JSON."
)


class _Runner(Protocol):
    """The sandbox interface (``edge_agent.sandbox.base.Sandbox``)."""

    def run(self, tool: Tool, arguments: dict[str, Any]) -> Any: ...


def system_for(
    settings: AgentSettings, specs: Sequence[ToolSpec], *, allow_text: bool
) -> str | None:
    """The system text an agent puts ahead of ``specs``. A prefix cache that
    warms the tool block must render the same text, or no prompt matches it."""
    may_decline = bool(specs) and allow_text and settings.decline_hint
    return system_text(settings.system_prompt, may_decline=may_decline)


def run_verified(  # noqa: PLR0913 - the parts of one execution, keyword step
    call: ToolCall,
    tool: Tool,
    runner: _Runner,
    confirm: Confirm | None,
    limiter: RateLimiter,
    *,
    step: int = 0,
) -> Execution:
    """Run one verified call: the owner's confirmation when the tool needs
    it, the rate limit's record, then the sandbox. The one execution path of
    the model's calls and of calls that arrive made (``edge-agent mcp``)."""
    if tool.policy.requires_confirmation and not (confirm is not None and confirm(call, tool)):
        reason = f"{call.name} needs confirmation and was not confirmed"
        text = said(tool, call, status="unconfirmed")
        return Execution(step, call, "unconfirmed", reason=reason, said=text)
    limiter.record(tool)
    result = runner.run(tool, call.arguments)
    status: ExecStatus = "done" if result.ok else "failed"
    text = said(tool, call, status=status, value=result.value, error=result.error or "")
    return Execution(step, call, status, result, said=text)


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
        ladder: Ladder | None = None,
    ) -> None:
        self.engine = engine
        self.ladder = ladder
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
    def tier_models(self) -> list[str]:
        """The model of each ladder tier, tier 0 first (for the journal)."""
        upper = (
            [t.engine.model_name if t.loaded else t.name for t in self.ladder.tiers]
            if self.ladder
            else []
        )
        return [self.engine.model_name, *upper]

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
            if step == 0 and step_choice == "auto" and _repeats_answered(done[-1], messages):
                done += self._answer_in_text(messages, constrained)
            attempts += done
            calls = _verified(done[-1])
            if not can_run or not calls:
                break
            ran = self._run_calls(calls, step, executions)
            executions += ran
            if not self._needs_another_step(messages, ran):
                break
            messages = [*messages, _assistant(done[-1]), *(_result_message(e) for e in ran)]
        return Result(tuple(attempts), time.perf_counter() - start, executions=tuple(executions))

    def _answer_in_text(self, messages: list[Message], constrained: bool) -> list[Attempt]:
        """The request again, in words: the model proposed a call whose
        result is already in the conversation (a client ran it and sent the
        result back). Small models repeat the call they see; the answer the
        client waits for is what the result says."""
        extra = "\n\n".join(p for p in (self.settings.system_prompt, ANSWER_FROM_RESULTS) if p)
        worded = copy.copy(self)
        worded.settings = self.settings.model_copy(update={"system_prompt": extra})
        again = worded._decide(messages, "none", constrained, 0)
        return [replace(a, kind="repair") for a in again]

    def _needs_another_step(self, messages: Sequence[Message], ran: list[Execution]) -> bool:
        """Another model step only when the answer needs a result the model
        has not seen: a read ran, and the request goes on past what it read
        ("if it is above 25 °C, ..."). An action's result is confirmed by its
        sentence; a question's value is quoted by its sentence. Without this
        rule every actuating request paid for a step that proposed the same
        call again (and the repeat guard stopped it)."""
        if not ran or any(e.status != "done" for e in ran):
            return False
        assert isinstance(self.tools, Registry)
        read = any(self.tools.get(e.call.name).policy.side_effect == "read" for e in ran)
        return read and depends_on_result(_last_user_text(messages))

    def _decide(
        self, messages: list[Message], choice: str, constrained: bool, step: int
    ) -> list[Attempt]:
        """The attempts of one step: tier 0's, and the tiers' above it while
        the one below is unsure or invalid (see :mod:`edge_agent.ladder`). The
        settled tier's attempts come last, so ``attempts[-1]`` is the answer."""
        specs = self._offered(choice, messages)
        grammar = self._grammar(specs, choice) if constrained else None
        allow_text = choice in ("auto", "none")
        decide = _Decision(messages, specs, grammar, allow_text, step)
        tiers = self._tier_attempts(decide, self.engine, 0)
        if self.ladder is None:
            return tiers
        climbed: list[list[Attempt]] = [tiers]
        upper = self._upper(decide, specs, choice)
        for number, tier in enumerate(self.ladder.tiers, start=1):
            settled, p = self.ladder.settles(
                climbed[-1], number - 1, dangerous_call=self._calls_dangerous(climbed[-1][-1])
            )
            climbed[-1][-1] = replace(climbed[-1][-1], p_success=p)
            if settled:
                break
            draft = self._draft(climbed[-1][-1])
            climbed.append(self._tier_attempts(upper, tier.engine, number, draft=draft))
        else:
            _, p = self.ladder.settles(climbed[-1], len(self.ladder.tiers))
            climbed[-1][-1] = replace(climbed[-1][-1], p_success=p)
        if len(climbed) == 1 and self.ladder.shadow():
            return [*self._shadow(upper, tiers[-1]), *tiers]
        return _settled_last(climbed)

    def _upper(self, d: _Decision, specs: list[ToolSpec], choice: str) -> _Decision:
        """What the tiers above tier 0 decode from: the same, except that with
        ``ladder.parallel`` they may make several calls in one answer (the
        1.5B does so well where the 0.5B does not; tier 0 keeps
        ``agent.parallel_calls``)."""
        assert self.ladder is not None
        if d.grammar is None or not self.ladder.parallel or self.settings.parallel_calls:
            return d
        return replace(d, grammar=self._grammar(specs, choice, parallel=True))

    def _shadow(self, d: _Decision, sure: Attempt) -> list[Attempt]:
        """Tier 1's answer to a request tier 0 was sure of, kept beside it
        as a label (see :class:`~edge_agent.ladder.Ladder`), never used."""
        assert self.ladder is not None
        engine = self.ladder.tiers[0].engine
        checked = self._tier_attempts(d, engine, 1, draft=self._draft(sure))
        return [replace(a, kind="shadow") for a in checked]

    def _draft(self, below: Attempt) -> str | None:
        """The verified calls of the tier below, written as the tiers write
        calls: the draft the next tier checks (``ladder.draft``). A text
        answer is no draft: the tier above rarely words it the same way."""
        assert self.ladder is not None
        calls = _verified(below)
        if not self.ladder.draft or not calls:
            return None
        return "\n".join(render_call(call) for call in calls)

    def _tier_attempts(
        self, d: _Decision, engine: Engine, tier: int, *, draft: str | None = None
    ) -> list[Attempt]:
        """One tier's initial attempt and up to ``repair_attempts`` repairs."""
        attempt = self._attempt(
            engine, "initial", d.messages, d.specs, d.grammar, d.allow_text, draft=draft
        )
        attempts = [replace(attempt, step=d.step, tier=tier)]
        messages = d.messages
        for _ in range(self.settings.repair_attempts):
            last = attempts[-1]
            if last.valid or self._out_of_bounds_on_dangerous(last):
                break
            messages = [*messages, _assistant(last), repair_message(last.problem)]
            attempt = self._attempt(engine, "repair", messages, d.specs, d.grammar, d.allow_text)
            attempts.append(replace(attempt, step=d.step, tier=tier))
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
            seen.add(self._call_key(call))
            tool = self.tools.get(call.name)
            done = run_verified(call, tool, self.sandbox, self.confirm, self.limiter, step=step)
            ran.append(done)
            if done.status == "unconfirmed":
                break
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

    def _grammar(
        self, specs: list[ToolSpec], choice: str, *, parallel: bool | None = None
    ) -> Grammar | None:
        if not specs:
            return None
        options = GrammarOptions(
            parallel=self.settings.parallel_calls if parallel is None else parallel,
            allow_text=choice == "auto",
            max_calls=self.settings.max_calls,
            verifier_bounds=frozenset(s.name for s in specs if self._dangerous(s.name)),
        )
        return build_grammar(specs, options)

    def _dangerous(self, name: str) -> bool:
        """A tool whose wrong call is the worst outcome (locks, valves, heaters)."""
        if not isinstance(self.tools, Registry) or name not in self.tools:
            return False
        return self.tools.get(name).policy.side_effect == "dangerous"

    def _calls_dangerous(self, attempt: Attempt) -> bool:
        """The answer proposes a call to a dangerous tool, valid or not."""
        return any(self._dangerous(call.name) for call in attempt.parsed.calls)

    def _out_of_bounds_on_dangerous(self, attempt: Attempt) -> bool:
        """A dangerous tool's arguments failed their schema: with the grammar
        on, only a bound it leaves to the verifier can fail (see
        ``GrammarOptions.verifier_bounds``). Not repaired: asked to fix "500 %",
        a small model picks some valid number, and a valve opened to a value
        nobody asked for is worse than a refusal that says why."""
        failed = [v for v in attempt.verdicts if not v.ok]
        return bool(failed) and all(
            v.stage == "schema" and v.call is not None and self._dangerous(v.call.name)
            for v in failed
        )

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

    def _attempt(  # noqa: PLR0913 - one generation's inputs
        self,
        engine: Engine,
        kind: AttemptKind,
        messages: list[Message],
        specs: list[ToolSpec],
        grammar: Grammar | None,
        allow_text: bool,
        *,
        draft: str | None = None,
    ) -> Attempt:
        prompt = build_prompt(
            engine.chat_template, messages, specs, system=self.system(specs, allow_text)
        )
        generation = engine.generate(
            prompt, grammar=grammar, max_tokens=self.max_tokens, draft=draft
        )
        # With no tool offered, whatever the model writes is its answer, even
        # JSON (an echo of a tool result): there is no call to recover.
        parsed = (
            parse_output(generation.text) if specs else ParsedOutput(text=generation.text.strip())
        )
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


@dataclass(frozen=True)
class _Decision:
    """What every tier of one step decodes from."""

    messages: list[Message]
    specs: list[ToolSpec]
    grammar: Grammar | None
    allow_text: bool
    step: int


def _settled_last(climbed: list[list[Attempt]]) -> list[Attempt]:
    """Every tier's attempts, the answer's tier last: the top tier's, unless
    it gave no verified answer and a tier below did."""
    chosen = len(climbed) - 1
    if not climbed[chosen][-1].valid:
        valid = [i for i, tier in enumerate(climbed) if tier[-1].valid]
        chosen = valid[-1] if valid else chosen
    order = [*(i for i in range(len(climbed)) if i != chosen), chosen]
    return [a for i in order for a in climbed[i]]


# Words that make a request go on past a value it asks to read: "if it is
# above 25, open the window", "check the door and then lock it".
_FOLLOW_UP = re.compile(
    r"\b(if|when|whenever|unless|then|otherwise|depending|based on|in case)\b"
    r"|如果|要是|的话|假如|然后|再|否则|根据",
    re.IGNORECASE,
)


def depends_on_result(text: str) -> bool:
    """Whether a request asks for something that depends on what a read returns."""
    return bool(_FOLLOW_UP.search(text))


def _last_user_text(messages: Sequence[Message]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def _verified(attempt: Attempt) -> list[ToolCall]:
    if not attempt.valid:
        return []
    return [v.call for v in attempt.verdicts if v.ok and v.call is not None]


def _repeats_answered(attempt: Attempt, messages: Sequence[Message]) -> bool:
    """Is every call of ``attempt`` one the conversation already holds,
    with a tool result after it?"""
    calls = _verified(attempt)
    if not calls:
        return False
    answered = _answered(messages)  # parsed once, not once per call
    return all(c.key() in answered for c in calls)


def _answered(messages: Sequence[Message]) -> set[str]:
    """The calls earlier assistant turns made that a tool message answered."""
    answered: set[str] = set()
    for i, message in enumerate(messages[:-1]):
        if message.get("role") != "assistant" or messages[i + 1].get("role") != "tool":
            continue
        parsed = parse_output(str(message.get("content") or ""))
        answered.update(c.key() for c in parsed.calls)
    return answered


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
