"""`edge-agent doctor`: what this machine grants edge-agent (more checks to come)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("doctor", help="check what this machine supports")
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    del args
    from edge_agent.sandbox.probe import describe, detect_layers, untrusted_allowed

    layers = detect_layers()
    rows = [("LAYER", "STATE", "DETAIL"), *describe(layers.values())]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    print("sandbox layers:")
    for name, state, detail in rows:
        print(f"  {name.ljust(width[0])}  {state.ljust(width[1])}  {detail}")
    allowed, why = untrusted_allowed(layers)
    print(f"untrusted tools: {'can run' if allowed else 'refused'} ({why})")
    from edge_agent.engine.gpu import gpu_offload_line

    print(gpu_offload_line())
    return 0
