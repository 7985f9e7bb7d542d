"""`edge-agent doctor`: what this machine grants edge-agent (more checks to come)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check what this machine supports",
        description="Report the sandbox layers this machine grants and whether untrusted "
        "tools can be contained (EDGE_AGENT_SANDBOX_DISABLE turns layers off).",
    )
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    del args
    from edge_agent.sandbox.probe import (
        DISABLE_ENV,
        OPTIONAL_LAYERS,
        LayerStatus,
        containment,
        describe,
        detect_host,
        detect_layers,
        disabled_from_env,
    )

    off = disabled_from_env()
    verdict = containment(off)

    def shown(layer: LayerStatus) -> LayerStatus:
        if layer.name in off:
            return LayerStatus(layer.name, False, f"disabled by {DISABLE_ENV}")
        if layer.active and layer.name in OPTIONAL_LAYERS and layer.name not in verdict.layers:
            why = f"{detect_host().private_path} is not readable by other users"
            return LayerStatus(layer.name, False, f"{why}, and bwrap is disabled")
        return layer

    layers = [shown(layer) for layer in detect_layers().values()]
    rows = [("LAYER", "STATE", "DETAIL"), *describe(layers)]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    print("sandbox layers:")
    for name, state, detail in rows:
        print(f"  {name.ljust(width[0])}  {state.ljust(width[1])}  {detail}")
    if verdict.contained:
        print(f"untrusted tools: contained ({verdict.reason})")
    else:
        print(f"untrusted tools: not contained here ({verdict.reason})")
        print("  built-in tools still run with the layers above; other untrusted tools are refused")
        print(f"  hint: {verdict.hint}")
    from edge_agent.engine.gpu import gpu_offload_line

    print(gpu_offload_line())
    _ladder()
    return 0


def _ladder() -> None:
    """Each local tier above the default model: on, or off and why."""
    from edge_agent.assemble import Assembly

    parts = Assembly()
    ladder = parts.config.ladder
    if not ladder.enabled:
        print("ladder: off (ladder.enabled = false): tier 0 answers alone")
    else:
        climbs = [
            *(["calls to dangerous tools"] if ladder.dangerous else []),
            *([f"unsure answers (P < {ladder.threshold})"] if ladder.climb_unsure else []),
        ]
        print(f"ladder: climbs on {' and '.join(climbs) or 'nothing'}")
    for tier in parts.tier_status():
        print(f"ladder tier {tier.name}: {'on' if tier.on else 'off'} ({tier.detail})")
