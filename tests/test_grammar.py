"""Normalised schemas into one GBNF union.

Two kinds of test. Structure tests read the generated rules and need no
model. Semantic tests ask llama.cpp itself whether a grammar admits an exact
text: :class:`Recogniser` steps llama.cpp's grammar sampler over the tokens
of a candidate string (the real SmolLM2 vocabulary), exactly as decoding
would, and then asks whether end-of-generation is allowed.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.decoding.grammar import GrammarOptions, build_grammar, write_grammar
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.engine.llama import LlamaEngine
from edge_agent.errors import UnsupportedSchemaError

JSON_GBNF = Path(__file__).resolve().parent.parent / "grammars" / "json.gbnf"
BFCL_SAMPLE = Path(__file__).resolve().parent / "data" / "bfcl"


def tools_for(params: dict[str, Any], name: str = "t") -> list[ToolSpec]:
    return normalize_tools([{"name": name, "parameters": params}])


def grammar_text(params: dict[str, Any], name: str = "t", **options: Any) -> str:
    return build_grammar(tools_for(params, name), GrammarOptions(**options)).text


def obj(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def rules(text: str) -> dict[str, str]:
    """The generated rules (before the appended primitives), name → body."""
    head = text.split("\n\n", 1)[0]
    return dict(line.split(" ::= ", 1) for line in head.splitlines())


def value_rule(prop_schema: dict[str, Any]) -> str:
    """The grammar expression for the value of a single optional property ``v``."""
    body = rules(grammar_text(obj({"v": prop_schema}, "v")))["t-args"]
    match = re.fullmatch(r'"\{" "\\"v\\": " (.+) "\}"', body)
    assert match, body
    return match.group(1)


def call(arguments: Any, name: str = "t") -> str:
    """A call in the grammar's canonical form (``", "`` and ``": "`` separators)."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


# --- structure: one rule per JSON Schema keyword -------------------------------------


def test_enum_values_become_json_literals() -> None:
    assert value_rule({"type": "string", "enum": ["c", "f"]}) == "t-args-v"
    body = rules(grammar_text(obj({"v": {"enum": ["c", 2, True, None, 1.5]}}, "v")))["t-args-v"]
    assert body == '"\\"c\\"" | "2" | "true" | "null" | "1.5"'


def test_const_is_inlined_as_one_literal() -> None:
    assert value_rule({"const": "on"}) == '"\\"on\\""'
    assert value_rule({"const": {"a": [1, None]}}) == '"{\\"a\\": [1, null]}"'


def test_required_properties_come_first_then_optional_in_schema_order() -> None:
    params = obj({"a": {"type": "boolean"}, "b": {"type": "null"}, "c": {"type": "boolean"}}, "c")
    body = rules(grammar_text(params))["t-args"]
    assert body == (
        '"{" "\\"c\\": " json-bool ( ", " "\\"a\\": " json-bool )?'
        ' ( ", " "\\"b\\": " json-null )? "}"'
    )


