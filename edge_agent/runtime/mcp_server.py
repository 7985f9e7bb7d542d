"""``edge-agent mcp``: this device's tools, and its bridge's devices, for MCP clients.

An MCP client (another assistant) calls a tool with arguments it made
itself. Such a call gets no shortcut: :class:`McpGateway` checks it with the
verifier (schema, pydantic model, the shared rate limit) and runs it
through :func:`~edge_agent.agent.run_verified`, the path of the model's own
calls: the owner's confirmation for a dangerous tool (through the bridge's
confirmer, the one locks, valves and heaters use), the sandbox, or the
bridge's checks for a device tool. A call from MCP is untrusted: an
actuation it asks for needs the owner's yes. Every call, refused or run, is
written to the audit log (``mcp_call``); an actuation also gets the
bridge's own ``actuation`` record, with source ``mcp``.

Transports: stdio (one client, the process's own pipes), or streamable
HTTP that answers only requests with the bearer token (401 otherwise). The
SDK is imported here and only here, when the command runs.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.agent import Confirm, run_verified
from edge_agent.decoding.calls import ToolCall
from edge_agent.errors import ConfigError
from edge_agent.toolbox.ratelimit import RateLimiter
from edge_agent.toolbox.registry import Registry, Tool
from edge_agent.toolbox.verify import verify_call

if TYPE_CHECKING:
    from edge_agent.iot.automation_settings import AutomationSettings
    from edge_agent.iot.bridge import AuditSink, Bridge
    from edge_agent.sandbox.base import Sandbox

log = logging.getLogger("edge_agent.mcp")

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """What one MCP call did, as the client sees it."""

    ok: bool
    text: str
    value: Any = None


class McpGateway:
    """Verifies, confirms, runs and audits calls that arrive over MCP."""

    def __init__(
        self,
        registry: Registry,
        sandbox: Sandbox,
        *,
        audit: AuditSink,
        limiter: RateLimiter | None = None,
        bridge: Bridge | None = None,
    ) -> None:
        self.registry = registry
        self.audit = audit
        self.limiter = limiter or RateLimiter()
        self.bridge = bridge
        self.runner = self._runner(sandbox)
        self.confirm: Confirm | None = bridge.confirm_call if bridge is not None else None

    def _runner(self, sandbox: Sandbox) -> Sandbox:
        if self.bridge is None:
            return sandbox
        from edge_agent.iot.bridge import HostRunner

        return HostRunner(self.bridge, fallback=sandbox)

    def tools(self) -> Registry:
        """The registry's tools, then the devices' (they come and go)."""
        devices = self.bridge.tools() if self.bridge is not None else []
        return Registry([*self.registry, *(t for t in devices if t.name not in self.registry)])

    def listing(self) -> list[dict[str, Any]]:
        return [_listing(t) for t in self.tools()]

    def call(self, name: str, arguments: dict[str, Any]) -> Outcome:
        """One call, on a worker thread (confirmation and the sandbox block)."""
        request_id = f"mcp-{uuid.uuid4().hex[:12]}"
        call = ToolCall(name, dict(arguments))
        tools = self.tools()
        verdict = verify_call(call, tools, (self.limiter.rule,))
        if not verdict.ok:
            self._audit(request_id, call, "refused", verdict.message, stage=verdict.stage)
            return Outcome(False, verdict.message)
        tool = tools.get(name)
        with self._context(request_id):
            done = run_verified(call, tool, self.runner, self.confirm, self.limiter)
        result = done.result
        error = done.reason or (result.error if result is not None else "") or ""
        self._audit(request_id, call, done.status, error)
        if not done.ok:
            return Outcome(False, f"{name} {done.status}: {error}".rstrip(": "))
        value = result.value if result is not None else None
        return Outcome(True, done.said or _text(value), value)

    @contextlib.contextmanager
    def _context(self, request_id: str) -> Iterator[None]:
        """Inside the bridge's context an actuation names this call; untrusted:
        the owner did not write what an MCP client asks for."""
        if self.bridge is None:
            yield
            return
        with self.bridge.context(request_id=request_id, source="mcp", untrusted=True):
            yield

    def _audit(
        self, request_id: str, call: ToolCall, status: str, reason: str, *, stage: str = ""
    ) -> None:
        detail = {"source": "mcp", "tool": call.name, "arguments": call.arguments}
        detail |= {"status": status, "reason": reason, **({"stage": stage} if stage else {})}
        self.audit.audit("mcp_call", detail, request_id=request_id)


def _listing(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.spec.description,
            "input_schema": tool.spec.parameters}  # fmt: skip


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ---------------------------------------------------------------- the SDK's server


def build_server(gateway: McpGateway) -> Any:
    """The SDK's low-level server over ``gateway`` (tools only)."""
    import anyio.to_thread
    import mcp_types as types
    from mcp.server import Server

    async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        tools = [types.Tool.model_validate(item) for item in gateway.listing()]
        return types.ListToolsResult(tools=tools)

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        outcome = await anyio.to_thread.run_sync(gateway.call, params.name, arguments)
        content = [types.TextContent(type="text", text=outcome.text)]
        structured = outcome.value if isinstance(outcome.value, dict) else None
        return types.CallToolResult(
            content=content, structured_content=structured, is_error=not outcome.ok
        )

    return Server("edge-agent", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(gateway: McpGateway) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(gateway)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def http_app(gateway: McpGateway, token: str, host: str) -> Asgi:
    """The streamable HTTP app behind a bearer-token check."""
    server = build_server(gateway)
    app = server.streamable_http_app(host=host)
    return _require_token(app, token)


def _require_token(app: Asgi, token: str) -> Asgi:
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await _unauthorized(send)
                return
        await app(scope, receive, send)

    return guarded


async def _unauthorized(send: Any) -> None:
    body = b'{"error": "a bearer token is required"}'
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- the bridge


def start_bridge(settings: AutomationSettings, audit: AuditSink) -> Bridge:
    """The firmware bridge of ``[automation]``, its links and its confirmer,
    as the daemon's automation host starts them (without the rules)."""
    from edge_agent.iot.bridge import Bridge
    from edge_agent.iot.mqtt_link import MqttConfirmer, MqttLink
    from firmware_bridge.serial_link import SerialLink

    devices, broker = settings.devices, settings.broker
    bridge = Bridge(devices.safety, audit=audit)
    try:
        if broker is not None and devices.confirm_over_mqtt:
            confirmer = MqttConfirmer(broker, node_id=settings.node_id)
            confirmer.connect()
            bridge.confirm = confirmer
        if devices.mqtt:
            if broker is None:
                raise ConfigError("automation.devices.mqtt needs automation.broker")
            bridge.attach(MqttLink(broker))
        for port in devices.serial:
            bridge.attach(SerialLink(str(port.path), baudrate=port.baudrate))
    except BaseException:
        bridge.close()
        raise
    return bridge


__all__ = ["McpGateway", "Outcome", "build_server", "http_app", "serve_stdio", "start_bridge"]
