"""The daemon with an MCP server's tools: killing the server mid-call gives
the API client a clear failed step within the tool's timeout, and the
daemon keeps serving (the next request is answered)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.daemon.conftest import QWEN, TOKEN, DaemonProcess, start_daemon
from tests.mcp_link.conftest import PROBE_SERVER
from tests.mcp_link.test_client import _kill_probe_server

pytestmark = [pytest.mark.model, pytest.mark.slow]
TIMEOUT_S = 20


def _config() -> dict:
    return {
        "model": {"name": QWEN, "n_threads": 2, "max_tokens": 64, "prefix_cache": False},
        "ladder": {"enabled": False},
    }


def _mcp_table() -> str:
    return f"""
[[mcp.servers]]
name = "probe"
command = "{sys.executable}"
args = ["{PROBE_SERVER}"]
timeout_s = {TIMEOUT_S}
tools = {{ sleep = "read", connect = "read" }}
"""


def _sleep_request(daemon: DaemonProcess, seconds: int) -> httpx.Response:
    body = {
        "model": QWEN,
        "messages": [{"role": "user", "content": f"Sleep for {seconds} seconds."}],
        "x_edge_agent_tools": ["sleep"],
        "tool_choice": {"type": "function", "function": {"name": "sleep"}},
    }
    headers = {"authorization": f"Bearer {TOKEN}", "x-edge-agent-execute": "true"}
    return httpx.post(f"{daemon.url}/v1/chat/completions", json=body, headers=headers,
                      timeout=600)  # fmt: skip


def test_killing_the_mcp_server_mid_call_leaves_the_daemon_serving(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, _config(), extra_toml=_mcp_table())
    try:
        killer = threading.Thread(target=_kill_probe_server, daemon=True)
        killer.start()
        started = time.monotonic()
        response = _sleep_request(daemon, 60)
        killer.join(30)
        assert response.status_code == 200, response.text
        [step] = response.json()["x_edge_agent"]["steps"]
        assert step["name"] == "sleep" and step["status"] == "failed", step
        # One clear line, whichever process of the call the kill reached first
        # (the server: "closed the connection"; the sandboxed proxy: "killed").
        error = str(step.get("error"))
        assert "\n" not in error and ("closed the connection" in error or "killed" in error), step
        assert time.monotonic() - started < 300  # the model's decision plus well under 60 s
        assert daemon.alive(), daemon.log()
        again = _sleep_request(daemon, 1)
        assert again.status_code == 200, again.text
        [step] = again.json()["x_edge_agent"]["steps"]
        assert step["status"] == "done", step
    finally:
        daemon.stop()
