"""`edge-agent config check FILE | example`: validate a config, or print one.

The example is generated from the pydantic fields (description, default,
bounds, choices), so it cannot drift from what ``check`` and the daemon accept.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length >="),
    (annotated_types.MaxLen, "max_length", "length <="),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("config", help="check a config file, or print an example")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate FILE; errors name the line and the key")
    check.add_argument("file", type=Path, metavar="FILE", help="the TOML config to check")
    check.set_defaults(handler=_check)
    example = sub.add_parser("example", help="print a full config with every option explained")
    example.set_defaults(handler=_example)


def _check(args: argparse.Namespace) -> int:
    from edge_agent.config import load_config
    from edge_agent.runtime.api import resolve_token

    config = load_config(args.file)
    resolve_token(config.server)  # a non-loopback bind needs a token, a token file 0600
    print(f"{args.file}: ok")
    return 0


def _example(args: argparse.Namespace) -> int:
    from edge_agent.config import EdgeAgentConfig

    print(example_toml(EdgeAgentConfig), end="")
    return 0


def example_toml(model: type[BaseModel]) -> str:
    """A commented TOML file of every field of ``model`` at its default.

    Optional sub-tables that are unset by default are shown commented out,
    with their keys, so the file documents them too.
    """
    head = [
        "# edge-agent configuration: every option at its default.",
        "# Any key may also be set in the environment: EDGE_AGENT_<TABLE>__<KEY>.",
        "# Unknown keys are errors. Check a file with: edge-agent config check FILE",
    ]
    return "\n".join([*head, *_table(model, (), commented=False)]) + "\n"


def _table(model: type[BaseModel], prefix: tuple[str, ...], *, commented: bool) -> Iterator[str]:
    mark = "# " if commented else ""
    tables = []
    for name, info in model.model_fields.items():
        sub, optional = _submodel(info)
        if sub is not None and (not optional or info.is_required() or _default(info) is None):
            tables.append((name, info, sub, commented or optional))
        else:
            yield ""
            yield from _field(name, info, prefix, mark)
    for name, info, sub, hidden in tables:
        yield ""
        if info.description:
            yield f"# {info.description}" + (
                " (unset by default)" if hidden and not commented else ""
            )
        yield f"{'# ' if hidden else ''}[{'.'.join((*prefix, name))}]"
        yield from _table(sub, (*prefix, name), commented=hidden)


def _submodel(info: FieldInfo) -> tuple[type[BaseModel] | None, bool]:
    """(the model of a sub-table field, whether it is optional)."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, optional
    return None, False


def _default(info: FieldInfo) -> object:
    if info.is_required():
        return None
    return to_jsonable_python(info.get_default(call_default_factory=True))


def _field(name: str, info: FieldInfo, prefix: tuple[str, ...], mark: str) -> Iterator[str]:
    if info.description:
        yield f"# {info.description}"
    yield f"# {_kind(info)}; env EDGE_AGENT_{'__'.join((*prefix, name)).upper()}"
    if info.is_required():
        yield f"# {name} = (required)"
        return
    default = _default(info)
    if default is None:
        yield f"# {name} = (unset)"
    else:
        yield f"{mark}{name} = {_toml(default)}"


def _kind(info: FieldInfo) -> str:
    """The type, its choices and bounds, in words."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in args if a is not type(None))
    bounds = [
        f"{word} {getattr(meta, attr)}"
        for meta in info.metadata
        for cls, attr, word in _BOUNDS
        if isinstance(meta, cls)
    ]
    parts = [_name(annotation), *bounds, *(["optional"] if optional else [])]
    return ", ".join(parts)


def _name(annotation: object) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(c) for c in args)
    if origin in (list, tuple, set, frozenset) and args:
        return f"list of {_name(args[0])}"
    if origin is dict and len(args) == 2:
        return f"table of {_name(args[0])} to {_name(args[1])}"
    if isinstance(annotation, type) and annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml(value: object) -> str:
    """A JSON-mode value as TOML (dicts as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        # TOML has no null: an unset key is left out, which means its default.
        kept = {k: v for k, v in value.items() if v is not None}
        items = ", ".join(f"{_key(str(k))} = {_toml(v)}" for k, v in kept.items())
        return "{ " + items + " }" if items else "{}"
    return json.dumps(str(value), ensure_ascii=False)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
