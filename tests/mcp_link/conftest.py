"""Fixtures for the MCP tests: the test servers' settings, a sandbox with
its own state folder, and a config file naming the servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_agent.mcp_link.settings import McpServerSettings
from edge_agent.sandbox import ProcessSandbox

HERE = Path(__file__).resolve().parent
FILE_SERVER = HERE / "file_server.py"
PROBE_SERVER = HERE / "probe_server.py"


def server(name: str, script: Path, **extra: object) -> McpServerSettings:
    fields = {"name": name, "command": sys.executable, "args": [str(script)], **extra}
    return McpServerSettings.model_validate(fields)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def sandbox(state: Path) -> ProcessSandbox:
    return ProcessSandbox(state_root=state / "tools")


def notes_config(path: Path, *, timeout_s: float = 30) -> Path:
    """A config whose ``notes`` server reads freely and writes as an action."""
    path.write_text(
        f"""
[[mcp.servers]]
name = "notes"
command = "{sys.executable}"
args = ["{FILE_SERVER}"]
timeout_s = {timeout_s}
tools = {{ read_note = "read", write_note = "actuate" }}
""",
        encoding="utf-8",
    )
    return path
