"""Exact-call accuracy, declines and latency on the held-out home requests.

Runs every request of ``benchmarks/data/home_requests.json`` through the agent
``edge-agent ask --json`` builds (same config, registry, engine and settings;
see :func:`build_agent`), in one process with the model loaded once and the
tool block warmed first, as ``ask`` warms it. Each answer is scored by
``edge_agent.bench.home_score`` (same multiset of calls, order ignored).

By default calls are proposed, not executed: one step per request (and a
repair when the first answer fails verification), so only the decision is
timed, as the issue's latency target asks. ``--exec`` runs them in the process
sandbox with a throw-away state folder (device state and notes start empty;
dangerous actions are confirmed), so the model gets its later steps too.

    flock /tmp/llama.lock python benchmarks/home_requests.py [--model NAME|PATH]
        [--config FILE] [--threads N] [--[no-]parallel] [--exec] [--start N] [--limit N]
        [--ids ID,...] [--json OUT]
    python benchmarks/home_requests.py --report OUT1 OUT2 ...   (merge chunked runs)

A no-tool item is right only when declined: no call and a text answer (all
attempts being invalid calls is no decline). The data is held out: read the
failures to find out what is wrong, never tune prompts on these items. Run
it with llama.cpp alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent, Result
from edge_agent.bench.home_score import Score, score
from edge_agent.config import EdgeAgentConfig, load_config, state_dir
from edge_agent.errors import EngineError

DATA = Path(__file__).resolve().parent / "data" / "home_requests.json"


def main() -> int:
    args = _parser().parse_args()
    if args.report:
        return _report(args.report)
    items = _select(json.loads(args.data.read_text(encoding="utf-8")), args)
    with tempfile.TemporaryDirectory(prefix="home-requests-") as tmp:
        agent, config = build_agent(args, Path(tmp) if args.exec else None)
        cache = _warm(agent, args.kv_dir) if config.model.prefix_cache else None
        rows = [_run(agent, item, execute=args.exec) for item in items]
    summary = summarize(rows)
    meta = _meta(args, agent, config, cache)
    _print_report(meta, summary, rows)
    if args.json is not None:
        out = {"meta": meta, "summary": summary, "items": rows}
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"\nper-item results: {args.json}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the request set (JSON)")
    parser.add_argument("--model", metavar="NAME|PATH", help="as ask's --model")
    parser.add_argument("--config", type=Path, metavar="FILE", help="as ask's --config")
    parser.add_argument("--threads", type=int, metavar="N", help="as ask's --threads")
    parser.add_argument(
        "--parallel", action=argparse.BooleanOptionalAction, help="as ask's --[no-]parallel"
    )
    parser.add_argument("--exec", action="store_true", help="run the calls in a temp sandbox")
    parser.add_argument("--start", type=int, default=0, metavar="N", help="skip the first N items")
    parser.add_argument("--limit", type=int, metavar="N", help="only N items")
    parser.add_argument("--ids", metavar="ID,...", help="only these item ids")
    parser.add_argument("--kv-dir", type=Path, metavar="DIR", help="tool-block cache (ask's)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write per-item results here")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="no model: summarize the items of earlier --json files (e.g. chunked runs)",
    )
    return parser


def _report(paths: list[Path]) -> int:
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    rows = [row for run in runs for row in run["items"]]
    meta = {**runs[0]["meta"], "merged_from": [str(path) for path in paths]}
    _print_report(meta, summarize(rows), rows)
    return 0


def _select(items: list[dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    if args.ids:
        wanted = set(args.ids.split(","))
        items = [item for item in items if item["id"] in wanted]
    items = items[args.start :]
    return items[: args.limit] if args.limit is not None else items


def build_agent(args: argparse.Namespace, exec_root: Path | None) -> tuple[Agent, EdgeAgentConfig]:
    """The agent ``edge-agent ask`` builds, from the same composition root
    (the default ladder included). ``exec_root``: run calls in a sandbox
    whose tool state lives there; None proposes calls only."""
    from edge_agent.assemble import Assembly

    if exec_root is not None:  # the sandbox keeps tool state under the state dir
        os.environ["EDGE_AGENT_STATE_DIR"] = str(exec_root)
    parts = Assembly(load_config(args.config))
    settings = parts.config.agent
    if args.parallel is not None:
        settings = settings.model_copy(update={"parallel_calls": args.parallel})
    agent = parts.agent(
        parts.registry(),
        engine=parts.engine(args.model, n_threads=args.threads),
        settings=settings,
        sandbox=None if exec_root is None else parts.sandbox(),
        confirm=lambda call, tool: True,  # like ask --yes: the state is thrown away
    )
    return agent, parts.config


def _warm(agent: Agent, kv_dir: Path | None) -> dict[str, Any] | None:
    """The tool block resident before the first request, as ``ask`` does it."""
    try:
        warm = agent.warm(kv_dir or state_dir() / "kv")
    except (EngineError, OSError) as exc:
        print(f"note: tool block not cached: {exc}", file=sys.stderr)
        return None
    if warm is None:
        return None
    return {"source": warm.source, "tokens": warm.n_tokens, "seconds": round(warm.seconds, 3)}


def _run(agent: Agent, item: dict[str, Any], *, execute: bool) -> dict[str, Any]:
    start = time.perf_counter()
    result = agent.ask(item["prompt"], execute=execute)
    wall = time.perf_counter() - start
    calls = [call.to_dict() for call in result.calls]
    verdict = score(item["expected"], calls)
    if verdict.correct and not item["expected"] and not declined(result):
        # No verified call because every attempt was an invalid call: not a decline.
        verdict = Score(False, f"no text answer: {result.final.problem}")
    row = {
        **item,
        "calls": calls,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "declined": declined(result),
        "latency_s": round(result.latency_s, 4),
        "wall_s": round(wall, 4),
        "turns": len(result.attempts),
        "steps": len({a.step for a in result.attempts}),
        "tier": result.tier,
        "tiers": tier_rows(item, result),
        "ask": result.to_json(),
    }
    mark = "ok " if verdict.correct else "BAD"
    print(f"{mark} {result.latency_s:5.2f}s {item['id']} {item['prompt']}  {verdict.reason}")
    sys.stdout.flush()  # progress shows through a pipe too
    return row


def tier_rows(item: dict[str, Any], result: Result) -> list[dict[str, Any]]:
    """Each ladder tier's own first-step answer, scored: a run at ``[ladder]
    threshold = 1.0`` can then be replayed at any τ0 and tier-1 call bias by
    ``benchmarks/ladder_replay.py``, and a run at ``[model] call_bias = 100``
    at any tier-0 bias by ``benchmarks/call_bias_replay.py``."""
    first = [a for a in result.attempts if a.step == 0 and a.kind != "shadow"]
    rows = []
    for tier in sorted({a.tier for a in first}):
        mine = [a for a in first if a.tier == tier]
        last = mine[-1]
        calls = [v.call.to_dict() for v in last.verdicts if v.ok and v.call] if last.valid else []
        text = not last.parsed.is_call and last.valid and bool(last.parsed.text)
        verdict = score(item["expected"], calls)
        correct = verdict.correct and (bool(item["expected"]) or text)
        scores = mine[0].generation.tokens
        margin = getattr(getattr(mine[0].generation, "stats", None), "call_margin", None)
        rows.append(
            {
                "tier": tier,
                "correct": correct,
                "valid": last.valid,
                "p_success": last.p_success,
                "seconds": round(sum(a.generation.timings.total_s for a in mine), 4),
                "first": {
                    "call": bool(scores) and scores[0].text.strip() == "<tool_call>",
                    "margin": None if margin is None else round(margin, 4),
                },
            }
        )
    return rows


def declined(result: Result) -> bool:
    """No call and a text answer: what a no-tool request should get. (No
    valid call and no text either is a failure, not a decline.)"""
    return not result.calls and result.outcome == "answer"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue's acceptance names, from the per-item rows."""
    latencies = sorted(row["latency_s"] for row in rows)
    none = [row for row in rows if not row["expected"]]
    tool = [row for row in rows if row["expected"]]
    return {
        "n": len(rows),
        "exact": _share(rows),
        "by_kind": _grouped(rows, lambda row: row["kind"]),
        "by_lang": _grouped(rows, lambda row: row["lang"]),
        "multi_call": _share([row for row in rows if len(row["expected"]) >= 2]),
        "declined_no_tool": _share(none, key="declined"),
        "declined_tool_requests": _share(tool, key="declined"),
        "valid_at_1": _share([row["ask"] for row in tool], key="valid_at_1"),
        "latency_p50_s": _percentile(latencies, 0.50),
        "latency_p95_s": _percentile(latencies, 0.95),
        "median_turns": statistics.median(row["turns"] for row in rows) if rows else None,
        "median_steps": statistics.median(row["steps"] for row in rows) if rows else None,
        "tier_1_share": _share(rows, key="tier"),
    }


