"""The local HTTP API: OpenAI-compatible chat completions in front of the daemon.

Endpoints: ``POST /v1/chat/completions`` (tools, ``tool_choice``, streaming
and not), ``GET /v1/models``, ``GET /healthz`` (no token, no details) and
``GET /metrics`` (Prometheus text). An unchanged OpenAI client works against
it; errors use OpenAI's ``{"error": {message, type, param, code}}`` object.

Extensions, all optional and ignored by OpenAI clients:

* ``"x_edge_agent_tools": ["set_light", ...]`` offers registry tools by name
  (instead of, not with, inline ``tools``).
* ``"x_edge_agent_execute": true`` (or the header ``x-edge-agent-execute:
  true``) runs the registry tools in the sandbox; without named tools every
  registry tool is offered. The answer is then the final assistant message,
  and ``x_edge_agent.steps`` lists what ran. Inline tools are never run.
* ``idempotency-key`` header: a repeat returns the stored answer.
* Every completion carries ``x_edge_agent`` (request id, outcome, route,
  attempts) and the ``x-edge-agent-request-id`` header.

What a client may ask of an answer:

* ``stream``: the stream starts (with the role chunk) once the request is
  journaled, with SSE keep-alive comments while it waits in the queue. A
  text answer then streams as it is decoded, a few characters per chunk;
  tool calls arrive only after they pass verification, as OpenAI's
  incremental ``tool_calls`` deltas. Where the text might still be
  replaced (a ladder or the cloud router may answer instead) it arrives in
  one piece when the request is done.
* ``logprobs`` / ``top_logprobs``: the text answer's tokens, scored by the
  model itself before any grammar mask (null for tool calls).
* ``response_format`` (``json_object`` or ``json_schema``): the answer is
  decoded under the schema's grammar, so it is valid JSON for it by
  construction (:mod:`edge_agent.structured`); not together with tools.
* ``stop``: up to four strings that end a text answer (not a tool call).
* Tool results (``role: tool``) are shown to the model with the name of the
  call their ``tool_call_id`` answers; an unknown id is a 400.

Decoding is always greedy: the fields in :data:`IGNORED_FIELDS`
(``temperature`` and the like) are accepted and ignored, and any other
field we do not implement is a 400 that names it. ``max_tokens`` is capped
by the config's ``model.max_tokens``. ``GET /openapi.json`` describes all of
this for client generators and fuzzers.

Security: the API binds to 127.0.0.1 by default. A bearer token is required
whenever one is configured, and the daemon refuses to bind anything but
loopback without one (:func:`resolve_token`).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent.config import API_TOKEN_ENV as TOKEN_ENV
from edge_agent.config import ServerSettings
from edge_agent.decoding.calls import ToolCall, render_call
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.errors import BusyError, ConfigError, SchemaError
from edge_agent.records.jobs import JobOptions
from edge_agent.records.journal import request_payload
from edge_agent.routing.budget import Budget
from edge_agent.runtime import dashboard
from edge_agent.runtime.daemon import Daemon, Failure, JobEvent, Live, Settled
from edge_agent.runtime.dashboard import DATA_PATH, PAGE_PATH
from edge_agent.runtime.openapi import openapi_document
from edge_agent.structured import response_schema

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
MAX_IDEMPOTENCY_KEY = 255
ROUTES = (
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/openapi.json",
    "/metrics",
    PAGE_PATH,
    DATA_PATH,
)

# ---------------------------------------------------------------- the token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def resolve_token(server: ServerSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from the environment or the token file; refuses a
    non-loopback bind without one."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip() or None
    if token is None and server.token_file is not None:
        token = read_token_file(server.token_file)
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the API token has {len(token)} characters; use at least {MIN_TOKEN_CHARS}",
            hint="python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    if token is None and not is_loopback(server.host):
        raise ConfigError(
            f"refusing to listen on {server.host} without an API token",
            hint=f"set {TOKEN_ENV} or server.token_file (a 0600 file), or bind 127.0.0.1",
        )
    return token


def read_token_file(path: Path) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"the token file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
                "it must not be readable by others",
                hint=f"chmod 600 {path}",
            )
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token or "\n" in token:
        raise ConfigError(f"the token file {path} must hold one non-empty line")
    return token


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(  # noqa: PLR0913 - the OpenAI error fields
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def _invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _failure_error(failure: Failure) -> ApiError:
    rid = {"x-edge-agent-request-id": failure.request_id}
    if failure.kind == "rejected":
        return ApiError(400, failure.reason, code="invalid_request", headers=rid)
    if failure.kind == "expired":
        return ApiError(504, failure.reason, code="deadline_exceeded", kind="timeout_error")
    if failure.kind in ("queued", "declined"):
        # Not answered now: queued for the cloud (a repeat with the same
        # idempotency-key returns the answer once delivered), or declined.
        headers = {**rid, "retry-after": "60"} if failure.kind == "queued" else rid
        code = f"offload_{failure.kind}"
        return ApiError(503, failure.reason, code=code, kind="server_error", headers=headers)
    if failure.kind == "interrupted":
        message = f"request {failure.request_id}: {failure.reason}"
        headers = {**rid, "retry-after": "10"}
        return ApiError(503, message, code="shutting_down", kind="server_error", headers=headers)
    return ApiError(500, failure.reason, code="request_failed", kind="server_error", headers=rid)


def _busy_error(exc: BusyError) -> ApiError:
    headers = {"retry-after": str(exc.retry_after)}
    if exc.status == 429:
        return ApiError(
            429, exc.message, code="queue_full", kind="rate_limit_error", headers=headers
        )
    return ApiError(503, exc.message, code="shutting_down", kind="server_error", headers=headers)


# ---------------------------------------------------------------- the request


IGNORED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    }
)
"""Accepted and ignored: decoding is greedy and unpenalised, so sampling
settings cannot change an answer, and the rest is bookkeeping OpenAI keeps
and we do not. Any other field we do not implement gets a 400 naming it."""

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20


class _Wire(BaseModel):
    """An OpenAI request object: a field we do not read is refused, not ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Text(_Wire):
    type: Literal["text"]
    text: str


