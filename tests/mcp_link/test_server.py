"""``edge-agent mcp`` offers the registry's tools, and the bridge's devices,
to an MCP client from the SDK. Calls arriving that way pass the verifier,
the rate limit, the owner's confirmation and the audit log, like the
model's own calls."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from edge_agent.iot.bridge import Bridge, ConfirmRequest
from edge_agent.records.journal import Journal
from edge_agent.runtime.mcp_server import McpGateway, build_server
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from firmware_bridge.serial_link import PtyPair, SerialLink
from firmware_bridge.simulator import SimulatedDevice


def _audit(path: Path) -> list[Any]:
    with Journal(path) as journal:
        return sorted(journal.audit_events(since=0), key=lambda e: e.ts)


async def _through_the_command(state: Path) -> dict[str, Any]:
    env = {"PATH": os.environ["PATH"], "EDGE_AGENT_STATE_DIR": str(state)}
    params = StdioServerParameters(command=sys.executable, args=["-m", "edge_agent", "mcp"],
                                   env=env, cwd=str(Path(__file__).parents[2]))  # fmt: skip
    async with Client(params, read_timeout_seconds=120) as client:
        listed = await client.list_tools()
        return {
            "tools": {t.name: t for t in listed.tools},
            "calc": await client.call_tool("calculate", {"expression": "6 * 7"}),
            "bad": await client.call_tool("calculate", {"expr": "6 * 7"}),
            "lock": await client.call_tool("lock_door", {"door": "front", "locked": False}),
        }


def test_an_sdk_client_lists_and_calls_the_tools_through_edge_agent_mcp(tmp_path: Path) -> None:
    out = anyio.run(_through_the_command, tmp_path)
    calc = out["tools"]["calculate"]
    assert calc.input_schema["required"] == ["expression"]
    assert "lock_door" in out["tools"] and "read_sensor" in out["tools"]
    assert not out["calc"].is_error
    assert out["calc"].structured_content == {"expression": "6 * 7", "result": 42}
    # The verifier refuses what the schema does not allow, before anything runs.
    assert out["bad"].is_error
    assert "'expr' was unexpected" in out["bad"].content[0].text
    # No owner to confirm with here: a dangerous tool is not run.
    assert out["lock"].is_error
    assert "needs confirmation and was not confirmed" in out["lock"].content[0].text
    events = [e.detail for e in _audit(tmp_path / "journal.db") if e.kind == "mcp_call"]
    assert [(e["tool"], e["status"]) for e in events] == [
        ("calculate", "done"), ("calculate", "refused"), ("lock_door", "unconfirmed"),
    ]  # fmt: skip
    assert events[1]["stage"] == "schema" and all(e["source"] == "mcp" for e in events)


class Owner:
    """The owner, answering on another thread after a pause: the call waits."""

    def __init__(self, approve: bool) -> None:
        self.approve = approve
        self.asked: list[tuple[ConfirmRequest, float]] = []

    def __call__(self, request: ConfirmRequest, timeout_s: float) -> str | None:
        self.asked.append((request, time.monotonic()))
        time.sleep(0.5)
        return request.args_hash if self.approve else None


@pytest.fixture
def device_bridge(tmp_path: Path) -> Any:
    pty = PtyPair()
    journal = Journal(tmp_path / "journal.db")
    bridge = Bridge(audit=journal)
    bridge.attach(SerialLink(pty.path))
    device = SimulatedDevice("sim1")
    device.serve_serial(pty.device_stream())
    assert bridge.wait_for_device("sim1", 10)
    yield bridge, device, journal
    bridge.close()
    device.close()
    pty.close()
    journal.close()


async def _unlock(gateway: McpGateway) -> Any:
    async with Client(build_server(gateway)) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert "set_sim1_lock" in names
        return await client.call_tool("set_sim1_lock", {"locked": False})


@pytest.mark.parametrize("approve", [True, False])
def test_a_lock_command_from_mcp_waits_for_the_owner_and_is_audited(
    device_bridge: Any, tmp_path: Path, approve: bool
) -> None:
    bridge, device, journal = device_bridge
    owner = Owner(approve)
    bridge.confirm = owner
    sandbox = ProcessSandbox(state_root=tmp_path / "tools")
    gateway = McpGateway(Registry(), sandbox, audit=journal, bridge=bridge)
    started = time.monotonic()
    result = anyio.run(_unlock, gateway)
    [(asked, _)] = owner.asked  # asked once, about the exact action
    assert asked.action == {"device": "sim1", "actuator": "lock", "value": False}
    assert time.monotonic() - started >= 0.5  # the call waited for the answer
    events = sorted(journal.audit_events(since=0), key=lambda e: e.ts)
    calls = [e.detail for e in events if e.kind == "mcp_call"]
    assert calls[-1]["tool"] == "set_sim1_lock" and calls[-1]["source"] == "mcp"
    if approve:
        assert not result.is_error, result
        actuation = next(e.detail for e in events if e.kind == "actuation")
        assert actuation["confirmation"] == "approved" and actuation["status"] == "done"
        assert actuation["request"]["source"] == "mcp"
        assert calls[-1]["status"] == "done"
        assert [c[2] for c in device.log.executed] == [False]
    else:
        assert result.is_error and "not confirmed" in result.content[0].text
        assert calls[-1]["status"] == "unconfirmed"
        refusal = next(e.detail for e in events if e.kind == "actuation")
        assert refusal["status"] == "unconfirmed"
        assert device.log.executed == []
