"""The BFCL AST checker, rule by rule (see the official checker's behaviour).

Each parametrized case is named after the rule it pins down. Where a case
looks surprising, it is because upstream behaves that way and our scores must
stay comparable with the public leaderboard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from edge_agent.bench.bfcl_check import (
    Call,
    CheckResult,
    check_item,
    expected_name,
    has_call,
    is_call_list,
    is_relevance_category,
    standardize_string,
)
from edge_agent.bench.bfcl_data import BfclItem, load_items
from edge_agent.errors import BenchError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "bfcl"

INT = {"type": "integer"}
FLOAT = {"type": "float"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
ANY = {"type": "any"}
DICT = {"type": "dict"}


def array(item: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": item}}


def tuple_of(item: str) -> dict[str, Any]:
    return {"type": "tuple", "items": {"type": item}}


def func(name: str, props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A BFCL function definition with the given properties."""
    parameters = {"type": "dict", "properties": props, "required": list(required)}
    return {"name": name, "description": "test", "parameters": parameters}


def simple(
    props: dict[str, Any], gt: dict[str, Any], args: dict[str, Any], required: tuple[str, ...] = ()
) -> CheckResult:
    """Check one call to ``f`` in the simple category."""
    return check_item("simple_python", [func("f", props, required)], [{"f": args}], [{"f": gt}])


def case(
    rule: str,
    props: dict[str, Any],
    gt: dict[str, Any],
    args: dict[str, Any],
    ok: bool,
    required: tuple[str, ...] = (),
) -> Any:
    return pytest.param(props, required, gt, args, ok, id=rule)


# --------------------------------------------------------------------------- simple rules

TYPE_CASES = [
    case("int-exact", {"n": INT}, {"n": [5]}, {"n": 5}, True),
    case("bool-is-not-int", {"n": INT}, {"n": [1]}, {"n": True}, False),
    case("float-10.0-is-not-int", {"n": INT}, {"n": [10]}, {"n": 10.0}, False),
    case("str-is-not-int", {"n": INT}, {"n": [5]}, {"n": "5"}, False),
    case("float-exact", {"x": FLOAT}, {"x": [2.5]}, {"x": 2.5}, True),
    case("int-promoted-to-float-top-level", {"x": FLOAT}, {"x": [5.0]}, {"x": 5}, True),
    case("bool-not-promoted-to-float", {"x": FLOAT}, {"x": [1.0]}, {"x": True}, False),
    case("float-gt-int-compares-by-eq", {"x": FLOAT}, {"x": [5]}, {"x": 5.0}, True),
    case("bool-exact", {"b": BOOL}, {"b": [True]}, {"b": True}, True),
    case("int-is-not-bool", {"b": BOOL}, {"b": [True]}, {"b": 1}, False),
    case("str-is-not-bool", {"b": BOOL}, {"b": [True]}, {"b": "true"}, False),
    case("any-accepts-str", {"a": ANY}, {"a": ["x"]}, {"a": "X"}, True),
    case("any-rejects-int", {"a": ANY}, {"a": ["5"]}, {"a": 5}, False),
    case("dict-rejects-str", {"d": DICT}, {"d": [{"k": ["v"]}]}, {"d": "{'k': 'v'}"}, False),
    case("array-rejects-str", {"v": array("string")}, {"v": [["a"]]}, {"v": "a"}, False),
    case(
        "tuple-value-becomes-list",
        {"t": tuple_of("float")},
        {"t": [[1.5, 2.5]]},
        {"t": (1.5, 2.5)},
        True,
    ),
    case(
        "tuple-param-accepts-list",
        {"t": tuple_of("float")},
        {"t": [[1.5, 2.5]]},
        {"t": [1.5, 2.5]},
        True,
    ),
    case(
        "tuple-value-for-array-fails", {"v": array("float")}, {"v": [[1.5]]}, {"v": (1.5,)}, False
    ),
    case(
        "array-float-int-elements-fail",
        {"v": array("float")},
        {"v": [[5.0, 3.0]]},
        {"v": [5, 3]},
        False,
    ),
    case(
        "array-float-float-elements-pass",
        {"v": array("float")},
        {"v": [[5.0, 3.0]]},
        {"v": [5.0, 3.0]},
        True,
    ),
    case(
        "array-string-int-element-fails", {"v": array("string")}, {"v": [["1"]]}, {"v": [1]}, False
    ),
    case(
        "array-int-bool-element-fails",
        {"v": array("integer")},
        {"v": [[1, 0]]},
        {"v": [True, False]},
        False,
    ),
    case(
        "array-elements-gt-type-variable",
        {"v": array("float")},
        {"v": [[5, 3]]},
        {"v": [5, 3]},
        True,
    ),
    case(
        "array-non-list-alt-skips-element-check",
        {"v": array("float")},
        {"v": ["", [5.0, 3.0]]},
        {"v": [5, 3]},
        True,
    ),
    case(
        "array-checks-one-level-deep-only",
        {"m": array("array")},
        {"m": [[[1, 2]]]},
        {"m": [[1.0, 2]]},
        True,
    ),
    case("array-no-alternatives-fails", {"v": array("string")}, {"v": []}, {"v": []}, False),
]

