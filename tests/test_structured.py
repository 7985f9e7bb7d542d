"""Structured output (``response_format``) and the client's text options,
on the real default model through both grammar engines.

The schema-only checks need no model; the rest decode with
Qwen2.5-Coder-0.5B, under llguidance (the default) and the GBNF fallback.
"""

from __future__ import annotations

import json
import math

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from edge_agent.decoding.grammar import build_value_grammar, lark_grammar
from edge_agent.decoding.prompts import build_prompt
from edge_agent.engine.guided import GuidedLlamaEngine
from edge_agent.engine.llama import LlamaEngine
from edge_agent.engine.text_stream import TextOptions
from edge_agent.errors import SchemaError
from edge_agent.structured import answer_json, check_value, response_schema

EVENT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "day": {"type": "string", "format": "date"},
        "attendees": {"type": "integer", "minimum": 1, "maximum": 500},
        "online": {"type": "boolean"},
    },
    "required": ["title", "day", "attendees", "online"],
    "additionalProperties": False,
}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "name": "answer", "schema": schema}


# ---------------------------------------------------------------- no model


def test_json_object_mode_has_no_schema_and_json_schema_mode_checks_its_own() -> None:
    assert response_schema({"type": "json_object"}) is None
    assert response_schema(schema_format(EVENT)) == EVENT
    with pytest.raises(SchemaError, match="invalid"):
        response_schema(schema_format({"type": "objekt"}))
    with pytest.raises(SchemaError, match="must be a JSON object"):
        response_schema({"type": "json_schema", "schema": [1]})


@pytest.mark.parametrize(
    ("text", "schema", "ok", "stage"),
    [
        ('{"a": 1}', None, True, "ok"),
        ("[1]", None, False, "schema"),
        ("{'a': 1}", None, False, "parse"),
        ('{"title": "x", "day": "2026-13-40", "attendees": 3, "online": true}', EVENT, False,
         "schema"),
        ('{"title": "x", "day": "2026-12-07", "attendees": 3, "online": true}', EVENT, True, "ok"),
    ],
    ids=["object", "array-is-not-an-object", "not-json", "bad-date", "valid"],
)  # fmt: skip
def test_check_value(text: str, schema: dict | None, ok: bool, stage: str) -> None:
    verdict = check_value(text, schema)
    assert (verdict.ok, verdict.stage) == (ok, stage), verdict


def test_a_value_grammar_is_one_json_value_in_both_forms() -> None:
    grammar = build_value_grammar(EVENT)
    assert grammar.value
    assert grammar.text.startswith("root ::= ")
    assert "tool-call ::=" not in grammar.text
    assert lark_grammar(grammar).endswith("start: %json " + json.dumps(EVENT, sort_keys=True))
    assert build_value_grammar(EVENT).key == grammar.key != build_value_grammar(None).key


# ---------------------------------------------------------------- the real model


@pytest.fixture(params=["llguidance", "gbnf"])
def engine(request: pytest.FixtureRequest, qwen: LlamaEngine) -> LlamaEngine | GuidedLlamaEngine:
    return GuidedLlamaEngine(qwen) if request.param == "llguidance" else qwen


@pytest.mark.model
def test_a_structured_answer_is_valid_against_its_schema(
    engine: LlamaEngine | GuidedLlamaEngine,
) -> None:
    messages = [{"role": "user", "content": "Book the team offsite on 14 March 2027 for 25 "
                 "people, in person, and call it Spring offsite."}]  # fmt: skip
    result = answer_json(engine, messages, schema_format(EVENT), max_tokens=96)
    value = json.loads(result.text)  # well-formed under either engine
    assert value["attendees"] == 25 and value["online"] is False
    if isinstance(engine, GuidedLlamaEngine):  # llguidance enforces "format": date too
        assert result.final.valid, result.final.generation.text
        Draft202012Validator(EVENT, format_checker=FormatChecker()).validate(value)
    elif not result.final.valid:  # the GBNF cannot say "date": the check after it does
        assert result.final.problem.startswith("day:"), result.final.problem


@pytest.mark.model
def test_json_object_mode_answers_with_an_object(engine: LlamaEngine | GuidedLlamaEngine) -> None:
    messages = [{"role": "user", "content": "Give the capital of France as JSON."}]
    result = answer_json(engine, messages, {"type": "json_object"}, max_tokens=48)
    assert result.final.valid, result.final.generation.text
    assert isinstance(json.loads(result.text), dict)


@pytest.mark.model
def test_text_options_stream_stop_and_score_a_text_answer(qwen: LlamaEngine) -> None:
    pieces: list[str] = []
    options = TextOptions(stop=("5",), on_text=pieces.append, top_logprobs=3)
    engine = GuidedLlamaEngine(qwen).with_options(text=options)
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    prompt = build_prompt(qwen.chat_template, messages, [])
    generation = engine.generate(prompt, max_tokens=48)
    assert "4" in generation.text and "5" not in generation.text, generation.text
    assert generation.finish_reason == "stop"
    assert len(pieces) > 3  # streamed a few characters at a time, not in one piece
    assert "".join(pieces) == generation.text
    for score in generation.tokens:
        assert len(score.top) == 3
        values = [lp for _, lp in score.top]
        assert values == sorted(values, reverse=True)
        assert math.isclose(values[0], score.top_logprob, abs_tol=1e-4)
        assert score.logprob <= values[0] + 1e-6


@pytest.mark.model
def test_a_tool_call_is_never_streamed_as_text(qwen: LlamaEngine) -> None:
    from edge_agent.decoding.grammar import GrammarOptions, build_grammar
    from edge_agent.decoding.schema import normalize_tools

    tools = normalize_tools([{"type": "function", "function": {"name": "set_light",
        "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}},
                       "required": ["on"]}}}])  # fmt: skip
    pieces: list[str] = []
    engine = GuidedLlamaEngine(qwen).with_options(text=TextOptions(on_text=pieces.append))
    grammar = build_grammar(tools, GrammarOptions(allow_text=True))
    messages = [{"role": "user", "content": "Switch the light on."}]
    generation = engine.generate(build_prompt(qwen.chat_template, messages, tools), grammar=grammar)
    assert "set_light" in generation.text
    assert pieces == []
