"""The offload interface: one request to a cloud LLM, one reply, one method.

A transport (HTTPS, MQTT) turns an :class:`OffloadRequest` into an
:class:`OffloadReply` or raises :class:`~edge_agent.errors.OffloadError`,
whose ``retryable`` flag says whether sending the same request again (with the
same idempotency key) could succeed::

    OffloadTransport.send(request) -> OffloadReply
        raises OffloadError(retryable=True)   network down, timeout, 429, 5xx
        raises OffloadError(retryable=False)  bad TLS certificate, 401/403, 400

A reply is the cloud model's *proposal*: calls in it have not been verified,
and the router passes them through the same verifier as the SLM's.

This module also holds the JSON wire format that the MQTT transport and the
cloud-bridge exchange (``request_to_wire`` / ``request_from_wire`` and the
reply pair), and :func:`read_secret_file`, which every transport uses for
tokens and passwords.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edge_agent.decoding.calls import ToolCall
from edge_agent.decoding.prompts import Message
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.errors import ConfigError, InputError, OffloadError, SchemaError

WIRE_VERSION = 1
MAX_KEY_LENGTH = 200
_ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, kw_only=True)
class OffloadRequest:
    """What the device asks the cloud model.

    ``idempotency_key`` is the same on every retry of one logical request, so
    an endpoint (or the cloud-bridge) can answer a repeat without paying for
    a second generation. ``tool_choice`` is ``auto``, ``none``, ``required``
    or the name of one tool that must be called.
    """

    messages: list[Message] = field(hash=False)
    tools: list[ToolSpec] = field(hash=False)
    idempotency_key: str
    tool_choice: str = "auto"
    max_tokens: int = 256
    model: str | None = None


@dataclass(frozen=True, kw_only=True)
class OffloadReply:
    """The cloud model's answer, not yet verified.

    ``calls`` are the calls it proposed (empty for a plain ``text`` answer);
    ``errors`` name fragments that looked like calls but did not parse, a model
    mistake recorded as data. ``latency_s`` is measured by the transport, from
    the first attempt to the reply, retries and back-off included.
    """

    calls: tuple[ToolCall, ...]
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    transport: str
    errors: tuple[str, ...] = ()


@runtime_checkable
class OffloadTransport(Protocol):
    """A way to reach the cloud model. Implementations are thread-safe."""

    def send(self, request: OffloadRequest) -> OffloadReply:
        """Send one request and wait for its reply; raises OffloadError."""
        ...

    def close(self) -> None:
        """Release connections; the transport cannot be used afterwards."""
        ...


def read_secret_file(path: Path, what: str) -> str:
    """The stripped contents of a token or password file.

    Refuses a file that group or others may read or write (as ssh does with
    private keys): a secret that other local users can read is a leaked one.
    The error names the file and its mode, never its contents.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what} file {path} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{what} file {path} is accessible by group or others (mode {mode:04o})",
            hint=f"run `chmod 600 {path}`",
        )
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} file {path} cannot be read") from exc
    if not secret:
        raise ConfigError(f"{what} file {path} is empty")
    return secret


def read_secret_env(name: str, what: str) -> str:
    """A token from the environment variable ``name`` (whose value is never shown)."""
    secret = os.environ.get(name, "").strip()
    if not secret:
        raise ConfigError(f"{what}: the environment variable {name} is not set or empty")
    return secret


def describe_tls_error(exc: ssl.SSLError) -> str:
    """A one-line reason, e.g. ``certificate verify failed: Hostname mismatch, ...``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc)


# --- the wire format shared by the MQTT transport and the cloud-bridge ------


def request_to_wire(request: OffloadRequest) -> bytes:
    body = {
        "v": WIRE_VERSION,
        "idempotency_key": request.idempotency_key,
        "messages": request.messages,
        "tools": [t.to_openai() for t in request.tools],
        "tool_choice": request.tool_choice,
        "max_tokens": request.max_tokens,
        "model": request.model,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def request_from_wire(payload: bytes) -> OffloadRequest:
    """Decode and check a request; :class:`InputError` names what is wrong."""
    body = _json_object(payload, "request")
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InputError(f"idempotency_key must be a string of 1-{MAX_KEY_LENGTH} characters")
    max_tokens = body.get("max_tokens", 256)
    if type(max_tokens) is not int or not 1 <= max_tokens <= 8192:
        raise InputError("max_tokens must be an integer from 1 to 8192")
    tool_choice = body.get("tool_choice", "auto")
    model = body.get("model")
    if not isinstance(tool_choice, str) or not (model is None or isinstance(model, str)):
        raise InputError("tool_choice and model must be strings")
    return OffloadRequest(
        messages=_messages(body.get("messages")),
        tools=_tools(body.get("tools", [])),
        idempotency_key=key,
        tool_choice=tool_choice,
        max_tokens=max_tokens,
        model=model,
    )


def reply_to_wire(reply: OffloadReply) -> bytes:
    body = {
        "v": WIRE_VERSION,
        "ok": True,
        "calls": [c.to_dict() for c in reply.calls],
        "text": reply.text,
        "model": reply.model,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "latency_s": reply.latency_s,
        "errors": list(reply.errors),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def error_to_wire(message: str, *, retryable: bool) -> bytes:
    body = {"v": WIRE_VERSION, "ok": False, "error": message, "retryable": retryable}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def reply_from_wire(payload: bytes, *, transport: str, latency_s: float) -> OffloadReply:
    """Decode a reply; an error reply is raised as the OffloadError it carries."""
    try:
        body = _json_object(payload, "reply")
        if body.get("ok") is not True:
            message = str(body.get("error", "no error message"))
            raise OffloadError(
                f"the cloud-bridge refused the request: {message}",
                retryable=bool(body.get("retryable", False)),
            )
        return OffloadReply(
            calls=tuple(_wire_call(c) for c in _list(body.get("calls", []))),
            text=_str(body.get("text", "")),
            model=_str(body.get("model", "")),
            prompt_tokens=_count(body.get("prompt_tokens", 0)),
            completion_tokens=_count(body.get("completion_tokens", 0)),
            latency_s=latency_s,
            transport=transport,
            errors=tuple(_str(e) for e in _list(body.get("errors", []))),
        )
    except InputError as exc:
        raise OffloadError(
            f"malformed reply from the cloud-bridge: {exc}", retryable=False
        ) from exc


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the {what} is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InputError(f"the {what} must be a JSON object")
    if body.get("v") != WIRE_VERSION:
        raise InputError(f"unsupported {what} version {body.get('v')!r} (want {WIRE_VERSION})")
    return body


def _messages(value: object) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise InputError("messages must be a non-empty list")
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise InputError(f"messages[{i}] must be an object with a role in {sorted(_ROLES)}")
        content = msg.get("content")
        if not (content is None or isinstance(content, str)):
            raise InputError(f"messages[{i}].content must be a string")
    return value


def _tools(value: object) -> list[ToolSpec]:
    if value == []:
        return []
    try:
        return normalize_tools(value)
    except SchemaError as exc:
        raise InputError(f"tools: {exc.message}") from exc


def _wire_call(value: object) -> ToolCall:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise InputError("each call must be an object with a string name")
    args = value.get("arguments", {})
    if not isinstance(args, dict):
        raise InputError("call arguments must be an object")
    return ToolCall(name=value["name"], arguments=args)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise InputError("expected a list")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise InputError("expected a string")
    return value


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise InputError("token counts must be non-negative integers")
    return value