VARIABLE_CASES = [
    case("variable-null-for-string-with-none-gt", {"s": STR}, {"s": ["", None]}, {"s": None}, True),
    case("variable-omitted-with-none-gt", {"s": STR}, {"s": ["", None]}, {}, True),
    case("variable-string-vs-none-gt-fails", {"s": STR}, {"s": ["", None]}, {"s": "none"}, False),
    case(
        "variable-null-for-integer-with-none-gt", {"n": INT}, {"n": ["", None]}, {"n": None}, True
    ),
    case("variable-str-for-integer-exact", {"n": INT}, {"n": ["five"]}, {"n": "five"}, True),
    case("variable-no-string-standardisation", {"n": INT}, {"n": ["five"]}, {"n": "Five"}, False),
    case("variable-int-vs-str-gt-fails", {"n": INT}, {"n": ["5"]}, {"n": 5}, False),
    case("variable-bool-for-string", {"s": STR}, {"s": [True]}, {"s": True}, True),
    case("variable-type-from-first-alt-only", {"s": STR}, {"s": ["abc", None]}, {"s": None}, False),
    case(
        "variable-schema-typed-value-exact-match",
        {"s": STR},
        {"s": [None, "abc"]},
        {"s": "abc"},
        True,
    ),
    case(
        "variable-schema-typed-value-not-standardised",
        {"s": STR},
        {"s": [None, "abc"]},
        {"s": "ABC"},
        False,
    ),
]

STRING_CASES = [
    case("std-city-state", {"s": STR}, {"s": ["newyorkny"]}, {"s": "New York, NY"}, True),
    case("std-case-insensitive", {"s": STR}, {"s": ["paris"]}, {"s": "PARIS"}, True),
    case(
        "std-removes-listed-punctuation",
        {"s": STR},
        {"s": ["abcdefgh"]},
        {"s": "a-b_c*d^e/f.g h"},
        True,
    ),
    case("std-single-to-double-quote", {"s": STR}, {"s": ['say "hi"']}, {"s": "say 'hi'"}, True),
    case("std-colon-still-matters", {"s": STR}, {"s": ["1000"]}, {"s": "10:00"}, False),
    case("std-question-mark-matters", {"s": STR}, {"s": ["why"]}, {"s": "why?"}, False),
    case("std-wrong-value", {"s": STR}, {"s": ["New York"]}, {"s": "Boston"}, False),
    case("std-any-alternative", {"s": STR}, {"s": ["NYC", "New York"]}, {"s": "new york"}, True),
    case("std-empty-string-given", {"s": STR}, {"s": [""]}, {"s": ""}, True),
]

LIST_CASES = [
    case("list-exact", {"v": array("integer")}, {"v": [[1, 2]]}, {"v": [1, 2]}, True),
    case(
        "list-order-matters", {"v": array("string")}, {"v": [["a", "b"]]}, {"v": ["b", "a"]}, False
    ),
    case("list-length-matters", {"v": array("string")}, {"v": [["a", "b"]]}, {"v": ["a"]}, False),
    case(
        "list-elements-standardised",
        {"v": array("string")},
        {"v": [["new york", "LA"]]},
        {"v": ["New-York", "la"]},
        True,
    ),
    case(
        "list-second-alternative", {"v": array("string")}, {"v": [["a"], ["b"]]}, {"v": ["b"]}, True
    ),
    case(
        "list-empty-matches-optional-marker",
        {"v": array("string")},
        {"v": ["", ["a"]]},
        {"v": []},
        True,
    ),
    case(
        "list-numbers-compare-by-eq",
        {"v": array("array")},
        {"v": [[[1, 2]]]},
        {"v": [[1.0, 2.0]]},
        True,
    ),
]