def test_zero_required_properties_use_a_linear_optional_chain() -> None:
    params = obj({"a": {"type": "boolean"}, "b": {"type": "boolean"}, "c": {"type": "null"}})
    got = rules(grammar_text(params))
    assert got["t-args"] == '"{" ( t-args-opt )? "}"'
    # any first property, each followed by the optional tail of the later ones
    assert got["t-args-opt"] == (
        '"\\"a\\": " json-bool t-args-tail-1 | "\\"b\\": " json-bool t-args-tail-2'
        ' | "\\"c\\": " json-null'
    )
    assert got["t-args-tail-1"] == '( ", " "\\"b\\": " json-bool )? t-args-tail-2'
    assert got["t-args-tail-2"] == '( ", " "\\"c\\": " json-null )?'


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "json-string"),
        ({"type": "string", "minLength": 0}, "json-string"),
        ({"type": "string", "minLength": 2, "maxLength": 5}, '"\\"" json-char{2,5} "\\""'),
        ({"type": "string", "minLength": 3}, '"\\"" json-char{3,} "\\""'),
        ({"type": "string", "maxLength": 4}, '"\\"" json-char{0,4} "\\""'),
        ({"type": "string", "maxLength": 0}, '"\\"" json-char{0,0} "\\""'),
        ({"type": "string", "maxLength": 256}, '"\\"" json-char{0,256} "\\""'),
        # past 256 the bound is the verifier's job: llama.cpp would expand it
        ({"type": "string", "maxLength": 257}, "json-string"),
        ({"type": "string", "minLength": 300}, "json-string"),
    ],
)
def test_string_length_bounds(schema: dict[str, Any], expected: str) -> None:
    expr = value_rule(schema)
    got = rules(grammar_text(obj({"v": schema}, "v"))).get(expr, expr)
    assert got == expected


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({}, '"[" ( json-bool ( ", " json-bool )* )? "]"'),
        ({"minItems": 0}, '"[" ( json-bool ( ", " json-bool )* )? "]"'),
        ({"minItems": 1}, '"[" json-bool ( ", " json-bool )* "]"'),
        ({"minItems": 3}, '"[" json-bool ( ", " json-bool ){2,} "]"'),
        ({"maxItems": 1}, '"[" ( json-bool )? "]"'),
        ({"minItems": 1, "maxItems": 1}, '"[" json-bool "]"'),
        ({"maxItems": 0}, '"[" "]"'),
        ({"minItems": 0, "maxItems": 3}, '"[" ( json-bool ( ", " json-bool ){0,2} )? "]"'),
        ({"minItems": 2, "maxItems": 4}, '"[" json-bool ( ", " json-bool ){1,3} "]"'),
        # past 64 items the bounds are left to the verifier (at least one item kept)
        ({"minItems": 65}, '"[" json-bool ( ", " json-bool )* "]"'),
        ({"maxItems": 100}, '"[" ( json-bool ( ", " json-bool )* )? "]"'),
    ],
)
def test_array_item_bounds(bounds: dict[str, int], expected: str) -> None:
    schema = {"type": "array", "items": {"type": "boolean"}, **bounds}
    body = rules(grammar_text(obj({"v": schema}, "v")))["t-args-v"]
    assert re.sub(" +", " ", body) == expected


def test_arrays_without_item_schema_hold_any_json_value() -> None:
    body = rules(grammar_text(obj({"v": {"type": "array"}}, "v")))["t-args-v"]
    assert body == '"[" ( json-value ( ", " json-value )* )? "]"'


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "integer"}, "json-int"),
        ({"type": "number"}, "json-number"),
        ({"type": "integer", "minimum": 0}, "json-uint"),
        ({"type": "number", "minimum": 0.5}, "json-unumber"),
        ({"type": "integer", "exclusiveMinimum": 0}, "json-uint"),
        ({"type": "integer", "minimum": -1}, "json-int"),
        ({"type": "number", "maximum": 10}, "json-number"),
        ({"type": "number", "format": "float"}, "json-float"),  # BFCL's float
        ({"type": "number", "format": "float", "minimum": 0}, "json-ufloat"),
        ({"type": "boolean"}, "json-bool"),
        ({"type": "null"}, "json-null"),
        ({}, "json-value"),
        ({"description": "anything"}, "json-value"),
    ],
)
def test_scalar_types(schema: dict[str, Any], expected: str) -> None:
    assert value_rule(schema) == expected


def test_nullable_type_lists_are_alternatives() -> None:
    assert rules(grammar_text(obj({"v": {"type": ["string", "null"]}}, "v")))["t-args-v"] == (
        "json-string | json-null"
    )
    bounded = {"type": ["string", "integer"], "maxLength": 2, "minimum": 0}
    got = rules(grammar_text(obj({"v": bounded}, "v")))
    assert got["t-args-v"] == "t-args-v-string-str | json-uint"
    assert got["t-args-v-string-str"] == '"\\"" json-char{0,2} "\\""'


def test_any_of_alternatives_inherit_siblings_and_are_deduplicated() -> None:
    schema = {
        "description": "a count or a short word",
        "anyOf": [{"type": "integer"}, {"type": "integer"}, {"type": "string", "maxLength": 3}],
    }
    got = rules(grammar_text(obj({"v": schema}, "v")))
    assert got["t-args-v"] == "json-int | t-args-v-2-str"
    one_of = {"type": "string", "oneOf": [{"maxLength": 1}, {"enum": ["long"]}]}
    got = rules(grammar_text(obj({"v": one_of}, "v")))
    assert got["t-args-v"] == "t-args-v-0-str | t-args-v-1"
    assert got["t-args-v-1"] == '"\\"long\\""'


