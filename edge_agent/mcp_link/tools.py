"""Tools from MCP servers, as registry tools like any other.

Each ``[[mcp.servers]]`` entry is listed once, through the sandbox (so even
listing never runs the server outside it), and each of its tools becomes a
:class:`~edge_agent.toolbox.registry.Tool` with the server's schema: the grammar
constrains the model to it and the verifier checks it like a built-in's.
Running one is an ordinary sandbox call of :mod:`edge_agent.mcp_link.proxy`:

- the server is untrusted code: no network unless ``allow_network``, a
  private folder (``<state>/tools/mcp-<name>``) as its working folder and
  home, kept between calls, and read access only to the system, Python and
  the paths its command names (plus ``read``);
- each tool's side-effect class comes from the config, ``dangerous`` (the
  owner confirms every call) unless it says otherwise;
- ``timeout_s`` bounds a call, the server's start included; an outage is an
  :class:`~edge_agent.errors.McpError`, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.decoding.schema import normalize_tool
from edge_agent.errors import McpError, SchemaError
from edge_agent.mcp_link import proxy as mcp_proxy
from edge_agent.mcp_link.settings import McpServerSettings
from edge_agent.sandbox.base import Sandbox
from edge_agent.toolbox.registry import SideEffect, Tool, ToolPolicy

PROXY = Path(mcp_proxy.__file__).resolve()


def mcp_tools(server: McpServerSettings, sandbox: Sandbox) -> list[Tool]:
    """The server's tools, listed through ``sandbox``; McpError when it cannot be listed."""
    lister = _tool(server, "list", {"name": f"mcp_{server.name}_list"}, "read", None)
    listed = sandbox.run(lister, {})
    if not listed.ok:
        raise McpError(f"cannot list the tools of MCP server {server.name!r}: {listed.error}")
    if not isinstance(listed.value, list):
        raise McpError(f"MCP server {server.name!r} listed no tools")
    return [_from_listing(server, item) for item in listed.value]


def _from_listing(server: McpServerSettings, item: dict[str, Any]) -> Tool:
    name = str(item.get("name"))
    definition = {
        "name": name,
        "description": str(item.get("description") or "").split("\n\n")[0],
        "parameters": item.get("input_schema") or {"type": "object", "properties": {}},
    }
    return _tool(server, name, definition, server.side_effect_of(name), name)


def _tool(
    server: McpServerSettings,
    name: str,
    definition: dict[str, Any],
    side_effect: SideEffect,
    remote: str | None,
) -> Tool:
    try:
        spec = normalize_tool(_without_titles(definition))
    except SchemaError as exc:
        raise McpError(f"MCP server {server.name!r}, tool {name!r}: {exc.message}") from exc
    policy = ToolPolicy(
        description=spec.description,
        side_effect=side_effect,
        timeout_s=server.timeout_s,
        network=server.allow_network or server.url is not None,
        requires_confirmation=side_effect == "dangerous",
        tags=("mcp", f"mcp:{server.name}"),
        state=f"mcp-{server.name}",
        read=tuple(str(p) for p in _readable(server)),
    )
    return Tool(spec, policy, None, PROXY, json.dumps(_request(server, remote)))


def _request(server: McpServerSettings, tool: str | None) -> mcp_proxy.Request:
    token = server.token_file
    return {
        "server": server.name,
        "command": server.command,
        "args": list(server.args),
        "url": server.url,
        "token_file": str(token.resolve()) if token is not None else None,
        "tool": tool,
        "timeout_s": server.timeout_s,
    }


def _readable(server: McpServerSettings) -> Iterator[Path]:
    """The server's program: its command and arguments that name a file, and ``read``."""
    named = [server.command or "", *server.args]
    for part in named:
        path = Path(part).expanduser()
        if part and path.is_absolute() and path.exists():
            yield path.resolve()
    yield from (p.expanduser().resolve() for p in server.read)
    if server.token_file is not None:
        yield server.token_file.resolve()


def _without_titles(node: Any) -> Any:
    """The SDK's pydantic schemas title every node: prompt tokens for nothing."""
    if isinstance(node, dict):
        return {
            k: v if k in ("default", "enum", "const") else _without_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def is_mcp(tool: Tool) -> bool:
    return tool.module_file == PROXY


__all__ = ["is_mcp", "mcp_tools"]