DICT_SCHEMA = {"d": DICT}
DICT_CASES = [
    case(
        "dict-exact-standardised",
        DICT_SCHEMA,
        {"d": [{"a": ["x"], "b": [1]}]},
        {"d": {"a": "X", "b": 1}},
        True,
    ),
    case(
        "dict-unexpected-key", DICT_SCHEMA, {"d": [{"a": ["x"]}]}, {"d": {"a": "x", "c": 2}}, False
    ),
    case("dict-wrong-value", DICT_SCHEMA, {"d": [{"a": ["x"]}]}, {"d": {"a": "y"}}, False),
    case(
        "dict-missing-optional-key",
        DICT_SCHEMA,
        {"d": [{"a": ["x"], "b": ["", 1]}]},
        {"d": {"a": "x"}},
        True,
    ),
    case(
        "dict-missing-required-key",
        DICT_SCHEMA,
        {"d": [{"a": ["x"], "b": [1]}]},
        {"d": {"a": "x"}},
        False,
    ),
    case(
        "dict-second-alternative",
        DICT_SCHEMA,
        {"d": [{"a": ["x"]}, {"a": ["y"]}]},
        {"d": {"a": "y"}},
        True,
    ),
    case("dict-value-type-not-checked", DICT_SCHEMA, {"d": [{"n": [1]}]}, {"d": {"n": 1.0}}, True),
    case(
        "dict-nested-exact",
        DICT_SCHEMA,
        {"d": [{"a": [{"k": "V"}]}]},
        {"d": {"a": {"k": "V"}}},
        True,
    ),
    case(
        "dict-nested-not-standardised",
        DICT_SCHEMA,
        {"d": [{"a": [{"k": "V"}]}]},
        {"d": {"a": {"k": "v"}}},
        False,
    ),
    case("dict-only-optional-marker-cannot-be-given", DICT_SCHEMA, {"d": [""]}, {"d": {}}, False),
    case("dict-only-optional-marker-omitted", DICT_SCHEMA, {"d": [""]}, {}, True),
]

LOD_SCHEMA = {"l": array("dict")}
LOD_GT = {"l": [[{"a": ["x"]}, {"a": ["y"]}]]}
LIST_OF_DICT_CASES = [
    case("lod-exact", LOD_SCHEMA, LOD_GT, {"l": [{"a": "X"}, {"a": "y"}]}, True),
    case("lod-order-matters", LOD_SCHEMA, LOD_GT, {"l": [{"a": "y"}, {"a": "x"}]}, False),
    case("lod-count-matters", LOD_SCHEMA, LOD_GT, {"l": [{"a": "x"}]}, False),
    case("lod-element-must-be-dict", LOD_SCHEMA, LOD_GT, {"l": ["x", "y"]}, False),
    case(
        "lod-empty-matches-optional-marker",
        LOD_SCHEMA,
        {"l": ["", [{"a": ["x"]}]]},
        {"l": []},
        True,
    ),
]

OPTIONAL_CASES = [
    case("optional-omitted", {"n": INT, "u": STR}, {"n": [5], "u": ["", "cm"]}, {"n": 5}, True),
    case(
        "optional-given",
        {"n": INT, "u": STR},
        {"n": [5], "u": ["", "cm"]},
        {"n": 5, "u": "CM"},
        True,
    ),
    case("not-optional-omitted", {"n": INT, "u": STR}, {"n": [5], "u": ["cm"]}, {"n": 5}, False),
    case("required-with-marker-still-required", {"u": STR}, {"u": ["", "cm"]}, {}, False, ("u",)),
    case("required-present", {"u": STR}, {"u": ["", "cm"]}, {"u": "cm"}, True, ("u",)),
    case("missing-required", {"n": INT}, {"n": [5]}, {}, False, ("n",)),
    case("unexpected-not-in-schema", {"n": INT}, {"n": [5]}, {"n": 5, "zzz": 1}, False),
    case(
        "unexpected-in-schema-not-in-gt",
        {"n": INT, "u": STR},
        {"n": [5]},
        {"n": 5, "u": "cm"},
        False,
    ),
    case(
        "gt-param-not-in-schema-omitted", {"n": INT}, {"n": [5], "ghost": ["", 1]}, {"n": 5}, True
    ),
    case(
        "gt-param-not-in-schema-given",
        {"n": INT},
        {"n": [5], "ghost": ["", 1]},
        {"n": 5, "ghost": 1},
        False,
    ),
]


