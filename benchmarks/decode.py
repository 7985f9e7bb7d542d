"""Decode benchmark: the same requests, in one process, under each decoding mode.

Modes (``--modes``, comma-separated):

* ``unconstrained``: llama.cpp, no grammar (``LlamaEngine``);
* ``gbnf``: llama.cpp's GBNF sampler (``LlamaEngine`` with the grammar);
* ``llg``: llguidance masks, no fast-forward (``GuidedLlamaEngine``);
* ``llg_ff``: llguidance masks with fast-forward tokens (near-ties after a
  batch re-checked token by token, the engine's default);
* ``llg_ff_batched``: as ``llg_ff`` without the near-tie re-check;
* ``llg_ff_scored``: as ``llg_ff``, forced tokens scored too (extra logits rows);
* ``llg_lazy``: llguidance with fast-forward, constraint applied once a call opens.

Cache states (``--caches``), set before every call:

* ``cold``: the KV cache is emptied, the whole prompt is evaluated;
* ``warm``: the KV cache holds exactly the system prompt and tool block
  (the daemon's steady state), the request's own tokens are evaluated;
* ``disk``: the KV cache is emptied and the tool-block state is loaded from
  a file written by ``PrefixCache`` (a restarted daemon's first request);
  the load time is part of the call.

With a fixed tool set (``warm``, ``disk``) the grammar is compiled before the
timer starts, as a daemon does once at startup; in ``cold`` runs (BFCL: new
tools every item) compiling it is part of the call. llguidance's view of the
vocabulary is built once at load, untimed.

Requests interleave the modes (request 1 under every mode, then request 2...)
so that a busy neighbour on a shared machine slows all modes alike.

Usage::

    python benchmarks/decode.py --home benchmarks/data/home8.json \\
        --bfcl BFCL_v4_simple_python.json --bfcl BFCL_v4_multiple.json \\
        --answers possible_answer/ --limit 100 --json out.json

``--json OUT`` writes ``mask_ms_per_token``, ``decode_ms_per_token``,
``ff_share`` (per mode), ``p50_s`` (per mode, per run ``<set>/<cache>``) and
``ratio_vs_unconstrained`` (per mode, the warm run of the first set: the
median over requests of this mode's wall time divided by the unconstrained
wall time of the same request, which a busy neighbour's spikes cannot skew
the way they skew a ratio of means; ``ratio_of_means`` is kept per run too),
plus per-run detail. For
``gbnf`` the mask time is not observable from Python; it is estimated as its
per-token decode time minus the unconstrained one and flagged as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.agent import system_for
from edge_agent.bench.bfcl_check import check_item, is_relevance_category
from edge_agent.bench.bfcl_data import decode_calls, load_items
from edge_agent.bench.bfcl_run import percentile
from edge_agent.config import AgentSettings
from edge_agent.decoding.calls import parse_output
from edge_agent.decoding.grammar import Grammar, GrammarOptions, build_grammar
from edge_agent.decoding.prompts import Message, build_prompt
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.decoding.tool_select import ToolIndex
from edge_agent.engine.base import Generation
from edge_agent.engine.guided import GuidedGeneration, GuidedLlamaEngine
from edge_agent.engine.llama import LlamaEngine
from edge_agent.engine.prefix_cache import (
    PrefixCache,
    common_prefix_len,
    stable_prefix,
    truncate,
)
from edge_agent.errors import EdgeAgentError, InputError
from edge_agent.toolbox.verify import verify_output

AGENT = AgentSettings()
"""Default agent settings: their system text goes ahead of every tool block."""
ALL_MODES = (
    "unconstrained",
    "gbnf",
    "llg",
    "llg_ff",
    "llg_ff_batched",
    "llg_ff_scored",
    "llg_lazy",
)
DEFAULT_MODES = "unconstrained,gbnf,llg,llg_ff"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Request:
    """One benchmark request: messages, its tools, and how to score the answer."""

    id: str
    messages: list[Message]
    tools: list[ToolSpec]
    check: Callable[[str], bool]
    expected_tools: frozenset[str] = frozenset()

    @property
    def query(self) -> str:
        return str(self.messages[-1].get("content") or "")

    def with_tools(self, tools: list[ToolSpec]) -> Request:
        return Request(self.id, self.messages, tools, self.check, self.expected_tools)


@dataclass(frozen=True)
class RequestSet:
    name: str
    requests: list[Request]
    caches: tuple[str, ...]


def home_set(path: Path, caches: tuple[str, ...], offset: int, limit: int | None) -> RequestSet:
    """``{"tools": [...], "requests": [{"prompt", "expected": {"name", "arguments"}}]}``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    stop = None if limit is None else offset + limit
    tools = normalize_tools(data["tools"])
    requests = [
        Request(
            f"{path.stem}_{i}",
            [{"role": "user", "content": r["prompt"]}],
            tools,
            _expects(r["expected"]),
            frozenset([r["expected"]["name"]]),
        )
        for i, r in enumerate(data["requests"])
    ][offset:stop]
    return RequestSet(path.stem, requests, caches)


