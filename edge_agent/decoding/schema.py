"""Tool-schema dialects (OpenAI, BFCL) turned into one normalised JSON Schema.

Everything downstream (grammar, verifier, prompts) sees only :class:`ToolSpec`
with a plain JSON Schema (Draft 2020-12) for its parameters, so the dialect
quirks live here and nowhere else:

* OpenAI: ``{"type": "function", "function": {name, description, parameters}}``
  or the bare inner object.
* BFCL: Python-flavoured types, mapped as dict→object, float→number,
  tuple→array, any→string (the official harness does the same).

Local ``$ref``s are inlined, so cycles are refused here rather than looping
later. Malformed schemas raise :class:`SchemaError` naming the tool and the
JSON path of the offending node.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.errors import SchemaError, UnsupportedSchemaError

JSONSchema = dict[str, Any]

_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
JSON_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array", "null"})
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_MAX_DEPTH = 12
# Keywords that only annotate; ignoring them changes nothing we enforce.
_COMPOSITE = ("anyOf", "oneOf")


@dataclass(frozen=True)
class ToolSpec:
    """One callable tool as the model sees it: a name, a description, and the
    JSON Schema of its arguments (always an object schema)."""

    name: str
    description: str
    parameters: JSONSchema = field(hash=False, compare=False)

    @property
    def schema_hash(self) -> str:
        return schema_hash([self])

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry, which is also what chat templates expect."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def schema_hash(tools: Iterable[ToolSpec], *extra: str) -> str:
    """A stable hash of tool definitions; keys grammar and prompt caches."""
    payload = [[t.name, t.description, t.parameters] for t in tools]
    text = json.dumps([payload, list(extra)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalize_tools(defs: object) -> list[ToolSpec]:
    """Parse a list of function definitions in either dialect."""
    if isinstance(defs, Mapping):
        defs = [defs]
    if not isinstance(defs, list):
        raise SchemaError(f"tools must be a JSON list of function definitions, got {_kind(defs)}")
    if not defs:
        raise SchemaError("the tools list is empty")
    tools = [normalize_tool(d, index=i) for i, d in enumerate(defs)]
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise SchemaError(f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
    return tools


def normalize_tool(definition: object, *, index: int = 0) -> ToolSpec:
    """Normalise one OpenAI- or BFCL-style function definition."""
    if not isinstance(definition, Mapping):
        raise SchemaError(f"tool #{index} must be an object, got {_kind(definition)}")
    if definition.get("type") == "function":
        inner = definition.get("function")
        if not isinstance(inner, Mapping):
            raise SchemaError(f"tool #{index}: 'function' must be an object")
        definition = inner
    name = definition.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SchemaError(
            f"tool #{index} has an invalid name {name!r}",
            hint="names are 1-64 characters of letters, digits, '_', '.', '-'",
        )
    description = definition.get("description", "")
    if not isinstance(description, str):
        raise SchemaError(f"tool {name!r}: description must be a string")
    raw = definition.get("parameters", {"type": "object", "properties": {}})
    params = _Normalizer(name, raw).root()
    if params.get("type") != "object":
        raise SchemaError(f"tool {name!r}: parameters must be an object schema")
    _check_metaschema(name, params)
    return ToolSpec(name=name, description=description, parameters=params)


def _check_metaschema(tool: str, params: JSONSchema) -> None:
    import jsonschema  # light, but keep `import edge_agent.decoding.schema` cheap

    try:
        jsonschema.Draft202012Validator.check_schema(params)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise SchemaError(f"tool {tool!r}: invalid schema at {path}: {exc.message}") from exc


def _kind(value: object) -> str:
    return type(value).__name__


class _Normalizer:
    """Walks one tool's parameter schema: maps dialect types, inlines $refs,
    and rejects what the rest of the system cannot handle."""

    def __init__(self, tool: str, root: object) -> None:
        self.tool = tool
        self.raw_root = root
        self.defs: dict[str, Any] = {}
        if isinstance(root, Mapping):
            for key in ("$defs", "definitions"):
                if isinstance(root.get(key), Mapping):
                    self.defs.update({f"#/{key}/{k}": v for k, v in root[key].items()})

    def fail(self, path: str, message: str, unsupported: bool = False) -> SchemaError:
        cls = UnsupportedSchemaError if unsupported else SchemaError
        return cls(f"tool {self.tool!r}: {message} at {path or '/'}")

    def root(self) -> JSONSchema:
        node = self.node(self.raw_root, "", ())
        if "type" not in node and "properties" in node:
            node["type"] = "object"
        if node.get("type") == "object":
            node.setdefault("properties", {})
        return node

    def node(self, raw: object, path: str, refs: tuple[str, ...]) -> JSONSchema:
        if raw is True or raw == {}:
            return {}
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"a schema must be an object, got {_kind(raw)}")
        if path.count("/") > _MAX_DEPTH * 2:
            raise self.fail(path, f"schema nested deeper than {_MAX_DEPTH} levels", True)
        if "$ref" in raw:
            return self.ref(raw, path, refs)
        out: JSONSchema = {
            k: copy.deepcopy(v)
            for k, v in raw.items()
            if k not in ("properties", "items", "$defs", "definitions", *_COMPOSITE)
        }
        self.map_type(out, path)
        self.check_enum(out, path)
        self.check_required(out, raw, path)
        if isinstance(raw.get("properties"), Mapping):
            out["properties"] = {
                str(k): self.node(v, f"{path}/properties/{k}", refs)
                for k, v in raw["properties"].items()
            }
        elif "properties" in raw:
            raise self.fail(path, "'properties' must be an object")
        if "items" in raw:
            out["items"] = self.items(raw["items"], path, refs)
        for key in _COMPOSITE:
            if key in raw:
                out[key] = self.alternatives(raw[key], f"{path}/{key}", refs)
        if "allOf" in out:
            raise self.fail(path, "allOf is not supported", unsupported=True)
        if out.get("properties"):
            # Declared properties are the whole interface: the grammar never emits
            # others, so the verifier refuses them too (an unconstrained model might).
            out.setdefault("additionalProperties", False)
        return out

    def items(self, raw: object, path: str, refs: tuple[str, ...]) -> JSONSchema:
        if isinstance(raw, list):  # tuple-style items (pre-2020-12)
            raise self.fail(f"{path}/items", "tuple-style 'items' lists are not supported", True)
        return self.node(raw, f"{path}/items", refs)

    def alternatives(self, raw: object, path: str, refs: tuple[str, ...]) -> list[JSONSchema]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(path, "must be a non-empty list of schemas")
        return [self.node(v, f"{path}/{i}", refs) for i, v in enumerate(raw)]

    def ref(self, raw: Mapping[str, Any], path: str, refs: tuple[str, ...]) -> JSONSchema:
        target = raw["$ref"]
        if target in refs:
            chain = " -> ".join((*refs, target))
            raise self.fail(path, f"$ref cycle ({chain})", unsupported=True)
        if target not in self.defs:
            raise self.fail(path, f"unresolvable $ref {target!r} (only local #/$defs refs)")
        resolved = self.node(self.defs[target], path, (*refs, target))
        siblings = {k: v for k, v in raw.items() if k != "$ref"}
        return {**resolved, **siblings}

    def map_type(self, out: JSONSchema, path: str) -> None:
        if "type" not in out:
            return
        kind = out["type"]
        if kind == "float":  # BFCL: Python float; the grammar then insists on a decimal point
            out.setdefault("format", "float")
        kinds = kind if isinstance(kind, list) else [kind]
        mapped = []
        for item in kinds:
            if not isinstance(item, str):
                raise self.fail(path, f"type must be a string, got {item!r}")
            name = _BFCL_TYPES.get(item, item)
            if name not in JSON_TYPES:
                raise self.fail(path, f"unknown type {item!r}")
            mapped.append(name)
        out["type"] = mapped if isinstance(kind, list) else mapped[0]

    def check_enum(self, out: JSONSchema, path: str) -> None:
        if "enum" not in out:
            return
        enum = out["enum"]
        if not isinstance(enum, list) or not enum:
            raise self.fail(path, "enum must be a non-empty list")
        for value in enum:
            if isinstance(value, dict | list):
                raise self.fail(path, "enum values must be scalars", unsupported=True)

    def check_required(self, out: JSONSchema, raw: Mapping[str, Any], path: str) -> None:
        required = raw.get("required")
        if required is None:
            return
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.fail(path, "required must be a list of property names")
        props = raw.get("properties")
        if isinstance(props, Mapping):
            # BFCL data sometimes lists names it never declares; drop them so
            # that a call can satisfy the schema at all.
            out["required"] = list(dict.fromkeys(r for r in required if r in props))
