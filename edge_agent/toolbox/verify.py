"""The verifier: nothing runs until a call passes every check, in order.

1. parse      the output is a call at all (``calls.parse_output``)
2. tool       the named tool exists and was offered
3. schema     jsonschema, Draft 2020-12, against the normalised schema,
              ``format`` included (date, email, ipv4/ipv6, uuid, regex always;
              date-time, time, uri, hostname, duration only where jsonschema's
              optional checker packages are installed; unknown formats such
              as BFCL's ``float`` pass)
4. model      the tool's pydantic model (types, ranges from ``Field``)
5. rules      the tool's own rules (allowlists, rate limits, confirmation)

A failure is a :class:`Verdict`, not an exception: a model mistake is data.
Its ``message`` is written for the model to act on in the repair turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import ValidationError

from edge_agent.decoding.calls import ParsedOutput, ToolCall
from edge_agent.decoding.schema import ToolSpec
from edge_agent.toolbox.registry import Registry, Tool, validate_args

Stage = Literal["ok", "parse", "tool", "schema", "model", "rules", "no_call"]
Rule = Callable[[Tool, dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    stage: Stage
    message: str = ""
    call: ToolCall | None = None

    @classmethod
    def passed(cls, call: ToolCall) -> Verdict:
        return cls(True, "ok", "", call)


def verify_output(
    parsed: ParsedOutput, tools: Registry | Sequence[ToolSpec], rules: Iterable[Rule] = ()
) -> list[Verdict]:
    """One verdict per call, plus one for each fragment that failed to parse."""
    verdicts = [Verdict(False, "parse", err) for err in parsed.errors]
    rules = tuple(rules)
    verdicts += [verify_call(call, tools, rules) for call in parsed.calls]
    if not verdicts:
        verdicts.append(Verdict(False, "no_call", "no tool call was made"))
    return verdicts


def verify_call(
    call: ToolCall, tools: Registry | Sequence[ToolSpec], rules: Iterable[Rule] = ()
) -> Verdict:
    registry = tools if isinstance(tools, Registry) else None
    spec = _find_spec(call.name, tools)
    if spec is None:
        names = ", ".join(_names(tools))
        return Verdict(False, "tool", f"unknown tool {call.name!r}; available: {names}", call)
    problem = schema_problem(spec, call.arguments)
    if problem:
        return Verdict(False, "schema", f"{call.name}: {problem}", call)
    if registry is None:
        return Verdict.passed(call)
    tool = registry.get(call.name)
    try:
        validate_args(tool, call.arguments)
    except ValidationError as exc:
        return Verdict(False, "model", f"{call.name}: {_pydantic_message(exc)}", call)
    for rule in rules:
        if (complaint := rule(tool, call.arguments)) is not None:
            return Verdict(False, "rules", f"{call.name}: {complaint}", call)
    return Verdict.passed(call)


def schema_problem(spec: ToolSpec, arguments: dict[str, Any]) -> str:
    """The most relevant jsonschema error, phrased with its JSON path, or ''."""
    import jsonschema

    err = jsonschema.exceptions.best_match(_validator(spec).iter_errors(arguments))
    if err is None:
        return ""
    where = "/".join(str(p) for p in err.absolute_path)
    return f"argument '{where}': {err.message}" if where else err.message


def _validator(spec: ToolSpec) -> Any:
    return _validator_for(spec.schema_hash, spec)


@lru_cache(maxsize=256)
def _validator_for(key: str, spec: ToolSpec) -> Any:
    del key  # ToolSpec equality ignores parameters; the hash covers them
    import jsonschema

    validator = jsonschema.Draft202012Validator
    return validator(spec.parameters, format_checker=validator.FORMAT_CHECKER)


def _find_spec(name: str, tools: Registry | Sequence[ToolSpec]) -> ToolSpec | None:
    if isinstance(tools, Registry):
        return tools.get(name).spec if name in tools else None
    return next((t for t in tools if t.name == name), None)


def _names(tools: Registry | Sequence[ToolSpec]) -> list[str]:
    return [t.name for t in tools]


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"argument '{where}': {err['msg']}" if where else err["msg"])
    return "; ".join(parts)
