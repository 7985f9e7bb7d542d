"""Replay tier 0's call-intent rule at any bias from one forced-call run.

The rule (``call_bias`` in :mod:`edge_agent.engine.guided`) decides, at the
first token of a ``tool_choice=auto`` answer, between a call and a text
answer: it calls when the best call-opening logit plus the bias beats the
best other token. Every run records that difference (``first.margin``), so
one run at ``call_bias = 100`` (a call every time, its margin kept) can be
replayed at any bias b without decoding again: at b an item calls when
margin + b >= 0 and its forced call is scored as it was; otherwise it
answers in text, which is right only where no tool fits (BFCL irrelevance,
the home set's no-tool requests). Run it on tuning items only (BFCL from
item 100 on, ``benchmarks/data/home_tuning.json``):

    edge-agent bench bfcl --mode slm --config bias100.toml --skip 100 --limit 100 \\
        --category C ... --json b100_C.json          (bias100.toml: [model] call_bias = 100)
    python benchmarks/home_requests.py --data benchmarks/data/home_tuning.json \\
        --config bias100.toml --json b100_home.json
    python benchmarks/call_bias_replay.py b100_*.json [--bias -4 -2 0 2 4]

It prints accuracy per category and bias, and the mean over categories
(each category weighs the same, as the acceptance targets are per category).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_BIASES = (-6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0)


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """(category, margin, forced call right) of every item with a margin."""
    items = []
    for path in paths:
        report = json.loads(path.read_text("utf-8"))
        home = "items" in report
        for item in report.get("per_item") or report.get("items") or []:
            tier0 = next((t for t in item.get("tiers") or [] if t["tier"] == 0), None)
            margin = ((tier0 or {}).get("first") or {}).get("margin")
            if tier0 is None or margin is None:
                continue
            if home:
                category = "home-tool" if item.get("expected") else "home-none"
            else:
                category = str(report["category"])
            items.append({"category": category, "margin": margin, "correct": tier0["correct"]})
    return items


def declines_rightly(category: str) -> bool:
    return "irrelevance" in category or category == "home-none"


def right_at(item: dict[str, Any], bias: float) -> bool:
    if item["margin"] + bias >= 0:
        return bool(item["correct"])
    return declines_rightly(item["category"])


def table(items: list[dict[str, Any]], biases: list[float]) -> list[str]:
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_category[item["category"]].append(item)
    categories = sorted(by_category)
    head = ["bias", *[f"{c} ({len(by_category[c])})" for c in categories], "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bias in biases:
        rates = [
            sum(right_at(i, bias) for i in by_category[c]) / len(by_category[c]) for c in categories
        ]
        cells = [f"{bias:+.1f}", *[f"{r:.3f}" for r in rates], f"{sum(rates) / len(rates):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="forced-call run reports")
    parser.add_argument("--bias", type=float, nargs="*", default=list(DEFAULT_BIASES))
    args = parser.parse_args()
    items = load(args.reports)
    if not items:
        raise SystemExit("no item has a recorded call margin: run with [model] call_bias = 100")
    print("\n".join(table(items, args.bias)))


if __name__ == "__main__":
    main()
