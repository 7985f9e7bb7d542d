"""Tests of the built-in tools in the top-level ``tools/`` folder.

``tools/`` is not a Python package: the registry loads each module by path.
The tests load them the same way, so they exercise the very functions a
registry (and the sandbox child) would run.
"""

from __future__ import annotations

from types import ModuleType

from edge_agent.toolbox.registry import BUILTIN_TOOLS_DIR, load_module


def load_tool_module(name: str) -> ModuleType:
    """``tools/<name>.py``, loaded exactly as ``Registry.from_dirs`` loads it."""
    return load_module(BUILTIN_TOOLS_DIR / f"{name}.py")
