"""Inference engines behind one small interface (see ``base.Engine``)."""

from edge_agent.engine.base import Engine, EngineKind, Generation, Timings, TokenScore

__all__ = ["Engine", "EngineKind", "Generation", "Timings", "TokenScore"]
