"""An MCP stdio server written for the tests: one tool tries the network,
one sleeps (so a test can kill the server mid-call). It writes its pid to
``server.pid`` in its folder at start."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("probe")


@server.tool()
def connect(host: str, port: int) -> str:
    """Open a TCP connection to host:port."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return f"connected to {host}:{port}"
    except OSError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc


@server.tool()
def sleep(seconds: float) -> str:
    """Sleep for a number of seconds."""
    time.sleep(seconds)
    return f"slept {seconds} s"


if __name__ == "__main__":
    Path("server.pid").write_text(str(os.getpid()), encoding="utf-8")
    server.run("stdio")
