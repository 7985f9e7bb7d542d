"""Top-k tool selection: when many tools are registered, offer the model only
the few that match the request (lexical BM25, pure, no model).

A small model reads a long tool block slowly (a 1B model on a Raspberry Pi 5
reads about 15 tokens/s) and chooses worse among many similar tools, so past
a configurable number of tools only the top ``k`` by BM25 score go into the
prompt and the grammar. Each tool is indexed as a short document: its name
(split at ``_``, ``.``, ``-`` and camelCase, counted twice), its description,
its parameter names and descriptions, and its enum values.

Limits, said plainly: matching is lexical. "Make it warmer" shares no word
with ``set_thermostat``'s description, and a synonym the tool author did not
write is invisible; keep ``k`` generous (3-5) and measure recall on your own
requests. The selected set changes the prompt, so it also changes the
KV-cache prefix: with selection on, only requests that select the same tools
share a cached tool block.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.decoding.schema import JSONSchema, ToolSpec

_WORD_RE = re.compile(r"[A-Za-z]+|\d+")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_STOP_WORDS = frozenset(
    re.findall(
        r"\S+",
        "a an and are as at be by can do does for from get give how i in is it its me my of on "
        "or please set show that the this to what when where which with you your",
    )
)
_SUFFIXES = ("ing", "ed", "es", "s")


def terms(text: str) -> list[str]:
    """Lower-cased, lightly stemmed words without stop words.

    ``set_light`` → ``["light"]`` ("set" is a stop word), ``lights`` →
    ``["light"]``, ``readSensor`` → ``["read", "sensor"]``.
    """
    words = _WORD_RE.findall(_CAMEL_RE.sub(" ", text))
    return [_stem(w.lower()) for w in words if w.lower() not in _STOP_WORDS]


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def tool_terms(tool: ToolSpec) -> list[str]:
    """The words a tool is found by (its name twice: names are the strongest hint)."""
    name = terms(tool.name.replace("_", " ").replace(".", " ").replace("-", " "))
    return [*name, *name, *terms(tool.description), *_schema_terms(tool.parameters)]


def _schema_terms(schema: JSONSchema) -> Iterator[str]:
    for key, prop in (schema.get("properties") or {}).items():
        yield from terms(str(key).replace("_", " "))
        if isinstance(prop, dict):
            yield from _property_terms(prop)


def _property_terms(prop: dict[str, Any]) -> Iterator[str]:
    yield from terms(str(prop.get("description", "")))
    for value in prop.get("enum", ()):
        if isinstance(value, str):
            yield from terms(value.replace("_", " "))
    if prop.get("type") == "object":
        yield from _schema_terms(prop)
    items = prop.get("items")
    if isinstance(items, dict):
        yield from _property_terms(items)


@dataclass(frozen=True)
class Scored:
    tool: ToolSpec
    score: float


class ToolIndex:
    """BM25 (Okapi, k1=1.2, b=0.75) over a fixed tool set; build once, query often."""

    def __init__(self, tools: Sequence[ToolSpec], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.tools = list(tools)
        self._docs = [Counter(tool_terms(t)) for t in self.tools]
        lengths = [sum(d.values()) for d in self._docs]
        self._avg_len = sum(lengths) / len(lengths) if lengths else 0.0
        self._lengths = lengths
        self._k1, self._b = k1, b
        df = Counter(term for doc in self._docs for term in doc)
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def score(self, query: str) -> list[Scored]:
        """Every tool with its BM25 score for ``query``, in registry order."""
        words = terms(query)
        return [Scored(t, self._bm25(i, words)) for i, t in enumerate(self.tools)]

    def _bm25(self, index: int, words: list[str]) -> float:
        doc, length = self._docs[index], self._lengths[index]
        norm = self._k1 * (1 - self._b + self._b * length / (self._avg_len or 1.0))
        total = 0.0
        for word in words:
            tf = doc.get(word, 0)
            if tf:
                total += self._idf[word] * tf * (self._k1 + 1) / (tf + norm)
        return total

    def top_k(self, query: str, k: int) -> list[ToolSpec]:
        """The ``k`` best-matching tools, returned in registry order (so the
        prompt is stable for requests that select the same set). Ties keep
        registry order; a query matching nothing returns the first ``k``."""
        if k >= len(self.tools):
            return list(self.tools)
        scored = self.score(query)
        ranked = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))[:k]
        return [self.tools[i] for i in sorted(ranked)]


def select_tools(
    query: str, tools: Sequence[ToolSpec], *, k: int = 5, max_tools: int = 8
) -> list[ToolSpec]:
    """All tools when there are at most ``max_tools``, else the top ``k`` for ``query``."""
    if len(tools) <= max_tools:
        return list(tools)
    return ToolIndex(tools).top_k(query, k)
