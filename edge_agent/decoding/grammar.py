"""Normalised tool schemas → one GBNF grammar (pure; exhaustively tested).

The grammar is the union "call exactly one of these tools" (or several, for
parallel calls), optionally "or answer in plain text" (how a model says no
tool applies). Inside each call the arguments follow the tool's schema.

Enforced by the grammar: tool names, required properties, no unknown
properties, enum/const, string min/max length, array min/max items,
integer vs number, booleans, null, nested objects and arrays, anyOf/oneOf.
Numbers have a bounded form (no exponent, limited digits) so nothing like
``3.1e+488`` can appear; a non-negative ``minimum`` also removes the sign.

Left to the verifier by the GBNF (a GBNF cannot express them cheaply):
numeric ranges, ``pattern``, ``format``, ``multipleOf`` and cross-field rules.

The same schemas also give a Lark grammar for llguidance (:attr:`Grammar.lark`,
completed by :func:`lark_grammar`). It has the same rules as the GBNF, so
both engines accept the same text, except at the leaves the GBNF cannot
constrain: a number with a range or ``multipleOf`` and a string with a
``pattern`` or a ``format`` llguidance knows become ``%json {leaf schema}``,
compiled by llguidance's own JSON-schema compiler, and hold at decode time.
Whole objects are not handed to that compiler: it would order properties by
the schema rather than required-first, admit exponents and unbounded digits,
and could not insist on a decimal point for BFCL floats, so outputs would
differ from the GBNF engine's on ordinary schemas.

Properties are emitted required-first, then optional ones in schema order;
JSON object order carries no meaning, so this loses nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge_agent.decoding.calls import CALL_CLOSE, CALL_OPEN
from edge_agent.decoding.schema import JSONSchema, ToolSpec, schema_hash
from edge_agent.errors import UnsupportedSchemaError
from edge_agent.resources import data_path

GRAMMARS_DIR = data_path("grammars")
_PRIMITIVES_FILE = GRAMMARS_DIR / "json.gbnf"
_TAG_RE = re.compile(r"</?[A-Za-z_][A-Za-z0-9_|]*>")
_MAX_REPEAT = 64  # longer {m,n} bounds make llama.cpp expand huge rule sets
_MAX_STRING_BOUND = 256
_LARK_PRIMITIVES_FILE = GRAMMARS_DIR / "json.lark"
# String formats llguidance 1.9's JSON compiler enforces; any other format is
# left to the verifier (llguidance refuses a schema with an unknown format).
LLG_FORMATS = frozenset(
    {"date", "date-time", "time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uuid"}
)
_NUMERIC_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


@dataclass(frozen=True)
class GrammarOptions:
    """Which answers besides a single call the grammar admits."""

    parallel: bool = False
    allow_text: bool = False
    max_calls: int = 8
    # Tools whose numeric bounds the grammar leaves to the verifier: for a
    # lock, a valve or a heater, "open it to 500 %" must be refused with its
    # reason, not bent by the mask into a valid 50.
    verifier_bounds: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Grammar:
    """A tool grammar: ``text`` is the GBNF; ``lark`` the same rules for
    llguidance, without their start rule and tags (see :func:`lark_grammar`;
    empty for a grammar not built from schemas). ``value``: not tool calls
    but one JSON value, a client's structured output (see
    :func:`build_value_grammar`)."""

    text: str
    key: str
    lark: str = ""
    value: bool = False


def build_grammar(tools: Sequence[ToolSpec], options: GrammarOptions = GrammarOptions()) -> Grammar:
    """The GBNF (and Lark) for a set of tools, cached in memory by schema hash."""
    key = schema_hash(tools, repr(options))
    gbnf, lark = _build_cached(key, tuple(tools), options)
    return Grammar(gbnf, key, lark)


@lru_cache(maxsize=64)
def _build_cached(
    key: str, tools: tuple[ToolSpec, ...], options: GrammarOptions
) -> tuple[str, str]:
    del key  # part of the cache key only: ToolSpec hashes ignore parameters
    return _assemble(_Builder(), tools, options), _assemble(_LarkBuilder(), tools, options)


def _assemble(builder: _Builder, tools: tuple[ToolSpec, ...], options: GrammarOptions) -> str:
    call_names = [
        builder.tool_call(i, t, bounded=t.name not in options.verifier_bounds)
        for i, t in enumerate(tools)
    ]
    builder.rules["tool-call"] = " | ".join(call_names)
    # Small models often skip the tags their template asks for; both forms
    # are accepted, and the tags are what the parser looks for first.
    builder.rules["tool-call-block"] = builder.block()
    calls = "tool-call-block"
    if options.parallel and options.max_calls > 1:
        more = min(options.max_calls - 1, _MAX_REPEAT)
        calls = f'tool-call-block ( "\\n" tool-call-block ){{0,{more}}}'
    if options.allow_text:
        builder.rules["text-answer"] = builder.text_answer
    return builder.render(calls, allow_text=options.allow_text)


def build_value_grammar(schema: JSONSchema | None) -> Grammar:
    """One JSON value valid against ``schema`` (any object when None): the
    grammar of OpenAI's ``response_format``. llguidance compiles the schema
    itself (``%json``); the GBNF, for the GBNF engine and as the fallback,
    comes from the same builder as the tool grammars."""
    node: JSONSchema = schema if schema is not None else {"type": "object"}
    text = json.dumps(node, ensure_ascii=False, sort_keys=True)
    builder = _Builder()
    builder.path = "response_format:"
    gbnf = builder.render(builder.schema(node, "value"), allow_text=False)
    return Grammar(gbnf, "value-" + schema_hash([], text), "%json " + text, value=True)


def lark_grammar(
    grammar: Grammar, special_tags: Collection[str] = (), *, calls_only: bool = False
) -> str:
    """The complete llguidance grammar of ``grammar``.

    ``special_tags`` are the envelope tags (``<tool_call>``) that are one
    special token of the model: llguidance never matches a special token by
    its text, so such a tag is that token, or the same tag spelled out (the
    model sometimes writes ``<`` + ``tool`` + ..., which the GBNF engine,
    seeing only text, accepts too). ``calls_only`` drops the plain-text
    answer: the grammar a lazy trigger switches to.
    """
    if not grammar.lark:
        raise UnsupportedSchemaError("this grammar was not built from schemas; it has no Lark form")
    if grammar.value:
        return f"%llguidance {{}}\n\nstart: {grammar.lark}"
    text = "\ntext-answer:" in grammar.lark and not calls_only
    start = "start: tool-calls | text-answer" if text else "start: tool-calls"
    opening = _lark_tagged(CALL_OPEN, special_tags)
    closing = _lark_tagged(CALL_CLOSE, special_tags)
    tags = f"tool-call-open: {opening}\ntool-call-close: {closing}"
    return f"%llguidance {{}}\n\n{start}\n{tags}\n{grammar.lark}"


def _lark_tagged(text: str, special_tags: Collection[str]) -> str:
    """A literal, with each special tag in it as its token or its text."""
    parts: list[str] = []
    pos = 0
    for match in _TAG_RE.finditer(text):
        if match.group() not in special_tags:
            continue
        if match.start() > pos:
            parts.append(_lit(text[pos : match.start()]))
        parts.append(f"({match.group()} | {_lit(match.group())})")
        pos = match.end()
    if pos < len(text) or not parts:
        parts.append(_lit(text[pos:]))
    return " ".join(parts)


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


@lru_cache(maxsize=2)
def _primitives(path: Path = _PRIMITIVES_FILE) -> str:
    return path.read_text(encoding="utf-8")


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

    text_answer = r"[^<{\[`\x00-\x20] [^\x00]*"

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self.path = ""

    def render(self, calls: str, *, allow_text: bool) -> str:
        root = f"{calls} | text-answer" if allow_text else calls
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n\n" + _primitives()

    def block(self) -> str:
        return f"{_lit(CALL_OPEN)} tool-call {_lit(CALL_CLOSE)} | tool-call"

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

    def tool_call(self, index: int, tool: ToolSpec, *, bounded: bool = True) -> str:
        self.path = f"{tool.name}:"
        parameters = tool.parameters if bounded else _without_numeric_bounds(tool.parameters)
        try:
            args = self.schema(parameters, f"{tool.name}-args")
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
        return self.bounded_string(bound, hint)

    def bounded_string(self, bound: str, hint: str) -> str:
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


def _without_numeric_bounds(node: Any) -> Any:
    """The schema with every numeric bound removed, at any depth: the
    grammar then admits any number of the right type, and the verifier,
    which keeps the bounds, refuses one out of range. Property names and
    literal values (enum, const, default, examples) are left as they are."""
    if isinstance(node, list):
        return [_without_numeric_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NUMERIC_BOUNDS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _without_numeric_bounds(sub) for name, sub in value.items()}
        elif key in _LITERALS:
            out[key] = value
        else:
            out[key] = _without_numeric_bounds(value)
    return out


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_LITERALS = frozenset({"enum", "const", "default", "examples"})


def _non_negative(node: JSONSchema) -> bool:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    return isinstance(low, int | float) and not isinstance(low, bool) and low >= 0


class _LarkBuilder(_Builder):
    """The same rules in llguidance's Lark, with ``%json`` leaves where the
    schema says more than the GBNF can enforce."""

    text_answer = r"/[^<{\[`\x00-\x20][^\x00]*/"

    def render(self, calls: str, *, allow_text: bool) -> str:
        del allow_text  # lark_grammar() writes the start rule
        lines = [f"tool-calls: {calls}"]
        lines += [f"{name}: {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n\n" + _primitives(_LARK_PRIMITIVES_FILE)

    def block(self) -> str:
        return "tool-call-open tool-call tool-call-close | tool-call"

    def add(self, hint: str, body: str) -> str:
        if hint[:1].isdigit():
            hint = f"r-{hint}"  # a Lark name starts with a letter
        return super().add(hint, body)

    def typed(self, node: JSONSchema, kind: str | None, hint: str) -> str:
        if kind in ("integer", "number") and _needs_numeric_leaf(node):
            keep = {k: node[k] for k in _NUMERIC_BOUNDS if _is_number(node.get(k))}
            return self.json_leaf({"type": kind, **keep}, hint)
        if kind == "string" and ("pattern" in node or node.get("format") in LLG_FORMATS):
            keys = ("minLength", "maxLength", "pattern", "format")
            leaf = {k: node[k] for k in keys if k in node}
            return self.json_leaf({"type": "string", **leaf}, hint)
        return super().typed(node, kind, hint)

    def json_leaf(self, schema: JSONSchema, hint: str) -> str:
        return self.add(f"{hint}-json", "%json " + json.dumps(schema, ensure_ascii=False))

    def bounded_string(self, bound: str, hint: str) -> str:
        # The GBNF's json-char{m,n} as one regex terminal, so llguidance
        # lexes the whole string at once instead of a rule per character.
        return self.add(f"{hint}-str", f'/"(?:{_LARK_CHAR}){bound}"/')


# json.lark's JSON_CHAR, for bounded strings.
_LARK_CHAR = r'[^"\\\x7F\x00-\x1F]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})'


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _needs_numeric_leaf(node: JSONSchema) -> bool:
    """A bound the GBNF's own number rules do not already enforce: anything
    but ``minimum: 0`` (which the unsigned rules express exactly)."""
    bounds = {k for k in _NUMERIC_BOUNDS if _is_number(node.get(k))}
    return bool(bounds - {"minimum"}) or ("minimum" in bounds and node["minimum"] != 0)
