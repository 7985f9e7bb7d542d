"""`edge-agent mcp [--http]`: offer this device's tools to MCP clients (stdio by default)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.assemble import Assembly
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.runtime.mcp_server import McpGateway

TOKEN_ENV = "EDGE_AGENT_MCP_TOKEN"  # noqa: S105 - a variable name, not a secret


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp", help="offer the tools (and devices) to MCP clients, over stdio or HTTP"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="edge-agent TOML config")
    parser.add_argument(
        "--http", action="store_true",
        help=f"streamable HTTP on [mcp.serve] host:port, bearer token from {TOKEN_ENV} "
        "or [mcp.serve] token_file (default: stdio)",
    )  # fmt: skip
    parser.add_argument(
        "--tools-dir", type=Path, action="append", default=[], metavar="DIR",
        help="another folder of tool modules (repeatable)",
    )  # fmt: skip
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import anyio

    parts = Assembly.from_file(args.config)
    with _gateway(parts, args.tools_dir) as gateway:
        if args.http:
            _serve_http(parts, gateway)
        else:
            from edge_agent.runtime.mcp_server import serve_stdio

            anyio.run(serve_stdio, gateway)
    return 0


@contextlib.contextmanager
def _gateway(parts: Assembly, dirs: list[Path]) -> Iterator[McpGateway]:
    from edge_agent.runtime.mcp_server import McpGateway, start_bridge

    registry = parts.registry(dirs=dirs)
    with parts.journal() as journal:
        automation = parts.config.automation
        bridge = start_bridge(automation, journal) if automation is not None else None
        try:
            yield McpGateway(registry, parts.sandbox(), audit=journal, bridge=bridge)
        finally:
            if bridge is not None:
                bridge.close()
                close = getattr(bridge.confirm, "close", None)
                if close is not None:
                    close()


def _serve_http(parts: Assembly, gateway: McpGateway) -> None:
    import uvicorn

    from edge_agent.runtime.mcp_server import http_app

    serve = parts.config.mcp.serve
    token = _token(serve.token_file)
    app = http_app(gateway, token, serve.host)
    uvicorn.run(app, host=serve.host, port=serve.port, log_level="warning")


def _token(path: Path | None) -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the MCP token file {path}: {exc.strerror}") from exc
    if len(token) < 16:
        raise ConfigError(
            "edge-agent mcp --http needs a bearer token of 16 characters or more",
            hint=f"set {TOKEN_ENV} or [mcp.serve] token_file",
        )
    return token
