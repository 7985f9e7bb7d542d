"""Loading BFCL data, and the checker's self-consistency on the sample's ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bench.bfcl_check import check_item, find_function, is_relevance_category
from edge_agent.bench.bfcl_data import (
    BfclItem,
    category_from_filename,
    category_from_id,
    decode_calls,
    load_items,
)
from edge_agent.errors import BenchError, InputError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "bfcl"
COUNTS = {
    "simple_python": 8,
    "multiple": 8,
    "parallel": 8,
    "parallel_multiple": 8,
    "irrelevance": 8,
    "live_simple": 6,
}


def questions_file(category: str) -> Path:
    return SAMPLE / f"BFCL_v4_{category}.json"


def answers_file(category: str) -> Path | None:
    path = SAMPLE / "possible_answer" / f"BFCL_v4_{category}.json"
    return path if path.exists() else None


def load_sample(category: str) -> list[BfclItem]:
    return load_items(questions_file(category), answers_file(category))


# --------------------------------------------------------------------------- the sample


def test_sample_has_the_documented_files() -> None:
    found = {category_from_filename(p) for p in SAMPLE.glob("BFCL_v4_*.json")}
    assert found == set(COUNTS)
    assert (SAMPLE / "LICENSE").is_file()
    assert "never" in (SAMPLE / "SOURCE.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("category", "count"), COUNTS.items())
def test_sample_loads(category: str, count: int) -> None:
    items = load_sample(category)
    assert len(items) == count
    assert len({item.id for item in items}) == count
    for item in items:
        assert item.category == category
        assert item.id.startswith(category)
        assert item.messages and all("role" in m and "content" in m for m in item.messages)
        assert item.functions
        assert (item.ground_truth is None) is is_relevance_category(category)


def test_ground_truth_is_joined_by_id() -> None:
    item = next(i for i in load_sample("simple_python") if i.id == "simple_python_0")
    assert item.ground_truth == [
        {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}
    ]
    assert item.messages[0]["content"].startswith("Find the area of a triangle")
    assert item.functions[0]["name"] == "calculate_triangle_area"


def test_system_messages_are_kept() -> None:
    item = next(i for i in load_sample("live_simple") if i.id == "live_simple_58-27-0")
    assert [m["role"] for m in item.messages] == ["system", "user"]


def test_without_answers_ground_truth_is_none() -> None:
    items = load_items(questions_file("parallel"))
    assert len(items) == COUNTS["parallel"]
    assert all(item.ground_truth is None for item in items)


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0, 0), (100, 8), (None, 8)])
def test_limit(limit: int | None, expected: int) -> None:
    items = load_items(questions_file("multiple"), answers_file("multiple"), limit=limit)
    assert [item.id for item in items] == [item.id for item in load_sample("multiple")][:expected]


# --------------------------------------------------------------------------- categories


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("BFCL_v4_simple_python.json", "simple_python"),
        ("BFCL_v4_live_parallel_multiple.json", "live_parallel_multiple"),
        ("BFCL_v3_irrelevance.json", "irrelevance"),
        ("simple_python.json", None),
        ("BFCL_v4_simple_python.jsonl", None),
    ],
)
def test_category_from_filename(name: str, category: str | None) -> None:
    assert category_from_filename(Path(name)) == category


@pytest.mark.parametrize(
    ("item_id", "category"),
    [
        ("simple_python_0", "simple_python"),
        ("parallel_multiple_199", "parallel_multiple"),
        ("live_simple_0-0-0", "live_simple"),
        ("live_irrelevance_883-1-2", "live_irrelevance"),
        ("noindex", None),
    ],
)
def test_category_from_id(item_id: str, category: str | None) -> None:
    assert category_from_id(item_id) == category


def test_category_from_id_when_file_name_says_nothing(tmp_path: Path) -> None:
    renamed = tmp_path / "mixed.jsonl"
    text = questions_file("live_simple").read_text(encoding="utf-8")
    renamed.write_text(
        text + questions_file("irrelevance").read_text(encoding="utf-8"), encoding="utf-8"
    )
    categories = {item.category for item in load_items(renamed)}
    assert categories == {"live_simple", "irrelevance"}


def test_category_argument_wins(tmp_path: Path) -> None:
    items = load_items(questions_file("parallel"), category="custom")
    assert {item.category for item in items} == {"custom"}


# --------------------------------------------------------------------------- errors

GOOD = {"id": "simple_python_0", "question": [[{"role": "user", "content": "hi"}]], "function": []}


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def bad_rows() -> list[Any]:
    no = {key: {k: v for k, v in GOOD.items() if k != key} for key in GOOD}
    return [
        pytest.param("{not json", "not valid JSON", id="non-json-line"),
        pytest.param("[1, 2]", "expected a JSON object", id="non-object-line"),
        pytest.param(json.dumps(no["id"]), "missing 'id'", id="no-id"),
        pytest.param(json.dumps(no["question"]), "missing 'question'", id="no-question"),
        pytest.param(json.dumps(no["function"]), "missing 'function'", id="no-function"),
        pytest.param(json.dumps({**GOOD, "id": 7}), "'id' must be a str", id="id-not-str"),
        pytest.param(json.dumps({**GOOD, "question": []}), "list of turns", id="no-turns"),
        pytest.param(json.dumps({**GOOD, "question": ["hi"]}), "list of turns", id="turn-not-list"),
        pytest.param(
            json.dumps({**GOOD, "function": {}}),
            "'function' must be a list",
            id="function-not-list",
        ),
        pytest.param(json.dumps({**GOOD, "id": "nonumber"}), "category of id", id="no-category"),
    ]


@pytest.mark.parametrize(("line", "message"), bad_rows())
def test_bad_question_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path / "questions.jsonl", json.dumps(GOOD), "", line)
    with pytest.raises(BenchError) as info:
        load_items(path)
    text = str(info.value)
    assert message in text
    assert f"{path}:3:" in text  # file and 1-based line number (blank line 2 counted)
    assert "\n" not in info.value.one_line()


def test_missing_questions_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read"):
        load_items(tmp_path / "BFCL_v4_simple_python.json")


def test_missing_answers_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read"):
        load_items(questions_file("simple_python"), tmp_path / "absent.json")


def test_answers_missing_an_id(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    lines = (answers_file("multiple") or Path()).read_text(encoding="utf-8").splitlines()
    write_lines(answers, *lines[:3], *lines[4:])
    with pytest.raises(BenchError, match=r"no ground truth for id 'multiple_100'.*:4\)"):
        load_items(questions_file("multiple"), answers)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("{oops", "not valid JSON", id="non-json"),
        pytest.param('{"ground_truth": []}', "missing 'id'", id="no-id"),
        pytest.param('{"id": "x"}', "missing 'ground_truth'", id="no-ground-truth"),
    ],
)
def test_bad_answer_line(tmp_path: Path, line: str, message: str) -> None:
    answers = write_lines(tmp_path / "answers.json", line)
    with pytest.raises(BenchError, match=message):
        load_items(questions_file("simple_python"), answers)


def test_relevance_items_need_no_answer(tmp_path: Path) -> None:
    answers = write_lines(tmp_path / "answers.json")
    items = load_items(questions_file("irrelevance"), answers)
    assert len(items) == COUNTS["irrelevance"]


def test_limit_stops_before_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "BFCL_v4_simple_python.json"
    shutil.copy(questions_file("simple_python"), path)
    with path.open("a", encoding="utf-8") as out:
        out.write("{broken\n")
    assert len(load_items(path, limit=8)) == 8
    with pytest.raises(BenchError):
        load_items(path)


# --------------------------------------------------------------------------- decode_calls


def test_decode_calls() -> None:
    calls: list[dict[str, Any]] = [
        {"name": "f", "arguments": {"n": 1}},
        {"name": "g", "arguments": '{"s": "x"}'},
        {"name": "h"},
    ]
    assert decode_calls(calls) == [{"f": {"n": 1}}, {"g": {"s": "x"}}, {"h": {}}]
    assert decode_calls([]) == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param({"arguments": {}}, id="no-name"),
        pytest.param({"name": "", "arguments": {}}, id="empty-name"),
        pytest.param({"name": "f", "arguments": "{bad"}, id="bad-json-arguments"),
        pytest.param({"name": "f", "arguments": [1]}, id="arguments-not-object"),
        pytest.param({"name": "f", "arguments": "[1]"}, id="json-arguments-not-object"),
    ],
)
def test_decode_calls_rejects(call: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        decode_calls([call])


# --------------------------------------------------------------------------- self-consistency


def _realise(value: Any, prop: dict[str, Any]) -> Any:
    """A ground-truth alternative as a model would emit it.

    Dict alternatives hold ``{key: [alternatives]}``; a model emits one value
    per key, so take each key's first alternative (leaving out "" keys).
    """
    if prop.get("type") == "dict" and isinstance(value, dict):
        return _first_choices(value)
    if prop.get("items", {}).get("type") == "dict" and isinstance(value, list):
        return [_first_choices(v) if isinstance(v, dict) else v for v in value]
    return value


def _first_choices(alternative: dict[str, list[Any]]) -> dict[str, Any]:
    return {key: alts[0] for key, alts in alternative.items() if alts and alts[0] != ""}


def _ground_truth_call(doc: dict[str, Any], gt_call: dict[str, Any]) -> dict[str, Any]:
    """The call made of each param's FIRST alternative; params whose first is "" are left out.

    Exceptions, so the call stays one a model could make: a required param
    whose first alternative is "" gets its first other alternative, and a
    param the schema does not have is left out when the ground truth allows it.
    """
    ((name, params),) = gt_call.items()
    properties = doc["parameters"].get("properties", {})
    required = doc["parameters"].get("required", [])
    args = {}
    for param, alternatives in params.items():
        if param not in properties and "" in alternatives:
            continue
        first = alternatives[0]
        if first == "" and param in required:
            first = next((a for a in alternatives if a != ""), "")
        elif first == "":
            continue
        args[param] = _realise(first, properties.get(param, {}))
    return {name: args}


def sample_items_with_ground_truth() -> list[Any]:
    items = [item for category in COUNTS for item in load_sample(category)]
    return [pytest.param(item, id=item.id) for item in items if item.ground_truth]


@pytest.mark.parametrize("item", sample_items_with_ground_truth())
def test_ground_truth_passes_its_own_check(item: BfclItem) -> None:
    """Feeding the ground truth's first alternatives back must pass: catches checker bugs."""
    assert item.ground_truth is not None
    calls = [
        _ground_truth_call(find_function(item.functions, next(iter(gt))), gt)
        for gt in item.ground_truth
    ]
    result = check_item(item.category, item.functions, calls, item.ground_truth)
    assert result.correct, result.reason
    if len(calls) > 1:  # parallel: any order (no sample item has overlapping alternatives)
        assert check_item(item.category, item.functions, calls[::-1], item.ground_truth).correct
