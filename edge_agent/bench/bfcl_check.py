"""A pure re-implementation of the official BFCL AST checker.

Scores decoded model calls against BFCL ground truth the way upstream
``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` (and the relevance logic of
``eval_runner.py``) does at commit 6ea57973, *quirks included*, so that our
numbers can be compared with the public leaderboard. Fixing a quirk here would
silently change the benchmark; don't.

Shapes (all plain JSON data, no model and no I/O here):

* a decoded call is ``{func_name: {param: value}}`` (:data:`Call`);
* a ground-truth call is ``{func_name: {param: [alternative, ...]}}``, where the
  alternative ``""`` means "this parameter may be omitted";
* a function definition is BFCL's dialect of JSON Schema (types ``dict``,
  ``float``, ``tuple``, ``any``, ``string``, ``integer``, ``boolean``, ``array``).

Malformed benchmark data (an unknown type, a ground-truth function that is not
among the definitions) raises :class:`BenchError`, where upstream would crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from edge_agent.errors import BenchError

Call = dict[str, dict[str, Any]]
"""One decoded call: ``{func_name: {param: value}}``."""

# BFCL type -> the exact Python type upstream requires. "any" maps to str
# because upstream says so: only a string passes an "any" param (bar variables).
_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
_SEQUENCE_TYPES = frozenset({"array", "tuple"})
_IGNORED_CHARS = re.compile(r"[ ,./\-_*^]")
_DATA_HINT = "the benchmark item is malformed; check the BFCL data files"


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one benchmark item; ``reason`` is "" when correct."""

    correct: bool
    reason: str


PASS = CheckResult(True, "")


@dataclass(frozen=True)
class _Expected:
    """What the schema asks of one parameter, resolved to Python types."""

    name: str  # the BFCL type name, for messages
    py: type
    item: type | None = None  # element type of an array/tuple, else None
    item_name: str = ""


def _fail(reason: str) -> CheckResult:
    return CheckResult(False, reason)


def _data_error(message: str) -> BenchError:
    return BenchError(message, hint=_DATA_HINT)


# --------------------------------------------------------------------------- dispatch


def is_relevance_category(category: str) -> bool:
    """Whether items of ``category`` are scored on *whether* a call was made.

    Upstream matches by substring, so this covers irrelevance, live_irrelevance
    and live_relevance; those categories have no ground truth.
    """
    return "relevance" in category


def is_call_list(value: object) -> TypeGuard[list[Call]]:
    """Whether ``value`` has upstream's decoded shape ``[{name: {args}}, ...]``.

    Upstream checks this before scoring because a decoder may "succeed" on
    prose; each item must be a dict with exactly one key whose value is a dict.
    ``[]`` counts as well-formed (and then fails on the call count).
    """
    return isinstance(value, list) and all(
        type(item) is dict and len(item) == 1 and type(next(iter(item.values()))) is dict
        for item in value
    )


def has_call(model_calls: object) -> bool:
    """Whether decoded output contains a function call, as the relevance runner sees it.

    A decode failure (``None``), an empty list and anything not shaped like a
    call list all count as "no call" (upstream's ``is_empty_output``; its
    ``[{}]`` case is already excluded by :func:`is_call_list`).
    """
    return is_call_list(model_calls) and len(model_calls) > 0


def relevance_check(category: str, model_calls: list[Call] | None) -> CheckResult:
    """Score a relevance item: irrelevance passes iff no call, relevance iff some call.

    Argument values are never looked at: live_relevance only asks whether the
    model dared to call something.
    """
    called = has_call(model_calls)
    if "irrelevance" in category:
        return _fail("made a function call although none fits") if called else PASS
    return PASS if called else _fail("made no function call")


