"""Normalised tool schemas → one GBNF grammar (pure; exhaustively tested).

The grammar is the union "call exactly one of these tools" (or several, for
parallel calls), optionally "or answer in plain text" (how a model says no
tool applies). Inside each call the arguments follow the tool's schema.

Enforced by the grammar: tool names, required properties, no unknown
properties, enum/const, string min/max length, array min/max items,
integer vs number, booleans, null, nested objects and arrays, anyOf/oneOf.
Numbers have a bounded form (no exponent, limited digits) so nothing like
``3.1e+488`` can appear; a non-negative ``minimum`` also removes the sign.

Left to the verifier (a grammar cannot express them cheaply): numeric
ranges, ``pattern``, ``format``, ``multipleOf`` and cross-field rules.

Properties are emitted required-first, then optional ones in schema order;
JSON object order carries no meaning, so this loses nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge_agent.calls import CALL_CLOSE, CALL_OPEN
from edge_agent.errors import UnsupportedSchemaError
from edge_agent.resources import data_path
from edge_agent.schema import JSONSchema, ToolSpec, schema_hash

GRAMMARS_DIR = data_path("grammars")
_PRIMITIVES_FILE = GRAMMARS_DIR / "json.gbnf"
_MAX_REPEAT = 64  # longer {m,n} bounds make llama.cpp expand huge rule sets
_MAX_STRING_BOUND = 256


@dataclass(frozen=True)
class GrammarOptions:
    """Which answers besides a single call the grammar admits."""

    parallel: bool = False
    allow_text: bool = False
    max_calls: int = 8


@dataclass(frozen=True)
class Grammar:
    text: str
    key: str


def build_grammar(tools: Sequence[ToolSpec], options: GrammarOptions = GrammarOptions()) -> Grammar:
    """The GBNF for a set of tools, cached in memory by schema hash."""
    key = schema_hash(tools, repr(options))
    return Grammar(_build_cached(key, tuple(tools), options), key)


@lru_cache(maxsize=64)
def _build_cached(key: str, tools: tuple[ToolSpec, ...], options: GrammarOptions) -> str:
    del key  # part of the cache key only: ToolSpec hashes ignore parameters
    builder = _Builder()
    call_names = [builder.tool_call(i, t) for i, t in enumerate(tools)]
    builder.rules["tool-call"] = " | ".join(call_names)
    # Small models often skip the tags their template asks for; both forms
    # are accepted, and the tags are what the parser looks for first.
    block = f"{_lit(CALL_OPEN)} tool-call {_lit(CALL_CLOSE)} | tool-call"
    calls = "tool-call-block"
    if options.parallel and options.max_calls > 1:
        more = min(options.max_calls - 1, _MAX_REPEAT)
        calls = f'tool-call-block ( "\\n" tool-call-block ){{0,{more}}}'
    builder.rules["tool-call-block"] = block
    root = calls
    if options.allow_text:
        builder.rules["text-answer"] = r"[^<{\[`\x00-\x20] [^\x00]*"
        root = f"{calls} | text-answer"
    return builder.render(root)


def write_grammar(grammar: Grammar, directory: Path | None = None) -> Path:
    """Store a grammar as ``<key>.gbnf`` (atomically) and return its path."""
    directory = directory or grammar_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{grammar.key}.gbnf"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(grammar.text, encoding="utf-8")
        tmp.replace(path)
    return path


def grammar_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("EDGE_AGENT_GRAMMAR_DIR", Path(base) / "edge-agent" / "grammars"))


@lru_cache(maxsize=1)
def _primitives() -> str:
    return _PRIMITIVES_FILE.read_text(encoding="utf-8")


def _lit(text: str) -> str:
    """A GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_lit(value: Any) -> str:
    return _lit(json.dumps(value, ensure_ascii=False))


def _repeat(item: str, low: int, high: int | None, sep: str) -> str:
    """``item (sep item)*`` with between ``low`` and ``high`` items."""
    if high is not None and high == 0:
        return ""
    tail_low = max(low - 1, 0)
    if high is None:
        tail = f"( {sep} {item} )*" if tail_low == 0 else f"( {sep} {item} ){{{tail_low},}}"
    elif high == 1:
        tail = ""
    else:
        tail = f"( {sep} {item} ){{{tail_low},{high - 1}}}"
    seq = f"{item} {tail}".strip()
    return seq if low >= 1 else f"( {seq} )?"


