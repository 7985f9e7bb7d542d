"""edge-agent: an on-device agent runtime for small language models.

The public API is deliberately small and pinned by ``tests/test_public_api.py``.
Importing this package never loads llama.cpp, paho or onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_agent.errors import EdgeAgentError
from edge_agent.toolbox.registry import tool

if TYPE_CHECKING:
    from edge_agent.agent import Agent

__version__ = "0.1.0"
__all__ = ["Agent", "EdgeAgentError", "__version__", "tool"]


def __getattr__(name: str) -> Any:
    # Agent pulls in the engine layer; load it only when asked for.
    if name == "Agent":
        from edge_agent.agent import Agent

        return Agent
    raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
