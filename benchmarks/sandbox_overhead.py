"""Per-call cost of the sandbox: a trivial tool in ProcessSandbox vs in-process.

Both are measured side by side in one run (interleaved, so load on the
machine hits both alike), N calls each, and printed as a Markdown table
with the median, p95 and their ratio, plus the machine and the layers used.
A third row validates the arguments with pydantic before the in-process
call, as an in-process executor would.

    python benchmarks/sandbox_overhead.py [-n 30] [--disable bwrap,cgroup]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry, Tool, validate_args

TOOL_SOURCE = """
from edge_agent.toolbox.registry import tool


@tool("Add two integers.")
def add(a: int, b: int) -> int:
    return a + b
"""


def _tool(folder: Path) -> Tool:
    (folder / "trivial.py").write_text(textwrap.dedent(TOOL_SOURCE))
    os.chmod(folder, 0o755)  # the sandbox may run it as another uid
    return Registry.from_dirs(folder, builtin=False).get("add")


def _time(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30, help="calls of each kind (default 30)")
    parser.add_argument(
        "--disable", default="", help="sandbox layers to leave out, comma-separated"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp:
        item = _tool(Path(tmp))
        assert item.func is not None
        func = item.func
        sandbox = ProcessSandbox(disable=[d for d in args.disable.split(",") if d])
        warm = sandbox.run(item, {"a": 1, "b": 2})  # probes the layers once
        if not warm.ok or warm.value != 3:
            print(f"sandbox call failed: {warm.error}", file=sys.stderr)
            return 1
        inproc: list[float] = []
        validated: list[float] = []
        boxed: list[float] = []
        for i in range(args.n):
            inproc.append(_time(lambda i=i: func(a=i, b=1)))
            validated.append(_time(lambda i=i: func(**dict(validate_args(item, {"a": i, "b": 1})))))
            boxed.append(_time(lambda i=i: sandbox.run(item, {"a": i, "b": 1})))
    _report({"in-process": inproc, "in-process, validated": validated, "ProcessSandbox": boxed},
            warm.layers)  # fmt: skip
    return 0


def _report(samples: dict[str, list[float]], layers: tuple[str, ...]) -> None:
    rows = [(name, statistics.median(s), _p95(s)) for name, s in samples.items()]
    inproc, boxed = samples["in-process"], samples["ProcessSandbox"]
    ratio_median = rows[-1][1] / rows[0][1]
    ratio_p95 = rows[-1][2] / rows[0][2]
    print(f"machine: {platform.platform()}, {platform.machine()}, nproc={os.cpu_count()}, "
          f"python {platform.python_version()}, euid={os.geteuid()}")  # fmt: skip
    print(f"layers: {', '.join(layers)}\n")
    print("| call | n | median (ms) | p95 (ms) |\n|---|---|---|---|")
    for name, median, p95 in rows:
        print(f"| {name} | {len(samples[name])} | {_ms(median)} | {_ms(p95)} |")
    print(f"| ratio sandbox / in-process | | {ratio_median:,.0f}x | {ratio_p95:,.0f}x |")
    extra = statistics.median(boxed) - statistics.median(inproc)
    print(f"\nsandbox overhead per call: {extra * 1000:.0f} ms (median)")


if __name__ == "__main__":
    sys.exit(main())
