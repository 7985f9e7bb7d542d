"""`edge-agent router calibrate`: fit the confidence model and write it.

The model is written as JSON logistic weights, evaluated with numpy (what
``models/confidence.json`` is); an ``--out`` ending in ``.onnx`` writes an
ONNX graph instead, which needs the ``onnx`` extra.

Examples come from benchmark reports (``bench bfcl --json``: per-item
features and whether the item was correct) and/or from a journal (offloaded
requests, the cloud model as the teacher; see
:func:`edge_agent.routing.confidence.example_from_routed`). The fit is an
L2-regularised logistic regression; the summary shows its in-sample
calibration and, per threshold τ, how many answers would stay local and how
many of those were right.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_agent.errors import BenchError, InputError

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def register(subparsers: Any) -> None:
    router = subparsers.add_parser("router", help="routing: calibrate the confidence model")
    actions = router.add_subparsers(dest="router_command", metavar="ACTION", required=True)
    p = actions.add_parser("calibrate", help="fit P(success) from bench runs or the journal")
    p.add_argument(
        "--from-bench",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a `bench bfcl --json` report (repeatable)",
    )
    p.add_argument("--from-journal", type=Path, metavar="PATH", help="a journal database")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="the model to write: JSON weights run by numpy (e.g. confidence.json), "
        "or an ONNX graph if FILE ends in .onnx (needs edge-agent[onnx])",
    )
    p.add_argument("--l2", type=float, default=1.0, metavar="L", help="L2 penalty (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_agent.routing.confidence import calibration, fit_logistic, logistic_onnx

    rows, labels = _examples(args.from_bench, args.from_journal)
    x, y = np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    try:
        fit = fit_logistic(x, y, l2=args.l2)
    except InputError as exc:
        raise BenchError(f"cannot calibrate: {exc.message}") from exc
    p = fit.predict(x)
    if args.out.suffix.lower() == ".onnx":
        model = logistic_onnx(fit)
    else:
        meta = {
            "examples": len(labels),
            "successes": int(y.sum()),
            "l2": args.l2,
            "in_sample": calibration(p, y).to_json(),
            "sources": [str(b) for b in args.from_bench]
            + ([str(args.from_journal)] if args.from_journal else []),
        }
        model = (json.dumps(fit.to_json(metadata=meta), indent=2) + "\n").encode("utf-8")
    _write(args.out, model)
    summary: dict[str, Any] = {
        "out": str(args.out),
        "examples": len(labels),
        "successes": int(y.sum()),
        "fit": calibration(p, y).to_json(),
        "iterations": fit.iterations,
        "thresholds": [_at_threshold(p, y, tau) for tau in THRESHOLDS],
    }
    print(json.dumps(summary, indent=2) if args.json else _table(summary))
    return 0


def _examples(benches: list[Path], journal: Path | None) -> tuple[list[list[float]], list[int]]:
    from edge_agent.routing.confidence import (
        example_from_routed,
        example_from_shadow,
        examples_from_bench,
    )

    if not benches and journal is None:
        raise BenchError(
            "nothing to calibrate from", hint="pass --from-bench FILE or --from-journal"
        )
    rows: list[list[float]] = []
    labels: list[int] = []
    for path in benches:
        try:
            got = examples_from_bench(_read_json(path))
        except InputError as exc:
            raise BenchError(f"{path}: {exc.message}") from exc
        rows += got[0]
        labels += got[1]
    if journal is not None:
        for result in _journal_results(journal):
            example = example_from_routed(result) or example_from_shadow(result)
            if example is not None:
                rows.append(example[0])
                labels.append(example[1])
    if not rows:
        raise BenchError(
            "no examples with features were found",
            hint="bench reports need per-item features (a bench run of this version)",
        )
    return rows, labels


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BenchError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchError(f"{path} is not a bench report (a JSON object)")
    return data


def _journal_results(path: Path) -> list[dict[str, Any]]:
    from edge_agent.records.journal import Journal

    with Journal(path, create=False) as journal:
        rows = journal.recent(limit=1_000_000)
    return [r.result for r in rows if r.status == "done" and r.result is not None]


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _at_threshold(p: Any, y: Any, tau: float) -> dict[str, Any]:
    local = p >= tau
    kept = int(local.sum())
    accuracy = float(y[local].mean()) if kept else None
    return {
        "threshold": tau,
        "local_share": round(kept / len(y), 4),
        "local_accuracy": None if accuracy is None else round(accuracy, 4),
    }


def _table(summary: dict[str, Any]) -> str:
    fit = summary["fit"]
    lines = [
        f"wrote {summary['out']}: logistic regression on {summary['examples']} examples "
        f"({summary['successes']} successes)",
        f"in-sample log-loss {fit['log_loss']:.4f}, Brier {fit['brier']:.4f}, ECE {fit['ece']:.4f}",
        "",
        "τ     local share  local accuracy",
    ]
    for row in summary["thresholds"]:
        acc = "n/a" if row["local_accuracy"] is None else f"{row['local_accuracy']:.3f}"
        lines.append(f"{row['threshold']:.2f}  {row['local_share']:11.3f}  {acc:>14}")
    return "\n".join(lines)
