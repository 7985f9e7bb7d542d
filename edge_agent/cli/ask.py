"""`edge-agent ask`: one request, from prompt to verified (and run) tool calls."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent, Result
from edge_agent.calls import ToolCall
from edge_agent.config import EdgeAgentConfig, load_config, state_dir
from edge_agent.errors import EngineError, InputError
from edge_agent.registry import Registry, Tool, tools_from_json_file


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
    parser.add_argument("--parallel", action="store_true", help="allow several calls")
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
    parser.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--llm-model", metavar="NAME", help="cloud model name")
    parser.add_argument("--llm-token-file", type=Path, metavar="FILE", help="bearer token (0600)")
    parser.add_argument("--llm-ca", type=Path, metavar="FILE", help="CA bundle for the endpoint")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise InputError("the prompt is empty", hint="pass a non-empty prompt")
    config = load_config(args.config)
    registry = _registry(args, [*config.tools_dirs, *args.tools_dir])
    from edge_agent.engine.llama import load_engine

    engine = load_engine(
        args.model or config.model.name,
        n_ctx=config.model.n_ctx,
        n_threads=args.threads or config.model.n_threads,
        engine=config.model.engine,
    )
    settings = config.agent
    if args.parallel:
        settings = settings.model_copy(update={"parallel_calls": True})
    agent = Agent(
        engine,
        registry,
        settings,
        max_tokens=config.model.max_tokens,
        sandbox=None if args.no_exec else _sandbox(),
        confirm=_confirmer(args.yes),
    )
    cache = _warm(agent, args.tool_choice) if config.model.prefix_cache else None
    if args.mode != "slm":
        return _routed(args, config, agent, cache)
    result = agent.ask(args.prompt, tool_choice=args.tool_choice, execute=not args.no_exec)
    _print(result, args.json, cache)
    return 0 if result.outcome != "invalid" else 1


def _warm(agent: Agent, tool_choice: str | None) -> dict[str, Any] | None:
    """Restore the tool block's KV state saved by an earlier ``ask`` or daemon
    start (the daemon's folder), or save it for the next one: reading 12
    tools' definitions is most of a one-shot ``ask``."""
    try:
        warm = agent.warm(state_dir() / "kv", tool_choice=tool_choice)
    except (EngineError, OSError) as exc:  # a cache: the request still runs
        print(f"edge-agent: note: tool block not cached: {exc}", file=sys.stderr)
        return None
    if warm is None:
        return None
    return {"source": warm.source, "tokens": warm.n_tokens, "seconds": round(warm.seconds, 3)}


def _routed(
    args: argparse.Namespace, config: EdgeAgentConfig, agent: Agent, cache: dict[str, Any] | None
) -> int:
    """Cascade / LLM mode: the router decides, records and explains the route."""
    from edge_agent.budget import Budget
    from edge_agent.confidence import load_confidence
    from edge_agent.journal import Journal
    from edge_agent.ledger import SqliteLedger, SqliteOutbox
    from edge_agent.offload.https import HttpsTransport
    from edge_agent.router import Router, Store, cascade_agent_settings, cloud_for

    agent.settings = cascade_agent_settings(agent.settings)
    https = _https_settings(args, config)
    journal = Journal()
    try:
        store = Store(journal, SqliteOutbox(journal.path))
        cloud = None
        if https is not None:
            budget = Budget(config.budget, SqliteLedger(journal.path))
            cloud = cloud_for(HttpsTransport(https), budget, config.router.link)
        confidence = load_confidence(config.router.confidence_model)
        router = Router(agent, confidence, config.router, cloud=cloud, store=store)
        routed = router.ask(
            args.prompt,
            source="cli",
            tool_choice=args.tool_choice,
            execute=not args.no_exec,
            mode="llm" if args.mode == "llm" else "cascade",
        )
    finally:
        journal.close()
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
    from edge_agent.offload.settings import HttpsOffloadSettings

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


def _sandbox() -> Any:
    from edge_agent.sandbox import ProcessSandbox, harden_current_process

    harden_current_process()
    return ProcessSandbox(state_root=state_dir() / "tools")


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


def _registry(args: argparse.Namespace, dirs: list[Path]) -> Registry:
    if args.tools is not None:
        return Registry(tools_from_json_file(args.tools))
    return Registry.from_dirs(*dirs)


def _with_cache(out: dict[str, Any], cache: dict[str, Any] | None) -> dict[str, Any]:
    """``--json`` output plus where the tool block's KV state came from."""
    return out if cache is None else {**out, "prefix_cache": cache}


def _print(result: Result, as_json: bool, cache: dict[str, Any] | None) -> None:
    if as_json:
        print(json.dumps(_with_cache(result.to_json(), cache), ensure_ascii=False))
        return
    for call in result.calls:
        args = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items()
        )
        print(f"{call.name}({args})")
    for ex in result.executions:
        shown = json.dumps(ex.result.value if ex.ok else None, ensure_ascii=False)
        detail = shown if ex.ok else (ex.reason or (ex.result.error if ex.result else ""))
        print(f"  -> {ex.call.name}: {ex.status}: {detail}")
    if result.text:
        print(result.text)
    if result.outcome == "invalid":
        print(f"no valid call: {result.final.problem}")
    tokens = f"{result.prompt_tokens}+{result.completion_tokens} tokens"
    print(
        f"[{result.route}, {result.latency_s:.2f} s, {tokens}, {len(result.attempts)} attempt(s)]"
    )
