"""Inference engines behind one small interface (see ``base.Engine``).

:func:`load_engine` is the one way to load a model: the engine modules, and
llama.cpp with them, are imported only when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

from edge_agent.engine.base import Engine, EngineKind, Generation, Timings, TokenScore
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.engine.guided import GuidedLlamaEngine
    from edge_agent.engine.llama import LlamaEngine

__all__ = ["Engine", "EngineKind", "Generation", "Timings", "TokenScore", "load_engine"]


@overload
def load_engine(
    model: str | None = None,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    engine: Literal["gbnf"] = "gbnf",
) -> LlamaEngine: ...


@overload
def load_engine(
    model: str | None = None,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    engine: EngineKind,
) -> LlamaEngine | GuidedLlamaEngine: ...


def load_engine(
    model: str | None = None,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    engine: EngineKind = "gbnf",
) -> LlamaEngine | GuidedLlamaEngine:
    """Resolve a model name or path, check the file, then load it.

    ``engine`` picks how grammars are enforced (the config's ``model.engine``);
    both kinds load the model the same way, so switching costs nothing at load.
    ``n_gpu_layers`` (the config's ``model.n_gpu_layers``) is handed to
    llama.cpp as is: 0 keeps every layer on the CPU, -1 offloads all of them,
    and a build without GPU support ignores it.
    """
    from edge_agent.engine.llama import LlamaEngine
    from edge_agent.models import resolve_model

    resolved = resolve_model(model)
    base = LlamaEngine(
        resolved.path,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        name=resolved.name,
    )
    if engine == "gbnf":
        return base
    if engine == "llguidance":
        from edge_agent.engine.guided import GuidedLlamaEngine

        lazy = resolved.entry is not None and resolved.entry.constraint == "lazy"
        # Forced tokens scored: the shipped confidence model was fitted on
        # GBNF runs, whose every token has the model's log-probability. Scored,
        # P(success) moves by 0.003 on average against GBNF (unscored 0.022,
        # up to 0.54) on 140 BFCL tuning items, at no measurable cost
        # (benchmarks/confidence_engines.py, docs/constraint_strategy.md).
        return GuidedLlamaEngine(base, lazy=lazy, score_forced=True)
    raise ConfigError(f"unknown engine {engine!r}", hint="use gbnf or llguidance")