class _Builder:
    """Accumulates named rules; identical bodies share one name."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self.path = ""

    def render(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n\n" + _primitives()

    def add(self, hint: str, body: str) -> str:
        if body in self._by_body:
            return self._by_body[body]
        base = re.sub(r"[^a-zA-Z0-9]+", "-", hint).strip("-").lower() or "r"
        if base.startswith(("json-", "root", "tool-call", "text-answer")):
            base = f"u-{base}"  # never shadow a fixed rule name
        name, n = base, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        self._by_body[body] = name
        return name

    def fail(self, message: str) -> UnsupportedSchemaError:
        return UnsupportedSchemaError(f"{message} at {self.path or '/'}")

    def tool_call(self, index: int, tool: ToolSpec) -> str:
        self.path = f"{tool.name}:"
        try:
            args = self.schema(tool.parameters, f"{tool.name}-args")
        except UnsupportedSchemaError as exc:
            raise UnsupportedSchemaError(f"tool {tool.name!r}: {exc.message}") from exc
        head = _lit('{"name": ' + json.dumps(tool.name) + ', "arguments": ')
        return self.add(f"call-{index}-{tool.name}", f'{head} {args} "}}"')

    def schema(self, node: JSONSchema, hint: str) -> str:
        if "const" in node:
            return _json_lit(node["const"])
        if "enum" in node:
            return self.add(hint, " | ".join(_json_lit(v) for v in node["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self.alternatives(node, key, hint)
        kind = node.get("type")
        if isinstance(kind, list):
            alts = [self.schema({**node, "type": k}, f"{hint}-{k}") for k in kind]
            return self.add(hint, " | ".join(alts))
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else None
        return self.typed(node, kind, hint)

    def typed(self, node: JSONSchema, kind: str | None, hint: str) -> str:
        if kind == "string":
            return self.string(node, hint)
        if kind == "integer":
            return "json-uint" if _non_negative(node) else "json-int"
        if kind == "number":
            if node.get("format") == "float":  # BFCL's Python float: 5.0, never 5
                return "json-ufloat" if _non_negative(node) else "json-float"
            return "json-unumber" if _non_negative(node) else "json-number"
        if kind == "boolean":
            return "json-bool"
        if kind == "null":
            return "json-null"
        if kind == "array":
            return self.array(node, hint)
        if kind == "object":
            return self.object(node, hint)
        return "json-value"

    def alternatives(self, node: JSONSchema, key: str, hint: str) -> str:
        siblings = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        alts = [self.schema({**siblings, **alt}, f"{hint}-{i}") for i, alt in enumerate(node[key])]
        return self.add(hint, " | ".join(dict.fromkeys(alts)))

    def string(self, node: JSONSchema, hint: str) -> str:
        low = int(node.get("minLength", 0))
        high = node.get("maxLength")
        if low == 0 and high is None:
            return "json-string"
        if low > _MAX_STRING_BOUND or (high is not None and int(high) > _MAX_STRING_BOUND):
            # llama.cpp expands {m,n} into m+n rules; past this bound the
            # verifier checks the length instead.
            return "json-string"
        if high is not None and int(high) < low:
            raise self.fail(f"maxLength {high} < minLength {low}")
        bound = f"{{{low},}}" if high is None else f"{{{low},{int(high)}}}"
        return self.add(f"{hint}-str", f'"\\"" json-char{bound} "\\""')

    def array(self, node: JSONSchema, hint: str) -> str:
        items = node.get("items")
        item = self.schema(items, f"{hint}-item") if isinstance(items, dict) else "json-value"
        low = int(node.get("minItems", 0))
        high = node.get("maxItems")
        if high is not None and int(high) < low:
            raise self.fail(f"maxItems {high} < minItems {low}")
        if low > _MAX_REPEAT or (high is not None and int(high) > _MAX_REPEAT):
            low, high = min(low, 1), None  # left to the verifier, see _MAX_REPEAT
        inner = _repeat(item, low, None if high is None else int(high), '", "')
        return self.add(hint, f'"[" {inner} "]"')

    def object(self, node: JSONSchema, hint: str) -> str:
        props: dict[str, JSONSchema] = node.get("properties") or {}
        if not props:
            return self.free_object(node, hint)
        required = [k for k in node.get("required", []) if k in props]
        optional = [k for k in props if k not in required]
        pairs = {k: self.pair(k, props[k], f"{hint}-{k}") for k in props}
        if required:
            body = ' ", " '.join(pairs[k] for k in required)
            body += "".join(f' ( ", " {pairs[k]} )?' for k in optional)
        else:
            body = f"( {self.optional_chain([pairs[k] for k in optional], hint)} )?"
        return self.add(hint, f'"{{" {body} "}}"')

    def pair(self, key: str, schema: JSONSchema, hint: str) -> str:
        outer = self.path
        self.path = f"{outer}/properties/{key}"
        value = self.schema(schema, hint)
        self.path = outer
        return f"{_lit(json.dumps(key, ensure_ascii=False) + ': ')} {value}"

    def optional_chain(self, pairs: list[str], hint: str) -> str:
        """Any non-empty, in-order subset of optional pairs, in linear size:
        ``tail_i ::= (", " pair_i)? tail_{i+1}`` and a choice of first pair."""
        tails: list[str] = [""] * (len(pairs) + 1)
        for i in range(len(pairs) - 1, 0, -1):
            body = f'( ", " {pairs[i]} )? {tails[i + 1]}'.strip()
            tails[i] = self.add(f"{hint}-tail-{i}", body)
        firsts = [f"{pairs[i]} {tails[i + 1]}".strip() for i in range(len(pairs))]
        return self.add(f"{hint}-opt", " | ".join(firsts))

    def free_object(self, node: JSONSchema, hint: str) -> str:
        extra = node.get("additionalProperties")
        if extra is False or ("properties" in node and extra is None):
            return '"{}"'  # a tool without parameters takes exactly {}
        if not isinstance(extra, dict) or not extra:
            return "json-object"
        value = self.schema(extra, f"{hint}-value")
        pair = f'json-string ": " {value}'
        return self.add(hint, f'"{{" ( {pair} ( ", " {pair} )* )? "}}"')


def _non_negative(node: JSONSchema) -> bool:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    return isinstance(low, int | float) and not isinstance(low, bool) and low >= 0
