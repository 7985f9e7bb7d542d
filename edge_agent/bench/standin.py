"""The cloud LLM's stand-in: a bigger local model behind an OpenAI-compatible
HTTPS endpoint that answers tools the way a hosted model does.

Why not llama-cpp-python's own server: its generic function-calling chat
format is not the format Qwen was trained on, so the model often answered
in prose, and ``tool_choice: "required"`` failed with HTTP 500. That made
the "LLM baseline" of the ablation weaker than the SLM (valid@1 0.60), which
says nothing about a hosted model. Servers that host Qwen (vLLM's hermes
parser, Qwen's own API) render the model's chat template with the tools,
let the model write its native ``<tool_call>`` JSON blocks, and parse those
into ``tool_calls``. This server does the same with the project's template
renderer (:func:`~edge_agent.decoding.prompts.build_prompt`) and parser
(:func:`~edge_agent.decoding.calls.parse_output`). It does not verify the
calls: the client does, as it would with a hosted model.

It serves two model ids from one loaded model:

* ``<alias>``: no schema, the paper's LLM baseline. With ``tool_choice``
  ``auto`` the model writes what it likes and the server parses it; the
  1.5B coder often writes its call as a fenced JSON block rather than inside
  the tags, and the parser reads both, so the baseline is not marked down for
  a slip of envelope that a model tuned for tools would not make. ``none``
  leaves the tools out of the prompt. ``required`` and a named tool are
  decoded under the tools' grammar, as vLLM and hosted APIs force them with
  guided decoding: a free model asked for a call to small talk stops at
  ``<tool_call>`` with nothing in it.
* ``<alias>+schema``: each tool's JSON schema enforced while decoding, with
  the same grammar the device uses (the "LLM with schema" row).

Start it (the benchmark does this itself, see :func:`edge_agent.bench.cloud.standin_llm`)::

    python -m edge_agent.bench.standin --model qwen2.5-coder-1.5b --port 8443 \\
        --certfile cert.pem --keyfile key.pem --token-file token
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.decoding.calls import ParsedOutput, parse_output
from edge_agent.decoding.grammar import Grammar, GrammarOptions, build_grammar
from edge_agent.decoding.prompts import Message, build_prompt
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.engine.base import Engine
from edge_agent.errors import EdgeAgentError, InputError

SCHEMA_SUFFIX = "+schema"
MAX_TOKENS = 512


@dataclass(frozen=True)
class Reply:
    """One answer: what the model wrote, and that text parsed."""

    text: str
    parsed: ParsedOutput
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class StandIn:
    """Answers chat-completions bodies with one engine; one request at a
    time (llama.cpp is not re-entrant, and a 2-core device runs one anyway)."""

    def __init__(self, engine: Engine, alias: str, *, call_bias: float | None = 0.0) -> None:
        self.engine = engine
        self.alias = alias
        self._lock = threading.Lock()
        # Under a grammar that also admits text, the 1.5B would be pushed into
        # prose (it opens calls with a fence, not the tag): the ladder runs it
        # with the call-intent rule at this bias (TierSettings.call_bias), and
        # so does the schema model here. Measured on simple_python's first
        # 100: 0.71 without it, where the free model scored 0.89.
        self._guided = engine
        with_options = getattr(engine, "with_options", None)
        if with_options is not None and call_bias is not None:
            self._guided = with_options(call_bias=call_bias)

    @property
    def models(self) -> tuple[str, str]:
        return self.alias, self.alias + SCHEMA_SUFFIX

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response for ``body``; :class:`InputError`
        for a request a hosted API would refuse with 400."""
        model = body.get("model") or self.alias
        if model not in self.models:
            raise InputError(f"unknown model {model!r}", hint=f"use {' or '.join(self.models)}")
        tools = normalize_tools(body["tools"]) if body.get("tools") else []
        choice = _choice(body.get("tool_choice"), tools)
        max_tokens = body.get("max_tokens")
        max_tokens = MAX_TOKENS if max_tokens is None else max_tokens
        if type(max_tokens) is not int or not 1 <= max_tokens <= 4096:
            raise InputError("max_tokens must be an integer from 1 to 4096")
        messages = [_message(m) for m in _list(body.get("messages"), "messages")]
        schema = model.endswith(SCHEMA_SUFFIX)
        with self._lock:
            reply = self.complete(messages, tools, choice, schema, max_tokens)
        return _response(model, reply)

    def complete(
        self,
        messages: Sequence[Message],
        tools: list[ToolSpec],
        choice: str,
        schema: bool,
        max_tokens: int,
    ) -> Reply:
        if choice == "none":
            offered = []
        else:
            offered = [t for t in tools if choice in _FREE or t.name == choice]
        prompt = build_prompt(self.engine.chat_template, messages, offered)
        grammar: Grammar | None = None
        if offered and (schema or choice != "auto"):
            options = GrammarOptions(parallel=True, allow_text=choice == "auto")
            grammar = build_grammar(offered, options)
        engine = self.engine if grammar is None else self._guided
        out = engine.generate(prompt, grammar=grammar, max_tokens=max_tokens)
        return Reply(
            out.text,
            parse_output(out.text),
            out.prompt_tokens,
            out.completion_tokens,
            out.finish_reason,
        )


