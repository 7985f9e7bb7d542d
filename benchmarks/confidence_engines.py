"""Does the shipped confidence model read another grammar engine's runs the same way?

The confidence model (``models/confidence.json``) was fitted on features of
GBNF-engine runs. llguidance with fast-forward leaves forced tokens unscored
(log-probability 0) unless ``score_forced`` is on, which moves the
log-probability features. This script takes ``edge-agent bench bfcl --json``
reports of the same items under several engines, the first one the
reference, scores every item's features with the confidence model, and
prints per report: accuracy, calibration (log-loss, Brier, ECE), the share
kept local at ``--threshold`` and the accuracy of what is kept; and against
the reference: the mean and largest change of P(success), and on how many
items the route (local or offload) differs.

Usage::

    python benchmarks/confidence_engines.py gbnf=a.json llg_ff=b.json ... [--threshold 0.6]

Several reports may share a label (one per category); they are concatenated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.routing.confidence import SHIPPED_MODEL, Features, calibration, load_confidence


def load(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Per-item rows (id → item) of the reports, in order."""
    items: dict[str, dict[str, Any]] = {}
    for path in paths:
        for item in json.loads(path.read_text(encoding="utf-8"))["per_item"]:
            if isinstance(item.get("features"), dict):
                items[item["id"]] = item
    return items


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=REPORT.json")
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--confidence", type=Path, default=SHIPPED_MODEL)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    model = load_confidence(args.confidence)
    runs: dict[str, list[Path]] = {}
    for spec in args.runs:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"expected LABEL=REPORT.json, got {spec!r}")
        runs.setdefault(label, []).append(Path(path))
    loaded = {label: load(paths) for label, paths in runs.items()}
    ids = sorted(set.intersection(*(set(items) for items in loaded.values())))
    if not ids:
        raise SystemExit("the reports share no item with features")
    tau = args.threshold
    probs: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"items": len(ids), "threshold": tau, "runs": {}}
    reference = next(iter(loaded))
    for label, items in loaded.items():
        rows = [Features.from_json(items[i]["features"]).vector() for i in ids]
        p_ok = model.predict(np.asarray(rows))
        probs[label] = p_ok
        y = np.asarray([int(bool(items[i]["correct"])) for i in ids])
        local = p_ok >= tau
        cal = calibration(p_ok, y)
        row: dict[str, Any] = {
            "accuracy": float(y.mean()),
            **cal.to_json(),
            "kept_local": float(local.mean()),
            "local_accuracy": float(y[local].mean()) if local.any() else None,
        }
        if label != reference:
            ref = probs[reference]
            same_calls = [
                json.dumps(items[i]["calls"]) == json.dumps(loaded[reference][i]["calls"])
                for i in ids
            ]
            row |= {
                "same_calls": float(np.mean(same_calls)),
                "mean_abs_dp": float(np.mean(np.abs(p_ok - ref))),
                "max_abs_dp": float(np.max(np.abs(p_ok - ref))),
                "route_changes": int(np.sum(local != (ref >= tau))),
            }
        out["runs"][label] = row
    print(f"{len(ids)} items, τ = {tau}, reference {reference}")
    head = f"{'run':<16}{'acc':>6}{'logloss':>9}{'brier':>7}{'ece':>7}{'local':>7}{'loc_acc':>8}"
    print(head + f"{'same':>7}{'|dP|':>7}{'max':>7}{'moves':>6}")
    for label, r in out["runs"].items():
        line = (
            f"{label:<16}{r['accuracy']:>6.3f}{r['log_loss']:>9.3f}{r['brier']:>7.3f}"
            f"{r['ece']:>7.3f}{r['kept_local']:>7.3f}"
            f"{'-' if r['local_accuracy'] is None else format(r['local_accuracy'], '.3f'):>8}"
        )
        if "mean_abs_dp" in r:
            line += (
                f"{r['same_calls']:>7.3f}{r['mean_abs_dp']:>7.3f}{r['max_abs_dp']:>7.3f}"
                f"{r['route_changes']:>6}"
            )
        print(line)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
