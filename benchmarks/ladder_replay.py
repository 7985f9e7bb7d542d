"""Replay the local ladder at any threshold from one recorded run.

Run ``edge-agent bench bfcl --mode ladder --ladder-threshold 1.0 --json F``
once per category: every item is then answered by tier 0 *and* tier 1, each
answer scored on its own with its P(success) and decode time. This script
replays τ without decoding again: an item stays on tier 0 when its answer
was verified and P ≥ τ, else it takes tier 1's answer. Per τ it prints
accuracy, the share that climbs and the mean model time per item (tier 0's
time, plus tier 1's for the items that climb; the one-time model loads
aside), next to tier 0 alone and tier 1 alone. Then it picks τ from the
error budget (``edge_agent.ladder.threshold_for``): the lowest τ at which
the wrong answers tier 0 keeps stay within ``--max-error`` of all requests.

    python benchmarks/ladder_replay.py test_*.json [--tune tune_*.json] [--max-error 0.02]

``--tune``: bench reports of tier 0 alone (``--mode slm``) on *other* items
(the tuning items from 100 on); τ0 is then chosen on them, with P(success)
recomputed from each item's recorded features by the shipped confidence
model, and only replayed on the reports given first.

``--call-bias``: when the run forced tier 1 to open a call (its tier had
``call_bias = 100``), replay tier 1's answers at other biases too, from the
recorded call margin (``first.margin``: the best call-opening logit minus
the best other at the first token): at bias b tier 1 calls when
margin + b >= 0, else answers in text, which is right only where no tool
fits. It prints accuracy per bias for tier 1 alone, then the ladder at τ0.

The replayed times are a model of the ladder, not a measurement of it: the
acceptance speed figures come from a real run at the chosen τ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_agent.ladder import threshold_for
from edge_agent.routing.confidence import Features, load_confidence


def tuning_scores(paths: list[Path]) -> list[tuple[float, bool]]:
    """(P(success), correct) of tier 0's answers in ``--mode slm`` reports."""
    model = load_confidence(None)
    scored = []
    for path in paths:
        for item in json.loads(path.read_text("utf-8"))["per_item"]:
            if item.get("features"):
                p = model.p_success(Features.from_json(item["features"]))
                scored.append((p, bool(item["correct"])))
    return scored


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Items answered by both tiers, from ``bench bfcl --json`` reports or
    ``benchmarks/home_requests.py --json`` ones (category ``home-tool`` or
    ``home-none``; a text answer is right only on ``home-none``)."""
    items = []
    for path in paths:
        report = json.loads(path.read_text("utf-8"))
        for item in report.get("per_item") or report.get("items") or []:
            tiers = {t["tier"]: t for t in item.get("tiers") or []}
            if {0, 1} <= set(tiers):
                category = report.get("category") or (
                    "home-tool" if item.get("expected") else "home-none"
                )
                items.append({"category": category, "t0": tiers[0], "t1": tiers[1]})
    return items


def declines_rightly(category: str) -> bool:
    """Whether a text answer (a decline) is the right answer in ``category``."""
    return "irrelevance" in category or category == "home-none"


def at_bias(item: dict[str, Any], bias: float) -> dict[str, Any]:
    """The item with tier 1's answer replayed at ``bias`` (see --call-bias)."""
    t1, first = item["t1"], item["t1"].get("first") or {}
    if first.get("margin") is None or first["margin"] + bias >= 0:
        return item
    declined = {**t1, "correct": declines_rightly(item["category"]), "valid": True}
    return {**item, "t1": declined}


def replay(items: list[dict[str, Any]], tau: float) -> dict[str, float]:
    right = seconds = climbed = 0.0
    for item in items:
        t0, t1 = item["t0"], item["t1"]
        stays = t0["valid"] and (t0["p_success"] or 0.0) >= tau
        right += t0["correct"] if stays else t1["correct"]
        seconds += t0["seconds"] + (0.0 if stays else t1["seconds"])
        climbed += not stays
    n = len(items)
    return {"accuracy": right / n, "climb": climbed / n, "mean_s": seconds / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="bench --json files")
    parser.add_argument("--max-error", type=float, default=0.02, help="router.max_local_error")
    parser.add_argument(
        "--tune", type=Path, nargs="*", default=[], help="slm reports to pick τ0 on"
    )
    parser.add_argument(
        "--call-bias", type=float, nargs="*", metavar="B", help="replay tier 1 at these biases"
    )
    args = parser.parse_args()
    items = load(args.reports)
    if args.call_bias:
        bias_table(items)
        return
    n = len(items)
    alone = [sum(i[k]["correct"] for i in items) / n for k in ("t0", "t1")]
    times = [sum(i[k]["seconds"] for i in items) / n for k in ("t0", "t1")]
    print(f"{n} items; tier 0 alone {alone[0]:.3f} ({times[0]:.2f} s), "
          f"tier 1 alone {alone[1]:.3f} ({times[1]:.2f} s)")  # fmt: skip
    print("| τ | accuracy | climbs | mean model s | vs tier 1 time |")
    print("|---|---|---|---|---|")
    for tau in (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0):
        r = replay(items, tau)
        ratio = r["mean_s"] / times[1]
        cells = [f"{tau:.2f}", f"{r['accuracy']:.3f}", f"{r['climb']:.2f}", f"{r['mean_s']:.2f}"]
        print("| " + " | ".join([*cells, f"{ratio:.2f}×"]) + " |")
    scored = tuning_scores(args.tune) if args.tune else [
        ((i["t0"]["p_success"] or 0.0) if i["t0"]["valid"] else 0.0, i["t0"]["correct"])
        for i in items
    ]  # fmt: skip
    cal = threshold_for(scored, args.max_error)
    picked_on = f"{len(scored)} tuning items" if args.tune else "these items (not held out)"
    print(f"\nτ0 picked on {picked_on}")
    r = replay(items, cal.threshold)
    print(
        f"error budget {args.max_error:.0%}: τ0 = {cal.threshold:.4f}; tier 0 keeps "
        f"{cal.kept}/{n} ({cal.keep_rate:.0%}), {cal.wrong} of them wrong "
        f"({cal.error_rate:.1%} of all items, bound {cal.bound:.1%}); ladder accuracy "
        f"{r['accuracy']:.3f}, climbs {r['climb']:.0%}, {r['mean_s'] / times[1]:.2f}× tier 1's time"
    )
    for category in sorted({i["category"] for i in items}):
        part = [i for i in items if i["category"] == category]
        rc = replay(part, cal.threshold)
        print(f"  {category}: {len(part)} items, accuracy {rc['accuracy']:.3f}, "
              f"climbs {rc['climb']:.0%}")  # fmt: skip


def bias_table(items: list[dict[str, Any]]) -> None:
    """Tier 1 alone, and the ladder at a few τ0, per call bias."""
    categories = sorted({i["category"] for i in items})
    print("| call bias | " + " | ".join(categories) + " | tier 1 all | ladder τ0=0.88 |")
    print("|---" * (len(categories) + 3) + "|")
    for bias in (-2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 100.0):
        biased = [at_bias(i, bias) for i in items]
        cells = []
        for category in categories:
            part = [i for i in biased if i["category"] == category]
            cells.append(f"{sum(i['t1']['correct'] for i in part) / len(part):.3f}")
        alone = sum(i["t1"]["correct"] for i in biased) / len(biased)
        ladder = replay(biased, 0.88)["accuracy"]
        print(f"| {bias:g} | " + " | ".join(cells) + f" | {alone:.3f} | {ladder:.3f} |")


if __name__ == "__main__":
    main()
