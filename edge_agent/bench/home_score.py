"""Exact-call scoring for the held-out home requests.

The data is ``benchmarks/data/home_requests.json``; each item lists the calls
that must be made (``expected``, empty when no tool applies). A request is
right when the calls made are exactly the expected ones: the same multiset of
calls, order ignored, each actual call matched to a different expected call.
A call is ``{"name": str, "arguments": {param: value}}`` on both sides.

How one expected argument value matches the value the model gave. The rules
follow BFCL's possible-answer convention (a list of alternatives, ``""`` for
"may be omitted") but are deliberately simpler than its checker:

* a **list**: any one of its entries matches. The entry ``""`` means the
  parameter may be left out. (None of the tools takes an array; to expect a
  list value itself, wrap it in a list of alternatives.)
* ``{"range": [lo, hi]}``: any number ``lo <= v <= hi``. For unit conversions
  done in the model's head (70 °F is 21.1 °C), where a fair answer may be
  rounded to 21 or carried to 21.111.
* a **number**: equal as numbers, so ``21 == 21.0``; a bool is never a number.
* a **string**: equal after stripping and dropping all whitespace, case kept
  (``"2 * 3" == "2*3"``, but ``"Boiler" != "boiler"``). Whitespace inside an
  expression is formatting, not a different call; case can change meaning
  (time zone names, the units ``"C"`` and ``"c"``).
* a **bool**: the same bool.

An argument the model gave that the expected call does not list makes the
call wrong, as in BFCL: the expected call must list every parameter a right
answer may set, with ``""`` among the alternatives for optional ones.

Pure functions over plain JSON data: no model, no I/O. Malformed expected
data (a value spec that is none of the above) raises :class:`BenchError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import BenchError

Call = Mapping[str, Any]
"""One call: ``{"name": str, "arguments": {param: value}}``."""

OMITTED = ""
"""Among a parameter's alternatives: the parameter may be left out."""

_DATA_HINT = "fix the expected calls in benchmarks/data/home_requests.json"


@dataclass(frozen=True)
class Score:
    """The verdict on one request; ``reason`` is "" when correct."""

    correct: bool
    reason: str


def score(expected: Sequence[Call], actual: Sequence[Call]) -> Score:
    """Whether ``actual`` is the same multiset of calls as ``expected``."""
    if len(actual) != len(expected):
        return Score(False, f"{len(actual)} call(s) made, {len(expected)} expected")
    if _match_all(list(expected), list(actual)):
        return Score(True, "")
    if len(expected) == 1:
        return Score(False, call_mismatch(expected[0], actual[0]))
    return Score(False, "the calls do not match the expected calls one to one")


def _match_all(expected: list[Call], actual: list[Call]) -> bool:
    """A one-to-one matching exists (backtracking: greedy can miss one when
    alternatives overlap; a request has a handful of calls at most)."""
    if not expected:
        return True
    first, rest = expected[0], expected[1:]
    for i, call in enumerate(actual):
        if not call_mismatch(first, call) and _match_all(rest, actual[:i] + actual[i + 1 :]):
            return True
    return False


def call_mismatch(expected: Call, actual: Call) -> str:
    """Why ``actual`` is not ``expected`` ("" when it is)."""
    name = _name(expected)
    if actual.get("name") != name:
        return f"called {actual.get('name')!r}, expected {name!r}"
    want, got = _arguments(expected), actual.get("arguments") or {}
    for param in got:
        if param not in want:
            return f"{name}: unexpected argument {param!r}"
    for param, spec in want.items():
        if param not in got:
            if not _may_omit(spec):
                return f"{name}: missing argument {param!r}"
        elif not value_matches(spec, got[param]):
            return f"{name}: {param}={got[param]!r}, expected {spec!r}"
    return ""


def value_matches(spec: Any, value: Any) -> bool:
    """Whether the model's ``value`` is one the expected ``spec`` allows."""
    if isinstance(spec, list):
        return any(value_matches(alt, value) for alt in spec if alt != OMITTED)
    if isinstance(spec, dict):
        return _in_range(spec, value)
    if isinstance(spec, bool) or isinstance(value, bool):
        return type(spec) is type(value) and spec == value
    if isinstance(spec, int | float):
        return isinstance(value, int | float) and spec == value
    if isinstance(spec, str):
        return isinstance(value, str) and _squeezed(spec) == _squeezed(value)
    raise BenchError(f"unsupported expected value {spec!r}", hint=_DATA_HINT)


def _in_range(spec: Mapping[str, Any], value: Any) -> bool:
    bounds = spec.get("range")
    if set(spec) != {"range"} or not isinstance(bounds, list) or len(bounds) != 2:
        raise BenchError(f"a dict value must be {{'range': [lo, hi]}}: {spec!r}", hint=_DATA_HINT)
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return bool(lo <= value <= hi)


def _may_omit(spec: Any) -> bool:
    return isinstance(spec, list) and OMITTED in spec


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _name(call: Call) -> str:
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise BenchError(f"an expected call has no name: {call!r}", hint=_DATA_HINT)
    return name


def _arguments(call: Call) -> Mapping[str, Any]:
    args = call.get("arguments", {})
    if not isinstance(args, Mapping):
        raise BenchError(f"expected arguments must be an object: {call!r}", hint=_DATA_HINT)
    return args
