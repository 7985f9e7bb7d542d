"""The Lark form of the tool grammars, as llguidance reads it.

Whether a grammar admits a text is decided by llguidance itself, over a
byte-level vocabulary (:class:`FakeByteTokenizer`: one token per byte plus
the tool-call tags as special tokens). The tokenizer is a fake because the
language of the grammar, not any model's vocabulary, is what these tests are
about; the real vocabularies are exercised in ``tests/engine/test_guided.py``.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
import pytest

from edge_agent.decoding.calls import CALL_CLOSE, CALL_OPEN, ToolCall, render_call
from edge_agent.decoding.grammar import Grammar, GrammarOptions, build_grammar, lark_grammar
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.errors import UnsupportedSchemaError
from tests.conftest import DATA, REPO

TAGS = (CALL_OPEN.strip(), CALL_CLOSE.strip())


class FakeByteTokenizer:
    """The least a llguidance ``TokenizerWrapper`` needs: bytes as tokens."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [t.encode() for t in TAGS] + [b"<eos>"]
        self.special_token_ids = [256, 257, 258]
        self.eos_token_id = 258
        self.bos_token_id = None

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(FakeByteTokenizer()))


def matcher(grammar: Grammar, special: tuple[str, ...] = ()) -> llguidance.LLMatcher:
    lark = lark_grammar(grammar, special)
    m = llguidance.LLMatcher(TOKENIZER, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def admits(grammar: Grammar, text: str) -> bool:
    m = matcher(grammar)
    tokens = list(text.encode())
    if m.validate_tokens(tokens) != len(tokens):
        return False
    assert m.consume_tokens(tokens)
    return m.is_accepting()


def tool(params: dict[str, Any], name: str = "t") -> list[ToolSpec]:
    return normalize_tools([{"name": name, "parameters": params}])


def call(arguments: dict[str, Any], name: str = "t") -> str:
    return render_call(ToolCall(name, arguments))


SCHEDULE = tool(
    {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{4}$"},
            "level": {"type": "integer", "minimum": 0, "maximum": 100},
            "gain": {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2},
            "note": {"type": "string", "format": "float-ish"},
        },
        "required": ["day", "code", "level"],
    },
    "schedule",
)
GOOD = {"day": "2024-05-07", "code": "AB-1234", "level": 100}


@pytest.mark.parametrize(
    ("change", "admitted"),
    [
        ({}, True),
        ({"gain": -1.25, "note": "anything"}, True),
        ({"day": "next tuesday"}, False),
        ({"day": "2024-13-01"}, False),
        ({"code": "AB-12345"}, False),
        ({"code": "ab-1234"}, False),
        ({"level": 101}, False),
        ({"level": -1}, False),
        ({"gain": -1.5}, False),
        ({"gain": 2.5}, False),
    ],
)
def test_ranges_patterns_and_formats_hold_in_the_grammar(
    change: dict[str, Any], admitted: bool
) -> None:
    grammar = build_grammar(SCHEDULE)
    assert admits(grammar, call({**GOOD, **change}, "schedule")) is admitted


def test_the_gbnf_is_unchanged_and_only_constrained_leaves_use_json() -> None:
    lark = build_grammar(SCHEDULE).lark
    leaves = [line for line in lark.splitlines() if "%json" in line]
    assert len(leaves) == 4  # day, code, level, gain; the unknown format is not one
    assert not any("float-ish" in line for line in leaves)
    assert "%json" not in build_grammar(SCHEDULE).text


def test_minimum_zero_alone_stays_the_unsigned_rule() -> None:
    """json-uint already says >= 0 exactly; a leaf would only change how
    many digits are allowed."""
    lark = build_grammar(
        tool({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}})
    ).lark
    assert "%json" not in lark and "json-uint" in lark


def test_a_float_keeps_its_decimal_point() -> None:
    grammar = build_grammar(tool({"type": "object", "properties": {"x": {"type": "float"}}}))
    assert admits(grammar, call({"x": 5.0}))
    assert not admits(grammar, '{"name": "t", "arguments": {"x": 5}}')


def home_and_bfcl_tool_sets() -> list[tuple[str, list[ToolSpec]]]:
    home = json.loads((REPO / "benchmarks" / "data" / "home8.json").read_text())
    sets = [("home8", normalize_tools(home["tools"]))]
    for path in sorted((DATA / "bfcl").glob("BFCL_v4_*.json")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            sets.append((row["id"], normalize_tools(row["function"])))
    return sets


@pytest.mark.parametrize(
    "options", [GrammarOptions(), GrammarOptions(allow_text=True, parallel=True)]
)
def test_every_sample_grammar_compiles_with_and_without_special_tags(
    options: GrammarOptions,
) -> None:
    for name, tools in home_and_bfcl_tool_sets():
        grammar = build_grammar(tools, options)
        for special in ((), TAGS):
            lark = lark_grammar(grammar, special)
            compiled = llguidance.LLMatcher(
                TOKENIZER, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0
            )
            assert not compiled.is_error(), (name, compiled.get_error())


def test_both_forms_admit_the_same_envelopes() -> None:
    """Tagged or bare, several in a row when parallel, or text when allowed."""
    tools = tool({"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]})
    grammar = build_grammar(tools, GrammarOptions(parallel=True, allow_text=True))
    one = call({"on": True})
    assert admits(grammar, one)
    assert admits(grammar, one.removeprefix(CALL_OPEN).removesuffix(CALL_CLOSE))
    assert admits(grammar, f"{one}\n{call({'on': False})}")
    assert admits(grammar, "No tool does that.")
    assert not admits(grammar, '{"name": "t", "arguments": {"on": true, "x": 1}}')
    assert not admits(grammar, '{"name": "t", "arguments": {"on":true}}')
    required = build_grammar(tools)
    assert not admits(required, "No tool does that.")


def test_a_tag_that_is_a_special_token_is_that_token_or_its_text() -> None:
    grammar = build_grammar(tool({"type": "object", "properties": {}}))
    m = matcher(grammar, TAGS)
    assert m.validate_tokens([256]) == 1  # <tool_call> as one token
    assert m.validate_tokens(list(b"<tool_call>")) == len("<tool_call>")


def test_a_grammar_without_schemas_has_no_lark_form() -> None:
    with pytest.raises(UnsupportedSchemaError):
        lark_grammar(Grammar('root ::= "x"\n', "k"))


def test_a_pattern_llguidance_cannot_compile_is_an_error_it_reports() -> None:
    """A look-ahead is valid ECMA regex but not for llguidance; the engine
    then falls back to GBNF (tests/engine/test_guided.py)."""
    grammar = build_grammar(
        tool({"type": "object", "properties": {"s": {"type": "string", "pattern": "(?=a)a"}}})
    )
    lark = lark_grammar(grammar)
    compiled = llguidance.LLMatcher(
        TOKENIZER, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0
    )
    assert compiled.is_error()
