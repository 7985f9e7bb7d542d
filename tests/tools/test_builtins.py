"""The built-in tools as the registry sees them: schemas, policies, validation."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from edge_agent.toolbox import registry as registry_module
from edge_agent.toolbox.registry import BUILTIN_TOOLS_DIR, Registry, Tool

EXPECTED = {
    "set_light": "actuate",
    "set_thermostat": "actuate",
    "read_sensor": "read",
    "lock_door": "dangerous",
    "set_valve": "dangerous",
    "calculate": "read",
    "convert_units": "read",
    "current_time": "read",
    "date_diff": "read",
    "search_notes": "read",
    "add_note": "actuate",
    "http_get": "read",
}


@pytest.fixture(scope="module")
def builtins() -> Registry:
    return Registry.from_dirs()


def test_all_builtins_load(builtins: Registry) -> None:
    assert {t.name for t in builtins} == set(EXPECTED)
    for item in builtins:
        assert item.executable
        assert item.module_file is not None and item.module_file.parent == BUILTIN_TOOLS_DIR
        assert not item.module_file.name.startswith("_")


def test_side_effects_and_confirmation(builtins: Registry) -> None:
    for item in builtins:
        assert item.policy.side_effect == EXPECTED[item.name], item.name
        assert item.policy.requires_confirmation is (item.policy.side_effect == "dangerous")
        item.policy.rate_per_second()  # parses
    assert builtins.get("http_get").policy.network is True
    assert [t.name for t in builtins if t.policy.network] == ["http_get"]


def test_descriptions_are_one_short_sentence(builtins: Registry) -> None:
    for item in builtins:
        text = item.spec.description
        assert 10 < len(text) <= 80, item.name
        assert text.endswith("."), item.name
        assert "\n" not in text
        for prop in item.spec.parameters["properties"].values():
            assert len(prop.get("description", "")) <= 40, item.name


def test_specs_are_valid_object_schemas(builtins: Registry) -> None:
    for item in builtins:
        params = item.spec.parameters
        jsonschema.Draft202012Validator.check_schema(params)
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert not _keywords(params) & {"title", "$ref", "$defs", "allOf"}, item.name
        signature = inspect.signature(item.func)  # type: ignore[arg-type]
        assert list(params["properties"]) == list(signature.parameters)
        required = [p.name for p in signature.parameters.values() if p.default is p.empty]
        assert params.get("required", []) == required


def _keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a schema (property names excluded)."""
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key == "properties":
            for sub in value.values():
                found |= _keywords(sub)
        elif key in ("items", "additionalProperties"):
            found |= _keywords(value)
        elif key in ("anyOf", "oneOf"):
            for sub in value:
                found |= _keywords(sub)
    return found


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return None


def _bounds(hint: Any) -> tuple[Any, Any] | None:
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    for meta in typing.get_args(hint)[1:]:
        low = next((m.ge for m in getattr(meta, "metadata", []) if hasattr(m, "ge")), None)
        high = next((m.le for m in getattr(meta, "metadata", []) if hasattr(m, "le")), None)
        if low is not None or high is not None:
            return low, high
    return None


def test_literals_become_enums_and_ranges_become_bounds(builtins: Registry) -> None:
    enums = bounds = 0
    for item in builtins:
        hints = typing.get_type_hints(item.func, include_extras=True)  # type: ignore[arg-type]
        props = item.spec.parameters["properties"]
        for name, prop in props.items():
            values = _literal_values(hints[name])
            if values is not None:
                assert prop["enum"] == list(values), (item.name, name)
                assert prop["type"] == "string"
                enums += 1
            limits = _bounds(hints[name])
            if limits is not None:
                assert (prop.get("minimum"), prop.get("maximum")) == limits, (item.name, name)
                bounds += 1
    assert enums >= 9 and bounds >= 4


