"""FAKES, named as such: stand-ins for a real part where the real part is
not what a test is about, or for a fault a real part cannot produce on demand.

:class:`ScriptedEngine` implements the real :class:`~edge_agent.engine.base.Engine`
interface and returns given texts with given log-probabilities, one per
``generate`` call. Use it for a model that keeps failing verification (a
fault the real models produce only by chance) or for router/daemon logic
where what the model says is set by the test. Tests about decoding, grammars
or accuracy use the real llama.cpp engine (``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.decoding.grammar import Grammar
from edge_agent.engine.base import Generation, Timings, TokenScore


@dataclass
class ScriptedEngine:
    """A fake engine: answer ``texts[i]`` to the i-th call (the last one
    repeats), every token at log-probability ``logprob``."""

    texts: Sequence[str]
    logprob: float = -0.01
    name: str = "scripted-fake"
    prompts: list[str] = field(default_factory=list)
    drafts: list[str | None] = field(default_factory=list)

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def model_name(self) -> str:
        return self.name

    def generate(
        self,
        prompt: str,
        *,
        grammar: Grammar | None = None,
        max_tokens: int = 256,
        draft: str | None = None,
    ) -> Generation:
        del grammar, max_tokens
        self.prompts.append(prompt)
        self.drafts.append(draft)
        text = self.texts[min(len(self.prompts) - 1, len(self.texts) - 1)]
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        tokens = tuple(
            TokenScore(i, piece, self.logprob, self.logprob, 0.05) for i, piece in enumerate(pieces)
        )
        return Generation(text, tokens, len(prompt) // 4, "stop", Timings(0.0, 0.0, 0.0))