def _expects(expected: dict[str, Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        calls = parse_output(text).calls
        if not calls or calls[0].name != expected["name"]:
            return False
        args = calls[0].arguments
        return all(k in args and args[k] == v for k, v in expected["arguments"].items())

    return check


def bfcl_set(questions: Path, answers: Path | None, offset: int, limit: int | None) -> RequestSet:
    """BFCL items: every item brings new tools, so only the cold state is meaningful."""
    answer_file = _answer_file(questions, answers)
    stop = None if limit is None else offset + limit
    items = load_items(questions, answer_file, limit=stop)[offset:]
    requests = []
    for item in items:
        try:
            tools = normalize_tools(item.functions)
        except EdgeAgentError as exc:
            print(f"skipping {item.id}: {exc}", file=sys.stderr)
            continue
        expected = frozenset(next(iter(c)) for c in item.ground_truth or [])
        requests.append(Request(item.id, item.messages, tools, _bfcl_check(item), expected))
    name = questions.stem.replace("BFCL_v4_", "")
    return RequestSet(name, requests, ("cold",))


def _answer_file(questions: Path, answers: Path | None) -> Path | None:
    candidates = [answers / questions.name] if answers else []
    candidates += [
        questions.parent / "possible_answer" / questions.name,
        questions.parent.parent / "possible_answer" / questions.name,
    ]
    return next((c for c in candidates if c.is_file()), None)


def _bfcl_check(item: Any) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        if item.ground_truth is None and not is_relevance_category(item.category):
            return False
        parsed = parse_output(text)
        try:
            calls = decode_calls([c.to_dict() for c in parsed.calls]) if parsed.calls else None
        except InputError:
            calls = None
        return check_item(item.category, item.functions, calls, item.ground_truth).correct

    return check


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Slot:
    """Where a call belongs: request set, cache state, mode."""

    set: str
    cache: str
    mode: str


@dataclass
class Record:
    set: str
    cache: str
    mode: str
    id: str
    wall_s: float
    prefill_s: float
    decode_s: float
    prompt_tokens: int
    prompt_evaluated: int
    completion_tokens: int
    forced: int = 0
    reevaluated: int = 0
    grammar_s: float | None = None
    valid: bool = False
    is_call: bool = False
    correct: bool = False
    text: str = ""


@dataclass
class Bench:
    """The loaded model, one engine per mode, and the prefix cache."""

    base: LlamaEngine
    guided: GuidedLlamaEngine
    kv: PrefixCache
    tool_choice: str
    max_tokens: int
    records: list[Record] = field(default_factory=list)
    checkpoint: Path | None = None

    def engine(self, mode: str) -> LlamaEngine | GuidedLlamaEngine:
        options: dict[str, dict[str, bool | float]] = {
            "llg": {"fast_forward": False},
            "llg_ff": {},
            "llg_ff_batched": {"tie_margin": 0.0},
            "llg_ff_scored": {"score_forced": True},
            "llg_lazy": {"lazy": True},
        }
        if mode in ("unconstrained", "gbnf"):
            return self.base
        return self.guided.with_options(**options[mode])

    def grammar(self, tools: list[ToolSpec], mode: str) -> Grammar | None:
        if mode == "unconstrained":
            return None
        options = GrammarOptions(allow_text=self.tool_choice == "auto")
        return build_grammar(tools, options)

    def system(self, request: Request) -> str | None:
        """The agent's own system text, so the prompts are the daemon's."""
        return system_for(AGENT, request.tools, allow_text=self.tool_choice == "auto")

    def prompt(self, request: Request) -> str:
        system = self.system(request)
        return build_prompt(self.base.chat_template, request.messages, request.tools, system=system)

    def prefix(self, request: Request) -> list[int]:
        history = request.messages[:-1]
        return stable_prefix(
            self.base.llama,
            self.base.chat_template,
            request.tools,
            system=self.system(request),
            history=history,
        )

    def run(self, rset: RequestSet, modes: Sequence[str], select_k: int | None = None) -> None:
        for i, request in enumerate(rset.requests):
            for cache in rset.caches:
                for mode in modes:
                    self.records.append(self.call(Slot(rset.name, cache, mode), request))
            if select_k is not None and len(request.tools) > select_k:
                chosen = ToolIndex(request.tools).top_k(request.query, select_k)
                label = f"cold+top{select_k}"
                slot = Slot(rset.name, label, "llg_ff")
                self.records.append(self.call(slot, request.with_tools(chosen)))
            self.save_checkpoint()
            if (i + 1) % 10 == 0:
                print(f"  {rset.name}: {i + 1}/{len(rset.requests)}", file=sys.stderr)

    def save_checkpoint(self) -> None:
        """The calls so far, in the ``--json`` shape ``--include`` reads, so a
        run cut short by a time limit loses nothing."""
        if self.checkpoint is not None:
            data = {"setup": [], "records": [asdict(r) for r in self.records]}
            self.checkpoint.write_text(json.dumps(data), encoding="utf-8")

    def call(self, slot: Slot, request: Request) -> Record:
        llm = self.base.llama
        cache, mode = slot.cache, slot.mode
        prompt = self.prompt(request)
        grammar = self.grammar(request.tools, mode)
        engine = self.engine(mode)
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        self.prepare(cache, request)
        if cache in ("warm", "disk") and grammar is not None:
            self.compile(mode, grammar)
        start = time.perf_counter()
        if cache == "disk":  # a restarted process: the tool block comes from the file
            self.kv.warm_tools(
                llm, self.base.chat_template, request.tools, system=self.system(request)
            )
        reused = min(common_prefix_len(llm.input_ids[: llm.n_tokens], tokens), len(tokens) - 1)
        gen = engine.generate(prompt, grammar=grammar, max_tokens=self.max_tokens)
        wall = time.perf_counter() - start
        return self.record(slot, request, gen, wall, len(tokens) - reused)

    def compile(self, mode: str, grammar: Grammar) -> None:
        """Compile the grammar untimed: with a fixed tool set (the daemon's
        case, ``warm`` and ``disk``) that happens once, at startup. Cold BFCL
        items bring new tools, so there it stays part of the call."""
        if mode == "gbnf":
            self.base._grammar(grammar)
        else:
            self.guided._shared.compile(grammar)

    def prepare(self, cache: str, request: Request) -> None:
        """Put the KV cache in the requested state (untimed)."""
        llm = self.base.llama
        if cache.startswith("cold"):
            truncate(llm, 0)
        elif cache == "warm":
            prefix = self.prefix(request)
            _make_resident(llm, prefix)
            truncate(llm, len(prefix))
        elif cache == "disk":
            system = self.system(request)
            self.kv.warm_tools(llm, self.base.chat_template, request.tools, system=system)
            truncate(llm, 0)
        else:
            raise ValueError(f"unknown cache state {cache!r}")

    def record(
        self, slot: Slot, request: Request, gen: Generation, wall: float, evaluated: int
    ) -> Record:
        parsed = parse_output(gen.text)
        verdicts = verify_output(parsed, request.tools) if parsed.is_call or parsed.errors else []
        valid = all(v.ok for v in verdicts) and (parsed.is_call or self.tool_choice == "auto")
        rec = Record(
            slot.set,
            slot.cache,
            slot.mode,
            request.id,
            wall,
            gen.timings.prefill_s,
            gen.timings.decode_s,
            gen.prompt_tokens,
            evaluated,
            gen.completion_tokens,
            valid=valid,
            is_call=parsed.is_call,
            correct=request.check(gen.text),
            text=gen.text,
        )
        if isinstance(gen, GuidedGeneration):
            rec.forced = gen.stats.forced
            rec.reevaluated = gen.stats.reevaluated
            rec.grammar_s = gen.stats.grammar_s
            rec.prompt_evaluated = gen.stats.prompt_evaluated
        return rec


def _make_resident(llm: Any, prefix: list[int]) -> None:
    """Evaluate whatever part of ``prefix`` the KV cache does not hold yet."""
    have = common_prefix_len(llm.input_ids[: llm.n_tokens], prefix)
    truncate(llm, have)
    if have < len(prefix):
        llm.eval(prefix[have:])


# --------------------------------------------------------------------------- reporting


def summarize(records: list[Record], modes: Sequence[str]) -> dict[str, Any]:
    runs = sorted({(r.set, r.cache) for r in records}, key=lambda sc: _run_order(records, sc))
    per_run = {
        f"{s}/{c}": _run_summary([r for r in records if (r.set, r.cache) == (s, c)])
        for s, c in runs
    }
    per_mode = {m: _token_summary([r for r in records if r.mode == m]) for m in modes}
    unc = per_mode.get("unconstrained", {}).get("decode_ms_per_token")
    if unc is not None and "gbnf" in per_mode:
        per_mode["gbnf"]["mask_ms_per_token"] = per_mode["gbnf"]["decode_ms_per_token"] - unc
    headline = next((k for k in per_run if k.endswith("/warm")), next(iter(per_run), None))
    return {
        "mask_ms_per_token": {m: v.get("mask_ms_per_token") for m, v in per_mode.items()},
        "decode_ms_per_token": {m: v["decode_ms_per_token"] for m, v in per_mode.items()},
        "ff_share": {m: v["ff_share"] for m, v in per_mode.items()},
        "p50_s": {m: {k: run[m]["p50_s"] for k, run in per_run.items() if m in run} for m in modes},
        "ratio_vs_unconstrained": {
            m: per_run[headline][m]["ratio_vs_unconstrained"]
            for m in modes
            if headline and m in per_run[headline]
        },
        "headline_run": headline,
        "gbnf_mask_is_estimate": True,
        "runs": per_run,
    }


def _run_order(records: list[Record], key: tuple[str, str]) -> int:
    return next(i for i, r in enumerate(records) if (r.set, r.cache) == key)


def _run_summary(records: list[Record]) -> dict[str, dict[str, Any]]:
    modes = list(dict.fromkeys(r.mode for r in records))
    out = {m: _mode_summary([r for r in records if r.mode == m]) for m in modes}
    reference = {r.id: r.wall_s for r in records if r.mode == "unconstrained"}
    base = out.get("unconstrained", {}).get("mean_s")
    for mode, summary in out.items():
        paired = [
            r.wall_s / reference[r.id] for r in records if r.mode == mode and r.id in reference
        ]
        summary["ratio_vs_unconstrained"] = statistics.median(paired) if paired else None
        summary["ratio_of_means"] = summary["mean_s"] / base if base else None
    return out


def _mode_summary(records: list[Record]) -> dict[str, Any]:
    walls = [r.wall_s for r in records]
    n = len(records)
    return {
        "n": n,
        "p50_s": percentile(walls, 50),
        "p95_s": percentile(walls, 95),
        "mean_s": statistics.fmean(walls),
        "prefill_s_mean": statistics.fmean(r.prefill_s for r in records),
        "prompt_evaluated_mean": statistics.fmean(r.prompt_evaluated for r in records),
        "completion_tokens_mean": statistics.fmean(r.completion_tokens for r in records),
        "valid": sum(r.valid for r in records) / n,
        "call_rate": sum(r.is_call for r in records) / n,
        "accuracy": sum(r.correct for r in records) / n,
        **_token_summary(records),
    }


def _token_summary(records: list[Record]) -> dict[str, Any]:
    tokens = sum(r.completion_tokens for r in records) or 1
    grammar = [r.grammar_s for r in records if r.grammar_s is not None]
    return {
        "decode_ms_per_token": 1000 * sum(r.decode_s for r in records) / tokens,
        "mask_ms_per_token": 1000 * sum(grammar) / tokens if grammar else None,
        "ff_share": sum(r.forced for r in records) / tokens,
        "reevaluated_per_call": sum(r.reevaluated for r in records) / max(len(records), 1),
    }


def table(summary: dict[str, Any]) -> str:
    head = (
        f"{'run':<22}{'mode':<15}{'n':>4}{'p50_s':>8}{'p95_s':>8}{'mean_s':>8}{'ratio':>7}{'r_mean':>7}"
        f"{'eval_tok':>9}{'out_tok':>8}{'dec_ms/t':>9}{'mask_ms/t':>10}{'ff%':>6}"
        f"{'valid':>7}{'acc':>6}"
    )
    lines = [head, "-" * len(head)]
    for run, modes in summary["runs"].items():
        for mode, s in modes.items():
            mask = s["mask_ms_per_token"]
            ratio, r_mean = s["ratio_vs_unconstrained"], s["ratio_of_means"]
            lines.append(
                f"{run:<22}{mode:<15}{s['n']:>4}{s['p50_s']:>8.3f}{s['p95_s']:>8.3f}"
                f"{s['mean_s']:>8.3f}{'' if ratio is None else f'{ratio:.2f}':>7}"
                f"{'' if r_mean is None else f'{r_mean:.2f}':>7}"
                f"{s['prompt_evaluated_mean']:>9.1f}{s['completion_tokens_mean']:>8.1f}"
                f"{s['decode_ms_per_token']:>9.2f}{'-' if mask is None else f'{mask:.3f}':>10}"
                f"{100 * s['ff_share']:>6.1f}{s['valid']:>7.2f}{s['accuracy']:>6.2f}"
            )
    return "\n".join(lines)


def selection_report(rset: RequestSet, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k of BM25 tool selection: share of requests whose expected tool survives."""
    scored = [r for r in rset.requests if r.expected_tools]
    out: dict[str, float] = {}
    for k in ks:
        hits = 0
        for request in scored:
            chosen = ToolIndex(request.tools).top_k(request.query, k)
            hits += bool(request.expected_tools & {t.name for t in chosen})
        out[f"recall@{k}"] = hits / len(scored) if scored else float("nan")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, action="append", default=[], help="tools+requests JSON")
    p.add_argument("--bfcl", type=Path, action="append", default=[], help="BFCL questions file")
    p.add_argument("--answers", type=Path, help="folder of BFCL possible_answer files")
    p.add_argument("--offset", type=int, default=0, help="skip this many requests per file")
    p.add_argument("--limit", type=int, help="at most this many requests per file")
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma list of {', '.join(ALL_MODES)}")
    p.add_argument("--caches", default="cold,warm", help="home-set cache states: cold,warm,disk")
    p.add_argument("--model", help="manifest name or .gguf path (default: the default SLM)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--tool-choice", choices=("auto", "required"), default="auto")
    p.add_argument("--select-k", type=int, help="also run llg_ff cold with the top-k tools only")
    p.add_argument("--kv-dir", type=Path, help="prefix-cache folder (default: a temp folder)")
    p.add_argument("--json", type=Path, help="write the summary (and every call) here")
    p.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="a --json file of an earlier run whose calls join this summary (split long runs)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    modes = _modes(args.modes)
    caches = tuple(c for c in args.caches.split(",") if c)
    sets = [home_set(p, caches, args.offset, args.limit) for p in args.home]
    sets += [bfcl_set(p, args.answers, args.offset, args.limit) for p in args.bfcl]
    if not sets and not args.include:
        raise SystemExit("nothing to run: pass --home and/or --bfcl (or --include to merge)")
    records, setups = _earlier(args.include)
    if sets:
        run_records, setup = run_sets(args, sets, modes)
        records, setups = records + run_records, [*setups, setup]
    summary = summarize(records, _modes_of(records, modes))
    summary["tool_selection"] = {s.name: selection_report(s, (1, 2, 3)) for s in sets}
    summary["setup"] = setups
    print(table(summary))
    _print_headline(summary)
    if args.json:
        summary["records"] = [asdict(r) for r in records]
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


def _modes(text: str) -> list[str]:
    modes = [m for m in text.split(",") if m]
    unknown = set(modes) - set(ALL_MODES)
    if unknown:
        raise SystemExit(f"unknown modes: {', '.join(sorted(unknown))}")
    if "unconstrained" in modes:  # the reference goes first in every round
        modes.remove("unconstrained")
        modes.insert(0, "unconstrained")
    return modes


def _earlier(paths: Sequence[Path]) -> tuple[list[Record], list[dict[str, Any]]]:
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    records = [Record(**r) for run in runs for r in run["records"]]
    return records, [s for run in runs for s in run["setup"]]


def run_sets(
    args: argparse.Namespace, sets: list[RequestSet], modes: list[str]
) -> tuple[list[Record], dict[str, Any]]:
    """Load the model once and run every set under every mode."""
    from edge_agent.models import resolve_model

    model = resolve_model(args.model)
    base = LlamaEngine(model.path, n_ctx=4096, n_threads=args.threads, name=model.name)
    guided = GuidedLlamaEngine(base)
    guided._shared.tokenizer  # noqa: B018 - built once at load (about 1 s), not in a call
    with tempfile.TemporaryDirectory() as tmp:
        kv = PrefixCache(args.kv_dir or Path(tmp))
        bench = Bench(base, guided, kv, args.tool_choice, args.max_tokens)
        if args.json:
            bench.checkpoint = args.json.with_name(args.json.name + ".partial")
        started = time.perf_counter()
        for rset in sets:
            print(f"{rset.name}: {len(rset.requests)} requests, {rset.caches}", file=sys.stderr)
            bench.run(rset, modes, args.select_k)
        elapsed = time.perf_counter() - started
    return bench.records, _setup(args, base, elapsed)


def _modes_of(records: list[Record], modes: list[str]) -> list[str]:
    """This run's modes, then any other mode found in included runs."""
    return list(dict.fromkeys([*modes, *(r.mode for r in records)]))


def _setup(args: argparse.Namespace, base: LlamaEngine, elapsed: float) -> dict[str, Any]:
    import llama_cpp
    import llguidance

    return {
        "model": base.model_name,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "node": platform.node(),
        "llama_cpp_python": llama_cpp.__version__,
        "llguidance": llguidance.__version__,
        "tool_choice": args.tool_choice,
        "elapsed_s": round(elapsed, 1),
        "argv": sys.argv[1:],
    }


def _print_headline(summary: dict[str, Any]) -> None:
    print(f"\nratio vs unconstrained ({summary['headline_run']}, median of per-request ratios):")
    for mode, ratio in summary["ratio_vs_unconstrained"].items():
        print(f"  {mode:<15}{'-' if ratio is None else f'{ratio:.2f}x'}")
    print("mask ms per generated token (gbnf: estimated from decode time):")
    for mode, mask in summary["mask_ms_per_token"].items():
        print(f"  {mode:<15}{'-' if mask is None else f'{mask:.3f}'}")
    print(f"tool selection recall: {summary['tool_selection']}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeAgentError as exc:  # a bad path or file: one line, not a traceback
        sys.exit(f"decode.py: {exc}")
