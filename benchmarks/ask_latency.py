"""valid@1, tool accuracy, steps and latency of `edge-agent ask` on a fixed prompt set.

Runs each request through the agent the CLI builds (the composition root,
:class:`edge_agent.assemble.Assembly`: the same engine, ladder, sandbox and
tool block), model loaded once and the tool block warmed as ``ask`` warms
it. ``--exec`` runs the calls in the sandbox (device state in a temporary
folder), as ``ask`` does by default; without it calls are only proposed, so
only the model is timed. Reports valid@1, the share that picked the expected
tool, the tier that answered, model steps per request, whether every answer
reads as a sentence, and p50/p95 latency. The first request pays the cold
prefill of the tool block; it is reported apart.

    python benchmarks/ask_latency.py tests/data/ask_prompts.json [--exec] [--model NAME|PATH]
        [--threads N] [--engine gbnf|llguidance]

Run it with llama.cpp alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from edge_agent.assemble import Assembly
from edge_agent.config import ModelSettings, load_config


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
    parser.add_argument("--exec", action="store_true", help="run the calls, as `ask` does")
    args = parser.parse_args()
    if args.exec:  # device and notes state of this run only
        os.environ["EDGE_AGENT_STATE_DIR"] = tempfile.mkdtemp(prefix="ask-latency-")
    items = json.loads(args.prompts.read_text())
    config = load_config()
    parts = Assembly(
        config.model_copy(update={"model": config.model.model_copy(update={"engine": args.engine})})
    )
    registry = parts.registry()
    engine = parts.engine(args.model, n_threads=args.threads)
    sandbox = parts.sandbox() if args.exec else None
    agent = parts.agent(registry, engine=engine, sandbox=sandbox, confirm=lambda *_: True)
    parts.warm(agent)
    rows = []
    steps, tiers, sentences = [], [], 0
    for item in items:
        result = agent.ask(item["prompt"], execute=args.exec)
        name = result.calls[0].name if result.calls else None
        valid = result.to_json()["valid_at_1"]
        rows.append((result.latency_s, valid, name == item["tool"]))
        steps.append(result.steps)
        tiers.append(result.tier)
        answer = result.answer
        sentences += bool(answer) and answer.rstrip().endswith((".", "?", "!", "。"))
        ran = len(result.executions)
        print(
            f"{result.latency_s:6.2f}s  valid={valid!s:5}  tier={result.tier} steps={result.steps} "
            f"ran={ran} {name or '-':15} {item['prompt']}  -> {answer}"
        )
    warm = sorted(r[0] for r in rows[1:])
    n = len(rows)
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; model {engine.model_name}")
    print(f"threads: {getattr(engine, 'n_threads', '?')}; tools: {len(agent.specs)}; requests: {n}")
    print(f"engine: {args.engine}; executed: {args.exec}")
    share1 = sum(1 for t in tiers if t) / n
    print(
        f"median model steps: {statistics.median(steps)}; answered by tier 1: {share1:.2f}; "
        f"answers that are sentences: {sentences}/{n}"
    )
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