def test_free_objects() -> None:
    assert value_rule({"type": "object"}) == "json-object"
    assert value_rule({"type": "object", "additionalProperties": True}) == "json-object"
    typed = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert rules(grammar_text(obj({"v": typed}, "v")))["t-args-v"] == (
        '"{" ( json-string ": " json-int ( ", " json-string ": " json-int )* )? "}"'
    )


def test_nested_objects_get_their_own_rules() -> None:
    inner = obj({"deep": obj({"x": {"type": "boolean"}}, "x")}, "deep")
    got = rules(grammar_text(obj({"outer": inner}, "outer")))
    assert got["t-args"] == '"{" "\\"outer\\": " t-args-outer "}"'
    assert got["t-args-outer"] == '"{" "\\"deep\\": " t-args-outer-deep "}"'
    assert got["t-args-outer-deep"] == '"{" "\\"x\\": " json-bool "}"'


def test_rule_names_are_sanitised_unique_and_identical_bodies_shared() -> None:
    params = obj(
        {
            "wind speed (km/h)": {"enum": ["low", "high"]},
            "Wind_Speed-KM-H": {"enum": ["calm"]},
            "same": {"enum": ["low", "high"]},
            "雪": {"enum": ["yes"]},
        }
    )
    text = grammar_text(params, name="Weather.Now")
    got = rules(text)
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in got), list(got)
    assert got["weather-now-args-wind-speed-km-h"] == '"\\"low\\"" | "\\"high\\""'
    # the same sanitised name with another body gets a suffix, not an overwrite
    assert got["weather-now-args-wind-speed-km-h-2"] == '"\\"calm\\""'
    # the same body is one rule, whatever property it came from
    assert sum(body == '"\\"low\\"" | "\\"high\\""' for body in got.values()) == 1
    # a name that sanitises to nothing new ("雪") still gets its own rule
    assert sum(body == '"\\"yes\\""' for body in got.values()) == 1
    assert {"weather-now-args-wind-speed-km-h", "json-value"} <= referenced(text) <= defined(text)


RULE_LINE = re.compile(r"^([A-Za-z0-9-]+)\s+::=\s+(.*)$")


def defined(text: str) -> set[str]:
    return {m.group(1) for line in text.splitlines() if (m := RULE_LINE.match(line))}


