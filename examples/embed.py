"""Embedding edge-agent in a program: the program's own functions as tools.

    python examples/embed.py "Water the back garden for 5 minutes"

The tools are plain functions marked with ``@tool``; their signatures become
their schemas and grammars. Everything else (the default model, the
verifier, the sandbox the calls run in) comes from the same composition root
``edge-agent ask`` uses, configured by the usual config file and
environment. The sandbox imports this file again to run a tool, which is why
the program itself sits under the ``__main__`` guard and imports the runtime
inside ``main``: the sandboxed import needs only ``edge_agent.tool``.
"""

from __future__ import annotations

import sys
from typing import Literal

from edge_agent import tool


@tool(
    "Water one zone of the garden for some minutes.",
    side_effect="actuate",
    say="Watering the {zone} garden for {minutes} minutes.",
)
def water(zone: Literal["front", "back"], minutes: int) -> dict[str, object]:
    # A real program would open a valve here; this one only says what it would do.
    return {"zone": zone, "minutes": minutes, "started": True}


def main(request: str) -> int:
    from edge_agent.assemble import Assembly
    from edge_agent.toolbox.registry import Registry

    parts = Assembly.from_file(None)
    agent = parts.agent(Registry.from_functions(water), sandbox=parts.sandbox())
    result = agent.ask(request)
    for execution in result.executions:
        print(f"{execution.call.name}({execution.call.arguments}) -> {execution.status}")
    print(result.answer or result.final.problem)
    return 0 if result.calls else 1


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "Water the back garden for 5 minutes"))