class _FunctionIn(_Wire):
    name: str
    arguments: str = "{}"


class _CallIn(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: _FunctionIn


class _MessageIn(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Text] | None = None
    tool_calls: list[_CallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None  # a participant's name: accepted, not shown to the model
    refusal: str | None = None  # an earlier assistant refusal: accepted, not shown


class _FunctionName(_Wire):
    name: str


class _NamedChoice(_Wire):
    type: Literal["function"]
    function: _FunctionName


class _StreamOptions(_Wire):
    include_usage: bool = False
    include_obfuscation: bool = False  # no side channel to pad here: ignored


class _JsonSchema(_Wire):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class _ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class ChatBody(_Wire):
    """The OpenAI fields we implement, and :data:`IGNORED_FIELDS`."""

    model: str = Field(min_length=1)
    messages: list[_MessageIn] = Field(min_length=1)
    tools: list[Any] | None = None
    tool_choice: Literal["auto", "none", "required"] | _NamedChoice | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    parallel_tool_calls: bool | None = None
    n: int = Field(1, ge=1, le=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: _ResponseFormat | None = None
    stop: str | list[str] | None = None
    x_edge_agent_execute: bool = False
    x_edge_agent_tools: list[str] | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: what goes to the journal, and how to answer."""

    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    logprobs: bool = False
    named_choice: bool = False  # OpenAI's finish_reason is "stop" then, not "tool_calls"


def parse_chat(body: object, live: Live, models: Sequence[str], *, execute: bool) -> ChatRequest:
    """Validate an OpenAI chat request against the running config (400, 403, 404)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_request")
    try:
        chat = ChatBody.model_validate({k: v for k, v in body.items() if k not in IGNORED_FIELDS})
    except ValidationError as exc:
        raise _refused(exc) from exc
    if chat.model not in models:
        message = f"the model {chat.model!r} does not exist here; this daemon serves {models[0]!r}"
        raise ApiError(404, message, code="model_not_found", param="model")
    execute = execute or chat.x_edge_agent_execute
    if execute and not live.config.server.allow_execute:
        message = "tool execution is disabled (server.allow_execute)"
        raise ApiError(403, message, code="execute_disabled", kind="permission_error")
    source, specs = _offered_tools(chat, live, execute)
    options = _options(chat, live, execute, source, specs)
    return ChatRequest(
        payload=request_payload(_conversation(chat.messages), specs, options),
        model=chat.model,
        stream=chat.stream,
        include_usage=bool(chat.stream_options and chat.stream_options.include_usage),
        logprobs=chat.logprobs,
        named_choice=isinstance(chat.tool_choice, _NamedChoice),
    )


def _refused(exc: ValidationError) -> ApiError:
    """The first problem of a request, as a 400 that names its field."""
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        message = f"unsupported field {param!r}: edge-agent does not implement it"
        return ApiError(400, message, code="unsupported_parameter", param=param)
    return ApiError(400, f"{param}: {err['msg']}", code="invalid_request", param=param)


def _offered_tools(chat: ChatBody, live: Live, execute: bool) -> tuple[str, list[ToolSpec]]:
    """("registry" | "inline" | "none", the tools the model may call)."""
    if chat.tools and chat.x_edge_agent_tools is not None:
        raise _invalid("pass tools or x_edge_agent_tools, not both", "tools")
    if chat.tools:
        if execute:
            message = "only registry tools run; name them in x_edge_agent_tools instead of tools"
            raise ApiError(400, message, code="invalid_request", param="tools")
        try:
            return "inline", normalize_tools(chat.tools)
        except SchemaError as exc:
            raise ApiError(400, exc.one_line(), code="invalid_schema", param="tools") from exc
    names = chat.x_edge_agent_tools
    if names is None and not execute:
        return "none", []
    registry = live.registry
    unknown = [n for n in names or [] if n not in registry]
    if unknown:
        message = f"unknown registry tool(s): {', '.join(unknown)}"
        raise ApiError(400, message, code="unknown_tool", param="x_edge_agent_tools")
    chosen = registry.subset(names) if names is not None else registry
    return "registry", chosen.specs()


def _options(
    chat: ChatBody, live: Live, execute: bool, source: str, specs: list[ToolSpec]
) -> dict[str, Any]:
    cap = live.config.model.max_tokens
    wanted = chat.max_completion_tokens or chat.max_tokens
    return JobOptions(
        model=chat.model,
        tool_choice=_tool_choice(chat, live, specs),
        execute=execute,
        max_tokens=min(wanted, cap) if wanted else cap,
        tool_source=source,
        tool_names=tuple(s.name for s in specs),
        parallel=chat.parallel_tool_calls,
        stop=_stop(chat.stop),
        logprobs=_logprobs(chat),
        response_format=_response_format(chat, specs),
    ).to_json()


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    found = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(found) > MAX_STOP or not all(found):
        raise _invalid(f"stop takes up to {MAX_STOP} non-empty strings", "stop")
    return found


def _logprobs(chat: ChatBody) -> int | None:
    if chat.top_logprobs is not None and not chat.logprobs:
        raise _invalid("top_logprobs needs logprobs: true", "top_logprobs")
    return (chat.top_logprobs or 0) if chat.logprobs else None


def _response_format(chat: ChatBody, specs: list[ToolSpec]) -> dict[str, Any] | None:
    """``{"type": "json_object"}`` or ``{"type": "json_schema", "schema": ...}``
    (a checked schema), or None for plain text."""
    fmt = chat.response_format
    if fmt is None or fmt.type == "text":
        return None
    if specs:
        message = "response_format is not supported together with tools; send one or the other"
        raise ApiError(400, message, code="unsupported_parameter", param="response_format")
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.json_schema is None:
        raise _invalid("response_format json_schema needs a json_schema object", "response_format")
    out = {"type": "json_schema", "name": fmt.json_schema.name, "schema": fmt.json_schema.schema_}
    try:
        response_schema(out)
    except SchemaError as exc:
        raise ApiError(400, exc.one_line(), code="invalid_schema", param="response_format") from exc
    return out


def _tool_choice(chat: ChatBody, live: Live, specs: list[ToolSpec]) -> str:
    choice = chat.tool_choice
    if isinstance(choice, _NamedChoice):
        if choice.function.name not in {s.name for s in specs}:
            message = f"tool_choice names {choice.function.name!r}, which is not among the tools"
            raise ApiError(400, message, code="invalid_request", param="tool_choice")
        return choice.function.name
    if choice == "required" and not specs:
        raise _invalid("tool_choice is required but no tools were given", "tool_choice")
    return choice or (live.config.agent.tool_choice if specs else "auto")


def _conversation(messages: Sequence[_MessageIn]) -> list[dict[str, Any]]:
    calls: dict[str, str] = {}  # tool_call id -> the function it called
    out = []
    for i, m in enumerate(messages):
        calls.update({c.id: c.function.name for c in m.tool_calls or [] if c.id})
        out.append(_tool_message(m, i, calls) if m.role == "tool" else _message(m, i))
    last = out[-1]
    if last["role"] in ("user", "tool") and not last["content"].strip():
        raise ApiError(400, "the last message is empty", code="invalid_request", param="messages")
    return out


def _message(message: _MessageIn, index: int) -> dict[str, Any]:
    content = message.content
    text = content if isinstance(content, str) else "".join(p.text for p in content or [])
    calls = [_rendered(c, index) for c in message.tool_calls or []]
    if calls:
        text = "\n".join([text, *calls]).strip()
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": text}


def _tool_message(message: _MessageIn, index: int, calls: Mapping[str, str]) -> dict[str, Any]:
    """A tool's result as the agent itself feeds one back (its function's
    name and the result), keeping ``tool_call_id`` for templates that read
    it. An id that no earlier call carried is refused, as OpenAI does."""
    text = _message(message, index)["content"]
    call_id = message.tool_call_id
    if call_id is None:
        return {"role": "tool", "content": text}
    if call_id not in calls:
        param = f"messages.{index}.tool_call_id"
        raise _invalid(f"no earlier assistant tool call has the id {call_id!r}", param)
    try:
        result: Any = json.loads(text)
    except ValueError:
        result = text
    content = json.dumps({"name": calls[call_id], "result": result}, ensure_ascii=False)
    return {"role": "tool", "content": content, "tool_call_id": call_id}


def _rendered(call: _CallIn, index: int) -> str:
    """An earlier assistant tool call, in the envelope the model writes."""
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        param = f"messages.{index}.tool_calls"
        raise _invalid("tool call arguments must be a JSON object string", param)
    return render_call(ToolCall(call.function.name, arguments))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    message = f"the request body is larger than {limit} bytes"
    return ApiError(413, message, code="body_too_large", headers={"connection": "close"})


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise ApiError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    except RecursionError as exc:  # the decoder's limit, about 1,000 levels
        raise ApiError(
            400, "the request body is nested too deeply to read", code="invalid_json"
        ) from exc


# ---------------------------------------------------------------- the answer


@dataclass(frozen=True)
class _Meta:
    request_id: str
    created: int
    model: str
    logprobs: bool = False  # the client asked for them
    named: bool = False  # tool_choice named a function

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.request_id}"


def completion(meta: _Meta, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored answer as an OpenAI ``chat.completion``."""
    message, finish = _assistant(meta, stored)
    choice = {"index": 0, "message": message, "logprobs": _logprobs_of(meta, stored)}
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{**choice, "finish_reason": finish}],
        "usage": _usage(stored),
        "x_edge_agent": _extension(meta.request_id, stored),
    }


def completion_chunks(
    meta: _Meta, stored: Mapping[str, Any], *, include_usage: bool, streamed: str = ""
) -> Iterator[dict[str, Any]]:
    """The answer as ``chat.completion.chunk`` objects, after the role chunk
    and the ``streamed`` text already sent as it was decoded."""
    message, finish = _assistant(meta, stored)
    for index, call in enumerate(message.get("tool_calls") or []):
        head = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
        yield _chunk(meta, {"tool_calls": [head]})
        arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        yield _chunk(meta, {"tool_calls": [arguments]})
    rest = _unsent(str(message.get("content") or ""), streamed)
    if rest:
        yield _chunk(meta, {"content": rest})
    last = _chunk(meta, {}, finish)
    last["choices"][0]["logprobs"] = _logprobs_of(meta, stored)
    last["x_edge_agent"] = _extension(meta.request_id, stored)
    yield last
    if include_usage:
        yield {**_chunk(meta, {}), "choices": [], "usage": _usage(stored)}


def _chunk(meta: _Meta, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _unsent(content: str, streamed: str) -> str:
    """What of the final content the client has not yet been sent. The
    answer's text is the streamed text, trimmed; anything else would be a
    bug, and resending the whole would show the client the text twice."""
    sent = streamed.rstrip()
    if content.startswith(sent):
        return content[len(sent) :]
    log.warning("a streamed answer differs from the one journaled; the client keeps the streamed")
    return ""


def _logprobs_of(meta: _Meta, stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` object: the text answer's tokens, scored by the
    model before any grammar mask (null for tool calls and for answers the
    model did not decode here)."""
    if not meta.logprobs or stored.get("logprobs") is None:
        return None
    return {"content": stored["logprobs"], "refusal": None}


def _assistant(meta: _Meta, stored: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(the assistant message, finish_reason). Executed calls are not handed
    back as tool_calls: they ran already, and a client must not run them again.
    A named ``tool_choice`` finishes with ``stop``, as OpenAI's does."""
    if stored.get("executed") and stored.get("executions"):
        return {"role": "assistant", "content": _final_text(stored)}, "stop"
    calls = stored.get("tool_calls") or []
    if calls:
        tool_calls = [_tool_call(meta.request_id, i, c) for i, c in enumerate(calls)]
        finish = "stop" if meta.named else "tool_calls"
        return {"role": "assistant", "content": None, "tool_calls": tool_calls}, finish
    finish = "length" if stored.get("finish_reason") == "length" else "stop"
    text = str(stored.get("text") or "")
    if not text and stored.get("outcome") == "invalid":
        # A client that reads only the message (a chat UI, Home Assistant)
        # would otherwise show an empty answer to a call that was refused.
        text = f"No valid call was made: {_problem(stored)}"
    return {"role": "assistant", "content": text}, finish


def _problem(stored: Mapping[str, Any]) -> str:
    attempts = stored.get("attempts") or []
    return str(attempts[-1].get("problem") or "") if attempts else ""


def _tool_call(request_id: str, index: int, call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = json.dumps(call.get("arguments") or {}, ensure_ascii=False)
    return {
        "id": f"call_{request_id[:16]}_{index}",
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def _final_text(stored: Mapping[str, Any]) -> str:
    """The sentence a person reads: the model's closing answer, else one
    sentence per call that ran (``answer``). Journal rows written before
    sentences existed fall back to what the tools did, one line each."""
    if stored.get("answer"):
        return str(stored["answer"])
    if stored.get("text"):
        return str(stored["text"])
    lines = []
    for step in stored.get("executions") or []:
        what = step.get("result") if step.get("status") == "done" else step.get("error")
        detail = json.dumps(what if what is not None else step.get("reason", ""), default=str)
        lines.append(f"{step.get('name')}: {step.get('status')} {detail}")
    return "\n".join(lines)


def _usage(stored: Mapping[str, Any]) -> dict[str, int]:
    tokens = stored.get("tokens") or {}
    prompt, completion = int(tokens.get("prompt", 0)), int(tokens.get("completion", 0))
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _extension(request_id: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    attempts = stored.get("attempts") or []
    out: dict[str, Any] = {
        "request_id": request_id,
        "outcome": stored.get("outcome"),
        "route": stored.get("route"),
        "latency_s": stored.get("latency_s"),
        "attempts": len(attempts),
        "valid_at_1": stored.get("valid_at_1"),
        "tier": stored.get("tier", 0),
        "model_steps": stored.get("steps", 1),
    }
    if stored.get("outcome") == "invalid" and attempts:
        out["problem"] = _problem(stored)
    if stored.get("executed"):
        out["tool_calls"] = stored.get("tool_calls") or []
        out["steps"] = stored.get("executions") or []
    return out


def _data(obj: object) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Pieces:
    """A text answer's pieces on their way from the worker thread to the
    stream, then None once the request has settled."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def put(self, piece: str) -> None:  # called on the worker thread
        self._loop.call_soon_threadsafe(self.queue.put_nowait, piece)

    def settled(self, future: asyncio.Future[Settled]) -> None:
        # After every piece: the worker scheduled them before it returned.
        future.add_done_callback(lambda _: self.queue.put_nowait(None))


async def _events(
    meta: _Meta,
    future: asyncio.Future[Settled],
    pieces: _Pieces,
    *,
    include_usage: bool,
    keepalive_s: float,
) -> AsyncIterator[str]:
    yield _data(_chunk(meta, {"role": "assistant"}))
    streamed = ""
    getter: asyncio.Task[str | None] | None = None
    try:
        while True:
            getter = getter or asyncio.ensure_future(pieces.queue.get())
            done, _ = await asyncio.wait({getter}, timeout=keepalive_s)
            if not done:
                yield ": keep-alive\n\n"
                continue
            piece, getter = getter.result(), None
            if piece is None:
                break
            streamed += piece
            yield _data(_chunk(meta, {"content": piece}))
    finally:
        if getter is not None:
            getter.cancel()
    settled = future.result()
    if isinstance(settled, Failure):
        yield _data(_failure_error(settled).body)
    else:
        chunks = completion_chunks(
            meta, settled.result, include_usage=include_usage, streamed=streamed
        )
        for chunk in chunks:
            yield _data(chunk)
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------- metrics


class Metrics:
    """Prometheus metrics of one app (its own registry: no global state)."""

    def __init__(self, daemon: Daemon) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.http = Counter(
            "edge_agent_http_requests", "HTTP requests by route and status",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "edge_agent_http_request_duration_seconds", "HTTP request time, queue wait included",
            ["route"], registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        self.settled = Counter(
            "edge_agent_requests", "accepted requests settled, by source and outcome",
            ["source", "outcome"], registry=r,
        )  # fmt: skip
        self.tokens = Counter("edge_agent_tokens", "tokens processed", ["kind"], registry=r)
        self.joules = Counter(
            "edge_agent_energy_joules", "energy spent answering requests (see the journal's"
            " energy_source for the probe)", registry=r,
        )  # fmt: skip
        self.routes = Counter(
            "edge_agent_routed_requests", "answered requests by route", ["route"], registry=r
        )
        self.queue_wait = Histogram(
            "edge_agent_queue_wait_seconds", "time accepted requests waited for the model",
            registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        self.run = Histogram(
            "edge_agent_inference_seconds", "time answering one request",
            registry=r, buckets=_BUCKETS,
        )  # fmt: skip
        depth = Gauge("edge_agent_queue_depth", "requests waiting for the model", registry=r)
        depth.set_function(lambda: daemon.depth)
        busy = Gauge("edge_agent_busy", "1 while a request is being answered", registry=r)
        busy.set_function(lambda: int(daemon.busy))
        if daemon.routing is not None:
            budget = daemon.routing.cloud.budget
            for window in ("day", "month"):
                left = Gauge(
                    f"edge_agent_budget_left_{window}",
                    f"cloud budget left this {window}, in {budget.settings.currency}",
                    registry=r,
                )
                left.set_function(functools.partial(_budget_left, budget, window))

    def on_job(self, event: JobEvent) -> None:
        self.settled.labels(event.source, event.outcome).inc()
        self.tokens.labels("prompt").inc(event.prompt_tokens)
        self.tokens.labels("completion").inc(event.completion_tokens)
        self.joules.inc(event.energy_j)
        if event.route:
            self.routes.labels(event.route).inc()
        self.queue_wait.observe(event.queue_s)
        self.run.observe(event.run_s)

    def on_http(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.http.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))


# ---------------------------------------------------------------- middleware


class _Metered:
    """Counts and times every HTTP request (401s and 404s included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.on_http(scope["path"], status, time.perf_counter() - started)


class _Guard:
    """Bearer-token check on everything but /healthz and the /ui page (constant-time)."""

    def __init__(self, app: ASGIApp, token: Callable[[], str | None]) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.token()
        public = scope.get("path") in ("/healthz", PAGE_PATH)  # the page holds no data
        if scope["type"] != "http" or public or token is None:
            await self.app(scope, receive, send)
            return
        if _authorized(Request(scope).headers.get("authorization", ""), token):
            await self.app(scope, receive, send)
            return
        error = ApiError(
            401,
            "missing or wrong API key: send Authorization: Bearer <token>",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
        await error.response()(scope, receive, send)


def _budget_left(budget: Budget, window: str) -> float:
    left = budget.left()
    return float(left.day if window == "day" else left.month)


def _authorized(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


# ---------------------------------------------------------------- the app


def create_app(daemon: Daemon) -> Starlette:
    """The ASGI app in front of ``daemon``; reads its live config per request."""
    metrics = Metrics(daemon)
    daemon.subscribe(metrics.on_job)
    from edge_agent.iot.automation_host import AutomationCollector

    metrics.registry.register(AutomationCollector(daemon))  # empty without automation
    started = int(time.time())

    async def chat(request: Request) -> Response:
        return await _chat(daemon, request)

    async def models(request: Request) -> Response:
        data = [_model_card(m, started) for m in daemon.model_ids]
        return JSONResponse({"object": "list", "data": data})

    async def schema(request: Request) -> Response:
        return JSONResponse(openapi_document(ChatBody, IGNORED_FIELDS, daemon.model_ids))

    async def healthz(request: Request) -> Response:
        if daemon.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", schema, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            *dashboard.routes(daemon),
        ],
        exception_handlers={
            ApiError: _on_api_error,
            BusyError: _on_busy,
            HTTPException: _on_http_error,
            Exception: _on_crash,
        },
    )
    app.add_middleware(_Guard, token=lambda: daemon.live.token)
    app.add_middleware(_Metered, metrics=metrics)
    return app


async def _chat(daemon: Daemon, request: Request) -> Response:
    server = daemon.live.config.server
    body = _json(await read_body(request, server.max_body_bytes))
    execute = _truthy(request.headers.get("x-edge-agent-execute"))
    chat = parse_chat(body, daemon.live, daemon.model_ids, execute=execute)
    pieces = _Pieces()
    ticket = await daemon.submit(
        chat.payload,
        source="api",
        idempotency_key=_key(request),
        on_text=pieces.put if chat.stream else None,
    )
    pieces.settled(ticket.future)
    meta = _Meta(ticket.request_id, int(time.time()), chat.model, chat.logprobs, chat.named_choice)
    headers = {"x-edge-agent-request-id": ticket.request_id}
    if chat.stream:
        events = _events(
            meta,
            ticket.future,
            pieces,
            include_usage=chat.include_usage,
            keepalive_s=server.keepalive_s,
        )
        headers["cache-control"] = "no-cache"
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    settled = await asyncio.shield(ticket.future)  # a client gone does not cancel the answer
    if isinstance(settled, Failure):
        raise _failure_error(settled)
    meta = replace(meta, created=int(settled.result.get("created", meta.created)))
    return JSONResponse(completion(meta, settled.result), headers=headers)


def _model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "edge-agent"}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        message = f"idempotency-key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters"
        raise ApiError(400, message, code="invalid_request", param="idempotency-key")
    return key


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _on_busy(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BusyError)
    return _busy_error(exc).response()


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, str(exc.detail), code=code).response()


async def _on_crash(request: Request, exc: Exception) -> Response:
    return ApiError(500, "internal error", code="internal_error", kind="server_error").response()


__all__ = [
    "ApiError",
    "ChatRequest",
    "Metrics",
    "completion",
    "completion_chunks",
    "create_app",
    "is_loopback",
    "parse_chat",
    "read_token_file",
    "resolve_token",
]
