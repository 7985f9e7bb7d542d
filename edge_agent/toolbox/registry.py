"""The tool registry: ``@tool`` declarations and JSON definitions, one catalogue.

A decorated function stays a plain function; the decorator only attaches a
:class:`ToolPolicy`. Nothing is registered globally: a :class:`Registry` is
built by scanning modules (the built-in ``tools/`` folder, ``--tools-dir``),
so two agents in one process never share hidden state.

Typed parameters become the JSON schema through pydantic, so the grammar,
the verifier and the function signature cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, PydanticUserError, ValidationError, create_model
from pydantic_core import SchemaError as CoreSchemaError

from edge_agent.decoding.schema import ToolSpec, normalize_tool
from edge_agent.errors import SchemaError, ToolDefinitionError, ToolNotFoundError
from edge_agent.resources import data_path

SideEffect = Literal["read", "actuate", "dangerous"]
F = TypeVar("F", bound=Callable[..., Any])
Say = str | Callable[[dict[str, Any]], str]
"""How a tool's result reads as a sentence: a ``str.format`` template or a
function, both over the call's arguments overlaid with its result's fields
(see :mod:`edge_agent.toolbox.sentences`)."""

_MARK = "__edge_agent_tool__"
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
BUILTIN_TOOLS_DIR = data_path("tools")


@dataclass(frozen=True)
class ToolPolicy:
    """What a tool may do and how carefully it must be run.

    ``state``: True keeps one folder per module between calls; a string
    names that folder instead (an MCP server's, shared by its tools).
    ``read``: paths outside the sandbox's defaults the call may read, e.g.
    the program of an MCP server it starts."""

    description: str = ""
    side_effect: SideEffect = "read"
    timeout_s: float = 10.0
    network: bool = False
    requires_confirmation: bool = False
    rate_limit: str | None = None
    tags: tuple[str, ...] = ()
    trusted: bool = False
    state: bool | str = False
    name: str | None = None
    say: Say | None = field(default=None, compare=False)
    read: tuple[str, ...] = ()

    def rate_per_second(self) -> tuple[int, float] | None:
        """``"6/min"`` as ``(6, 60.0)``: at most 6 calls in any 60 s window."""
        if self.rate_limit is None:
            return None
        match = _RATE_RE.match(self.rate_limit)
        if match is None:
            raise ToolDefinitionError(f"invalid rate_limit {self.rate_limit!r}, e.g. '6/min'")
        return int(match.group(1)), float(_RATE_UNITS[match.group(2)])


def tool(  # noqa: PLR0913 - these are the documented @tool options
    description: str = "",
    *,
    side_effect: SideEffect = "read",
    timeout_s: float = 10.0,
    network: bool = False,
    requires_confirmation: bool = False,
    rate_limit: str | None = None,
    tags: Iterable[str] = (),
    trusted: bool = False,
    state: bool = False,
    name: str | None = None,
    say: Say | None = None,
) -> Callable[[F], F]:
    """Declare a function as a tool. Its signature becomes its schema.

    ``state=True``: the tool keeps files between calls. The sandbox then
    gives it one persistent folder, ``$EDGE_AGENT_TOOL_STATE``, shared by the
    tools of the same module; every other path stays per-call.

    ``say``: the sentence a person reads once the call ran, e.g.
    ``"{room} light set to {brightness}%."`` (arguments and result fields).
    """
    policy = ToolPolicy(
        description=description,
        side_effect=side_effect,
        timeout_s=timeout_s,
        network=network,
        requires_confirmation=requires_confirmation or side_effect == "dangerous",
        rate_limit=rate_limit,
        tags=tuple(tags),
        trusted=trusted,
        state=state,
        name=name,
        say=say,
    )
    policy.rate_per_second()  # fail at import time, not at the first call

    def mark(func: F) -> F:
        setattr(func, _MARK, policy)
        return func

    return mark


@dataclass(frozen=True)
class Tool:
    """A registered tool: what the model sees (``spec``), how it may run
    (``policy``), how arguments are checked (``args_model``) and where the
    implementation lives, so a sandbox child can import it again.
    ``builtin`` marks the project's own tools (``tools/``): the sandbox runs
    them even where it cannot contain a third-party tool."""

    spec: ToolSpec
    policy: ToolPolicy
    args_model: type[BaseModel] | None
    module_file: Path | None = None
    function: str | None = None
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    builtin: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def executable(self) -> bool:
        return self.module_file is not None and self.function is not None


class Registry:
    """An ordered catalogue of tools by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> None:
        if item.name in self._tools:
            raise ToolDefinitionError(f"tool {item.name!r} is defined twice")
        self._tools[item.name] = item

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFoundError(f"unknown tool {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def subset(self, names: Iterable[str]) -> Registry:
        return Registry(self.get(n) for n in names)

    @classmethod
    def from_functions(cls, *funcs: Callable[..., Any]) -> Registry:
        """A registry of ``@tool`` functions, for a program that embeds the
        agent: its tools live in its own code, not in a tools folder. The
        sandbox re-imports each from its source file, so they must be
        defined at the top level of a module (a script's ``__main__`` guard
        keeps the rest of the script from running there)."""
        registry = cls()
        for func in funcs:
            policy = getattr(func, _MARK, None)
            if not isinstance(policy, ToolPolicy):
                name = getattr(func, "__name__", repr(func))
                raise ToolDefinitionError(f"{name} is not marked with @tool")
            source = inspect.getsourcefile(func)
            path = Path(source).resolve() if source else None
            registry.add(tool_from_function(func, policy, path, func.__name__))
        return registry

    @classmethod
    def from_dirs(cls, *dirs: Path, builtin: bool = True) -> Registry:
        """Load every ``*.py`` module (and ``*.json`` tools file) in the folders."""
        registry = cls()
        folders = [BUILTIN_TOOLS_DIR, *dirs] if builtin else list(dirs)
        for folder in folders:
            if not folder.is_dir():
                raise ToolDefinitionError(f"tools folder {folder} does not exist")
            ours = builtin and folder == BUILTIN_TOOLS_DIR
            for item in _tools_in(folder):
                registry.add(dataclasses.replace(item, builtin=True) if ours else item)
        return registry


def _tools_in(folder: Path) -> Iterator[Tool]:
    for path in sorted(folder.glob("*.py")):
        if not path.name.startswith("_"):
            yield from tools_from_module(path)
    for path in sorted(folder.glob("*.json")):
        yield from tools_from_json_file(path)


def load_module(path: Path) -> ModuleType:
    """Import a tool module by file path under a private name.

    The name is derived from the path *and the file's bytes*: a module is
    imported once per version of its file, so a reload (the daemon's SIGHUP)
    after an edit reads the new code. A name from the path alone kept the old
    module in ``sys.modules``: the verifier checked calls against the old
    schema while the sandbox, importing the file afresh, ran the new code.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ToolDefinitionError(f"cannot read tools module {path}: {exc.strerror}") from exc
    key = str(path.resolve()).encode() + b"\0" + content
    digest = hashlib.sha1(key, usedforsecurity=False).hexdigest()[:12]
    mod_name = f"edge_agent_tools_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ToolDefinitionError(f"cannot import tools module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ToolDefinitionError(f"importing {path} failed: {exc}") from exc
    return module


def tools_from_module(path: Path) -> list[Tool]:
    module = load_module(path)
    found = []
    for attr, value in vars(module).items():
        policy = getattr(value, _MARK, None)
        defined_here = getattr(value, "__module__", None) == module.__name__
        if isinstance(policy, ToolPolicy) and callable(value) and defined_here:
            found.append(tool_from_function(value, policy, path, attr))
    return found


def tool_from_function(
    func: Callable[..., Any], policy: ToolPolicy, path: Path | None = None, attr: str | None = None
) -> Tool:
    name = policy.name or func.__name__
    model = args_model_for(func, name)
    params = model.model_json_schema()
    description = policy.description or inspect.getdoc(func) or ""
    definition = {"name": name, "description": description.split("\n\n")[0], "parameters": params}
    try:
        spec = normalize_tool(_strip_titles(definition))
    except SchemaError as exc:
        raise ToolDefinitionError(f"{name}: {exc.message}") from exc
    return Tool(spec, policy, model, path, attr or func.__name__, func)


def args_model_for(func: Callable[..., Any], name: str) -> type[BaseModel]:
    """A pydantic model of the function's parameters (extra keys forbidden)."""
    fields: dict[str, Any] = {}
    hints = _type_hints(func)
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name!r}: *args/**kwargs cannot be described")
        if param.name not in hints:
            raise ToolDefinitionError(f"tool {name!r}: parameter {param.name!r} has no type hint")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    # strict: the model's JSON must already have the right types ("40" is not 40).
    config = ConfigDict(extra="forbid", strict=True)
    try:
        return create_model(f"{name}_args", __config__=config, **fields)
    except (PydanticUserError, CoreSchemaError) as exc:  # a type or a pattern it cannot use
        raise ToolDefinitionError(f"tool {name!r}: {exc}") from exc


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # NameError etc. from unresolvable annotations
        raise ToolDefinitionError(f"{func.__name__}: unresolvable type hints: {exc}") from exc


_VALUE_KEYWORDS = frozenset({"default", "enum", "const", "examples"})


def _strip_titles(node: Any) -> Any:
    """pydantic adds ``title`` everywhere; it only costs prompt tokens.
    Values (defaults, enums) are data and are left alone."""
    if isinstance(node, dict):
        return {
            k: v if k in _VALUE_KEYWORDS else _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def tools_from_json_file(path: Path) -> list[Tool]:
    """Function definitions with an ``"implementation": "file.py:function"``
    reference (relative to the JSON file); without one they are schema-only."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolDefinitionError(f"cannot read tools file {path}: {exc.strerror}") from exc
    try:
        defs = json.loads(text)
    except ValueError as exc:
        raise ToolDefinitionError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(defs, list):
        raise ToolDefinitionError(f"{path}: expected a JSON list of function definitions")
    return [_tool_from_definition(d, path, i) for i, d in enumerate(defs)]


def _tool_from_definition(definition: Any, path: Path, index: int) -> Tool:
    spec = normalize_tool(definition, index=index)
    impl = definition.get("implementation") if isinstance(definition, dict) else None
    policy_keys = set(ToolPolicy.__dataclass_fields__) - {"name", "description"}
    options = {k: v for k, v in definition.items() if k in policy_keys}
    for key in ("tags", "read"):
        if key in options:
            value = options[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ToolDefinitionError(
                    f"{path}: tool {spec.name!r}: {key} must be a list of strings"
                )
            options[key] = tuple(value)
    try:
        policy = ToolPolicy(description=spec.description, **options)
    except TypeError as exc:
        raise ToolDefinitionError(f"{path}: tool {spec.name!r}: {exc}") from exc
    if impl is None:
        return Tool(spec, policy, None)
    file_part, _, func_name = str(impl).partition(":")
    module_file = (path.parent / file_part).resolve()
    if not func_name or not module_file.is_file():
        raise ToolDefinitionError(f"{path}: bad implementation reference {impl!r}")
    return Tool(spec, policy, None, module_file, func_name)


def validate_args(item: Tool, arguments: dict[str, Any]) -> BaseModel | None:
    """Build the pydantic model; raises ``ValidationError`` for the verifier."""
    if item.args_model is None:
        return None
    return item.args_model.model_validate(arguments)


__all__ = [
    "Registry",
    "SideEffect",
    "Tool",
    "ToolPolicy",
    "ValidationError",
    "tool",
    "tools_from_json_file",
    "tools_from_module",
]
