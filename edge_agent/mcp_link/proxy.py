"""One MCP session per call, run inside the sandbox child.

The registry's MCP tools name this module as their implementation, so the
:class:`~edge_agent.sandbox.process.ProcessSandbox` runs them like any
untrusted tool: a stdio server is started *by the call, inside the call's
sandbox* (its rlimits, uid, namespaces, Landlock and seccomp are the
server's too), in the server's private folder, and dies with the call.
Nothing of the server runs in the daemon.

The sandbox calls ``getattr(module, function)``; an MCP tool's ``function``
is the JSON of its :class:`Request`, which the module ``__getattr__`` below
turns into the call. The request carries no secret: a token is read from
its file here, which the tool's policy lets the call read.

A server that exits, closes its pipes or lets the deadline pass is an
:class:`~edge_agent.errors.McpError` with one line; the server's own error
result is a :class:`~edge_agent.errors.ToolError` with its text. Starting a
Python server costs about a second per call: correctness first; keep a
server warm with ``allow_network`` and a URL if that matters.

The SDK loads inside the call only: ``import edge_agent`` never loads it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from edge_agent.errors import McpError, ToolError

STATE_ENV = "EDGE_AGENT_TOOL_STATE"
MARGIN_S = 2.5  # answer before the sandbox's clock (started before our imports) kills the call


class Request(TypedDict):
    """What one call needs to reach the server (``tool`` None: list the tools)."""

    server: str
    command: str | None
    args: list[str]
    url: str | None
    token_file: str | None
    tool: str | None
    timeout_s: float


def __getattr__(name: str) -> Callable[..., Any]:
    if not name.startswith("{"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    request: Request = json.loads(name)
    return functools.partial(call, request)


def call(request: Request, **arguments: Any) -> Any:
    """The tool's result (structured content, else its text), or the tool list."""
    import anyio

    try:
        return anyio.run(_session, request, arguments)
    except (McpError, ToolError):
        raise
    except BaseException as exc:  # ExceptionGroups from the SDK's task groups
        raise _translate(request, exc) from None


async def _session(request: Request, arguments: dict[str, Any]) -> Any:
    import anyio
    from mcp import Client

    wait = max(request["timeout_s"] - MARGIN_S, 0.5)
    with anyio.fail_after(wait):
        async with Client(_target(request), read_timeout_seconds=wait) as client:
            if request["tool"] is None:
                listed = await client.list_tools()
                return [_listing(t) for t in listed.tools]
            result = await client.call_tool(request["tool"], arguments)
    text = "\n".join(getattr(b, "text", "") for b in result.content).strip()
    if result.is_error:
        raise ToolError(f"{request['tool']}: {text or 'the server reported an error'}")
    return result.structured_content if result.structured_content is not None else text


def _target(request: Request) -> Any:
    """Where the session goes: the stdio server, in its private folder, or the URL."""
    if request["url"] is not None:
        return _http_transport(request["url"], request["token_file"])
    from mcp import StdioServerParameters

    folder = os.environ.get(STATE_ENV) or os.getcwd()
    env = {"HOME": folder, "TMPDIR": folder, "PATH": os.environ.get("PATH", "")}
    command = str(request["command"])
    return StdioServerParameters(command=command, args=request["args"], cwd=folder, env=env)


def _http_transport(url: str, token_file: str | None) -> Any:
    if token_file is None:
        return url
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    token = Path(token_file).read_text(encoding="utf-8").strip()
    headers = {"Authorization": f"Bearer {token}"}
    return streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))


def _listing(tool: Any) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": tool.input_schema,
    }


def _translate(request: Request, exc: BaseException) -> McpError:
    """The innermost cause as one line naming the server."""
    leaf = _leaf(exc)
    server = request["server"]
    if isinstance(leaf, TimeoutError):
        wait = max(request["timeout_s"] - MARGIN_S, 0.5)
        return McpError(f"MCP server {server!r} did not answer within {wait:g} s")
    if isinstance(leaf, OSError) and request["url"] is None:
        return McpError(f"cannot start MCP server {server!r}: {leaf.strerror or leaf}")
    text = " ".join(str(leaf).split()) or type(leaf).__name__
    if "closed" in text.lower():
        return McpError(f"MCP server {server!r} closed the connection (it exited or was killed)")
    return McpError(f"MCP server {server!r} failed: {text}")


def _leaf(exc: BaseException) -> BaseException:
    inner = getattr(exc, "exceptions", None)  # an exception group (3.11+ or backport)
    while isinstance(inner, tuple) and inner and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


__all__ = ["Request", "call"]