def test_schema_details(builtins: Registry) -> None:
    light = builtins.get("set_light").spec.parameters["properties"]
    assert light["room"]["enum"][0] == "living_room"
    assert light["brightness"] == {
        "default": 100,
        "description": "percent",
        "maximum": 100,
        "minimum": 0,
        "type": "integer",
    }
    thermostat = builtins.get("set_thermostat").spec.parameters["properties"]
    assert thermostat["temperature_c"] == {"maximum": 30, "minimum": 5, "type": "number"}
    assert thermostat["mode"] == {
        "default": "auto",
        "description": "heat warms, cool cools, auto picks",
        "enum": ["heat", "cool", "auto", "off"],
        "type": "string",
    }
    # which way a boolean or a percentage goes: the 0.5B read "unlock" as locked=true
    lock = builtins.get("lock_door").spec.parameters["properties"]["locked"]
    assert lock["description"] == "true locks the door, false unlocks it"
    valve = builtins.get("set_valve").spec.parameters["properties"]["open_percent"]
    assert valve["description"] == "0 closes it, 100 opens it fully"
    units = builtins.get("convert_units").spec.parameters["properties"]
    assert "kWh" in units["from_unit"]["enum"] and units["from_unit"] == units["to_unit"]
    limit = builtins.get("search_notes").spec.parameters["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 10, 3)


def _validate(builtins: Registry, name: str, arguments: dict[str, Any]) -> Any:
    return registry_module.validate_args(builtins.get(name), arguments)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("set_light", {"room": "kitchen", "on": True, "brightness": 101}),
        ("set_light", {"room": "kitchen", "on": True, "brightness": -1}),
        ("set_light", {"room": "attic", "on": True}),
        ("set_light", {"room": "kitchen"}),
        ("set_light", {"room": "kitchen", "on": True, "colour": "red"}),
        ("set_thermostat", {"room": "kitchen", "temperature_c": 35}),
        ("set_thermostat", {"room": "kitchen", "temperature_c": 20, "mode": "turbo"}),
        ("read_sensor", {"sensor": "radiation", "room": "kitchen"}),
        ("lock_door", {"door": "window", "locked": True}),
        ("set_valve", {"valve": "garden", "open_percent": 150}),
        ("convert_units", {"value": 1, "from_unit": "furlong", "to_unit": "m"}),
        ("search_notes", {"query": "x", "limit": 11}),
        ("search_notes", {"query": "x", "limit": 0}),
        ("calculate", {}),
        ("http_get", {"url": "https://a", "method": "POST"}),
    ],
)
def test_validate_args_rejects(builtins: Registry, name: str, arguments: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _validate(builtins, name, arguments)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("set_light", {"room": "kitchen", "on": True}),
        ("set_light", {"room": "bedroom", "on": False, "brightness": 0}),
        ("set_thermostat", {"room": "hallway", "temperature_c": 5, "mode": "off"}),
        ("set_thermostat", {"room": "hallway", "temperature_c": 21.5}),
        ("read_sensor", {"sensor": "co2", "room": "bedroom"}),
        ("lock_door", {"door": "front", "locked": False}),
        ("set_valve", {"valve": "main_water", "open_percent": 100}),
        ("calculate", {"expression": "1+1"}),
        ("convert_units", {"value": 3, "from_unit": "km", "to_unit": "mi"}),
        ("current_time", {}),
        ("date_diff", {"start": "2024-01-01", "end": "today"}),
        ("search_notes", {"query": "boiler"}),
        ("add_note", {"title": "t", "text": "x"}),
        ("http_get", {"url": "https://example.com/"}),
    ],
)
def test_validate_args_accepts(builtins: Registry, name: str, arguments: dict[str, Any]) -> None:
    model = _validate(builtins, name, arguments)
    assert model is not None
    jsonschema.validate(arguments, builtins.get(name).spec.parameters)


def test_tools_are_plain_functions(builtins: Registry) -> None:
    item: Tool = builtins.get("calculate")
    assert item.func is not None
    assert item.func(expression="6 * 7") == {"expression": "6 * 7", "result": 42}


def test_grammar_accepts_every_builtin_schema(builtins: Registry) -> None:
    from edge_agent.decoding.grammar import build_grammar

    grammar = build_grammar(builtins.specs())
    for item in builtins:
        assert item.name in grammar.text
