"""Inference engines behind one small interface (see ``base.Engine``)."""

from edge_agent.engine.base import Engine, Generation, Timings, TokenScore

__all__ = ["Engine", "Generation", "Timings", "TokenScore"]
