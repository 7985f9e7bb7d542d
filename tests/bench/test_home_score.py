"""The home-request scorer's rules, and the held-out data's shape (no model)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bench.home_score import call_mismatch, score, value_matches
from edge_agent.errors import BenchError
from edge_agent.toolbox.registry import Registry

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "home_requests.json"
KINDS = {"single", "multi", "none", "negation", "indirect", "units"}


def light(room: str, on: bool, brightness: Any = None) -> dict[str, Any]:
    args: dict[str, Any] = {"room": room, "on": on}
    if brightness is not None:
        args["brightness"] = brightness
    return {"name": "set_light", "arguments": args}


# --- values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        (21, 21.0, True),
        (21.0, 21, True),
        (21, 21.5, False),
        (1, True, False),
        (True, 1, False),
        (True, True, True),
        (False, True, False),
        ("2 * 3", "2*3", True),
        (" Boiler ", "Boiler", True),
        ("Boiler", "boiler", False),
        ("C", "c", False),
        ("21", 21, False),
        (["a", "b"], "b", True),
        (["a", "b"], "c", False),
        (["", 100], 100, True),
        (["", 100], "", False),
        ({"range": [21.0, 21.2]}, 21.11, True),
        ({"range": [21.0, 21.2]}, 21, True),
        ({"range": [21.0, 21.2]}, 21.3, False),
        ({"range": [21.0, 21.2]}, "21.1", False),
        ([{"range": [1, 2]}, 5], 5, True),
    ],
)
def test_value_rules(spec: Any, value: Any, ok: bool) -> None:
    assert value_matches(spec, value) is ok


@pytest.mark.parametrize("spec", [None, {"min": 1}, {"range": [1]}, {"range": 3}])
def test_malformed_expected_values_are_data_errors(spec: Any) -> None:
    with pytest.raises(BenchError):
        value_matches(spec, 1)


# --- one call ---------------------------------------------------------------


def test_optional_parameter_may_be_absent_or_given() -> None:
    expected = light("kitchen", True, ["", 100])
    assert call_mismatch(expected, light("kitchen", True)) == ""
    assert call_mismatch(expected, light("kitchen", True, 100)) == ""
    assert "brightness" in call_mismatch(expected, light("kitchen", True, 50))


def test_required_parameter_must_be_present() -> None:
    expected = light("kitchen", True, 40)
    assert "missing argument 'brightness'" in call_mismatch(expected, light("kitchen", True))


def test_unexpected_argument_fails_the_call() -> None:
    actual = {"name": "set_light", "arguments": {"room": "kitchen", "on": True, "colour": "red"}}
    assert "unexpected argument 'colour'" in call_mismatch(light("kitchen", True), actual)


def test_wrong_name_is_reported() -> None:
    actual = {"name": "lock_door", "arguments": {"door": "front", "locked": True}}
    assert "called 'lock_door'" in call_mismatch(light("kitchen", True), actual)


def test_missing_arguments_key_means_no_arguments() -> None:
    expected = {"name": "current_time", "arguments": {"timezone": ["", "UTC"]}}
    assert call_mismatch(expected, {"name": "current_time"}) == ""


# --- whole requests -----------------------------------------------------------


def test_calls_match_in_any_order() -> None:
    expected = [light("kitchen", False), light("hallway", False)]
    assert score(expected, [light("hallway", False), light("kitchen", False)]).correct


def test_count_must_match() -> None:
    expected = [light("kitchen", False), light("hallway", False)]
    verdict = score(expected, [light("kitchen", False)])
    assert not verdict.correct
    assert verdict.reason == "1 call(s) made, 2 expected"


def test_a_call_cannot_match_twice() -> None:
    expected = [light("kitchen", False), light("hallway", False)]
    assert not score(expected, [light("kitchen", False), light("kitchen", False)]).correct


def test_matching_backtracks_where_greedy_would_fail() -> None:
    # The first expected call accepts either room; greedy would take the
    # kitchen call for it and leave nothing for the second expected call.
    expected = [light(["kitchen", "hallway"], False), light("kitchen", False)]  # type: ignore[arg-type]
    assert score(expected, [light("kitchen", False), light("hallway", False)]).correct


def test_no_tool_requests_are_right_only_without_calls() -> None:
    assert score([], []).correct
    assert score([], [light("kitchen", True)]).reason == "1 call(s) made, 0 expected"


def test_single_call_reason_names_the_argument() -> None:
    verdict = score([light("kitchen", True, 40)], [light("kitchen", True, 60)])
    assert verdict.reason == "set_light: brightness=60, expected 40"


# --- the held-out data ----------------------------------------------------------


def _items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(DATA.read_text(encoding="utf-8"))
    return items


def test_data_meets_the_acceptance_mix() -> None:
    items = _items()
    kinds = Counter(item["kind"] for item in items)
    tools = {call["name"] for item in items for call in item["expected"]}
    assert len(items) >= 70
    assert len(tools) >= 10
    assert sum(len(i["expected"]) >= 2 for i in items) >= 8
    assert kinds["none"] >= 10
    assert all(kinds[k] > 0 for k in KINDS)
    assert sum(i["lang"] == "zh" for i in items) >= 15
    assert len({i["id"] for i in items}) == len(items)
    assert len({i["prompt"] for i in items}) == len(items)


def test_every_item_has_the_documented_shape() -> None:
    for item in _items():
        assert set(item) == {"id", "lang", "kind", "prompt", "expected"}, item["id"]
        assert item["lang"] in ("en", "zh") and item["kind"] in KINDS, item["id"]
        assert (item["kind"] == "none") == (item["expected"] == []), item["id"]
        assert (item["kind"] == "multi") == (len(item["expected"]) >= 2), item["id"]


def test_every_expected_call_fits_a_registered_tool() -> None:
    """Each concrete choice of the alternatives is a call the tool accepts:
    right name, required parameters present, values within the schema."""
    registry = Registry.from_dirs()
    for item in _items():
        for call in item["expected"]:
            model = registry.get(call["name"]).args_model
            assert model is not None
            assert set(call["arguments"]) <= set(model.model_fields), item["id"]
            for args in _concrete(call["arguments"]):
                model.model_validate(args, strict=True)  # raises, naming the field


def test_every_expected_call_scores_its_own_concrete_choices() -> None:
    for item in _items():
        actual = [
            {"name": c["name"], "arguments": next(iter(_concrete(c["arguments"])))}
            for c in item["expected"]
        ]
        assert score(item["expected"], actual).correct, item["id"]


def _concrete(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Every argument dict the expected spec allows (a range by its ends)."""
    choices = []
    for param, spec in arguments.items():
        options = spec if isinstance(spec, list) else [spec]
        values: list[Any] = []
        for option in options:
            values += option["range"] if isinstance(option, dict) else [option]
        choices.append([(param, v) for v in values])
    return [{param: v for param, v in combo if v != ""} for combo in itertools.product(*choices)]
