"""Run tool calls where they cannot hurt the agent: :class:`ProcessSandbox`.

This sandbox stops accidents and common attacks; it is not a VM. See
:mod:`edge_agent.sandbox.process` for what each call gets and
:func:`detect_layers` (``edge-agent doctor``) for what this machine grants.

The heavy parts load on first use: the sandbox child imports this package
at every call and needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_agent.sandbox.base import KilledBy, Sandbox, SandboxLimits, SandboxResult

if TYPE_CHECKING:
    from edge_agent.sandbox.probe import LayerStatus, detect_layers, untrusted_allowed
    from edge_agent.sandbox.process import ProcessSandbox, harden_current_process

_LAZY = {
    "LayerStatus": "probe",
    "detect_layers": "probe",
    "untrusted_allowed": "probe",
    "ProcessSandbox": "process",
    "harden_current_process": "process",
}

__all__ = [
    "KilledBy",
    "LayerStatus",
    "ProcessSandbox",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "detect_layers",
    "harden_current_process",
    "untrusted_allowed",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edge_agent.sandbox.{module}"), name)