@pytest.mark.parametrize(
    ("props", "required", "gt", "args", "ok"),
    TYPE_CASES
    + VARIABLE_CASES
    + STRING_CASES
    + LIST_CASES
    + DICT_CASES
    + LIST_OF_DICT_CASES
    + OPTIONAL_CASES,
)
def test_simple_rules(
    props: dict[str, Any],
    required: tuple[str, ...],
    gt: dict[str, Any],
    args: dict[str, Any],
    ok: bool,
) -> None:
    result = simple(props, gt, args, required)
    assert result.correct is ok, result.reason
    assert (result.reason == "") is ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("New York, NY", "newyorkny", id="spaces-commas-case"),
        pytest.param("a.b/c-d_e*f^g", "abcdefg", id="listed-punctuation"),
        pytest.param("it's", 'it"s', id="quote"),
        pytest.param("10:00 (UTC)!?", "10:00(utc)!?", id="other-punctuation-kept"),
        pytest.param("", "", id="empty"),
    ],
)
def test_standardize_string(text: str, expected: str) -> None:
    assert standardize_string(text) == expected


@pytest.mark.parametrize(
    ("props", "gt", "args", "needle"),
    [
        pytest.param(
            {"n": FLOAT},
            {"n": [1.0]},
            {"n": "1"},
            "type mismatch for 'n': expected float, got str",
            id="type",
        ),
        pytest.param(
            {"n": INT},
            {"n": [1]},
            {"n": 1.0},
            "type mismatch for 'n': expected integer, got float",
            id="int",
        ),
        pytest.param(
            {"base": INT}, {"base": [1]}, {}, "missing required parameter 'base'", id="required"
        ),
        pytest.param(
            {"n": INT}, {"n": [1]}, {"n": 1, "m": 2}, "unexpected parameter 'm'", id="unexpected"
        ),
        pytest.param({"n": INT}, {"n": [1]}, {"n": 2}, "wrong value for 'n'", id="value"),
        pytest.param(
            {"v": array("float")},
            {"v": [[1.0]]},
            {"v": [1]},
            "element type mismatch for 'v'",
            id="element",
        ),
    ],
)
def test_reasons(
    props: dict[str, Any], gt: dict[str, Any], args: dict[str, Any], needle: str
) -> None:
    result = simple(props, gt, args, tuple(gt) if not args else ())
    assert not result.correct
    assert needle in result.reason


# --------------------------------------------------------------------------- names and counts

F = func("f", {"n": INT}, ("n",))
G = func("g", {"s": STR}, ("s",))
DOTTED = func("math.sqrt", {"n": INT}, ("n",))


@pytest.mark.parametrize(
    ("calls", "underscore", "ok"),
    [
        pytest.param([{"math.sqrt": {"n": 4}}], False, True, id="dotted-name-exact"),
        pytest.param(
            [{"math_sqrt": {"n": 4}}], False, False, id="underscore-name-not-mapped-by-default"
        ),
        pytest.param([{"math_sqrt": {"n": 4}}], True, True, id="underscore-name-mapped-when-asked"),
        pytest.param([{"math.sqrt": {"n": 4}}], True, False, id="dotted-name-fails-when-mapping"),
        pytest.param([{"sqrt": {"n": 4}}], False, False, id="wrong-name"),
    ],
)
def test_function_names(calls: list[Call], underscore: bool, ok: bool) -> None:
    gt = [{"math.sqrt": {"n": [4]}}]
    result = check_item("simple_python", [DOTTED], calls, gt, underscore_names=underscore)
    assert result.correct is ok, result.reason


def test_wrong_name_reason() -> None:
    result = check_item("simple_python", [F], [{"g": {"n": 1}}], [{"f": {"n": [1]}}])
    assert result.reason == "wrong function name: expected f, got g"


def test_expected_name() -> None:
    assert expected_name("a.b.c") == "a.b.c"
    assert expected_name("a.b.c", underscore_names=True) == "a_b_c"


