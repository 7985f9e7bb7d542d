"""The engine interface: one method, ``generate``.

The pipeline receives an engine; it never builds one. Tests and benchmarks
pass the real llama.cpp engine; a later engine (llguidance masks, a remote
server) only has to implement this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from edge_agent.decoding.grammar import Grammar

FinishReason = Literal["stop", "length"]
EngineKind = Literal["gbnf", "llguidance"]
"""How a grammar is enforced: llama.cpp's GBNF sampler, or llguidance masks
with fast-forward tokens (:mod:`edge_agent.engine.guided`)."""


@dataclass(frozen=True)
class TokenScore:
    """One generated token, scored by the *unconstrained* model.

    ``logprob`` is log p(token) under the model's own distribution before any
    grammar mask, so a token the grammar forced on an unwilling model shows up
    as a low value; ``top_logprob`` is the best token's log p, and
    ``entropy`` (nats) the spread of that distribution. ``top`` lists the
    best tokens and their log p, best first, when a client asked for them
    (OpenAI's ``top_logprobs``); it is empty otherwise.
    """

    token: int
    text: str
    logprob: float
    top_logprob: float
    entropy: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Timings:
    load_s: float
    prefill_s: float
    decode_s: float

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[TokenScore, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    timings: Timings

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


class Engine(Protocol):
    """Anything that turns a prompt (and optionally a grammar) into text."""

    @property
    def chat_template(self) -> str | None: ...

    @property
    def model_name(self) -> str: ...

    def generate(
        self,
        prompt: str,
        *,
        grammar: Grammar | None = None,
        max_tokens: int = 256,
        draft: str | None = None,
    ) -> Generation:
        """``draft``: a guess at the output (a lower ladder tier's answer). An
        engine that can check a guess in one batch keeps the part it agrees
        with; the output is the same with or without it."""
        ...
