"""`edge-agent bench`: run a benchmark, print a summary table, optionally save JSON.

Thin on purpose: it checks the flags, loads the data and the model, and hands
them to :mod:`edge_agent.bench.bfcl_run`. Bad input (a missing file, a line
that is not JSON, an unknown category or mode, answers missing for a scored
category) is a :class:`BenchError`, printed by ``main`` as one line, and is
reported before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import BenchError

if TYPE_CHECKING:
    from edge_agent.bench.bfcl_run import ItemRecord


def register(subparsers: Any) -> None:
    from edge_agent.bench.bfcl_run import MODES

    bench = subparsers.add_parser("bench", help="run a benchmark and report its metrics")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = kinds.add_parser("bfcl", help="BFCL v4 single-turn function calling, AST-scored")
    p.add_argument("--questions", type=Path, required=True, metavar="FILE")
    p.add_argument("--answers", type=Path, metavar="FILE", help="the possible_answer file")
    p.add_argument("--category", required=True, metavar="NAME", help="e.g. simple_python")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions")
    p.add_argument("--mode", default="slm", metavar="|".join(MODES), help="default: slm")
    p.add_argument("--model", metavar="NAME|PATH", help="manifest name or .gguf path")
    p.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads")
    p.add_argument("--parallel", default="on", metavar="on|off", help="allow several calls")
    p.add_argument("--kwh-price", type=float, default=0.30, metavar="PRICE", help="per kWh")
    p.add_argument(
        "--power", default="auto", metavar="SOURCE", help="auto|rapl|hwmon|cpu-model[:PROFILE]"
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write the full report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=run_bfcl_command)


def run_bfcl_command(args: argparse.Namespace) -> int:
    from edge_agent.bench.bfcl_run import BenchOptions, load_bfcl, run_bfcl, summary_table
    from edge_agent.power import best_probe

    options = BenchOptions(
        category=args.category,
        mode=args.mode,
        parallel=_on_off("--parallel", args.parallel),
        kwh_price=args.kwh_price,
    )
    options.check()
    items = load_bfcl(args.questions, args.answers, options.category, args.limit)
    probe = best_probe(args.power)
    from edge_agent.engine.llama import load_engine

    engine = load_engine(args.model, n_threads=args.threads)
    with _ProgressBar(len(items), args.no_progress) as update:
        report = run_bfcl(items, engine, options, probe=probe, on_item=update)
    if args.json is not None:
        _write_json(args.json, report.to_json())
    print(summary_table(report))
    return 0


def _on_off(flag: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise BenchError(f"{flag} takes on or off, got {value!r}")
    return value == "on"


class _ProgressBar:
    """A tqdm bar on stderr whose update callback shows the running accuracy."""

    def __init__(self, total: int, disabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, file=sys.stderr, unit="item", disable=disabled)
        self._done = 0
        self._correct = 0

    def __enter__(self) -> Callable[[ItemRecord], None]:
        return self.update

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def update(self, record: ItemRecord) -> None:
        self._done += 1
        self._correct += record.correct
        self._bar.set_postfix(acc=f"{self._correct / self._done:.2f}", refresh=False)
        self._bar.update(1)


def _write_json(path: Path, report: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from exc
