"""An MCP stdio server written for the tests: two tools over files in its
working folder (edge-agent gives it a private one). ``read_note`` opens the
path it is given as it is, so a test can ask it for a file outside that
folder and see the sandbox refuse."""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("notes")


@server.tool()
def write_note(name: str, text: str) -> str:
    """Write a note (a text file) in the server's folder."""
    try:
        Path(name).write_text(text, encoding="utf-8")
    except OSError as exc:  # the client should see why
        raise ToolError(f"{exc.strerror}: {name}") from exc
    return f"saved {len(text)} characters to {name}"


@server.tool()
def read_note(name: str) -> str:
    """Read a note (a text file) from the server's folder."""
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"{exc.strerror}: {name}") from exc


if __name__ == "__main__":
    server.run("stdio")