GT_F1 = {"f": {"n": [1]}}
GT_F2 = {"f": {"n": [2]}}
GT_G = {"g": {"s": ["x"]}}


@pytest.mark.parametrize(
    ("category", "functions", "calls", "gt", "ok"),
    [
        pytest.param("simple_python", [F], [{"f": {"n": 1}}], [GT_F1], True, id="simple-one-call"),
        pytest.param("simple_python", [F], [], [GT_F1], False, id="simple-no-call"),
        pytest.param(
            "simple_python", [F], [{"f": {"n": 1}}] * 2, [GT_F1], False, id="simple-two-calls"
        ),
        pytest.param(
            "live_simple", [F], [{"f": {"n": 1}}], [GT_F1], True, id="live-simple-is-simple"
        ),
        pytest.param(
            "multiple", [F, G], [{"g": {"s": "x"}}], [GT_G], True, id="multiple-right-function"
        ),
        pytest.param(
            "multiple", [F, G], [{"f": {"n": 1}}], [GT_G], False, id="multiple-wrong-function"
        ),
        pytest.param(
            "multiple", [F, G], [{"g": {"s": "x"}}] * 2, [GT_G], False, id="multiple-two-calls"
        ),
        pytest.param("multiple", [F, G], [], [GT_G], False, id="multiple-no-call"),
        pytest.param(
            "parallel",
            [F],
            [{"f": {"n": 1}}, {"f": {"n": 2}}],
            [GT_F1, GT_F2],
            True,
            id="parallel-in-order",
        ),
        pytest.param(
            "parallel",
            [F],
            [{"f": {"n": 2}}, {"f": {"n": 1}}],
            [GT_F1, GT_F2],
            True,
            id="parallel-swapped",
        ),
        pytest.param(
            "parallel", [F], [{"f": {"n": 1}}], [GT_F1, GT_F2], False, id="parallel-too-few"
        ),
        pytest.param(
            "parallel", [F], [{"f": {"n": 1}}] * 3, [GT_F1, GT_F2], False, id="parallel-too-many"
        ),
        pytest.param(
            "parallel", [F], [{"f": {"n": 1}}] * 2, [GT_F1, GT_F2], False, id="parallel-duplicate"
        ),
        pytest.param(
            "parallel_multiple",
            [F, G],
            [{"g": {"s": "x"}}, {"f": {"n": 1}}],
            [GT_F1, GT_G],
            True,
            id="parallel-multiple-swapped",
        ),
        pytest.param(
            "parallel_multiple",
            [F, G],
            [{"f": {"n": 1}}, {"f": {"n": 1}}],
            [GT_F1, GT_G],
            False,
            id="parallel-multiple-missing-g",
        ),
        pytest.param(
            "live_parallel",
            [F],
            [{"f": {"n": 2}}, {"f": {"n": 1}}],
            [GT_F1, GT_F2],
            True,
            id="live-parallel",
        ),
        pytest.param(
            "live_multiple",
            [F, G],
            [{"f": {"n": 1}}],
            [GT_G],
            False,
            id="live-multiple-wrong-function",
        ),
    ],
)
def test_call_counts_and_dispatch(
    category: str,
    functions: list[dict[str, Any]],
    calls: list[Call],
    gt: list[dict[str, Any]],
    ok: bool,
) -> None:
    assert check_item(category, functions, calls, gt).correct is ok


def test_parallel_matching_is_greedy_not_optimal() -> None:
    """GT #0 accepts A or B, GT #1 only A: greedy gives A to #0 first when A comes first."""
    s = func("s", {"c": STR}, ("c",))
    gt = [{"s": {"c": ["A", "B"]}}, {"s": {"c": ["A"]}}]
    a_first = [{"s": {"c": "A"}}, {"s": {"c": "B"}}]
    b_first = [{"s": {"c": "B"}}, {"s": {"c": "A"}}]
    assert not check_item("parallel", [s], a_first, gt).correct
    assert check_item("parallel", [s], b_first, gt).correct


# --------------------------------------------------------------------------- relevance, decoding

NOT_CALLS = cast(Any, ["I cannot help with that"])


