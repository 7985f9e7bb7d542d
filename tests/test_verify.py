"""The verifier: parse → tool → jsonschema → pydantic → rules, as Verdicts.

Tools come from a real module loaded the way ``--tools-dir`` loads one, so
the schema, the pydantic model and the function signature are pydantic's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.decoding.calls import ParsedOutput, ToolCall, parse_output
from edge_agent.decoding.schema import ToolSpec, normalize_tool
from edge_agent.toolbox.registry import Registry, Tool
from edge_agent.toolbox.verify import Verdict, schema_problem, verify_call, verify_output

TOOLS_MODULE = """
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from edge_agent import tool


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("must be even")
    return value


@tool("Switch a light and set its level.", side_effect="actuate")
def set_light(
    room: Literal["kitchen", "hall"],
    on: bool,
    level: Annotated[int, Field(ge=0, le=100)] = 50,
) -> str:
    return f"{room} {'on' if on else 'off'} at {level}"


@tool("Buy an even number of eggs.")
def buy_eggs(count: Annotated[int, AfterValidator(_even)]) -> str:
    return f"{count} eggs"
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    folder = tmp_path_factory.mktemp("tools")
    (folder / "home.py").write_text(TOOLS_MODULE, encoding="utf-8")
    return Registry.from_dirs(folder, builtin=False)


THERMOSTAT = normalize_tool(
    {
        "name": "set_temp",
        "description": "Set the thermostat.",
        "parameters": {
            "type": "object",
            "properties": {
                "celsius": {"type": "number", "minimum": 5, "maximum": 30},
                "zone": {
                    "type": "object",
                    "properties": {"floor": {"type": "integer", "enum": [0, 1]}},
                    "required": ["floor"],
                },
            },
            "required": ["celsius"],
            "additionalProperties": False,
        },
    }
)
SPECS = [THERMOSTAT]


def light(**arguments: Any) -> ToolCall:
    return ToolCall("set_light", {"room": "kitchen", "on": True, **arguments})


def rejected(verdict: Verdict, stage: str, *fragments: str) -> None:
    assert not verdict.ok
    assert verdict.stage == stage, verdict
    for fragment in fragments:
        assert fragment in verdict.message, verdict.message


# --- calls that pass --------------------------------------------------------------------


def test_a_good_call_passes_every_stage(registry: Registry) -> None:
    call = light(level=80)
    assert verify_call(call, registry) == Verdict(True, "ok", "", call)
    assert verify_call(ToolCall("buy_eggs", {"count": 12}), registry).ok


def test_a_good_call_passes_against_plain_specs() -> None:
    assert verify_call(ToolCall("set_temp", {"celsius": 21.5, "zone": {"floor": 1}}), SPECS).ok


# --- each stage's refusals name the tool and the argument --------------------------------


def test_unknown_tool_lists_the_available_ones(registry: Registry) -> None:
    verdict = verify_call(ToolCall("open_door", {}), registry)
    rejected(verdict, "tool", "'open_door'", "set_light", "buy_eggs")
    rejected(verify_call(ToolCall("open_door", {}), SPECS), "tool", "'open_door'", "set_temp")


def test_wrong_enum_value(registry: Registry) -> None:
    verdict = verify_call(light(room="attic"), registry)
    rejected(verdict, "schema", "set_light:", "'room'", "'attic'", "kitchen")


def test_out_of_range_from_a_pydantic_field(registry: Registry) -> None:
    # Field(ge, le) is also in the JSON schema, so jsonschema catches it first
    verdict = verify_call(light(level=101), registry)
    rejected(verdict, "schema", "set_light:", "'level'", "101", "maximum of 100")
    rejected(verify_call(light(level=-1), registry), "schema", "'level'", "minimum of 0")


def test_out_of_range_from_a_json_schema_bound() -> None:
    verdict = verify_call(ToolCall("set_temp", {"celsius": 31}), SPECS)
    rejected(verdict, "schema", "set_temp:", "'celsius'", "31", "maximum of 30")
    low = verify_call(ToolCall("set_temp", {"celsius": 4.5}), SPECS)
    rejected(low, "schema", "'celsius'", "minimum of 5")


def test_a_check_only_pydantic_knows_fails_at_the_model_stage(registry: Registry) -> None:
    verdict = verify_call(ToolCall("buy_eggs", {"count": 7}), registry)
    rejected(verdict, "model", "buy_eggs:", "'count'", "must be even")


def test_missing_required_argument(registry: Registry) -> None:
    verdict = verify_call(ToolCall("set_light", {"room": "hall"}), registry)
    rejected(verdict, "schema", "set_light:", "'on' is a required property")
    nested = verify_call(ToolCall("set_temp", {"celsius": 20, "zone": {}}), SPECS)
    rejected(nested, "schema", "set_temp:", "argument 'zone'", "'floor' is a required property")


def test_wrong_type(registry: Registry) -> None:
    verdict = verify_call(light(on="yes"), registry)
    rejected(verdict, "schema", "set_light:", "argument 'on'", "'yes' is not of type 'boolean'")
    nested = verify_call(ToolCall("set_temp", {"celsius": 20, "zone": {"floor": "1"}}), SPECS)
    rejected(nested, "schema", "argument 'zone/floor'")


