"""Run the fuzz doors (``tests/fuzz``) and print their figures.

    python benchmarks/fuzz_report.py --examples 10000

Runs pytest on the fuzz tests with ``EDGE_AGENT_FUZZ_EXAMPLES`` set, each
door appending its record to a report file, then prints one row per door:
inputs, crashes (a door whose test failed: an exception other than a typed
error, or an input not accounted for), hangs (inputs past the per-input
deadline, which fail the test too), the slowest input, and for the doors
that run through a live process its RSS before and after. The exit status
is pytest's, so a crash fails the script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run(examples: int, deadline_ms: int, selection: list[str]) -> tuple[int, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = {
            **os.environ,
            "EDGE_AGENT_FUZZ_EXAMPLES": str(examples),
            "EDGE_AGENT_FUZZ_DEADLINE_MS": str(deadline_ms),
            "EDGE_AGENT_FUZZ_REPORT": str(report),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
        code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
        lines = report.read_text().splitlines() if report.exists() else []
    return code, [json.loads(line) for line in lines]


def table(records: list[dict[str, Any]], deadline_ms: int) -> str:
    rows = [f"{'door':<28} {'inputs':>7} {'crashes':>7} {'hangs':>5} {'slowest':>8}  RSS KiB"]
    for r in records:
        passed = r["notes"].get("passed", False)
        rss = r["rss_kib"]
        memory = f"{rss['before']} -> {rss['after']}" if rss else "-"
        hangs = int(r["slowest_s"] * 1000 > deadline_ms)
        rows.append(
            f"{r['door']:<28} {r['inputs']:>7} {0 if passed else 1:>7} {hangs:>5}"
            f" {r['slowest_s']:>7.3f}s  {memory}"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per door")
    parser.add_argument("--deadline-ms", type=int, default=5000, help="per-input hang limit")
    parser.add_argument("--json", action="store_true", help="print the raw records too")
    parser.add_argument("tests", nargs="*", default=["tests/fuzz"], help="pytest selection")
    args = parser.parse_args()
    start = time.monotonic()
    code, records = run(args.examples, args.deadline_ms, args.tests)
    print(f"\nfuzz doors at {args.examples} inputs each ({time.monotonic() - start:.0f} s):")
    print(table(records, args.deadline_ms))
    if args.json:
        for record in records:
            print(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main())