_FREE = ("auto", "required", "none")


def _choice(raw: object, tools: list[ToolSpec]) -> str:
    if raw is None:
        return "auto" if tools else "none"
    if isinstance(raw, str) and raw in _FREE:
        if raw == "required" and not tools:
            raise InputError("tool_choice is required but no tools were given")
        return raw
    if isinstance(raw, dict):
        name = (raw.get("function") or {}).get("name")
        if isinstance(name, str) and any(t.name == name for t in tools):
            return name
        raise InputError(f"tool_choice names {name!r}, which is not among the tools")
    raise InputError(f"tool_choice must be auto, none, required or a named function, got {raw!r}")


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{what} must be a non-empty list")
    return value


def _message(raw: object) -> Message:
    """An OpenAI message as the chat template reads it: a call's arguments
    as an object, not the JSON string the API carries."""
    if not isinstance(raw, dict):
        raise InputError("each message must be an object")
    message = dict(raw)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [_call_for_template(c) for c in calls]
    if message.get("content") is None:
        message["content"] = ""
    return message


def _call_for_template(call: object) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise InputError("a tool call must have a function object")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise InputError("a tool call's arguments are not JSON") from None
    return {"name": function.get("name"), "arguments": arguments}


def _response(model: str, reply: Reply) -> dict[str, Any]:
    """Calls go out as ``tool_calls``; text around them is dropped, as a
    hosted parser does. An answer whose call did not parse goes out as text,
    so the client sees the malformed call and refuses it."""
    calls = [
        {
            "id": f"call_{secrets.token_hex(8)}",
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": json.dumps(call.arguments, ensure_ascii=False),
            },
        }
        for call in reply.parsed.calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else reply.text}
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else reply.finish_reason
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


# ---------------------------------------------------------------- the server


def create_app(standin: StandIn, token: str) -> Any:
    """The Starlette app: ``POST /v1/chat/completions``, ``GET /v1/models``,
    both behind the bearer token; errors in OpenAI's shape."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return JSONResponse(body, status_code=status)

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def chat(request: Request) -> JSONResponse:
        if not authorized(request):
            return error(401, "a valid bearer token is required")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        if body.get("stream"):
            return error(400, "this stand-in does not stream")
        try:
            answer = await asyncio.to_thread(standin.answer, body)
        except EdgeAgentError as exc:
            return error(400, exc.one_line())
        return JSONResponse(answer)

    async def models(request: Request) -> JSONResponse:
        if not authorized(request):
            return error(401, "a valid bearer token is required")
        cards = [{"id": m, "object": "model", "owned_by": "edge-agent"} for m in standin.models]
        return JSONResponse({"object": "list", "data": cards})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.bench.standin",
        description="A bigger local model behind an OpenAI-compatible HTTPS endpoint, "
        "answering tools in the model's native format (the ablation's cloud LLM).",
    )
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="manifest name or .gguf")
    parser.add_argument("--alias", default="llm", help="the model id clients ask for")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="bearer token")
    parser.add_argument("--threads", type=int, help="llama.cpp threads")
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from edge_agent.engine import load_engine

        token = args.token_file.read_text(encoding="utf-8").strip()
        engine = load_engine(
            args.model, n_ctx=args.n_ctx, n_threads=args.threads, engine="llguidance"
        )
    except (EdgeAgentError, OSError) as exc:
        message = exc.one_line() if isinstance(exc, EdgeAgentError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    app = create_app(StandIn(engine, args.alias), token)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=str(args.certfile),
        ssl_keyfile=str(args.keyfile),
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
