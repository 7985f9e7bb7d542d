"""``edge-agent ask`` with the default model uses an MCP server's tools: the
call is verified against the server's schema, runs in the sandbox (the
server starts inside it, in its private folder), and the result is fed
back into the answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.mcp_link.conftest import notes_config

pytestmark = pytest.mark.model


def _ask(tmp_path: Path, prompt: str) -> dict:
    config = notes_config(tmp_path / "config.toml")
    env = {**os.environ, "EDGE_AGENT_STATE_DIR": str(tmp_path / "state")}
    proc = run_cli("ask", "--json", "--config", str(config), prompt, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_ask_reads_a_note_through_the_mcp_server(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "tools" / "mcp-notes"
    folder.mkdir(parents=True)
    (folder / "shopping.txt").write_text("eggs, milk and coffee")
    out = _ask(tmp_path, "Read the note named shopping.txt")
    [call] = out["tool_calls"]
    assert call == {"name": "read_note", "arguments": {"name": "shopping.txt"}}
    assert out["valid_at_1"] is True  # verified against the server's schema
    [ran] = out["executions"]
    assert ran["status"] == "done", ran
    assert ran["result"] == {"result": "eggs, milk and coffee"}
    # The note was read from the server's private folder: its working folder
    # inside the call's sandbox (test_client.py checks the sandbox's layers).
    assert "eggs, milk and coffee" in out["answer"]  # the result, fed back


def test_ask_writes_a_note_in_the_servers_private_folder(tmp_path: Path) -> None:
    out = _ask(tmp_path, "Write a note named todo.txt with the text: buy bread")
    [ran] = out["executions"]
    assert ran["name"] == "write_note" and ran["status"] == "done", ran
    note = tmp_path / "state" / "tools" / "mcp-notes" / "todo.txt"
    assert note.read_text() == "buy bread"