@pytest.mark.parametrize(
    ("category", "calls", "ok"),
    [
        pytest.param("irrelevance", None, True, id="irrelevance-decode-failure-passes"),
        pytest.param("irrelevance", [], True, id="irrelevance-empty-passes"),
        pytest.param("irrelevance", [{}], True, id="irrelevance-empty-dict-passes"),
        pytest.param("irrelevance", NOT_CALLS, True, id="irrelevance-prose-passes"),
        pytest.param("irrelevance", [{"f": {"n": 1}}], False, id="irrelevance-call-fails"),
        pytest.param("irrelevance", [{"f": {}}], False, id="irrelevance-call-without-args-fails"),
        pytest.param("live_irrelevance", None, True, id="live-irrelevance-decode-failure-passes"),
        pytest.param("live_irrelevance", [], True, id="live-irrelevance-empty-passes"),
        pytest.param(
            "live_irrelevance", [{"f": {"n": 1}}], False, id="live-irrelevance-call-fails"
        ),
        pytest.param("live_relevance", None, False, id="live-relevance-decode-failure-fails"),
        pytest.param("live_relevance", [], False, id="live-relevance-empty-fails"),
        pytest.param(
            "live_relevance", [{"f": {"n": "wrong"}}], True, id="live-relevance-any-call-passes"
        ),
        pytest.param(
            "live_relevance", [{"nope": {}}], True, id="live-relevance-unknown-function-passes"
        ),
    ],
)
def test_relevance(category: str, calls: list[Call] | None, ok: bool) -> None:
    assert check_item(category, [F], calls, None).correct is ok


@pytest.mark.parametrize(
    "category", ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple"]
)
def test_decode_failure_fails(category: str) -> None:
    result = check_item(category, [F], None, [GT_F1])
    assert not result.correct
    assert "decoded" in result.reason


@pytest.mark.parametrize(
    "calls",
    [
        pytest.param([{"f": {"n": 1}, "g": {"s": "x"}}], id="two-names-in-one-call"),
        pytest.param([{"f": 1}], id="args-not-a-dict"),
        pytest.param(["f(n=1)"], id="call-is-a-string"),
        pytest.param({"f": {"n": 1}}, id="not-a-list"),
    ],
)
def test_malformed_output_fails(calls: Any) -> None:
    assert not is_call_list(calls)
    assert not has_call(calls)
    assert not check_item("simple_python", [F], calls, [GT_F1]).correct


def test_is_relevance_category() -> None:
    assert all(map(is_relevance_category, ["irrelevance", "live_irrelevance", "live_relevance"]))
    assert not any(
        map(is_relevance_category, ["simple_python", "multiple", "parallel", "live_simple"])
    )


# --------------------------------------------------------------------------- bad benchmark data


@pytest.mark.parametrize(
    ("category", "functions", "gt"),
    [
        pytest.param(
            "simple_python",
            [func("f", {"n": {"type": "number"}})],
            [{"f": {"n": [1]}}],
            id="unknown-type",
        ),
        pytest.param(
            "simple_python",
            [func("f", {"n": {"type": "array"}})],
            [{"f": {"n": [[1]]}}],
            id="array-without-items",
        ),
        pytest.param("simple_python", [F], None, id="no-ground-truth"),
        pytest.param("simple_python", [], [GT_F1], id="no-functions"),
        pytest.param("multiple", [G], [GT_F1], id="gt-function-not-defined"),
        pytest.param("simple_python", [F], [{"f": {"n": 1}}], id="alternatives-not-a-list"),
    ],
)
def test_bad_data_raises(
    category: str, functions: list[dict[str, Any]], gt: list[dict[str, Any]] | None
) -> None:
    with pytest.raises(BenchError):
        check_item(category, functions, [{"f": {"n": 1}}], gt)


# --------------------------------------------------------------------------- real rows


@pytest.fixture(scope="module")
def sample() -> dict[str, BfclItem]:
    items: dict[str, BfclItem] = {}
    for questions in sorted(SAMPLE.glob("BFCL_v4_*.json")):
        answers = SAMPLE / "possible_answer" / questions.name
        loaded = load_items(questions, answers if answers.exists() else None)
        items.update((item.id, item) for item in loaded)
    return items