def check_item(
    category: str,
    functions: list[dict[str, Any]],
    model_calls: list[Call] | None,
    ground_truth: list[dict[str, Any]] | None,
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Score one BFCL item exactly as the official AST evaluation does.

    ``model_calls=None`` means the model output could not be decoded, which
    fails every category except the irrelevance ones. The checker is chosen by
    substring of the category name, as upstream does: "parallel" first (so
    parallel_multiple is scored as parallel), then "multiple", else simple.
    ``underscore_names`` expects "." in function names to arrive as "_", for
    runs whose tool schemas had to rename them (OpenAI-style name rules).
    """
    if is_relevance_category(category):
        return relevance_check(category, model_calls)
    if model_calls is None:
        return _fail("model output could not be decoded")
    if not is_call_list(model_calls):
        return _fail("model output is not a list of {name: {param: value}} calls")
    if not ground_truth:
        raise _data_error(f"no ground truth given for a {category} item")
    if "parallel" in category:
        return parallel_checker(
            functions, model_calls, ground_truth, underscore_names=underscore_names
        )
    if "multiple" in category:
        return multiple_checker(
            functions, model_calls, ground_truth, underscore_names=underscore_names
        )
    return simple_checker(functions, model_calls, ground_truth, underscore_names=underscore_names)


# --------------------------------------------------------------------------- call counts


def _count_error(expected: int, got: int) -> CheckResult:
    return _fail(f"wrong number of calls: expected {expected}, got {got}")


def simple_checker(
    functions: list[dict[str, Any]],
    model_calls: list[Call],
    ground_truth: list[dict[str, Any]],
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Simple categories: exactly one call, checked against the *first* definition.

    Upstream does not look the definition up by name here; simple items have
    exactly one function.
    """
    if len(model_calls) != 1:
        return _count_error(1, len(model_calls))
    if not functions:
        raise _data_error("a simple item has no function definitions")
    return simple_function_checker(
        functions[0], model_calls[0], ground_truth[0], underscore_names=underscore_names
    )


def multiple_checker(
    functions: list[dict[str, Any]],
    model_calls: list[Call],
    ground_truth: list[dict[str, Any]],
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Multiple categories: one call, checked against the ground truth's function.

    The definition is the one the ground truth names, so a call to any other
    of the offered functions fails on the name check.
    """
    if len(model_calls) != len(ground_truth):
        return _count_error(len(ground_truth), len(model_calls))
    doc = find_function(functions, ground_truth_name(ground_truth[0]))
    return simple_function_checker(
        doc, model_calls[0], ground_truth[0], underscore_names=underscore_names
    )


def parallel_checker(
    functions: list[dict[str, Any]],
    model_calls: list[Call],
    ground_truth: list[dict[str, Any]],
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Parallel categories: same number of calls, matched in any order.

    Upstream matches *greedily*: each ground-truth call, in order, takes the
    first not-yet-matched model call that passes against it. Greedy (not an
    optimal assignment) is kept on purpose, since that is what is scored.
    """
    if len(model_calls) != len(ground_truth):
        return _count_error(len(ground_truth), len(model_calls))
    remaining = dict(enumerate(model_calls))
    for position, gt_call in enumerate(ground_truth):
        name = ground_truth_name(gt_call)
        doc = find_function(functions, name)
        index, reason = _first_match(doc, remaining, gt_call, underscore_names)
        if index is None:
            return _fail(f"no call matches expected call #{position} ({name}): {reason}")
        del remaining[index]
    return PASS


def _first_match(
    doc: dict[str, Any], candidates: dict[int, Call], gt_call: dict[str, Any], underscore: bool
) -> tuple[int | None, str]:
    """Index of the first candidate call that passes against ``gt_call``, else the last reason."""
    reason = "no model call left"
    for index, call in candidates.items():
        result = simple_function_checker(doc, call, gt_call, underscore_names=underscore)
        if result.correct:
            return index, ""
        reason = result.reason
    return None, reason


# --------------------------------------------------------------------------- one call


def expected_name(name: str, underscore_names: bool = False) -> str:
    """The function name a model is expected to emit.

    With ``underscore_names`` every "." becomes "_" (upstream's
    ``convert_func_name``), because some APIs forbid "." in tool names.
    """
    return name.replace(".", "_") if underscore_names else name


def find_function(functions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The definition called ``name`` (the first, if several share it)."""
    for doc in functions:
        if doc.get("name") == name:
            return doc
    raise _data_error(f"ground-truth function '{name}' is not among the item's functions")


def ground_truth_name(gt_call: dict[str, Any]) -> str:
    """The function name of a ground-truth call ``{name: {param: [alternatives]}}``."""
    if len(gt_call) != 1:
        raise _data_error(f"a ground-truth call must have exactly one name, got {list(gt_call)}")
    return next(iter(gt_call))


def _ground_truth_args(gt_call: dict[str, Any]) -> dict[str, Any]:
    args = gt_call[ground_truth_name(gt_call)]
    if not isinstance(args, dict):
        raise _data_error("ground-truth arguments must be a {param: [alternatives]} object")
    return args


def _alternatives(where: str, value: Any) -> list[Any]:
    """Ground-truth alternatives must be a list; anything else is bad data."""
    if not isinstance(value, list):
        raise _data_error(f"ground truth for '{where}' is not a list of alternatives")
    return value


def simple_function_checker(
    func_doc: dict[str, Any],
    model_call: Call,
    gt_call: dict[str, Any],
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Check one decoded call against one ground-truth call, in upstream's order.

    Name, then required params present, then each emitted param (known to both
    the schema and the ground truth, right type, accepted value), then every
    ground-truth param the model left out must carry the ``""`` omit marker.
    A required param is required even if its ground truth lists ``""``.
    """
    name = expected_name(str(func_doc.get("name")), underscore_names)
    if name not in model_call:
        got = ", ".join(model_call) or "nothing"
        return _fail(f"wrong function name: expected {name}, got {got}")
    args = model_call[name]
    expected_args = _ground_truth_args(gt_call)
    parameters = func_doc.get("parameters", {})
    missing = next((p for p in parameters.get("required", []) if p not in args), None)
    if missing is not None:
        return _fail(f"missing required parameter '{missing}'")
    properties = parameters.get("properties", {})
    for param, value in args.items():
        result = _check_arg(param, value, properties, expected_args)
        if not result.correct:
            return result
    return _check_omitted(args, expected_args)


def _check_arg(
    param: str, value: Any, properties: dict[str, Any], expected_args: dict[str, Any]
) -> CheckResult:
    """A param must be in the schema *and* in the ground truth to be emitted at all.

    So an optional schema param that the ground truth does not mention can
    never be given, even with its default value.
    """
    if param not in properties or param not in expected_args:
        return _fail(f"unexpected parameter '{param}'")
    return check_param(param, value, properties[param], _alternatives(param, expected_args[param]))


def _check_omitted(args: dict[str, Any], expected_args: dict[str, Any]) -> CheckResult:
    """Every ground-truth param the model left out must list ``""`` (may be omitted)."""
    for param, alternatives in expected_args.items():
        if param not in args and "" not in _alternatives(param, alternatives):
            return _fail(
                f"missing parameter '{param}' (the ground truth does not allow omitting it)"
            )
    return PASS


# --------------------------------------------------------------------------- one parameter


def _py_type(param: str, type_name: object) -> type:
    if not isinstance(type_name, str) or type_name not in _PY_TYPES:
        raise _data_error(f"parameter '{param}' has an unsupported BFCL type {type_name!r}")
    return _PY_TYPES[type_name]


def _expected_type(param: str, prop: dict[str, Any]) -> _Expected:
    """Resolve a schema property to the Python types the checker demands."""
    name = prop.get("type")
    py = _py_type(param, name)
    if name not in _SEQUENCE_TYPES:
        return _Expected(str(name), py)
    items = prop.get("items")
    item_name = items.get("type") if isinstance(items, dict) else None
    return _Expected(str(name), py, _py_type(f"{param}[]", item_name), str(item_name))


def _coerce(value: Any, type_name: str) -> Any:
    """Upstream's only two conversions, both before the type check.

    A Python tuple becomes a list for a ``tuple`` param (JSON has no tuples, so
    the ground truth holds lists), and an int becomes a float for a top-level
    ``float`` param. ``type(value) is int`` keeps bools out: ``True`` is not
    promoted to ``1.0``. Array elements are never promoted.
    """
    if type_name == "tuple" and type(value) is tuple:
        return list(value)
    if type_name == "float" and type(value) is int:
        return float(value)
    return value


def check_param(
    param: str, value: Any, prop: dict[str, Any], alternatives: list[Any]
) -> CheckResult:
    """Type-check then value-check one emitted argument against its alternatives."""
    expected = _expected_type(param, prop)
    value = _coerce(value, expected.name)
    verdict, is_variable = type_check(param, value, alternatives, expected)
    if not verdict.correct:
        return verdict
    if is_variable:
        return membership_checker(param, value, alternatives)
    return _value_check(param, value, alternatives, expected)


def answer_type(alternatives: list[Any]) -> type | None:
    """The type of the first alternative that is not the ``""`` omit marker.

    When it differs from the schema's type, upstream treats the ground truth as
    a "variable" (e.g. ``None`` for a string param, ``"5"`` for an integer
    param) and lets a value of the ground truth's type through.
    """
    for alternative in alternatives:
        if alternative != "":
            return type(alternative)
    return None


def type_check(
    param: str, value: Any, alternatives: list[Any], expected: _Expected
) -> tuple[CheckResult, bool]:
    """Upstream's exact type check; also says whether the value is a "variable".

    Types are compared with ``is``, never ``isinstance``: that is what upstream
    does, so ``True`` is not an integer (bool subclasses int in Python) and
    ``10.0`` is not an integer. A value of the ground truth's own type passes
    too (the "variable" escape hatch) and is then compared by plain membership,
    which is how ``null`` passes where the ground truth lists ``None``.
    """
    gt_type = answer_type(alternatives)
    is_variable = gt_type is not None and gt_type is not expected.py
    if type(value) is expected.py:
        values = cast(list[Any], value)  # expected.item is only set for list types
        if expected.item is None or _items_match(values, alternatives, expected.item):
            return PASS, is_variable
        wanted = f"{expected.name} of {expected.item_name}"
        return _fail(f"element type mismatch for '{param}': expected {wanted}"), False
    if gt_type is not None and type(value) is gt_type:
        return PASS, True
    got = type(value).__name__
    return _fail(f"type mismatch for '{param}': expected {expected.name}, got {got}"), False


def _items_match(values: list[Any], alternatives: list[Any], item_type: type) -> bool:
    """Upstream's one-level element type check for array/tuple values.

    Elements get no int->float promotion, so ``[5, 3]`` fails an
    ``array<float>`` while ``[5.0, 3.0]`` passes; but elements of the type the
    ground-truth list itself uses pass (the variable rule, one level down).
    Quirk kept: any alternative that is not a list (typically the ``""`` omit
    marker) makes upstream skip the element check entirely.
    """
    for alternative in alternatives:
        if type(alternative) is not list:
            return True
        gt_type = answer_type(alternative)
        if all(
            type(v) is item_type or (gt_type is not None and type(v) is gt_type) for v in values
        ):
            return True
    return False


def _value_check(
    param: str, value: Any, alternatives: list[Any], expected: _Expected
) -> CheckResult:
    """Pick the value comparison for a non-variable value by its schema type."""
    if expected.py is dict:
        return dict_checker(param, value, alternatives)
    if expected.py is list and expected.item is dict:
        return list_dict_checker(param, value, alternatives)
    if expected.py is str:
        return string_checker(param, value, alternatives)
    if expected.py is list:
        return list_checker(param, value, alternatives)
    return membership_checker(param, value, alternatives)


# --------------------------------------------------------------------------- values


def standardize_string(text: str) -> str:
    """Normalise a string the way upstream does before comparing it.

    Removes spaces and ``,./-_*^``, lowercases, and turns ``'`` into ``"``, so
    "New York, NY" equals "newyorkny" and "April 1, 2024" equals "April 1 2024".
    Every other character (``:``, ``?``, ``!``, brackets ...) still matters.
    """
    return _IGNORED_CHARS.sub("", text).lower().replace("'", '"')


def _standardized(value: Any) -> Any:
    """Strings standardised, everything else unchanged (compared with ``==``)."""
    return standardize_string(value) if type(value) is str else value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def membership_checker(param: str, value: Any, alternatives: list[Any]) -> CheckResult:
    """Plain ``value in alternatives``: numbers, bools, ``None`` and variables.

    Python ``==`` applies, so ``5.0`` matches ``5``; no string normalisation.
    """
    if value in alternatives:
        return PASS
    return _fail(f"wrong value for '{param}': {_show(value)} not in {_show(alternatives)}")


def string_checker(param: str, value: str, alternatives: list[Any]) -> CheckResult:
    """A string passes if its standardised form equals a standardised string alternative."""
    accepted = {standardize_string(a) for a in alternatives if type(a) is str}
    if standardize_string(value) in accepted:
        return PASS
    return _fail(f"wrong value for '{param}': {_show(value)} not in {_show(alternatives)}")


def list_checker(param: str, value: list[Any], alternatives: list[Any]) -> CheckResult:
    """A list must equal one alternative exactly: same order, same length.

    Only top-level string elements are standardised. Upstream iterates each
    alternative element by element, so a ``""`` alternative acts as ``[]``
    (an empty list passes an optional list param); kept.
    """
    got = [_standardized(v) for v in value]
    for alternative in alternatives:
        if isinstance(alternative, list | str) and got == [_standardized(a) for a in alternative]:
            return PASS
    return _fail(f"wrong value for '{param}': {_show(value)} not in {_show(alternatives)}")


def dict_checker(param: str, value: dict[str, Any], alternatives: list[Any]) -> CheckResult:
    """A dict passes if it matches any non-``""`` alternative (see :func:`_dict_mismatch`)."""
    reason = f"no ground-truth dict to compare '{param}' with"
    for alternative in alternatives:
        if alternative == "":
            continue
        mismatch = _dict_mismatch(param, value, alternative)
        if mismatch is None:
            return PASS
        reason = mismatch
    return _fail(reason)


def _dict_mismatch(param: str, value: Any, alternative: Any) -> str | None:
    """Why ``value`` does not match one ground-truth dict ``{key: [alternatives]}``, or None.

    Every model key must exist in the alternative with an accepted
    (standardised if str) value; every key the model left out must list ``""``.
    Nested dicts are compared with plain ``==``: upstream does not recurse.
    """
    if not isinstance(value, dict) or not isinstance(alternative, dict):
        return f"'{param}' does not match the ground-truth dict"
    for key, item in value.items():
        if key not in alternative:
            return f"unexpected key '{key}' in '{param}'"
        accepted = [_standardized(a) for a in _alternatives(f"{param}.{key}", alternative[key])]
        if _standardized(item) not in accepted:
            return f"wrong value for '{param}.{key}': {_show(item)} not in {_show(accepted)}"
    for key, accepted in alternative.items():
        if key not in value and "" not in _alternatives(f"{param}.{key}", accepted):
            return f"missing key '{key}' in '{param}'"
    return None


def list_dict_checker(param: str, value: list[Any], alternatives: list[Any]) -> CheckResult:
    """A list of dicts matches an alternative of the same length element by element.

    As in :func:`list_checker`, a ``""`` alternative has length 0 upstream, so
    an empty list passes where the ground truth allows omitting the param.
    """
    reason = f"wrong number of dicts in '{param}'"
    for alternative in alternatives:
        if not isinstance(alternative, list | str) or len(alternative) != len(value):
            continue
        pairs = zip(value, alternative, strict=True)
        mismatch = next((m for v, a in pairs if (m := _dict_mismatch(param, v, a))), None)
        if mismatch is None:
            return PASS
        reason = mismatch
    return _fail(reason)