def referenced(text: str) -> set[str]:
    """Rule names used in rule bodies (literals, classes and bounds removed)."""
    names: set[str] = set()
    for line in text.splitlines():
        if not (match := RULE_LINE.match(line)):
            continue
        body = re.sub(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|\{[0-9,]*\}', " ", match.group(2))
        names |= set(re.findall(r"[A-Za-z][A-Za-z0-9-]*", body))
    return names


def test_literals_escape_quotes_backslashes_newlines_and_keep_unicode() -> None:
    params = obj(
        {
            'say "hi"': {"enum": ['a "quoted" word', "back\\slash", "two\nlines", "tab\there"]},
            "back\\slash": {"const": "x"},
            "new\nline": {"const": "x"},
            "café ☕": {"enum": ["crème brûlée", "雪", "😀"]},
            "ctrl\x01": {"const": "\x1f"},
        }
    )
    text = grammar_text(params)
    got = rules(text)
    # GBNF literal of the JSON text: JSON escapes first, then GBNF escapes them again
    assert '"\\"say \\\\\\"hi\\\\\\"\\": "' in got["t-args-opt"]
    assert got["t-args-say-hi"] == (
        '"\\"a \\\\\\"quoted\\\\\\" word\\"" | "\\"back\\\\\\\\slash\\""'
        ' | "\\"two\\\\nlines\\"" | "\\"tab\\\\there\\""'
    )
    assert '"\\"back\\\\\\\\slash\\": "' in text
    assert '"\\"new\\\\nline\\": "' in text
    assert '"\\"ctrl\\\\u0001\\": " "\\"\\\\u001f\\""' in text
    assert got["t-args-caf"] == '"\\"crème brûlée\\"" | "\\"雪\\"" | "\\"😀\\""'
    assert '"\\"café ☕\\": "' in text
    assert "\n" not in "".join(got.values())


def test_the_envelope_names_every_tool() -> None:
    tools = normalize_tools(
        [
            {"name": "a", "parameters": obj({"x": {"type": "boolean"}}, "x")},
            {"name": "b.c", "parameters": {"type": "object"}},
        ]
    )
    got = rules(build_grammar(tools).text)
    assert got["root"] == "tool-call-block"
    assert got["tool-call"] == "call-0-a | call-1-b-c"
    assert got["call-0-a"] == '"{\\"name\\": \\"a\\", \\"arguments\\": " a-args "}"'
    assert (
        got["call-1-b-c"] == '"{\\"name\\": \\"b.c\\", \\"arguments\\": " "{}" "}"'
    )  # no parameters
    assert got["tool-call-block"] == '"<tool_call>\\n" tool-call "\\n</tool_call>" | tool-call'


def test_options_parallel_and_text() -> None:
    params = obj({"x": {"type": "boolean"}})
    assert rules(grammar_text(params))["root"] == "tool-call-block"
    parallel = rules(grammar_text(params, parallel=True, max_calls=4))
    assert parallel["root"] == 'tool-call-block ( "\\n" tool-call-block ){0,3}'
    assert rules(grammar_text(params, parallel=True, max_calls=1))["root"] == "tool-call-block"
    capped = rules(grammar_text(params, parallel=True, max_calls=500))
    assert capped["root"].endswith("){0,64}")
    text = rules(grammar_text(params, allow_text=True))
    assert text["root"] == "tool-call-block | text-answer"
    assert "text-answer" in text
    both = rules(grammar_text(params, parallel=True, allow_text=True, max_calls=2))
    assert both["root"] == 'tool-call-block ( "\\n" tool-call-block ){0,1} | text-answer'


def test_the_json_primitives_are_appended_once() -> None:
    text = grammar_text(obj({"x": {"type": "boolean"}}))
    primitives = JSON_GBNF.read_text(encoding="utf-8")
    assert text.endswith(primitives)
    assert text.count("json-value   ::=") == 1


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "string", "minLength": 3, "maxLength": 2}, "maxLength 2 < minLength 3"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems 1 < minItems 3"),
    ],
)
def test_unsatisfiable_bounds_name_tool_and_path(schema: dict[str, Any], fragment: str) -> None:
    params = obj({"outer": obj({"inner": schema})})
    with pytest.raises(UnsupportedSchemaError) as info:
        build_grammar(tools_for(params, name="lamp"))
    message = info.value.message
    assert "tool 'lamp'" in message
    assert fragment in message
    assert "/properties/outer/properties/inner" in message