def test_extra_argument(registry: Registry) -> None:
    verdict = verify_call(light(colour="red"), registry)
    rejected(verdict, "schema", "set_light:", "'colour' was unexpected")
    plain = verify_call(ToolCall("set_temp", {"celsius": 20, "fan": True}), SPECS)
    rejected(plain, "schema", "set_temp:", "'fan' was unexpected")


def test_schema_problem_is_empty_for_valid_arguments() -> None:
    assert schema_problem(THERMOSTAT, {"celsius": 20}) == ""
    assert "celsius" in schema_problem(THERMOSTAT, {"celsius": "warm"})


def test_specs_that_differ_only_in_schema_are_not_confused() -> None:
    """ToolSpec equality ignores parameters; the validator cache must not."""
    loose = ToolSpec("set_temp", THERMOSTAT.description, {"type": "object", "properties": {}})
    assert loose == THERMOSTAT
    assert verify_call(ToolCall("set_temp", {"celsius": 99}), [loose]).ok
    assert not verify_call(ToolCall("set_temp", {"celsius": 99}), SPECS).ok


# --- the tool's own rules -----------------------------------------------------------------


def test_a_rule_complaint_is_a_rules_verdict(registry: Registry) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def no_hall_at_night(tool: Tool, arguments: dict[str, Any]) -> str | None:
        seen.append((tool.name, arguments))
        if arguments.get("room") == "hall":
            return "the hall light stays off at night"
        return None

    def confirm_actuators(tool: Tool, arguments: dict[str, Any]) -> str | None:
        return "needs confirmation" if tool.policy.side_effect == "actuate" else None

    verdict = verify_call(light(room="hall"), registry, [no_hall_at_night])
    rejected(verdict, "rules", "set_light: the hall light stays off at night")
    assert seen == [("set_light", {"room": "hall", "on": True})]
    assert verify_call(light(), registry, [no_hall_at_night]).ok
    # rules run in order; the first complaint wins
    both = verify_call(light(room="hall"), registry, [confirm_actuators, no_hall_at_night])
    rejected(both, "rules", "needs confirmation")


def test_rules_see_only_calls_that_passed_the_schema(registry: Registry) -> None:
    def boom(tool: Tool, arguments: dict[str, Any]) -> str | None:
        raise AssertionError("a rule saw an invalid call")

    assert verify_call(light(level=500), registry, [boom]).stage == "schema"
    assert verify_call(ToolCall("buy_eggs", {"count": 3}), registry, [boom]).stage == "model"


# --- whole outputs ----------------------------------------------------------------------


def test_parse_errors_become_verdicts(registry: Registry) -> None:
    text = '<tool_call>\n{"name": "set_light", "arguments": {\n</tool_call>'
    [verdict] = verify_output(parse_output(text), registry)
    rejected(verdict, "parse", "not valid JSON")
    assert verdict.call is None


def test_one_verdict_per_fragment_and_call_in_order(registry: Registry) -> None:
    parsed = ParsedOutput(
        calls=(light(), light(room="attic"), ToolCall("nope", {})),
        errors=("not valid JSON (x)",),
    )
    verdicts = verify_output(parsed, registry)
    assert [v.stage for v in verdicts] == ["parse", "ok", "schema", "tool"]
    assert [v.ok for v in verdicts] == [False, True, False, False]


def test_a_text_answer_is_no_call(registry: Registry) -> None:
    [verdict] = verify_output(parse_output("I cannot help with that."), registry)
    assert verdict == Verdict(False, "no_call", "no tool call was made")


def test_verify_output_passes_rules_on(registry: Registry) -> None:
    def never(tool: Tool, arguments: dict[str, Any]) -> str | None:
        return "not today"

    [verdict] = verify_output(ParsedOutput(calls=(light(),)), registry, [never])
    rejected(verdict, "rules", "set_light: not today")


def test_the_registry_tools_come_from_the_module(registry: Registry) -> None:
    assert [t.name for t in registry] == ["set_light", "buy_eggs"]  # module order
    assert registry.get("set_light").spec.parameters["properties"]["level"]["maximum"] == 100
    assert Path(str(registry.get("set_light").module_file)).name == "home.py"


MEETING = normalize_tool(
    {
        "name": "book_meeting",
        "description": "Book a meeting.",
        "parameters": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "format": "date"},
                "email": {"type": "string", "format": "email"},
                "host": {"type": "string", "format": "ipv4"},
                "ratio": {"type": "number", "format": "float"},
            },
            "required": ["day"],
        },
    }
)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"day": "2024-05-07"}, ""),
        ({"day": "2024-05-07", "email": "a@b.example", "host": "10.0.0.1"}, ""),
        ({"day": "next tuesday"}, "'next tuesday' is not a 'date'"),
        ({"day": "2024-02-30"}, "is not a 'date'"),
        ({"day": "2024-05-07", "email": "nobody"}, "is not a 'email'"),
        ({"day": "2024-05-07", "host": "10.0.0.300"}, "is not a 'ipv4'"),
        ({"day": "2024-05-07", "ratio": 5}, ""),  # BFCL's float: not a format jsonschema knows
    ],
)
def test_formats_are_checked(arguments: dict[str, Any], problem: str) -> None:
    found = schema_problem(MEETING, arguments)
    assert (problem in found) if problem else found == "", found


def test_a_wrong_date_fails_at_the_schema_stage() -> None:
    verdict = verify_call(ToolCall("book_meeting", {"day": "next tuesday"}), [MEETING])
    assert (verdict.ok, verdict.stage) == (False, "schema")
    assert "argument 'day'" in verdict.message
