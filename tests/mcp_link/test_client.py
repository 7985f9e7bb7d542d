"""Tools from a real MCP stdio server (``file_server.py``, ``probe_server.py``)
join the registry and run in the real sandbox: the server starts inside the
call's sandbox, in a private folder, without network, and an outage is a
clear error within the tool's timeout."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from edge_agent.errors import McpError
from edge_agent.mcp_link.tools import mcp_tools
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.mcp_link.conftest import FILE_SERVER, PROBE_SERVER, server

pytestmark = pytest.mark.slow  # each test starts real MCP server processes


def _by_name(tools: list) -> dict:
    return {t.name: t for t in tools}


def test_tools_join_the_registry_with_their_schemas_and_cautious_defaults(
    sandbox: ProcessSandbox,
) -> None:
    settings = server("notes", FILE_SERVER, tools={"read_note": "read"})
    tools = _by_name(mcp_tools(settings, sandbox))
    registry = Registry(tools.values())
    assert set(registry.specs()[i].name for i in range(2)) == {"read_note", "write_note"}
    write = tools["write_note"]
    assert write.spec.parameters["required"] == ["name", "text"]
    assert write.spec.parameters["properties"]["text"] == {"type": "string"}
    # Not named in the config: the cautious class, so the owner confirms it.
    assert write.policy.side_effect == "dangerous" and write.policy.requires_confirmation
    assert tools["read_note"].policy.side_effect == "read"
    assert not write.policy.trusted and not write.policy.network


def test_calls_run_in_the_sandbox_and_keep_files_in_the_servers_folder(
    sandbox: ProcessSandbox, state: Path
) -> None:
    tools = _by_name(mcp_tools(server("notes", FILE_SERVER), sandbox))
    wrote = sandbox.run(tools["write_note"], {"name": "todo.txt", "text": "buy bread"})
    assert wrote.ok, wrote.error
    assert {"privdrop", "landlock", "seccomp"} <= set(wrote.layers) or "bwrap" in wrote.layers
    assert (state / "tools" / "mcp-notes" / "todo.txt").read_text() == "buy bread"
    read = sandbox.run(tools["read_note"], {"name": "todo.txt"})
    assert read.ok and read.value == {"result": "buy bread"}


def test_the_server_cannot_read_files_outside_its_folder(
    sandbox: ProcessSandbox, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    tools = _by_name(mcp_tools(server("notes", FILE_SERVER), sandbox))
    for path in (secret, Path("/etc/shadow"), FILE_SERVER.parents[2] / "pyproject.toml"):
        result = sandbox.run(tools["read_note"], {"name": str(path)})
        assert not result.ok, path
        assert result.error_type == "ToolError"
        assert "Permission denied" in str(result.error) or "No such file" in str(result.error)
        assert "s3cr3t" not in str(result.error) + result.output


@pytest.fixture
def listener() -> tuple[str, int]:
    """A TCP server on loopback that accepts connections until the test ends."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                sock.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[:2]
    stop.set()
    thread.join(2)
    sock.close()


def test_the_server_has_no_network_unless_the_config_grants_it(
    sandbox: ProcessSandbox, listener: tuple[str, int]
) -> None:
    host, port = listener
    arguments = {"host": host, "port": port}
    closed = _by_name(mcp_tools(server("probe", PROBE_SERVER), sandbox))
    refused = sandbox.run(closed["connect"], arguments)
    assert not refused.ok and refused.error_type == "ToolError", refused
    assert "connected" not in str(refused.error)
    granted = server("probe", PROBE_SERVER, allow_network=True)
    opened = _by_name(mcp_tools(granted, sandbox))
    reached = sandbox.run(opened["connect"], arguments)
    assert reached.ok and reached.value == {"result": f"connected to {host}:{port}"}, reached


def test_killing_the_server_mid_call_is_a_clear_error_within_the_timeout(
    sandbox: ProcessSandbox,
) -> None:
    settings = server("probe", PROBE_SERVER, timeout_s=20)
    tools = _by_name(mcp_tools(settings, sandbox))
    killer = threading.Thread(target=_kill_probe_server, daemon=True)
    killer.start()
    started = time.monotonic()
    result = sandbox.run(tools["sleep"], {"seconds": 60})
    took = time.monotonic() - started
    killer.join(20)
    assert not result.ok and result.error_type == "McpError", result
    assert result.error == "MCP server 'probe' closed the connection (it exited or was killed)"
    assert took < settings.timeout_s


def _kill_probe_server() -> None:
    """Wait for the server to start inside the sandbox, then SIGKILL it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if str(PROBE_SERVER) in cmdline:
                time.sleep(1.0)  # let the call reach the server
                proc.kill()
                return
        time.sleep(0.1)


def test_a_server_that_does_not_answer_is_a_timeout_not_a_hang(
    sandbox: ProcessSandbox,
) -> None:
    tools = _by_name(mcp_tools(server("probe", PROBE_SERVER, timeout_s=8), sandbox))
    started = time.monotonic()
    result = sandbox.run(tools["sleep"], {"seconds": 60})
    assert time.monotonic() - started < 8 + 5
    assert not result.ok and result.error_type == "McpError"
    assert result.error == "MCP server 'probe' did not answer within 5.5 s"


def test_a_server_that_cannot_start_is_a_typed_one_line_error(sandbox: ProcessSandbox) -> None:
    broken = server("broken", FILE_SERVER.with_name("missing_server.py"), timeout_s=10)
    with pytest.raises(McpError) as caught:
        mcp_tools(broken, sandbox)
    assert "MCP server 'broken'" in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_an_unreachable_server_is_left_out_and_the_rest_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One MCP server down must not keep the device's own tools, or the
    daemon, from starting: its tools are left out, with a warning."""
    from edge_agent.assemble import Assembly
    from edge_agent.config import EdgeAgentConfig

    missing = str(FILE_SERVER.with_name("missing_server.py"))
    broken = {"name": "broken", "command": sys.executable, "args": [missing], "timeout_s": 10}
    config = EdgeAgentConfig.model_validate({"mcp": {"servers": [broken]}})
    with caplog.at_level("WARNING", logger="edge_agent.assemble"):
        registry = Assembly(config).registry()
    assert "calculate" in registry  # the built-in tools are there
    assert not any(s.name.startswith("broken") for s in registry.specs())
    assert "MCP server 'broken'" in caplog.text
