"""Tool-schema dialects (OpenAI, BFCL) into one normalised JSON Schema, and
every way a schema is refused: each refusal is a typed ``SchemaError`` whose
message names the tool and the JSON path of the offending node."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from edge_agent.decoding.schema import ToolSpec, normalize_tool, normalize_tools, schema_hash
from edge_agent.errors import EdgeAgentError, SchemaError, UnsupportedSchemaError

SET_LIGHT_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "room": {"type": "string", "enum": ["kitchen", "hall"]},
        "level": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["room"],
}

# A BFCL entry in its own dialect: Python-flavoured types at every depth.
BFCL_FUNCTION: dict[str, Any] = {
    "name": "geometry.plot_points",
    "description": "Plot points and a legend.",
    "parameters": {
        "type": "dict",
        "properties": {
            "scale": {"type": "float", "description": "zoom factor"},
            "origin": {"type": "tuple", "items": {"type": "float"}},
            "style": {
                "type": "dict",
                "properties": {
                    "colour": {"type": "string"},
                    "extra": {"type": "any"},
                    "marks": {
                        "type": "array",
                        "items": {"type": "dict", "properties": {"size": {"type": "float"}}},
                    },
                },
            },
            "labels": {"type": ["dict", "null"]},
        },
        "required": ["scale"],
    },
}


def params_with(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **extra}


def tool_def(parameters: Any, name: str = "weather") -> dict[str, Any]:
    return {"name": name, "description": "Look up the weather.", "parameters": parameters}


def walk(node: Any) -> list[Any]:
    """Every dict and list in a JSON document, depth first."""
    found = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        found += walk(child)
    return found


# --- the two dialects ------------------------------------------------------------


def test_openai_wrapped_and_bare_forms_give_the_same_spec() -> None:
    bare = {"name": "set_light", "description": "Switch a light.", "parameters": SET_LIGHT_PARAMS}
    wrapped = {"type": "function", "function": bare}
    a, b = normalize_tool(bare), normalize_tool(wrapped)
    assert (a.name, a.description, a.parameters) == (b.name, b.description, b.parameters)
    assert a.parameters == {**SET_LIGHT_PARAMS, "additionalProperties": False}


def test_to_openai_round_trips_through_normalize() -> None:
    spec = normalize_tool(tool_def(SET_LIGHT_PARAMS, name="set_light"))
    entry = spec.to_openai()
    assert entry["type"] == "function"
    again = normalize_tool(entry)
    assert (again.name, again.description, again.parameters) == (
        spec.name,
        spec.description,
        spec.parameters,
    )


def test_a_single_mapping_is_accepted_as_a_list_of_one() -> None:
    [spec] = normalize_tools(tool_def(SET_LIGHT_PARAMS))
    assert spec.name == "weather"


def test_missing_parameters_mean_no_arguments() -> None:
    spec = normalize_tool({"name": "now"})
    assert spec.parameters == {"type": "object", "properties": {}}
    assert spec.description == ""


def test_properties_without_a_type_make_an_object() -> None:
    spec = normalize_tool(tool_def({"properties": {"city": {"type": "string"}}}))
    assert spec.parameters["type"] == "object"


def test_bfcl_types_are_mapped_at_every_depth() -> None:
    params = normalize_tool(BFCL_FUNCTION).parameters
    props = params["properties"]
    float_ = {"type": "number", "format": "float"}  # Python float: always a decimal point
    assert params["type"] == "object"
    assert props["scale"] == {**float_, "description": "zoom factor"}
    assert props["origin"] == {"type": "array", "items": float_}
    style = props["style"]
    assert style["type"] == "object"
    assert style["properties"]["extra"] == {"type": "string"}
    marks = style["properties"]["marks"]["items"]
    assert marks == {
        "type": "object",
        "properties": {"size": float_},
        "additionalProperties": False,
    }
    assert props["labels"] == {"type": ["object", "null"]}
    # Nothing of the dialect is left, and the result is a valid 2020-12 schema.
    types = [n["type"] for n in walk(params) if isinstance(n, dict) and "type" in n]
    flat = [t for kind in types for t in (kind if isinstance(kind, list) else [kind])]
    assert not {"dict", "float", "tuple", "any"} & set(flat)
    jsonschema.Draft202012Validator.check_schema(params)


def test_normalising_does_not_mutate_the_input() -> None:
    original = copy.deepcopy(BFCL_FUNCTION)
    normalize_tool(BFCL_FUNCTION)
    assert original == BFCL_FUNCTION


def test_required_drops_undeclared_names_and_duplicates() -> None:
    params = params_with(
        {
            "city": {"type": "string"},
            "when": {
                "type": "object",
                "properties": {"day": {"type": "string"}},
                "required": ["day", "hour"],
            },
        },
        required=["city", "country", "city", "when"],
    )
    out = normalize_tool(tool_def(params)).parameters
    assert out["required"] == ["city", "when"]
    assert out["properties"]["when"]["required"] == ["day"]


def test_local_refs_are_inlined_with_their_siblings() -> None:
    params = {
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Place", "description": "where you live"},
            "work": {"$ref": "#/definitions/Office"},
        },
        "$defs": {
            "Place": {
                "type": "object",
                "properties": {"unit": {"$ref": "#/$defs/Unit"}},
            },
            "Unit": {"type": "string", "enum": ["c", "f"]},
        },
        "definitions": {"Office": {"type": "dict", "properties": {"floor": {"type": "integer"}}}},
    }
    out = normalize_tool(tool_def(params)).parameters
    home = out["properties"]["home"]
    assert home["description"] == "where you live"
    assert home["properties"]["unit"] == {"type": "string", "enum": ["c", "f"]}
    assert out["properties"]["work"] == {
        "type": "object",
        "properties": {"floor": {"type": "integer"}},
        "additionalProperties": False,
    }
    keys = {k for n in walk(out) if isinstance(n, dict) for k in n}
    assert not {"$ref", "$defs", "definitions"} & keys


def test_the_same_definition_used_twice_is_not_a_cycle() -> None:
    params = params_with(
        {"start": {"$ref": "#/$defs/Point"}, "end": {"$ref": "#/$defs/Point"}},
        **{"$defs": {"Point": {"type": "array", "items": {"type": "number"}}}},
    )
    out = normalize_tool(tool_def(params)).parameters
    assert out["properties"]["start"] == out["properties"]["end"]


# --- refusals: a typed error naming the tool and the path -------------------------------


def nested_objects(depth: int) -> dict[str, Any]:
    """An object schema whose deepest node, a string, is ``depth`` properties down."""
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"a": node}}
    return node


REFUSED: dict[str, tuple[Any, type[SchemaError], list[str]]] = {
    "unknown type": (
        params_with({"unit": {"type": "integr"}}),
        SchemaError,
        ["'weather'", "unknown type 'integr'", "/properties/unit"],
    ),
    "unknown type in items": (
        params_with({"days": {"type": "array", "items": {"type": "strng"}}}),
        SchemaError,
        ["'weather'", "'strng'", "/properties/days/items"],
    ),
    "type not a string": (
        params_with({"unit": {"type": 3}}),
        SchemaError,
        ["'weather'", "type must be a string", "/properties/unit"],
    ),
    "direct $ref cycle": (
        params_with(
            {"node": {"$ref": "#/$defs/Node"}},
            **{
                "$defs": {
                    "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
                }
            },
        ),
        UnsupportedSchemaError,
        ["'weather'", "cycle", "#/$defs/Node -> #/$defs/Node", "/properties/node"],
    ),
    "indirect $ref cycle": (
        params_with(
            {"a": {"$ref": "#/$defs/A"}},
            **{
                "$defs": {
                    "A": {"type": "array", "items": {"$ref": "#/$defs/B"}},
                    "B": {"type": "array", "items": {"$ref": "#/$defs/A"}},
                }
            },
        ),
        UnsupportedSchemaError,
        ["'weather'", "cycle", "#/$defs/A -> #/$defs/B -> #/$defs/A"],
    ),
    "unresolvable $ref": (
        params_with({"unit": {"$ref": "#/$defs/Nope"}}),
        SchemaError,
        ["'weather'", "unresolvable $ref '#/$defs/Nope'", "/properties/unit"],
    ),
    "remote $ref": (
        params_with({"unit": {"$ref": "https://example.com/unit.json"}}),
        SchemaError,
        ["'weather'", "unresolvable", "/properties/unit"],
    ),
    "empty enum": (
        params_with({"unit": {"enum": []}}),
        SchemaError,
        ["'weather'", "enum must be a non-empty list", "/properties/unit"],
    ),
    "enum not a list": (
        params_with({"unit": {"enum": "cf"}}),
        SchemaError,
        ["'weather'", "enum must be a non-empty list", "/properties/unit"],
    ),
    "object enum values": (
        params_with({"unit": {"enum": [{"c": 1}]}}),
        UnsupportedSchemaError,
        ["'weather'", "scalars", "/properties/unit"],
    ),
    "list enum values": (
        params_with({"unit": {"enum": ["c", ["f"]]}}),
        UnsupportedSchemaError,
        ["'weather'", "scalars", "/properties/unit"],
    ),
    "allOf": (
        params_with({"unit": {"allOf": [{"type": "string"}, {"maxLength": 1}]}}),
        UnsupportedSchemaError,
        ["'weather'", "allOf", "/properties/unit"],
    ),
    "tuple-style items": (
        params_with({"pair": {"type": "array", "items": [{"type": "string"}]}}),
        UnsupportedSchemaError,
        ["'weather'", "tuple-style", "/properties/pair/items"],
    ),
    "empty anyOf": (
        params_with({"unit": {"anyOf": []}}),
        SchemaError,
        ["'weather'", "non-empty list of schemas", "/properties/unit/anyOf"],
    ),
    "oneOf not a list": (
        params_with({"unit": {"oneOf": {"type": "string"}}}),
        SchemaError,
        ["'weather'", "non-empty list of schemas", "/properties/unit/oneOf"],
    ),
    "non-object root": (
        {"type": "string"},
        SchemaError,
        ["'weather'", "parameters must be an object schema"],
    ),
    "array root": (
        {"type": "array", "items": {"type": "string"}},
        SchemaError,
        ["'weather'", "parameters must be an object schema"],
    ),
    "parameters not a schema": (
        ["city"],
        SchemaError,
        ["'weather'", "a schema must be an object, got list", "at /"],
    ),
    "property schema null": (
        params_with({"city": None}),
        SchemaError,
        ["'weather'", "got NoneType", "/properties/city"],
    ),
    "properties not an object": (
        {"type": "object", "properties": ["city"]},
        SchemaError,
        ["'weather'", "'properties' must be an object"],
    ),
    "required not a list": (
        params_with({"city": {"type": "string"}}, required="city"),
        SchemaError,
        ["'weather'", "required must be a list"],
    ),
    "metaschema: negative minLength": (
        params_with({"city": {"type": "string", "minLength": -1}}),
        SchemaError,
        ["'weather'", "invalid schema", "properties/city/minLength", "minimum of 0"],
    ),
    "metaschema: maxItems not an integer, nested": (
        params_with({"days": {"type": "array", "items": {"type": "string"}, "maxItems": "7"}}),
        SchemaError,
        ["'weather'", "invalid schema", "properties/days/maxItems", "'7'"],
    ),
    "nested deeper than 12 levels": (
        nested_objects(13),
        UnsupportedSchemaError,
        ["'weather'", "deeper than 12 levels"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused_schemas_raise_a_typed_error_naming_tool_and_path(case: str) -> None:
    parameters, error, fragments = REFUSED[case]
    with pytest.raises(SchemaError) as info:
        normalize_tools([tool_def(parameters)])
    assert type(info.value) is error, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message


TOOLS_REFUSED: dict[str, tuple[Any, list[str]]] = {
    "name with a space": ([{"name": "get weather"}], ["tool #0", "'get weather'"]),
    "name starting with a digit": ([{"name": "9lives"}], ["tool #0", "'9lives'"]),
    "empty name": ([{"name": ""}], ["tool #0", "invalid name"]),
    "name too long": ([{"name": "a" * 65}], ["tool #0", "invalid name"]),
    "no name": ([{"description": "nameless"}], ["tool #0", "invalid name None"]),
    "second tool invalid": ([{"name": "ok"}, {"name": "no/slash"}], ["tool #1", "no/slash"]),
    "duplicate names": ([{"name": "ping"}, {"name": "ping"}], ["duplicate tool name 'ping'"]),
    "wrapped function not an object": (
        [{"type": "function", "function": "ping"}],
        ["tool #0", "'function' must be an object"],
    ),
    "tools not a list": ("ping", ["must be a JSON list", "got str"]),
    "tools is a number": (3, ["must be a JSON list", "got int"]),
    "tools is None": (None, ["must be a JSON list", "got NoneType"]),
    "empty list": ([], ["the tools list is empty"]),
    "entry not an object": ([{"name": "ok"}, "ping"], ["tool #1 must be an object", "got str"]),
    "description not a string": (
        [{"name": "ping", "description": ["x"]}],
        ["'ping'", "description must be a string"],
    ),
}


@pytest.mark.parametrize("case", list(TOOLS_REFUSED), ids=list(TOOLS_REFUSED))
def test_refused_tool_lists_raise_schema_error(case: str) -> None:
    defs, fragments = TOOLS_REFUSED[case]
    with pytest.raises(SchemaError) as info:
        normalize_tools(defs)
    assert type(info.value) is SchemaError
    for fragment in fragments:
        assert fragment in info.value.message


def test_twelve_levels_of_nesting_are_accepted() -> None:
    node = normalize_tool(tool_def(nested_objects(12))).parameters
    for _ in range(12):
        node = node["properties"]["a"]
    assert node == {"type": "string"}


def test_declared_properties_close_the_object() -> None:
    params = params_with(
        {
            "closed": params_with({"x": {"type": "integer"}}),
            "open": params_with({"x": {"type": "integer"}}, additionalProperties=True),
            "free": {"type": "object"},
        }
    )
    out = normalize_tool(tool_def(params)).parameters
    assert out["additionalProperties"] is False
    assert out["properties"]["closed"]["additionalProperties"] is False
    assert out["properties"]["open"]["additionalProperties"] is True  # stated, so kept
    assert "additionalProperties" not in out["properties"]["free"]


def test_an_invalid_name_comes_with_a_hint() -> None:
    with pytest.raises(SchemaError) as info:
        normalize_tool({"name": "get weather"})
    assert "letters, digits" in info.value.hint
    assert "(hint: " in info.value.one_line()


def test_schema_errors_belong_to_the_one_exception_tree() -> None:
    assert issubclass(UnsupportedSchemaError, SchemaError)
    assert issubclass(SchemaError, EdgeAgentError)
    assert UnsupportedSchemaError("x").hint != SchemaError("x").hint
    assert not SchemaError("x").retryable


def test_metaschema_errors_keep_the_jsonschema_cause() -> None:
    with pytest.raises(SchemaError) as info:
        normalize_tool(tool_def(params_with({"n": {"type": "integer", "minimum": "0"}})))
    assert isinstance(info.value.__cause__, jsonschema.SchemaError)


# --- schema_hash --------------------------------------------------------------------


def spec(description: str = "Switch a light.", params: Any = None) -> ToolSpec:
    return normalize_tool(
        {"name": "set_light", "description": description, "parameters": params or SET_LIGHT_PARAMS}
    )


def test_schema_hash_is_stable_for_equal_definitions() -> None:
    reordered = dict(reversed(list(copy.deepcopy(SET_LIGHT_PARAMS).items())))
    assert spec().schema_hash == spec().schema_hash == spec(params=reordered).schema_hash
    assert spec().schema_hash == schema_hash([spec()])
    assert len(spec().schema_hash) == 16
    int(spec().schema_hash, 16)


def test_schema_hash_changes_with_anything_the_model_sees() -> None:
    base = spec().schema_hash
    other_params = copy.deepcopy(SET_LIGHT_PARAMS)
    other_params["properties"]["level"]["maximum"] = 10
    renamed = ToolSpec("set_lamp", "Switch a light.", spec().parameters)
    assert spec(description="Switch a lamp.").schema_hash != base
    assert spec(params=other_params).schema_hash != base
    assert renamed.schema_hash != base
    assert schema_hash([spec()], "parallel") != base
    assert schema_hash([spec(), renamed]) != schema_hash([renamed, spec()])


def test_schema_hash_is_the_same_in_another_process() -> None:
    """Grammar files on disk are keyed by this hash, so it must not depend on
    per-process state such as string hash randomisation."""
    code = (
        "import json, sys; from edge_agent.decoding.schema import normalize_tool; "
        "print(normalize_tool(json.loads(sys.argv[1])).schema_hash)"
    )
    definition = json.dumps(tool_def(SET_LIGHT_PARAMS, name="set_light"))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, definition],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    assert out.stdout.strip() == normalize_tool(json.loads(definition)).schema_hash


# --- known bugs -------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="schema.py: the siblings of a $ref are merged in raw, so a BFCL type there "
    "is never mapped and the metaschema check then rejects it",
)
def test_ref_siblings_are_normalised_like_any_other_node() -> None:
    params = params_with(
        {"opts": {"$ref": "#/$defs/Opts", "type": "dict"}},
        **{"$defs": {"Opts": {"properties": {"fast": {"type": "boolean"}}}}},
    )
    out = normalize_tool(tool_def(params)).parameters
    assert out["properties"]["opts"]["type"] == "object"