def _share(rows: Iterable[dict[str, Any]], key: str = "correct") -> dict[str, Any]:
    rows = list(rows)
    hits = sum(bool(row[key]) for row in rows)
    return {"hits": hits, "n": len(rows), "rate": round(hits / len(rows), 4) if rows else None}


def _grouped(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return {name: _share(group) for name, group in sorted(groups.items())}


def _percentile(values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least ``p`` of them at or below it."""
    if not values:
        return None
    return values[max(0, math.ceil(p * len(values)) - 1)]


def _meta(
    args: argparse.Namespace, agent: Agent, config: EdgeAgentConfig, cache: Any
) -> dict[str, Any]:
    engine = agent.engine
    return {
        "data": str(args.data),
        "model": getattr(engine, "model_name", args.model or config.model.name),
        "engine": config.model.engine,
        "threads": getattr(engine, "n_threads", None),
        "parallel_calls": agent.settings.parallel_calls,
        "execute": bool(args.exec),
        "tools": len(agent.specs),
        "prefix_cache": cache,
        "machine": f"{platform.machine()}, {platform.system()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _print_report(meta: dict[str, Any], summary: dict[str, Any], rows: list[Any]) -> None:
    print(f"\n{json.dumps(meta, ensure_ascii=False)}")
    print("| set | right | n | rate |\n|---|---|---|---|")
    lines = [("all", summary["exact"]), ("multi-call", summary["multi_call"])]
    lines += [(f"kind {k}", v) for k, v in summary["by_kind"].items()]
    lines += [(f"lang {k}", v) for k, v in summary["by_lang"].items()]
    lines += [("declined (no-tool items)", summary["declined_no_tool"])]
    lines += [("declined (tool items)", summary["declined_tool_requests"])]
    lines += [("valid@1 (tool items)", summary["valid_at_1"])]
    for name, share in lines:
        print(f"| {name} | {share['hits']} | {share['n']} | {share['rate']} |")
    print(
        f"latency p50 {summary['latency_p50_s']} s, p95 {summary['latency_p95_s']} s; "
        f"median turns {summary['median_turns']}, median steps {summary['median_steps']}"
    )
    wrong = [row for row in rows if not row["correct"]]
    print(f"\nwrong ({len(wrong)}):")
    for row in wrong:
        got = "; ".join(_call_text(c) for c in row["calls"]) or f"(no call: {row['ask']['text']!r})"
        print(f"  {row['id']} [{row['kind']}/{row['lang']}] {row['prompt']}\n      got {got}")
        print(f"      {row['reason']}")


def _call_text(call: dict[str, Any]) -> str:
    return f"{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})"


if __name__ == "__main__":
    sys.exit(main())