REAL_CASES = [
    ("simple_python_0", [{"calculate_triangle_area": {"base": 10, "height": 5}}], True),
    (
        "simple_python_0",
        [{"calculate_triangle_area": {"base": 10, "height": 5, "unit": "Units"}}],
        True,
    ),
    ("simple_python_0", [{"calculate_triangle_area": {"base": 10.0, "height": 5}}], False),
    (
        "simple_python_0",
        [{"calculate_triangle_area": {"base": 10, "height": 5, "unit": "cm"}}],
        False,
    ),
    (
        "simple_python_83",
        [
            {
                "calculate_distance": {
                    "coord1": (33.4484, -112.074),
                    "coord2": [34.0522, -118.2437],
                    "unit": "miles",
                }
            }
        ],
        True,
    ),
    (
        "simple_python_260",
        [
            {
                "paint_requirement.calculate": {
                    "area": {"width": 20, "height": 12},
                    "paint_coverage": 350,
                    "exclusion": {"type": "Window", "area": 15},
                }
            }
        ],
        True,
    ),
    (
        "simple_python_260",
        [
            {
                "paint_requirement.calculate": {
                    "area": {"width": 20, "height": 12, "depth": 1},
                    "paint_coverage": 350,
                    "exclusion": {"type": "window", "area": 15},
                }
            }
        ],
        False,
    ),
    (
        "multiple_50",
        [{"house_price_forecast": {"location": "NYC", "months": 1, "features": []}}],
        True,
    ),
    ("multiple_50", [{"house_price_forecast": {"location": "NYC", "months": 1}}], True),
    (
        "multiple_119",
        [
            {
                "database.query": {
                    "table": "user",
                    "conditions": [
                        {"field": "age", "operation": ">", "value": "25"},
                        {"field": "job", "operation": "=", "value": "engineer"},
                    ],
                }
            }
        ],
        True,
    ),
    (
        "multiple_119",
        [
            {
                "database.query": {
                    "table": "user",
                    "conditions": [
                        {"field": "job", "operation": "=", "value": "engineer"},
                        {"field": "age", "operation": ">", "value": "25"},
                    ],
                }
            }
        ],
        False,
    ),
    (
        "parallel_0",
        [
            {"spotify.play": {"artist": "Maroon 5", "duration": 15}},
            {"spotify.play": {"artist": "taylor swift", "duration": 20}},
        ],
        True,
    ),
    ("parallel_0", [{"spotify.play": {"artist": "Taylor Swift", "duration": 20}}], False),
    (
        "parallel_84",
        [
            {"calculate_displacement": {"initial_velocity": v, "time": t, "acceleration": a}}
            for v, t, a in [(25, 8, 0), (15, 7, 3.5), (20, 10, 2)]
        ],
        True,
    ),
    (
        "parallel_152",
        [
            {"math.power": {"base": 3, "exponent": 5, "mod": None}},
            {"math.power": {"base": 2, "exponent": 3}},
        ],
        True,
    ),
    # x and y are arrays whose ground truth is a string: a "variable", compared exactly.
    (
        "parallel_multiple_21",
        [
            {
                "linear_regression_fit": {
                    "x": "data['sales']",
                    "y": "data['future_sales']",
                    "return_residuals": True,
                }
            },
            {"data_loading": {"file_path": "dataset.csv"}},
        ],
        True,
    ),
    (
        "parallel_multiple_21",
        [
            {
                "linear_regression_fit": {
                    "x": 'data["sales"]',
                    "y": "data['future_sales']",
                    "return_residuals": True,
                }
            },
            {"data_loading": {"file_path": "dataset.csv"}},
        ],
        False,
    ),
    ("live_simple_58-27-0", [{"get_movies": {"city": "Mumbai", "movie_date": None}}], True),
    ("live_simple_58-27-0", [{"get_movies": {"city": "Mumbai", "movie_date": "today"}}], False),
    ("irrelevance_0", [], True),
    ("irrelevance_0", [{"determine_body_mass_index": {"weight": 70, "height": 1.8}}], False),
]


@pytest.mark.parametrize(
    ("item_id", "calls", "ok"),
    [pytest.param(i, c, ok, id=f"{i}-{n}") for n, (i, c, ok) in enumerate(REAL_CASES)],
)
def test_real_rows(sample: dict[str, BfclItem], item_id: str, calls: list[Call], ok: bool) -> None:
    item = sample[item_id]
    result = check_item(item.category, item.functions, calls, item.ground_truth)
    assert result.correct is ok, result.reason
