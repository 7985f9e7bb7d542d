"""Structured output: an answer that is one JSON value, valid against the
client's schema (OpenAI's ``response_format``).

The same grammar engine that keeps tool calls well formed decodes the value
(:func:`~edge_agent.decoding.grammar.build_value_grammar`: llguidance compiles the
schema itself), so the answer is valid by construction rather than by hope;
jsonschema checks it again afterwards, as the verifier checks every call,
because a GBNF fallback enforces less (ranges, patterns, formats) and a
``max_tokens`` cut leaves a value unfinished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError as JsonSchemaError

from edge_agent.decoding.calls import ParsedOutput
from edge_agent.decoding.grammar import build_value_grammar
from edge_agent.decoding.prompts import Message, build_prompt
from edge_agent.decoding.schema import JSONSchema
from edge_agent.engine.base import Engine
from edge_agent.errors import SchemaError
from edge_agent.records.run import Attempt, Result
from edge_agent.toolbox.verify import Verdict

_ASK_OBJECT = "Answer with one JSON object and nothing else."
_ASK_SCHEMA = (
    "Answer with one JSON value and nothing else, valid against this JSON schema:\n{schema}"
)


def response_schema(response_format: Mapping[str, Any]) -> JSONSchema | None:
    """The schema a ``response_format`` asks for (None: any JSON object).
    Raises :class:`SchemaError` for one that is not a valid JSON schema."""
    if response_format.get("type") != "json_schema":
        return None
    schema = response_format.get("schema")
    if not isinstance(schema, dict):
        raise SchemaError("response_format.json_schema.schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as exc:
        raise SchemaError(f"response_format schema is invalid: {exc.message}") from exc
    return schema


def answer_json(
    engine: Engine,
    messages: Sequence[Message],
    response_format: Mapping[str, Any],
    *,
    max_tokens: int,
) -> Result:
    """Decode one JSON value for the conversation; the result's text is it."""
    start = time.perf_counter()
    schema = response_schema(response_format)
    ask = _ASK_OBJECT if schema is None else _ASK_SCHEMA.format(schema=json.dumps(schema))
    prompt = build_prompt(engine.chat_template, messages, [], system=ask)
    grammar = build_value_grammar(schema)
    generation = engine.generate(prompt, grammar=grammar, max_tokens=max_tokens)
    text = generation.text.strip()
    verdict = check_value(text, schema)
    attempt = Attempt("initial", generation, ParsedOutput(text=text), (verdict,), True)
    return Result((attempt,), time.perf_counter() - start)


def check_value(text: str, schema: JSONSchema | None) -> Verdict:
    """Is ``text`` one JSON value valid against ``schema`` (an object if None)?"""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return Verdict(False, "parse", f"the answer is not JSON: {exc}")
    if schema is None:
        ok = isinstance(value, dict)
        return Verdict(ok, "ok" if ok else "schema", "" if ok else "the answer is not an object")
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    error = next(iter(validator.iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "/"
        return Verdict(False, "schema", f"{where}: {error.message}")
    return Verdict(True, "ok")
