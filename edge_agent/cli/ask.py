"""`edge-agent ask`: one request, from prompt to verified (and run) tool calls."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent
from edge_agent.assemble import Assembly, stderr_status
from edge_agent.cli.endpoint import add_endpoint_flags
from edge_agent.config import EdgeAgentConfig
from edge_agent.decoding.calls import ToolCall
from edge_agent.errors import EngineError, InputError
from edge_agent.records.run import Result
from edge_agent.toolbox.registry import Tool


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ask", help="turn a request into a verified tool call")
    parser.add_argument("prompt", help="the request, in plain language")
    parser.add_argument(
        "--tools", type=Path, metavar="FILE", help="JSON list of function definitions"
    )
    parser.add_argument(
        "--tools-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another folder of tool modules (repeatable)",
    )
    parser.add_argument("--model", metavar="NAME|PATH", help="manifest name or .gguf path")
    parser.add_argument("--config", type=Path, metavar="FILE", help="edge-agent TOML config")
    parser.add_argument("--threads", type=int, metavar="N", help="llama.cpp threads")
    parser.add_argument(
        "--tool-choice",
        metavar="auto|required|none|NAME",
        help="whether a call is required, forbidden, or must be to tool NAME (default: config)",
    )
    parser.add_argument(
        "--parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow several calls in one answer (default: agent.parallel_calls, off)",
    )
    parser.add_argument("--no-exec", action="store_true", help="propose calls, don't run them")
    parser.add_argument(
        "--yes", action="store_true", help="confirm dangerous actions (locks, valves) up front"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--mode",
        choices=("slm", "llm", "cascade"),
        default="slm",
        help="slm: local only; llm: the cloud model only; cascade: local, offload when unsure",
    )
    add_endpoint_flags(parser.add_argument_group("llm and cascade modes: the cloud endpoint"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise InputError("the prompt is empty", hint="pass a non-empty prompt")
    with stderr_status() as status:
        parts = Assembly.from_file(args.config, status=status)
        registry = parts.registry(dirs=args.tools_dir, tools_file=args.tools)
        settings = parts.config.agent
        if args.parallel is not None:
            settings = settings.model_copy(update={"parallel_calls": args.parallel})
        engine = parts.engine(args.model, n_threads=args.threads)
        agent = parts.agent(
            registry,
            engine=engine,
            settings=settings,
            sandbox=None if args.no_exec else parts.sandbox(),
            confirm=_confirmer(args.yes),
        )
        cache = _warm(parts, agent, args.tool_choice)
    if args.mode != "slm":
        return _routed(args, parts, agent, cache)
    result = agent.ask(args.prompt, tool_choice=args.tool_choice, execute=not args.no_exec)
    _print(result, args.json, cache)
    return 0 if result.outcome != "invalid" else 1


def _warm(parts: Assembly, agent: Agent, tool_choice: str | None) -> dict[str, Any] | None:
    """Restore the tool block's KV state saved by an earlier ``ask`` or daemon
    start (the daemon's folder), or save it for the next one: reading 12
    tools' definitions is most of a one-shot ``ask``."""
    try:
        warm = parts.warm(agent, tool_choice=tool_choice)
    except (EngineError, OSError) as exc:  # a cache: the request still runs
        print(f"edge-agent: note: tool block not cached: {exc}", file=sys.stderr)
        return None
    if warm is None:
        return None
    return {"source": warm.source, "tokens": warm.n_tokens, "seconds": round(warm.seconds, 3)}


def _routed(
    args: argparse.Namespace, parts: Assembly, agent: Agent, cache: dict[str, Any] | None
) -> int:
    """Cascade / LLM mode: the router decides, records and explains the route."""
    https = _https_settings(args, parts.config)
    with parts.journal() as journal:
        transport = None
        if https is not None:
            from edge_agent.routing.offload.https import HttpsTransport

            transport = HttpsTransport(https)
        router = parts.router(agent, journal, parts.cloud(journal, transport))
        routed = router.ask(
            args.prompt,
            source="cli",
            tool_choice=args.tool_choice,
            execute=not args.no_exec,
            mode="llm" if args.mode == "llm" else "cascade",
        )
    out = _with_cache(routed.to_json(), cache)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, default=str))
    else:
        for call in out.get("tool_calls", []):
            print(f"{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})")
        if out.get("text"):
            print(out["text"])
        print(f"[{out['route']}: {out['reason']}]")
    return 0 if routed.route not in ("declined",) and out.get("outcome") != "invalid" else 1


def _https_settings(args: argparse.Namespace, config: EdgeAgentConfig) -> Any:
    """The endpoint from the flags, else from the config's [offload.https]."""
    base = config.offload.https
    if args.llm_url is None:
        return base
    from edge_agent.routing.offload.settings import HttpsOffloadSettings

    fields: dict[str, Any] = base.model_dump() if base is not None else {}
    fields["base_url"] = args.llm_url
    for key, value in (
        ("model", args.llm_model),
        ("token_file", args.llm_token_file),
        ("ca_bundle", args.llm_ca),
    ):
        if value is not None:
            fields[key] = value
    return HttpsOffloadSettings.model_validate(fields)


def _confirmer(assume_yes: bool) -> Callable[[ToolCall, Tool], bool]:
    """--yes confirms; on a terminal we ask; otherwise (scripts, pipes) no."""

    def confirm(call: ToolCall, tool: Tool) -> bool:
        del tool
        if assume_yes:
            return True
        if not sys.stdin.isatty():
            return False
        args = json.dumps(call.arguments, ensure_ascii=False)
        answer = input(f"Run {call.name}({args})? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _with_cache(out: dict[str, Any], cache: dict[str, Any] | None) -> dict[str, Any]:
    """``--json`` output plus where the tool block's KV state came from."""
    return out if cache is None else {**out, "prefix_cache": cache}


def _print(result: Result, as_json: bool, cache: dict[str, Any] | None) -> None:
    """Each call once (what ran, else what was proposed), then the sentence."""
    if as_json:
        print(json.dumps(_with_cache(result.to_json(), cache), ensure_ascii=False))
        return
    for call in result.calls:
        args = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items()
        )
        print(f"{call.name}({args})")
    if result.answer:
        print(result.answer)
    if result.outcome == "invalid":
        print(f"no valid call: {result.final.problem}")
    tokens = f"{result.prompt_tokens}+{result.completion_tokens} tokens"
    tier = f"tier {result.tier}, " if result.tier else ""
    steps = f"{result.steps} step(s), {len(result.attempts)} attempt(s)"
    print(f"[{result.route}, {tier}{result.latency_s:.2f} s, {tokens}, {steps}]")
