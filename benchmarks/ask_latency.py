"""valid@1, tool accuracy and latency of `edge-agent ask` on a fixed prompt set.

Runs each request through the same Agent the CLI uses (model loaded once,
calls proposed but not executed, so only the model is timed), and reports
valid@1, the share that picked the expected tool, and p50/p95 latency. The
first request pays the cold prefill of the tool block; it is reported apart.

    python benchmarks/ask_latency.py tests/data/ask_prompts.json [--model NAME|PATH] [--threads N]
        [--engine gbnf|llguidance]

Run it with llama.cpp alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.config import ModelSettings
from edge_agent.engine.llama import load_engine
from edge_agent.registry import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompts", type=Path, help="JSON list of {prompt, tool}")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--engine",
        choices=("gbnf", "llguidance"),
        default=ModelSettings().engine,
        help="grammar engine (default: the config's default, as `ask` uses)",
    )
    args = parser.parse_args()
    items = json.loads(args.prompts.read_text())
    engine = load_engine(args.model, n_threads=args.threads, engine=args.engine)
    agent = Agent(engine, Registry.from_dirs())
    rows = []
    for item in items:
        result = agent.ask(item["prompt"], execute=False)
        name = result.calls[0].name if result.calls else None
        valid = result.to_json()["valid_at_1"]
        rows.append((result.latency_s, valid, name == item["tool"]))
        print(f"{result.latency_s:6.2f}s  valid={valid!s:5}  {name or '-':15} {item['prompt']}")
    warm = sorted(r[0] for r in rows[1:])
    n = len(rows)
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; model {engine.model_name}")
    print(f"threads: {engine.n_threads}; tools: {len(agent.specs)}; requests: {n}")
    print(f"engine: {args.engine}")
    print("| valid@1 | tool accuracy | cold first call | p50 (warm) | p95 (warm) |")
    print("|---|---|---|---|---|")
    valid_at_1 = sum(r[1] for r in rows) / n
    accuracy = sum(r[2] for r in rows) / n
    p95 = warm[min(len(warm) - 1, round(0.95 * (len(warm) - 1)))]
    print(
        f"| {valid_at_1:.3f} | {accuracy:.3f} | {rows[0][0]:.2f} s "
        f"| {statistics.median(warm):.2f} s | {p95:.2f} s |"
    )


if __name__ == "__main__":
    main()
