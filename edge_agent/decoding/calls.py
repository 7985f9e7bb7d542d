"""The tool-call envelope: how a call looks in model output, and how it is read back.

We use the Qwen2.5 native format for every model family, because it is a
format small instruct models already know::

    <tool_call>
    {"name": "set_light", "arguments": {"room": "kitchen", "on": true}}
    </tool_call>

Several blocks in a row are parallel calls. Anything else is a plain-text
answer, which is how a model says "no tool applies". A block that repeats an
earlier one word for word is dropped: a grammar that admits several calls
cannot forbid a repeat, and a small model caught in a loop writes the same
call up to the limit (the 1.5B did on 21 of BFCL's first 100 parallel
items). The price: a request that really wants the same call twice ("two
numbers from N(5, 2)", 1 of BFCL's 200 parallel items) gets it once.

The parser is lenient on purpose: unconstrained output (benchmarks without a
grammar, cloud models) often arrives wrapped in Markdown fences, as a bare
JSON object, or as a JSON list. Whatever it recovers still goes through the
verifier; leniency here never lets an invalid call run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"

_OPEN_TAG = "<tool_call>"
_CLOSE_TAG = "</tool_call>"
# A block's body when it is not one whole JSON value: up to the closing tag.
_UNREADABLE_BODY_RE = re.compile(r"(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
# Only fences that hold JSON are call candidates: a ```python block in a text
# answer is an answer, not a broken call.
_FENCE_RE = re.compile(r"```(?:json|tool_call)?[ \t]*\n?\s*([\[{].*?)```", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One call as the model proposed it; not yet verified."""

    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    def key(self) -> str:
        """The call's identity: its name and arguments, key order ignored.
        Two calls with the same key are the same call made twice."""
        return _canonical(self.to_dict())


@dataclass(frozen=True)
class ParsedOutput:
    """What a model's text turned out to be.

    ``calls`` are the calls found; ``text`` is a plain answer when there were
    none; ``errors`` name the fragments that looked like calls but did not parse
    (a model mistake, recorded, never raised).
    """

    calls: tuple[ToolCall, ...] = ()
    text: str = ""
    errors: tuple[str, ...] = field(default=())

    @property
    def is_call(self) -> bool:
        return bool(self.calls)


def render_call(call: ToolCall) -> str:
    body = json.dumps(call.to_dict(), ensure_ascii=False)
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"


def parse_output(text: str) -> ParsedOutput:
    """Recover tool calls from model text (constrained or not)."""
    stripped = text.strip()
    bare = _split_json_values(stripped) if stripped.startswith(("{", "[")) else []
    if bare and all(_is_json(fragment) for fragment in bare):
        # A bare call first: its string arguments may mention the tags.
        return _parse_fragments(bare, text_if_none=text)
    blocks = _tagged_blocks(text)
    if blocks:
        return _parse_fragments(blocks)
    fenced = _FENCE_RE.findall(text)
    if fenced:
        return _parse_fragments(fenced, text_if_none=text)
    if bare:
        return _parse_fragments(bare, text_if_none=text)
    return ParsedOutput(text=stripped)


def _tagged_blocks(text: str) -> list[str]:
    """The body of each ``<tool_call>`` block. A body that is one JSON value
    ends where the value ends, so a closing tag inside a string argument (the
    grammar admits one) does not cut the call; any other body runs to the
    closing tag or the end, and is reported as a parse error later."""
    decoder = json.JSONDecoder()
    blocks: list[str] = []
    pos = text.find(_OPEN_TAG)
    while pos != -1:
        start = _skip_space(text, pos + len(_OPEN_TAG))
        try:
            _, end = decoder.raw_decode(text, start)
        except ValueError:
            match = _UNREADABLE_BODY_RE.match(text, start)
            assert match is not None  # the pattern matches any text
            blocks.append(match.group(1))
            pos = text.find(_OPEN_TAG, match.end())
            continue
        blocks.append(text[start:end])
        after = _skip_space(text, end)
        if text.startswith(_CLOSE_TAG, after):
            after += len(_CLOSE_TAG)
        pos = text.find(_OPEN_TAG, after)
    return blocks


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _is_json(fragment: str) -> bool:
    try:
        json.loads(fragment)
    except ValueError:
        return False
    return True


def _split_json_values(text: str) -> list[str]:
    """``{..}\n{..}`` (parallel calls without tags) as separate fragments."""
    decoder = json.JSONDecoder()
    fragments: list[str] = []
    pos = 0
    while pos < len(text):
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError:
            fragments.append(text[pos:])  # reported as a parse error later
            break
        fragments.append(text[pos:end])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return fragments


def _parse_fragments(fragments: list[str], text_if_none: str = "") -> ParsedOutput:
    calls: list[ToolCall] = []
    errors: list[str] = []
    for fragment in fragments:
        try:
            value = json.loads(fragment)
        except json.JSONDecodeError as exc:
            errors.append(f"not valid JSON ({exc.msg} at char {exc.pos}): {fragment[:80]!r}")
            continue
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item)
            if isinstance(call, ToolCall):
                calls.append(call)
            else:
                errors.append(call)
    if not calls and not errors:
        return ParsedOutput(text=text_if_none.strip())
    return ParsedOutput(calls=_without_repeats(calls), errors=tuple(errors))


def _without_repeats(calls: list[ToolCall]) -> tuple[ToolCall, ...]:
    seen: set[str] = set()
    kept: list[ToolCall] = []
    for call in calls:
        key = call.key()
        if key not in seen:
            seen.add(key)
            kept.append(call)
    return tuple(kept)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def closes_a_repeat(text: str) -> bool:
    """Does ``text`` end with a closed call block that repeats an earlier one?

    The decoder asks after each closing tag, so a model caught in a loop stops
    at its first repeat instead of decoding up to the call limit.
    """
    if not text.rstrip().endswith(_CLOSE_TAG):
        return False
    blocks = _tagged_blocks(text)
    if len(blocks) < 2:
        return False
    try:
        values = [_canonical(json.loads(block)) for block in blocks]
    except ValueError:
        return False
    return values[-1] in values[:-1]


def _as_call(item: object) -> ToolCall | str:
    """Accept {"name", "arguments"} and the OpenAI {"function": {...}} shape."""
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        item = item["function"]
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return f"a call must be an object with a string 'name': {str(item)[:80]!r}"
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return f"arguments of {item['name']!r} are not valid JSON"
    if not isinstance(args, dict):
        return f"arguments of {item['name']!r} must be an object"
    return ToolCall(name=item["name"], arguments=args)
