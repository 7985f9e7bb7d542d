"""Run tool calls where they cannot hurt the agent: :class:`ProcessSandbox`.

This sandbox stops accidents and common attacks; it is not a VM. See
:mod:`edge_agent.sandbox.process` for what each call gets and
:func:`detect_layers` and :func:`containment` (``edge-agent doctor``) for
what this machine grants.

The heavy parts load on first use: the sandbox child imports this package
at every call and needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_agent.sandbox.base import KilledBy, Sandbox, SandboxLimits, SandboxResult

if TYPE_CHECKING:
    from edge_agent.sandbox.probe import Containment, LayerStatus, containment, detect_layers
    from edge_agent.sandbox.process import ProcessSandbox, harden_current_process

_LAZY = {
    "Containment": "probe",
    "LayerStatus": "probe",
    "containment": "probe",
    "detect_layers": "probe",
    "ProcessSandbox": "process",
    "harden_current_process": "process",
}

__all__ = [
    "Containment",
    "KilledBy",
    "LayerStatus",
    "ProcessSandbox",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "containment",
    "detect_layers",
    "harden_current_process",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edge_agent.sandbox.{module}"), name)