def test_every_bfcl_sample_tool_set_builds() -> None:
    count = 0
    for path in sorted(BFCL_SAMPLE.glob("BFCL_v4_*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            tools = normalize_tools(json.loads(line)["function"])
            assert build_grammar(tools, GrammarOptions(parallel=True, allow_text=True)).text
            count += 1
    assert count >= 40


# --- the cache and the grammar files ----------------------------------------------------


def test_the_memory_cache_returns_the_same_text() -> None:
    tools = tools_for(obj({"x": {"type": "integer"}}, "x"))
    first, second = build_grammar(tools), build_grammar(list(tools))
    assert first.key == second.key
    assert first.text is second.text
    assert build_grammar(tools, GrammarOptions(parallel=True)).key != first.key


def test_the_cache_is_not_fooled_by_tool_spec_equality() -> None:
    """ToolSpec equality ignores parameters; two tools that differ only in
    their schema must still get different grammars."""
    a = ToolSpec("t", "", obj({"x": {"type": "integer"}}, "x"))
    b = ToolSpec("t", "", obj({"x": {"type": "boolean"}}, "x"))
    assert a == b
    ga, gb = build_grammar([a]), build_grammar([b])
    assert ga.key != gb.key
    assert "json-int" in rules(ga.text)["t-args"]
    assert "json-bool" in rules(gb.text)["t-args"]


def test_write_grammar_uses_the_env_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "grammars"
    monkeypatch.setenv("EDGE_AGENT_GRAMMAR_DIR", str(target))
    grammar = build_grammar(tools_for(obj({"x": {"type": "integer"}}, "x")))
    path = write_grammar(grammar)
    assert path == target / f"{grammar.key}.gbnf"
    assert path.read_text(encoding="utf-8") == grammar.text
    assert write_grammar(grammar) == path  # idempotent
    assert [p.name for p in target.iterdir()] == [path.name]


def test_write_grammar_to_an_explicit_directory(tmp_path: Path) -> None:
    grammar = build_grammar(tools_for(obj({"x": {"type": "integer"}}, "x")))
    path = write_grammar(grammar, tmp_path / "a" / "b")
    assert path.parent == tmp_path / "a" / "b"
    assert path.read_text(encoding="utf-8") == grammar.text


# --- known bugs (structure) ------------------------------------------------------------


def test_tool_names_with_reserved_prefixes_build() -> None:
    code = (
        "from edge_agent.decoding.schema import normalize_tools\n"
        "from edge_agent.decoding.grammar import build_grammar\n"
        "for name in ('rootfs_info', 'json_query', 'tool_call_log'):\n"
        "    params = {'type': 'object', 'properties': {'a': {'type': 'string'}}}\n"
        "    build_grammar(normalize_tools([{'name': name, 'parameters': params}]))\n"
        "print('built')\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        pytest.fail("build_grammar did not return within 10 s")
    assert out.stdout.strip() == "built", out.stderr


# --- semantics: what llama.cpp's grammar sampler admits --------------------------------


class Recogniser:
    """Whether a GBNF grammar admits an exact text, decided by llama.cpp.

    The candidate is tokenized with the model's vocabulary; for each token a
    one-candidate array goes through ``llama_sampler_apply`` (the grammar
    sets a disallowed candidate's logit to -inf) and is then accepted. At the
    end the end-of-generation token must be allowed: the grammar is complete.
    A token is never accepted before it is checked, because llama.cpp aborts
    on accepting a token the grammar forbids.
    """

    def __init__(self, engine: LlamaEngine) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._llm = engine.llama
        self._vocab = engine.llama._model.vocab
        self._eog = engine.llama.token_eos()

    def compiles(self, grammar: str) -> bool:
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        self._lib.llama_sampler_free(sampler)
        return True

    def admits(self, grammar: str, text: str) -> bool:
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        assert sampler, "llama.cpp could not parse the grammar"
        try:
            tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            for token in tokens:
                if not self._allowed(sampler, token):
                    return False
                self._lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self._eog)
        finally:
            self._lib.llama_sampler_free(sampler)

    def _allowed(self, sampler: Any, token: int) -> bool:
        data = (self._lib.llama_token_data * 1)(self._lib.llama_token_data(token, 0.0, 0.0))
        candidates = self._lib.llama_token_data_array(data, 1, -1, False)
        self._lib.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return not math.isinf(data[0].logit)


@pytest.fixture(scope="module")
def recogniser(smol: LlamaEngine) -> Iterator[Recogniser]:
    yield Recogniser(smol)


NUMBER = obj({"n": {"type": "number"}}, "n")
# BFCL dialect, normalised by check(): a Python float always has a decimal point
FLOAT = {"type": "dict", "properties": {"x": {"type": "float"}}, "required": ["x"]}
INTEGER = obj({"n": {"type": "integer"}}, "n")
COUNT = obj({"n": {"type": "integer", "minimum": 0}}, "n")
POSITIVE = obj({"n": {"type": "number", "exclusiveMinimum": 0}}, "n")
UNITS = obj({"u": {"enum": ["c", "f"]}, "k": {"enum": [1, True, None]}}, "u")
ROOM = obj({"room": {"type": "string"}, "on": {"type": "boolean"}}, "room")
ORDERED = obj({"a": {"type": "integer"}, "b": {"type": "integer"}}, "b")
OPTIONAL_VALUES = {"a": 1, "b": 2, "c": 3}
OPTIONAL = obj({k: {"const": v} for k, v in OPTIONAL_VALUES.items()})
SHORT = obj({"s": {"type": "string", "minLength": 2, "maxLength": 4}}, "s")
LONG_BOUND = obj({"s": {"type": "string", "maxLength": 300}}, "s")
PAIR = obj({"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}})
SINGLE = obj({"xs": {"type": "array", "items": {"type": "string"}, "maxItems": 1}}, "xs")
NULLABLE = obj({"v": {"type": ["string", "null"]}}, "v")
ANY_OF = obj({"v": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}}, "v")
SCORES = obj({"m": {"type": "object", "additionalProperties": {"type": "integer"}}}, "m")
NESTED = obj({"p": obj({"q": obj({"r": {"type": "boolean"}}, "r")}, "q")}, "p")
ODD_NAMES = obj(
    {
        'say "hi"': {"type": "boolean"},
        "back\\slash": {"type": "boolean"},
        "new\nline": {"type": "boolean"},
        "café ☕": {"enum": ["crème brûlée", "雪", "😀", 'a "b"', "c\\d", "e\nf"]},
    }
)

ADMITTED: list[tuple[str, dict[str, Any], str]] = [
    ("number int", NUMBER, '{"n": 12}'),
    ("number negative decimal", NUMBER, '{"n": -0.25}'),
    ("number zero", NUMBER, '{"n": 0}'),
    ("number 16 digits", NUMBER, '{"n": 1234567890123456}'),
    ("number 15 decimals", NUMBER, '{"n": 1.123456789012345}'),
    ("integer negative", INTEGER, '{"n": -7}'),
    ("bfcl float", FLOAT, '{"x": -5.0}'),
    ("count zero", COUNT, '{"n": 0}'),
    ("positive decimal", POSITIVE, '{"n": 0.5}'),
    ("enum string", UNITS, '{"u": "f"}'),
    ("enum int bool null", UNITS, '{"u": "c", "k": 1}'),
    ("enum true", UNITS, '{"u": "c", "k": true}'),
    ("enum null", UNITS, '{"u": "c", "k": null}'),
    ("required only", ROOM, '{"room": "hall"}'),
    ("required then optional", ROOM, '{"room": "hall", "on": true}'),
    ("required first", ORDERED, '{"b": 1, "a": 2}'),
    ("string at min", SHORT, '{"s": "ab"}'),
    ("string at max", SHORT, '{"s": "abcd"}'),
    ("escape is one char", SHORT, '{"s": "a\\nb"}'),
    ("unicode escape is one char", SHORT, '{"s": "\\u00e9\\u00e9"}'),
    ("non-ascii chars", SHORT, '{"s": "été"}'),
    ("length past 256 is unbounded", LONG_BOUND, json.dumps({"s": "x" * 400})),
    ("one item", PAIR, '{"xs": [1]}'),
    ("two items", PAIR, '{"xs": [1, -2]}'),
    ("array omitted", PAIR, "{}"),
    ("maxItems 1 empty", SINGLE, '{"xs": []}'),
    ("maxItems 1 one", SINGLE, '{"xs": ["a"]}'),
    ("nullable string", NULLABLE, '{"v": "x"}'),
    ("nullable null", NULLABLE, '{"v": null}'),
    ("anyOf int", ANY_OF, '{"v": 42}'),
    ("anyOf short string", ANY_OF, '{"v": "ok"}'),
    ("typed free object", SCORES, '{"m": {"a": 1, "b b": -2}}'),
    ("empty free object", SCORES, '{"m": {}}'),
    ("nested", NESTED, '{"p": {"q": {"r": false}}}'),
    (
        "odd names and values",
        ODD_NAMES,
        json.dumps(
            {'say "hi"': True, "back\\slash": False, "new\nline": True, "café ☕": "crème brûlée"},
            ensure_ascii=False,
        ),
    ),
    ("emoji value", ODD_NAMES, json.dumps({"café ☕": "😀"}, ensure_ascii=False)),
    ("quoted value", ODD_NAMES, json.dumps({"café ☕": 'a "b"'}, ensure_ascii=False)),
    ("backslash value", ODD_NAMES, json.dumps({"café ☕": "c\\d"}, ensure_ascii=False)),
    ("newline value", ODD_NAMES, json.dumps({"café ☕": "e\nf"}, ensure_ascii=False)),
]
# with no required property, every in-order subset of the optional ones
ADMITTED += [
    (
        f"optional subset {keys or 'none'}",
        OPTIONAL,
        json.dumps({k: OPTIONAL_VALUES[k] for k in keys}),
    )
    for keys in ["", "a", "b", "c", "ab", "ac", "bc", "abc"]
]

REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("exponent", NUMBER, '{"n": 1e5}'),
    ("huge exponent", NUMBER, '{"n": 3.1e+488}'),
    ("leading zero", NUMBER, '{"n": 01}'),
    ("leading zeros decimal", NUMBER, '{"n": 007.5}'),
    ("17-digit integer", NUMBER, '{"n": 12345678901234567}'),
    ("16 decimals", NUMBER, '{"n": 1.1234567890123456}'),
    ("trailing dot", NUMBER, '{"n": 1.}'),
    ("leading dot", NUMBER, '{"n": .5}'),
    ("plus sign", NUMBER, '{"n": +1}'),
    ("NaN", NUMBER, '{"n": NaN}'),
    ("Infinity", NUMBER, '{"n": Infinity}'),
    ("number as string", NUMBER, '{"n": "1"}'),
    ("integer with decimals", INTEGER, '{"n": 1.5}'),
    ("bfcl float without a decimal point", FLOAT, '{"x": 5}'),
    ("bfcl float with exponent", FLOAT, '{"x": 5.0e3}'),
    ("integer with exponent", INTEGER, '{"n": 1e3}'),
    ("17-digit integer", INTEGER, '{"n": -12345678901234567}'),
    ("negative count", COUNT, '{"n": -1}'),
    ("negative positive", POSITIVE, '{"n": -0.5}'),
    ("enum miss", UNITS, '{"u": "k"}'),
    ("enum wrong type", UNITS, '{"u": "c", "k": "1"}'),
    ("enum int not listed", UNITS, '{"u": "c", "k": 2}'),
    ("missing required", ROOM, '{"on": true}'),
    ("empty with required", ROOM, "{}"),
    ("unknown property", ROOM, '{"room": "hall", "colour": "red"}'),
    ("unknown property only", OPTIONAL, '{"d": 4}'),
    ("optional out of order", OPTIONAL, '{"b": 2, "a": 1}'),
    ("optional repeated", OPTIONAL, '{"a": 1, "a": 1}'),
    ("optional before required", ORDERED, '{"a": 2, "b": 1}'),
    ("other whitespace", ROOM, '{"room":"hall"}'),
    ("trailing comma", ROOM, '{"room": "hall", }'),
    ("string too short", SHORT, '{"s": "a"}'),
    ("string too long", SHORT, '{"s": "abcde"}'),
    ("raw newline in string", SHORT, '{"s": "a\nb"}'),
    ("bad escape", SHORT, '{"s": "a\\qb"}'),
    ("no items", PAIR, '{"xs": []}'),
    ("too many items", PAIR, '{"xs": [1, 2, 3]}'),
    ("wrong item type", PAIR, '{"xs": ["1"]}'),
    ("maxItems 1 two", SINGLE, '{"xs": ["a", "b"]}'),
    ("nullable wrong type", NULLABLE, '{"v": 1}'),
    ("anyOf long string", ANY_OF, '{"v": "abc"}'),
    ("anyOf bool", ANY_OF, '{"v": true}'),
    ("typed free object value", SCORES, '{"m": {"a": "1"}}'),
    ("nested missing", NESTED, '{"p": {"q": {}}}'),
    ("odd name unescaped", ODD_NAMES, '{"say "hi"": true}'),
    ("odd value not listed", ODD_NAMES, json.dumps({"café ☕": "creme"}, ensure_ascii=False)),
]


def check(recogniser: Recogniser, params: dict[str, Any], arguments: str, **options: Any) -> bool:
    text = grammar_text(params, **options)
    return recogniser.admits(text, '{"name": "t", "arguments": ' + arguments + "}")


@pytest.mark.model
@pytest.mark.parametrize(
    ("params", "arguments"), [c[1:] for c in ADMITTED], ids=[c[0] for c in ADMITTED]
)
def test_grammar_admits(recogniser: Recogniser, params: dict[str, Any], arguments: str) -> None:
    assert check(recogniser, params, arguments)


@pytest.mark.model
@pytest.mark.parametrize(
    ("params", "arguments"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_grammar_rejects(recogniser: Recogniser, params: dict[str, Any], arguments: str) -> None:
    assert not check(recogniser, params, arguments)


@pytest.mark.model
def test_the_envelope(recogniser: Recogniser) -> None:
    text = grammar_text(ROOM, name="set_light")
    body = call({"room": "hall"}, "set_light")
    assert recogniser.admits(text, body)
    assert recogniser.admits(text, f"<tool_call>\n{body}\n</tool_call>")
    assert not recogniser.admits(text, f"<tool_call>{body}</tool_call>")
    assert not recogniser.admits(text, call({"room": "hall"}, "set_lamp"))
    assert not recogniser.admits(text, body[:-1])
    assert not recogniser.admits(text, body + "\n")
    assert not recogniser.admits(text, "")


@pytest.mark.model
def test_parallel_calls(recogniser: Recogniser) -> None:
    block = f"<tool_call>\n{call({'room': 'hall'})}\n</tool_call>"
    bare = call({"room": "attic", "on": False})
    single = grammar_text(ROOM)
    parallel = grammar_text(ROOM, parallel=True, max_calls=3)
    assert not recogniser.admits(single, f"{block}\n{block}")
    assert recogniser.admits(parallel, block)
    assert recogniser.admits(parallel, f"{block}\n{bare}")
    assert recogniser.admits(parallel, f"{block}\n{block}\n{block}")
    assert not recogniser.admits(parallel, f"{block}\n{block}\n{block}\n{block}")
    assert not recogniser.admits(parallel, f"{block}\n\n{block}")


@pytest.mark.model
def test_text_answers(recogniser: Recogniser) -> None:
    answer = "No tool fits: I can only switch lights.\nSorry!"
    strict = grammar_text(ROOM)
    texty = grammar_text(ROOM, allow_text=True)
    assert not recogniser.admits(strict, answer)
    assert recogniser.admits(texty, answer)
    assert recogniser.admits(texty, call({"room": "hall"}))
    # a text answer may not start like a call, a fence or whitespace
    for start in ["{oops", "[1]", "<tool_call>", "```json", " leading space", ""]:
        assert not recogniser.admits(texty, start), start


@pytest.mark.model
def test_every_bfcl_sample_grammar_compiles_in_llama_cpp(recogniser: Recogniser) -> None:
    for path in sorted(BFCL_SAMPLE.glob("BFCL_v4_*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            tools = normalize_tools(item["function"])
            options = GrammarOptions(parallel=True, allow_text=True)
            assert recogniser.compiles(build_grammar(tools, options).text), item["id"]


@pytest.mark.model
def test_the_recogniser_refuses_a_broken_grammar(recogniser: Recogniser) -> None:
    assert recogniser.compiles('root ::= "a"')
    assert not recogniser.compiles("root ::= undefined-rule")


# --- known bugs (semantics) -------------------------------------------------------------


@pytest.mark.model
def test_no_parameters_admit_only_empty_arguments(recogniser: Recogniser) -> None:
    params = {"type": "object", "properties": {}, "additionalProperties": False}
    assert check(recogniser, params, "{}")
    assert not check(recogniser, params, '{"x": 1}')


@pytest.mark.model
@pytest.mark.xfail(
    strict=True,
    reason="json.gbnf's json-char counts each \\uXXXX escape as one character, so a "
    "surrogate pair (one code point to jsonschema) satisfies minLength 2",
)
def test_a_surrogate_pair_is_one_character(recogniser: Recogniser) -> None:
    import jsonschema

    schema = {"type": "string", "minLength": 2}
    text = '"\\ud83d\\ude00"'  # one emoji
    assert not jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
    assert not check(recogniser, obj({"s": schema}, "s"), '{"s": ' + text + "}")
