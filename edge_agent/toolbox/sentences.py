"""The sentence a person reads about a tool call once it ran.

The raw record (arguments, result, error) stays in ``executions`` for
programs; people get one sentence per call: "Kitchen light on, 100%." or
"The temperature in the living room is 21.5 °C." A template beats a second
model step here: it is instant, it cannot misquote the result, and it reads
the same in every run.

A tool says how its result reads with ``@tool(say=...)``: a ``str.format``
template or a function, over the call's arguments overlaid with the fields
of its result (when the result is a JSON object). A tool without one gets a
generic sentence built from its name and result. A template that does not
fit the result (a missing field) falls back to the generic sentence rather
than failing a call that already ran.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge_agent.decoding.calls import ToolCall
from edge_agent.toolbox.registry import Tool

_MAX_VALUE_CHARS = 160


def said(
    tool: Tool | None, call: ToolCall, *, status: str, value: Any = None, error: str = ""
) -> str:
    """One sentence for a call: what it did, what it read, or why it did not run."""
    if status == "unconfirmed":
        return f"{_label(call.name)} was not run: it needs your confirmation."
    if status != "done":
        why = error or "it failed"
        return f"{_label(call.name)} failed: {_clip(why)}."
    fields = _fields(call.arguments, value)
    say = tool.policy.say if tool is not None else None
    if say is not None:
        try:
            text = say(fields) if callable(say) else say.format_map(fields)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            text = ""
        if text.strip():
            return text.strip()
    return _generic(call, value)


def _fields(arguments: Mapping[str, Any], value: Any) -> dict[str, Any]:
    fields = dict(arguments)
    if isinstance(value, Mapping):
        fields.update(value)
    else:
        fields["result"] = value
    return fields


def _generic(call: ToolCall, value: Any) -> str:
    if isinstance(value, Mapping) and "result" in value:
        value = value["result"]
    if value is None or value == {}:
        return f"Done: {place(call.name)}."
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"{_label(call.name)}: {_clip(shown)}."


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _clip(text: str) -> str:
    text = " ".join(str(text).split()).rstrip(".")
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def place(name: str) -> str:
    """``"living_room"`` as ``"living room"``: enum values read as words."""
    return name.replace("_", " ")


UNIT_SYMBOLS = {"C": "°C", "F": "°F", "K": "K", "%": "%", "ppm": "ppm"}


def with_unit(value: Any, unit: str | None) -> str:
    """``21.5`` and ``"C"`` as ``"21.5 °C"``; ``True`` as ``"yes"``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not unit:
        return str(value)
    symbol = UNIT_SYMBOLS.get(unit, unit)
    return f"{value}{symbol}" if symbol == "%" else f"{value} {symbol}"


__all__ = ["UNIT_SYMBOLS", "place", "said", "with_unit"]
