"""`edge-agent bench`: run a benchmark, print a summary table, optionally save JSON.

Thin on purpose: it checks the flags, loads the data and the model, and hands
them to :mod:`edge_agent.bench.bfcl_run`. Bad input (a missing file, a line
that is not JSON, an unknown category or mode, answers missing for a scored
category) is a :class:`BenchError`, printed by ``main`` as one line, and is
reported before the model is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.cli.endpoint import add_endpoint_flags
from edge_agent.errors import BenchError

if TYPE_CHECKING:
    from edge_agent.assemble import Assembly
    from edge_agent.bench.bfcl_run import ItemRecord, SolverFactory


def register(subparsers: Any) -> None:
    from edge_agent.bench.bfcl_run import MODES

    bench = subparsers.add_parser("bench", help="run a benchmark and report its metrics")
    kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    p = kinds.add_parser("bfcl", help="BFCL v4 single-turn function calling, AST-scored")
    p.add_argument(
        "--questions", type=Path, required=True, metavar="FILE", help="a BFCL data file (JSONL)"
    )
    p.add_argument("--answers", type=Path, metavar="FILE", help="the possible_answer file")
    p.add_argument("--category", required=True, metavar="NAME", help="e.g. simple_python")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions")
    p.add_argument("--skip", type=int, default=0, metavar="N", help="skip the first N questions")
    p.add_argument(
        "--mode",
        default="ladder",
        metavar="|".join(MODES),
        help="default: ladder (the default configuration: tier 0, climbing as [ladder] "
        "says: calls to dangerous tools, which BFCL's are not, and with climb_unsure or "
        "--ladder-threshold unsure answers); slm = tier 0 alone",
    )
    p.add_argument(
        "--ladder-threshold",
        type=float,
        metavar="TAU",
        help="τ of tier 0 for mode ladder (default: the config's); 1.0 sends every item "
        "up as well, so one run can be replayed at any threshold",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="edge-agent TOML config")
    p.add_argument("--model", metavar="NAME|PATH", help="manifest name or .gguf path")
    p.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads")
    p.add_argument(
        "--engine",
        choices=("gbnf", "llguidance"),
        help="grammar engine (default: the config's model.engine, llguidance): "
        "llguidance masks or llama.cpp's GBNF sampler",
    )
    p.add_argument(
        "--no-ff", action="store_true", help="llguidance: sample forced tokens one by one"
    )
    p.add_argument(
        "--unscored-forced",
        action="store_true",
        help="llguidance: leave forced tokens at log-probability 0 instead of the model's own",
    )
    p.add_argument("--parallel", default="on", metavar="on|off", help="allow several calls")
    p.add_argument("--kwh-price", type=float, default=0.30, metavar="PRICE", help="per kWh")
    p.add_argument(
        "--power", default="auto", metavar="SOURCE", help="auto|rapl|hwmon|cpu-model[:PROFILE]"
    )
    routed = p.add_argument_group("llm and cascade modes (a real OpenAI-compatible endpoint)")
    add_endpoint_flags(routed)
    routed.add_argument("--threshold", type=float, metavar="TAU", help="cascade τ (default 0.6)")
    routed.add_argument(
        "--confidence", type=Path, metavar="FILE", help="ONNX confidence model (default: shipped)"
    )
    routed.add_argument(
        "--price", default="0.15,0.60", metavar="IN,OUT", help="cloud price per 1M tokens"
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write the full report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=run_bfcl_command)
    _add_ablation(kinds)


def run_bfcl_command(args: argparse.Namespace) -> int:
    from edge_agent.bench.bfcl_run import (
        ROUTED_MODES,
        BenchOptions,
        load_bfcl,
        run_bfcl,
        summary_table,
    )
    from edge_agent.power import best_probe

    options = BenchOptions(
        category=args.category,
        mode=args.mode,
        parallel=_on_off("--parallel", args.parallel),
        kwh_price=args.kwh_price,
    )
    options.check()
    for flag, given in (("--no-ff", args.no_ff), ("--unscored-forced", args.unscored_forced)):
        if given and args.engine == "gbnf":
            raise BenchError(f"{flag} only applies to --engine llguidance")
    if args.skip < 0:
        raise BenchError(f"--skip must be at least 0, got {args.skip}")
    limit = None if args.limit is None else args.limit + args.skip
    items = load_bfcl(args.questions, args.answers, options.category, limit)[args.skip :]
    if not items:
        raise BenchError(f"--skip {args.skip} leaves no questions")
    with contextlib.ExitStack() as closing:
        solver = _routed_solver(args, closing) if options.mode in ROUTED_MODES else None
        probe = best_probe(args.power)
        parts = _assembly(args)
        engine = parts.engine(args.model, n_threads=args.threads)
        if args.no_ff or args.unscored_forced:
            from edge_agent.engine.guided import GuidedLlamaEngine

            assert isinstance(engine, GuidedLlamaEngine)  # checked before loading
            engine = engine.with_options(
                fast_forward=not args.no_ff, score_forced=not args.unscored_forced
            )
        ladder = parts.ladder() if options.mode == "ladder" else None
        with _ProgressBar(len(items), args.no_progress) as update:
            report = run_bfcl(
                items, engine, options, probe=probe, on_item=update, solver=solver, ladder=ladder
            )
    if args.json is not None:
        _write_json(args.json, report.to_json())
    print(summary_table(report))
    return 0


def _assembly(args: argparse.Namespace) -> Assembly:
    """The composition root for a bench run: the config, with the engine and
    ladder threshold the flags ask for."""
    from edge_agent.assemble import Assembly
    from edge_agent.config import load_config

    config = load_config(getattr(args, "config", None))
    update: dict[str, Any] = {}
    if getattr(args, "engine", None):
        update["model"] = config.model.model_copy(update={"engine": args.engine})
    if getattr(args, "ladder_threshold", None) is not None:
        update["ladder"] = config.ladder.model_copy(
            update={"threshold": args.ladder_threshold, "climb_unsure": True}
        )
    return Assembly(config.model_copy(update=update))


def _routed_solver(args: argparse.Namespace, closing: contextlib.ExitStack) -> SolverFactory:
    """The router for ``llm``/``cascade`` over the endpoint in the flags."""
    from edge_agent.bench.cloud import Endpoint, parse_price, routed_solver_for

    if args.llm_url is None:
        raise BenchError(f"mode {args.mode} needs --llm-url", hint="an OpenAI-compatible …/v1 URL")
    endpoint = Endpoint(args.llm_url, args.llm_model, args.llm_token_file, args.llm_ca)
    return routed_solver_for(
        args.mode,
        endpoint,
        closing=closing,
        price=parse_price(args.price),
        threshold=args.threshold,
        confidence=args.confidence,
    )


def _add_ablation(kinds: Any) -> None:
    from edge_agent.bench.ablation import MODES, TUNING

    p = kinds.add_parser("ablation", help="the paper's table: LLM, SLM ± schema, cascade")
    p.add_argument("--bfcl", type=Path, required=True, metavar="DIR", help="BFCL v4 folder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="reports go here")
    p.add_argument("--categories", default=",".join(TUNING), metavar="A,B", help="tuning only")
    p.add_argument(
        "--modes", default=",".join(MODES), metavar="A,B", help="which rows of the table to run"
    )
    p.add_argument("--limit", type=int, default=100, metavar="N", help="items per category")
    p.add_argument("--model", metavar="NAME|PATH", help="the SLM (default: the default model)")
    p.add_argument("--llm", default="qwen2.5-coder-1.5b", metavar="NAME|PATH", help="stand-in")
    add_endpoint_flags(p.add_argument_group("a real endpoint instead of the stand-in"))
    p.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads")
    p.add_argument("--threshold", type=float, metavar="TAU", help="cascade τ (default 0.6)")
    p.add_argument(
        "--ladder-threshold",
        type=float,
        metavar="TAU",
        help="row ladder: climb from tier 0 below this P(success) too (the default ladder "
        "climbs only for dangerous tools, which BFCL has none of)",
    )
    p.add_argument("--confidence", type=Path, metavar="FILE", help="ONNX confidence model")
    p.add_argument("--price", default="0.15,0.60", metavar="IN,OUT", help="per 1M tokens")
    p.add_argument("--kwh-price", type=float, default=0.30, metavar="PRICE", help="per kWh")
    p.add_argument("--lock", type=Path, metavar="FILE", help="flock FILE around each run")
    p.add_argument("--report-only", action="store_true", help="only rebuild the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=run_ablation_command)


def run_ablation_command(args: argparse.Namespace) -> int:
    from edge_agent.bench.ablation import (
        AblationOptions,
        markdown,
        run_missing,
        summarise,
        write_outputs,
    )
    from edge_agent.bench.cloud import parse_price
    from edge_agent.config import RouterSettings

    options = AblationOptions(
        bfcl=args.bfcl,
        out=args.out,
        categories=[c for c in args.categories.split(",") if c],
        modes=[m for m in args.modes.split(",") if m],
        limit=args.limit,
        kwh_price=args.kwh_price,
        threshold=RouterSettings().threshold if args.threshold is None else args.threshold,
    )
    options.check()
    price = parse_price(args.price)
    if options.todo() and not args.report_only:
        with contextlib.ExitStack() as closing:  # the stand-in and the HTTPS pools
            run_missing(options, _ablation_runner(args, options, price, closing), lock=args.lock)
    summary = summarise(options)
    paths = write_outputs(summary, options.out)
    print(markdown(summary), end="")
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


def _ablation_runner(
    args: argparse.Namespace,
    options: Any,
    price: tuple[float, float],
    stack: contextlib.ExitStack,
) -> Callable[[str, str], dict[str, Any]]:
    """Runs one (category, mode); the SLM is loaded once, the cloud opened on
    first use, and ``stack`` closes it when the runs are done."""
    from edge_agent.bench.bfcl_run import ROUTED_MODES, BenchOptions, load_bfcl, run_bfcl
    from edge_agent.bench.cloud import Endpoint, routed_solver_for, standin_llm
    from edge_agent.power import best_probe

    parts = _assembly(args)
    engine = parts.engine(args.model, n_threads=args.threads)
    probe = best_probe()
    cloud: list[Endpoint] = []

    def endpoint() -> Endpoint:
        if not cloud:
            if args.llm_url is not None:
                cloud.append(
                    Endpoint(args.llm_url, args.llm_model, args.llm_token_file, args.llm_ca)
                )
            else:
                threads = args.threads or getattr(engine, "n_threads", 2)
                cloud.append(stack.enter_context(standin_llm(args.llm, threads)))
        return cloud[0]

    def run_one(category: str, mode: str) -> dict[str, Any]:
        items = load_bfcl(
            options.questions(category), options.answers(category), category, options.limit
        )
        solver = None
        if mode in ROUTED_MODES:
            solver = routed_solver_for(
                mode,
                endpoint(),
                closing=stack,
                price=price,
                threshold=args.threshold,
                confidence=args.confidence,
            )
        bench = BenchOptions(category=category, mode=mode, kwh_price=options.kwh_price)
        ladder = parts.ladder() if mode == "ladder" else None
        with _ProgressBar(len(items), args.no_progress) as update:
            report = run_bfcl(
                items, engine, bench, probe=probe, on_item=update, solver=solver, ladder=ladder
            )
        data = report.to_json()
        data["llm"] = (args.llm_model or args.llm) if mode in ROUTED_MODES else None
        data["ladder"] = [t.name for t in ladder.tiers] if ladder is not None else None
        print(f"{category} {mode}: accuracy {data['accuracy']:.3f}", file=sys.stderr)
        return data

    return run_one


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
