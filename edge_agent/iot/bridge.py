"""The host side: links in, a registry of devices, their tools out, and the
actuator safety that holds whatever the model says.

A device's ``announce`` registers its actuators as ``set_<device>_<actuator>``
tools and its sensors as one ``read_<device>`` tool, built through
:func:`edge_agent.toolbox.registry.tool_from_function`, so the announced ranges are
the schema's bounds (the grammar, the verifier and the pydantic model agree).
An announcement with an unknown kind or an absurd range (a thermostat up to
1000 °C) is refused whole: a device that lies about one range is not trusted
with the others.

Every actuation goes through :meth:`Bridge.actuate`, in this order, before a
byte is sent:

1. the actuator exists and the device is online;
2. ``<device>/<actuator>`` matches the allowlist (:class:`BridgeSettings`);
3. the value has the announced type and lies in the announced range, the
   configured range and the configured list of allowed values;
4. the actuator's rate limit has room;
5. confirmation, when the kind is dangerous (lock, heater, thermostat, valve,
   motor, and any configured) or the request follows untrusted content
   (sensor text, anything the owner did not write). The owner's answer is
   bound to a SHA-256 of the exact action; no answer within the timeout is no.

Then the command is sent with an expiry, resent (same frame, same ``seq``)
when no ack arrives within ``ack_timeout_s``, up to ``attempts`` times and
never past its expiry; the device's ack or nack, correlated by ``seq``, is
the only acknowledgement. Every actuation, refused or not, is written to the
audit log with the request and the reading that caused it.

Limits: CRC-32 protects against line noise only; who may talk to a device is
decided by the transport (TLS, MQTT credentials and ACL, physical access to
the serial line). A device that acks and does nothing cannot be detected here.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import Field

from edge_agent.errors import EdgeAgentError, ToolError
from edge_agent.sandbox.base import SandboxResult
from edge_agent.toolbox.registry import Tool, ToolPolicy, tool_from_function
from firmware_bridge.protocol import (
    Ack,
    ActuatorCap,
    Announce,
    Command,
    ErrorBody,
    Frame,
    FrameWriter,
    Hello,
    Nack,
    Reading,
    Receiver,
    Rejection,
    SensorCap,
    Value,
    capability_problems,
    check_value,
    now_ms,
)
from firmware_bridge.settings import ActuatorRule, BridgeSettings

if TYPE_CHECKING:
    from edge_agent.decoding.calls import ToolCall
    from edge_agent.sandbox.base import Sandbox

__all__ = [
    "Actuation",
    "ActuationContext",
    "ActuatorRule",
    "AuditSink",
    "Bridge",
    "BridgeBackend",
    "BridgeSettings",
    "ConfirmRequest",
    "Confirmer",
    "DeviceEvent",
    "HostRunner",
    "Link",
    "SensorReading",
    "action_hash",
]

log = logging.getLogger(__name__)

HELLO_TTL_MS = 30_000
APPROVAL_TTL_S = 30.0
CONFIRM_GRACE_S = 0.5  # a confirmer that honours its timeout answers within this
# The argument name the model sees, per actuator kind.
PARAM_NAMES = {
    "light": "brightness",
    "dimmer": "brightness",
    "fan": "speed",
    "vent": "open_percent",
    "blind": "open_percent",
    "valve": "open_percent",
    "thermostat": "target_c",
    "heater": "target_c",
    "lock": "locked",
    "motor": "speed",
    "switch": "on",
    "siren": "on",
}

Status = Literal["done", "refused", "unconfirmed", "nacked", "no_ack", "offline"]
ConfirmOutcome = Literal["not_needed", "approved", "preapproved", "denied", "timeout", "mismatch"]


# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class SensorReading:
    """The latest reading of one sensor, as the host received it."""

    device: str
    sensor: str
    type: str
    value: Value
    unit: str | None
    seq: int
    received_at: float  # epoch s

    @property
    def is_text(self) -> bool:
        return isinstance(self.value, str)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "sensor": self.sensor,
            "type": self.type,
            "value": self.value,
            "unit": self.unit,
            "seq": self.seq,
            "received_at": round(self.received_at, 3),
        }


@dataclass(frozen=True)
class DeviceEvent:
    """What listeners (:meth:`Bridge.subscribe`) hear: a device registered or
    changed its capabilities (``announce``), announced itself unchanged
    (``heartbeat``: it is still there), was refused (``refused``), sent a
    ``reading``, or an actuator's ``state`` changed after an ack."""

    kind: Literal["announce", "heartbeat", "refused", "reading", "state"]
    device: str
    announce: Announce | None = None
    reading: SensorReading | None = None
    actuator: str | None = None
    state: Value | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfirmRequest:
    """What the owner is asked to approve. ``action`` is the exact action,
    ``args_hash`` its SHA-256; an approval names the hash it approves."""

    id: str
    action: dict[str, Any]
    args_hash: str
    reasons: tuple[str, ...]
    request_id: str | None
    reading: Mapping[str, Any] | None
    expires_at: float  # epoch s

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "args_hash": self.args_hash,
            "reasons": list(self.reasons),
            "request_id": self.request_id,
            "reading": dict(self.reading) if self.reading else None,
            "expires_at": round(self.expires_at, 3),
        }


class Confirmer(Protocol):
    """Asks the owner (API, MQTT confirm topic, a console). Returns the
    ``args_hash`` the owner approved, or None for no. It should give up after
    ``timeout_s``; the bridge stops waiting then anyway."""

    def __call__(self, request: ConfirmRequest, timeout_s: float) -> str | None: ...


class AuditSink(Protocol):
    """Where audit records go (:class:`edge_agent.records.journal.Journal` fits)."""

    def audit(
        self, kind: str, detail: Mapping[str, Any] | None = None, *, request_id: str | None = None
    ) -> None: ...


class Link(Protocol):
    """A transport carrying frames to and from devices (serial, MQTT).
    ``start`` delivers each received line with the device id the transport
    vouches for (None when it cannot tell), and ``on_online`` when a device
    (or the port) comes up; ``send`` raises OSError when it cannot send."""

    name: str
    binds_device: bool

    def start(
        self,
        on_line: Callable[[str | None, bytes], None],
        on_online: Callable[[str | None], None],
    ) -> None: ...

    def send(self, frame: Frame, line: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class ActuationContext:
    """Who is asking: the request, where it came from, the reading that
    caused it, and whether untrusted content reached the model first.
    Without a context every actuation counts as following untrusted content."""

    request_id: str | None = None
    source: str = "unknown"
    reading: Mapping[str, Any] | None = None
    untrusted: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"id": self.request_id, "source": self.source, "untrusted": self.untrusted}


@dataclass(frozen=True)
class Actuation:
    """The outcome of one :meth:`Bridge.actuate` call (also its audit record)."""

    status: Status
    device: str
    actuator: str
    value: Any
    args_hash: str
    reason: str = ""
    confirmation: ConfirmOutcome = "not_needed"
    seq: int | None = None
    attempts: int = 0
    state: Value | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "device": self.device,
            "actuator": self.actuator,
            "value": self.value,
            "args_hash": self.args_hash,
            "reason": self.reason,
            "confirmation": self.confirmation,
            "seq": self.seq,
            "attempts": self.attempts,
            "state": self.state,
            "latency_ms": round(self.latency_s * 1000, 1),
        }


def action_hash(action: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an action: what a confirmation binds to."""
    text = json.dumps(action, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- devices


@dataclass
class _Device:
    id: str
    link: Link
    announce: Announce
    writer: FrameWriter
    readings: dict[str, SensorReading] = field(default_factory=dict)
    state: dict[str, Value] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()

    def actuator(self, name: str) -> ActuatorCap | None:
        return next((a for a in self.announce.actuators if a.id == name), None)

    def sensor(self, name: str) -> SensorCap | None:
        return next((s for s in self.announce.sensors if s.id == name), None)


@dataclass
class _Pending:
    actuator: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: Ack | Nack | None = None


@dataclass(frozen=True)
class _Sent:
    reply: Ack | Nack | None
    seq: int
    attempts: int


_CONTEXT: ContextVar[ActuationContext | None] = ContextVar("actuation_context", default=None)


class Bridge:
    """Devices, their tools and the safety around them. See the module docstring.

    ``confirm`` asks the owner (None: every confirmation is a no); ``audit``
    receives one ``actuation`` record per :meth:`actuate` and a
    ``device_refused`` record per refused announcement.
    """

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        *,
        confirm: Confirmer | None = None,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BridgeSettings()
        self.confirm = confirm
        self.audit_sink = audit
        self.boot = secrets.token_hex(8)
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._receiver = Receiver("announce")
        self._lock = threading.RLock()
        self._devices: dict[str, _Device] = {}
        self._bound: dict[int, str] = {}  # id(link) → device, for links that bind one
        self._links: list[Link] = []
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._sent: dict[str, deque[float]] = {}
        self._approvals: dict[str, float] = {}
        self._spare_writers: dict[str, FrameWriter] = {}
        self._listeners: list[Callable[[DeviceEvent], None]] = []
        self._device_changed = threading.Condition(self._lock)

    # -- lifecycle

    def attach(self, link: Link) -> None:
        """Start receiving from ``link`` (it may raise if it cannot start)."""
        with self._lock:
            self._links.append(link)
        link.start(
            lambda source, line: self._on_line(link, source, line),
            lambda source: self._on_online(link, source),
        )

    def close(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def subscribe(self, listener: Callable[[DeviceEvent], None]) -> None:
        """``listener`` runs on the link's thread: keep it short; it must not raise."""
        self._listeners.append(listener)

    # -- what the agent and the daemon read

    @property
    def rejected(self) -> Counter[str]:
        """Dropped frames by reason (oversized, bad_checksum, expired, replayed, …)."""
        return self._receiver.rejected

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(self._devices)

    def tools(self) -> list[Tool]:
        """The tools of every registered device, in device order."""
        with self._lock:
            return [t for d in sorted(self._devices) for t in self._devices[d].tools]

    def state(self, device: str, actuator: str) -> Value | None:
        with self._lock:
            found = self._devices.get(device)
            return found.state.get(actuator) if found else None

    def reading(self, device: str, sensor: str) -> SensorReading | None:
        with self._lock:
            found = self._devices.get(device)
            return found.readings.get(sensor) if found else None

    def ready(self, device: str) -> bool:
        """The device has announced and has this host's clock (it can take commands)."""
        with self._lock:
            found = self._devices.get(device)
            return found is not None and found.announce.host == self.boot

    def wait_for_device(self, device: str, timeout_s: float) -> bool:
        """Block until ``device`` is :meth:`ready` (True) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        with self._device_changed:
            while not self.ready(device):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._device_changed.wait(left)
            return True

    def metrics(self) -> dict[str, Any]:
        """Counters for ``/metrics``: frames, rejections by reason, actuations by status."""
        with self._lock:
            return {
                "devices": len(self._devices),
                "frames_accepted": self._receiver.accepted,
                "frames_rejected": dict(self._receiver.rejected),
                **dict(self.stats),
            }

    # -- the agent's side

    @contextlib.contextmanager
    def context(
        self,
        *,
        request_id: str | None = None,
        source: str = "unknown",
        reading: Mapping[str, Any] | None = None,
        untrusted: bool = True,
    ) -> Iterator[ActuationContext]:
        """Actuations inside this block belong to one request. Set
        ``untrusted=False`` only when nothing but the owner's own words
        reached the model; reading a text sensor inside the block sets it."""
        ctx = ActuationContext(request_id, source, reading, untrusted)
        token = _CONTEXT.set(ctx)
        try:
            yield ctx
        finally:
            _CONTEXT.reset(token)

    def confirm_call(self, call: ToolCall, tool: Tool) -> bool:
        """The :class:`edge_agent.agent.Agent` ``confirm`` hook. For a device
        tool it asks the owner about the exact action and remembers a yes
        (once, for :data:`APPROVAL_TTL_S`) so :meth:`actuate` does not ask
        again. A call that would be refused anyway is let through unasked:
        ``actuate`` then refuses it with the precise reason, and no approval
        exists for it. Other tools are asked about as ``{tool, arguments}``."""
        target = self._target(tool)
        if target is None:
            action = {"tool": call.name, "arguments": call.arguments}
            return self._ask(action, ("the tool requires confirmation",)) == "approved"
        device, actuator = target
        value = next(iter(call.arguments.values()), None)
        problem, _ = self._check(device, actuator, value)
        if problem is not None:
            return True
        action = _action(device, actuator, value)
        outcome = self._ask(action, self._reasons(device, actuator, _current()))
        if outcome != "approved":
            self._record(_refusal(action, "unconfirmed", f"owner said no ({outcome})", outcome))
            return False
        with self._lock:
            self._approvals[action_hash(action)] = self._clock() + APPROVAL_TTL_S
        return True

    def actuate(
        self, device: str, actuator: str, value: Any, *, preapproved: bool = False
    ) -> Actuation:
        """Check, confirm, send, wait for the ack; see the module docstring.
        ``preapproved``: the owner wrote this exact action in the config."""
        started = time.monotonic()
        action = _action(device, actuator, value)
        problem, status = self._check(device, actuator, value)
        if problem is not None:
            return self._record(_refusal(action, status, problem))
        confirmation = self._confirmation(device, actuator, action, preapproved)
        if confirmation not in ("not_needed", "approved", "preapproved"):
            reason = f"needs the owner's confirmation ({confirmation})"
            return self._record(_refusal(action, "unconfirmed", reason, confirmation))
        problem, status = self._check(device, actuator, value)  # again: the owner took time
        if problem is not None:
            return self._record(_refusal(action, status, problem, confirmation))
        sent = self._send(device, actuator, value)
        return self._record(self._outcome(action, sent, confirmation, started))

    # -- checks

    def _check(self, device: str, actuator: str, value: Any) -> tuple[str | None, Status]:
        with self._lock:
            found = self._devices.get(device)
            cap = found.actuator(actuator) if found else None
        key = f"{device}/{actuator}"
        if found is None:
            return f"device {device!r} is not connected", "offline"
        if found.announce.host != self.boot:
            return f"device {device!r} has not taken this host's clock yet", "offline"
        if cap is None:
            return f"device {device!r} has no actuator {actuator!r}", "refused"
        if not self.settings.allowed(key):
            return f"{key} is not on the allowlist", "refused"
        problem = check_value(cap, value) or _rule_problem(self.settings.rule_for(key), value)
        if problem is not None:
            return f"{key}: value {value!r} {problem}", "refused"
        if not self._rate_room(key):
            return f"{key}: rate limit {self._rate_text(key)} reached", "refused"
        return None, "done"

    def _rate_text(self, key: str) -> str:
        return self.settings.rule_for(key).rate_limit or self.settings.default_rate_limit

    def _rate_room(self, key: str) -> bool:
        limit = ToolPolicy(rate_limit=self._rate_text(key)).rate_per_second()
        assert limit is not None
        count, window = limit
        with self._lock:
            recent = self._sent.setdefault(key, deque())
            while recent and self._clock() - recent[0] >= window:
                recent.popleft()
            return len(recent) < count

    def _reasons(self, device: str, actuator: str, ctx: ActuationContext) -> tuple[str, ...]:
        with self._lock:
            found = self._devices.get(device)
            cap = found.actuator(actuator) if found else None
        reasons = []
        if cap is not None and cap.kind in self.settings.dangerous():
            reasons.append(f"{cap.kind} is a dangerous kind")
        if self.settings.rule_for(f"{device}/{actuator}").confirm:
            reasons.append("the config asks for confirmation")
        if ctx.untrusted:
            reasons.append("the request follows untrusted content")
        return tuple(reasons)

    def _confirmation(
        self, device: str, actuator: str, action: dict[str, Any], preapproved: bool
    ) -> ConfirmOutcome:
        reasons = self._reasons(device, actuator, _current())
        if not reasons:
            return "not_needed"
        if preapproved:
            return "preapproved"
        digest = action_hash(action)
        with self._lock:
            until = self._approvals.pop(digest, None)
        if until is not None and self._clock() <= until:
            return "approved"
        return self._ask(action, reasons)

    def _ask(self, action: dict[str, Any], reasons: tuple[str, ...]) -> ConfirmOutcome:
        """Ask the owner, in a thread so a confirmer that hangs is a no."""
        if self.confirm is None:
            return "denied"
        ctx = _current()
        timeout = self.settings.confirm_timeout_s
        request = ConfirmRequest(
            uuid.uuid4().hex, action, action_hash(action), reasons, ctx.request_id,
            ctx.reading, time.time() + timeout,
        )  # fmt: skip
        started = time.monotonic()
        answer = _call_with_timeout(self.confirm, request, timeout + CONFIRM_GRACE_S)
        if answer is _TIMEOUT or (answer is None and time.monotonic() - started >= timeout):
            return "timeout"
        if answer is None:
            return "denied"
        return "approved" if answer == request.args_hash else "mismatch"

    # -- sending

    def _send(self, device: str, actuator: str, value: Value) -> _Sent:
        with self._lock:
            target = self._devices[device]
            frame, line = target.writer.line(Command(actuator, value), self._ttl_ms())
            pending = _Pending(actuator)
            self._pending[(device, frame.seq)] = pending
            self._sent.setdefault(f"{device}/{actuator}", deque()).append(self._clock())
        attempts = 0
        try:
            while attempts < self.settings.attempts and now_ms() < frame.exp:
                attempts += 1
                self._count("commands_sent")
                try:
                    target.link.send(frame, line)
                except OSError as exc:
                    log.warning("sending to %s failed: %s", device, exc)
                left_s = (frame.exp - now_ms()) / 1000
                if pending.done.wait(max(0.0, min(self.settings.ack_timeout_s, left_s))):
                    break
        finally:
            with self._lock:
                self._pending.pop((device, frame.seq), None)
        return _Sent(pending.reply, frame.seq, attempts)

    def _ttl_ms(self) -> int:
        return int(self.settings.command_ttl_s * 1000)

    def _outcome(
        self, action: dict[str, Any], sent: _Sent, confirmation: ConfirmOutcome, started: float
    ) -> Actuation:
        base = {
            "device": action["device"],
            "actuator": action["actuator"],
            "value": action["value"],
            "args_hash": action_hash(action),
            "confirmation": confirmation,
            "seq": sent.seq,
            "attempts": sent.attempts,
            "latency_s": time.monotonic() - started,
        }
        reply = sent.reply
        if isinstance(reply, Ack):
            return Actuation("done", state=reply.state, **base)
        if isinstance(reply, Nack):
            return Actuation(
                "nacked", reason=f"device refused: {reply.code} {reply.reason}", **base
            )
        reason = f"no ack after {sent.attempts} attempt(s) within the command's expiry"
        return Actuation("no_ack", reason=reason, **base)

    def _record(self, actuation: Actuation) -> Actuation:
        self._count(f"actuations_{actuation.status}")
        ctx = _current()
        detail = {
            **actuation.to_json(),
            "request": ctx.to_json(),
            "reading": dict(ctx.reading) if ctx.reading else None,
        }
        level = logging.INFO if actuation.ok else logging.WARNING
        log.log(level, "actuation %s/%s=%r: %s %s", actuation.device, actuation.actuator,
                actuation.value, actuation.status, actuation.reason)  # fmt: skip
        if self.audit_sink is not None:
            try:
                self.audit_sink.audit("actuation", detail, request_id=ctx.request_id)
            except EdgeAgentError as exc:
                log.error("could not write the audit record: %s", exc.one_line())
        return actuation

    # -- receiving

    def _on_online(self, link: Link, source: str | None) -> None:
        if source is None:
            return  # a device on this link will announce itself
        self._hello(link, source)

    def _hello(self, link: Link, device: str) -> None:
        writer = self._writer_for(device)
        frame, line = writer.line(Hello(self.boot, now_ms()), HELLO_TTL_MS)
        try:
            link.send(frame, line)
        except OSError as exc:
            log.warning("could not greet %s: %s", device, exc)

    def _writer_for(self, device: str) -> FrameWriter:
        """The device's writer; one made for a greeting before it announced is
        kept, so the sequence numbers a device sees from this host never go back."""
        with self._lock:
            found = self._devices.get(device)
            if found is not None:
                return found.writer
            return self._spare_writers.setdefault(device, FrameWriter(device))

    def _on_line(self, link: Link, source: str | None, line: bytes) -> None:
        if source is None and link.binds_device:
            source = self._bound.get(id(link))
        result = self._receiver.receive(line, source=source)
        if isinstance(result, Rejection):
            return
        try:
            self._dispatch(link, result)
        except Exception:  # a bug in a handler must not stop the link's thread
            log.exception("handling a %s frame from %s failed", result.kind, result.dev)

    def _dispatch(self, link: Link, frame: Frame) -> None:
        body = frame.body
        if isinstance(body, Announce):
            self._on_announce(link, frame, body)
        elif isinstance(body, Reading):
            self._on_reading(frame, body)
        elif isinstance(body, Ack | Nack):
            self._on_reply(frame, body)
        elif isinstance(body, ErrorBody):
            log.warning("device %s reports %s: %s", frame.dev, body.code, body.reason)
            self._count("device_errors")
        else:
            self._count("unexpected_frames")
            log.warning(
                "dropped a %s frame from %s: hosts do not take those", frame.kind, frame.dev
            )

    def _on_announce(self, link: Link, frame: Frame, body: Announce) -> None:
        problems = capability_problems(body)
        if problems:
            self._refuse_device(frame.dev, problems)
            return
        if link.binds_device:
            self._bound.setdefault(id(link), frame.dev)
        with self._lock:
            known = self._devices.get(frame.dev)
            changed = not _same_device(known, link, body)
            if changed:
                writer = known.writer if known else self._spare_writers.pop(frame.dev, None)
                self._devices[frame.dev] = self._new_device(frame.dev, link, body, writer)
                log.info("device %s registered: %s", frame.dev, _summary(body))
                self._count("announcements")
            else:
                assert known is not None
                known.announce = body  # the same device, perhaps with our clock now
            self._device_changed.notify_all()
        if body.host != self.boot:
            self._hello(link, frame.dev)
        kind: Literal["announce", "heartbeat"] = "announce" if changed else "heartbeat"
        self._emit(DeviceEvent(kind, frame.dev, announce=body))

    def _refuse_device(self, device: str, problems: list[str]) -> None:
        self._count("devices_refused")
        with self._lock:
            self._devices.pop(device, None)
        log.warning("refused the announcement of %s: %s", device, "; ".join(problems))
        if self.audit_sink is not None:
            detail = {"device": device, "problems": problems}
            with contextlib.suppress(EdgeAgentError):
                self.audit_sink.audit("device_refused", detail)
        self._emit(DeviceEvent("refused", device, problems=tuple(problems)))

    def _new_device(
        self, device: str, link: Link, body: Announce, writer: FrameWriter | None
    ) -> _Device:
        made = _Device(device, link, body, writer or FrameWriter(device))
        made.tools = tuple(self._build_tools(made))
        return made

    def _on_reading(self, frame: Frame, body: Reading) -> None:
        with self._lock:
            device = self._devices.get(frame.dev)
            cap = device.sensor(body.sensor) if device else None
            if device is None or cap is None:
                self._count("readings_unknown")
                return
            if not _reading_fits(cap, body.value):
                self._count("readings_wrong_type")
                log.warning("dropped a %s reading %r from %s", cap.type, body.value, frame.dev)
                return
            reading = SensorReading(
                frame.dev, body.sensor, cap.type, body.value, cap.unit, frame.seq, time.time()
            )
            device.readings[body.sensor] = reading
        self._count("readings")
        self._emit(DeviceEvent("reading", frame.dev, reading=reading))

    def _on_reply(self, frame: Frame, body: Ack | Nack) -> None:
        with self._lock:
            pending = self._pending.get((frame.dev, body.re))
            if pending is None or pending.done.is_set():
                self._count("replies_uncorrelated")
                return
            pending.reply = body
            pending.done.set()
            device = self._devices.get(frame.dev)
        self._count("acks" if isinstance(body, Ack) else "nacks")
        if isinstance(body, Ack) and device is not None:
            with self._lock:
                device.state[pending.actuator] = body.state
            event = DeviceEvent("state", frame.dev, actuator=pending.actuator, state=body.state)
            self._emit(event)

    def _emit(self, event: DeviceEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a device-event listener failed")

    # -- tools

    def _build_tools(self, device: _Device) -> list[Tool]:
        tools = [self._actuator_tool(device.id, cap) for cap in device.announce.actuators]
        if device.announce.sensors:
            tools.append(self._sensor_tool(device.id, device.announce.sensors))
        return tools

    def _actuator_tool(self, device: str, cap: ActuatorCap) -> Tool:
        key = f"{device}/{cap.id}"
        param = PARAM_NAMES.get(cap.kind, "value")
        dangerous = cap.kind in self.settings.dangerous() or self.settings.rule_for(key).confirm
        bridge = self

        def setter(**arguments: Any) -> dict[str, Any]:
            done = bridge.actuate(device, cap.id, arguments[param])
            if not done.ok:
                raise ToolError(f"{key} was not set: {done.status}: {done.reason}")
            return {"device": device, "actuator": cap.id, param: done.state, "acked": True}

        annotation = self._annotation(key, cap)
        name = f"set_{device}_{cap.id}"
        _give_signature(setter, name, {param: annotation})
        policy = ToolPolicy(
            description=self._describe(device, cap, param, dangerous),
            side_effect="dangerous" if dangerous else "actuate",
            timeout_s=self.settings.command_ttl_s + self.settings.confirm_timeout_s + 1,
            requires_confirmation=dangerous,
            rate_limit=self._rate_text(key),
            tags=("device", device, cap.kind),
            trusted=True,
            name=name,
        )
        return tool_from_function(setter, policy)

    def _annotation(self, key: str, cap: ActuatorCap) -> Any:
        rule = self.settings.rule_for(key)
        if cap.value == "bool":
            return bool
        if cap.value == "enum":
            allowed = [v for v in cap.values if rule.values is None or v in rule.values]
            return Literal[tuple(allowed)]
        lo = _tighter(cap.min, rule.min, max)
        hi = _tighter(cap.max, rule.max, min)
        base: type = int if cap.value == "integer" else float
        unit = f" ({cap.unit})" if cap.unit else ""
        return Annotated[base, Field(ge=lo, le=hi, description=f"{lo:g} to {hi:g}{unit}")]

    def _describe(self, device: str, cap: ActuatorCap, param: str, dangerous: bool) -> str:
        text = f"Set the {cap.kind} '{cap.id}' of device {device}"
        if cap.kind == "lock":
            text += f" ({param}=true locks, false unlocks)"
        text += "."
        if dangerous:
            text += " Dangerous: the owner must confirm it."
        return text

    def _sensor_tool(self, device: str, sensors: tuple[SensorCap, ...]) -> Tool:
        bridge = self

        def reader(**arguments: Any) -> dict[str, Any]:
            return bridge._read_for_model(device, str(arguments["sensor"]))

        name = f"read_{device}"
        _give_signature(reader, name, {"sensor": Literal[tuple(s.id for s in sensors)]})
        policy = ToolPolicy(
            description=f"Read the latest value of a sensor of device {device}.",
            side_effect="read",
            tags=("device", device),
            trusted=True,
            name=name,
        )
        return tool_from_function(reader, policy)

    def _read_for_model(self, device: str, sensor: str) -> dict[str, Any]:
        reading = self.reading(device, sensor)
        if reading is None:
            raise ToolError(f"no reading from {device}/{sensor} yet")
        if reading.is_text:
            _current().untrusted = True  # the model is about to read outside text
        age = round(time.time() - reading.received_at, 1)
        return {"sensor": sensor, "value": reading.value, "unit": reading.unit, "age_s": age}

    def _target(self, tool: Tool) -> tuple[str, str] | None:
        """(device, actuator) when ``tool`` is one of this bridge's setters."""
        with self._lock:
            for device in self._devices.values():
                for item in device.tools:
                    if item.func is tool.func and item.name.startswith("set_"):
                        actuator = item.name[len(f"set_{device.id}_") :]
                        return device.id, actuator
        return None

    def is_own(self, tool: Tool) -> bool:
        with self._lock:
            return any(t.func is tool.func for d in self._devices.values() for t in d.tools)


# ---------------------------------------------------------------- the home tools' backend


class BridgeBackend:
    """The :class:`DeviceBackend` of ``tools/_devices.py`` over the bridge, so
    the built-in home tools (``set_light``, ``lock_door``, …) can drive real
    devices. ``mapping`` names, for each home id, the device entity behind it:
    ``{"light.kitchen": "porch/light", "temperature.kitchen": "porch/temp"}``.

    Every ``set`` goes through :meth:`Bridge.actuate`, with all its checks.
    It must run in the bridge's process (a :class:`HostRunner`), not in a
    sandbox child, which could not reach the link.
    """

    def __init__(self, bridge: Bridge, mapping: Mapping[str, str]) -> None:
        self.bridge = bridge
        self.mapping = dict(mapping)

    def read(self, sensor: str) -> dict[str, Any]:
        device, name = self._target(sensor)
        reading = self.bridge.reading(device, name)
        if reading is None:
            raise ToolError(f"no reading from {device}/{name} yet")
        at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(reading.received_at))
        return {"sensor": sensor, "value": reading.value, "unit": reading.unit, "at": at}

    def set(self, actuator: str, value: dict[str, Any]) -> dict[str, Any]:
        device, name = self._target(actuator)
        previous = self.bridge.state(device, name)
        done = self.bridge.actuate(device, name, _home_value(actuator, value))
        if not done.ok:
            raise ToolError(f"{actuator} was not set: {done.status}: {done.reason}")
        state = {**value, "device_state": done.state}
        return {"actuator": actuator, "state": state, "previous": previous,
                "changed": previous != done.state}  # fmt: skip

    def _target(self, home_id: str) -> tuple[str, str]:
        target = self.mapping.get(home_id)
        if target is None or "/" not in target:
            raise ToolError(f"{home_id} is not mapped to a device")
        device, _, name = target.partition("/")
        return device, name


def _home_value(actuator: str, value: Mapping[str, Any]) -> Any:
    """The home tools' value objects as one device value."""
    kind = actuator.partition(".")[0]
    if kind == "light":
        return int(value.get("brightness", 100)) if value.get("on") else 0
    if kind == "thermostat":
        return value.get("target_c")
    if kind == "lock":
        return value.get("locked")
    if kind == "valve":
        return value.get("open_percent")
    raise ToolError(f"no device mapping for {kind} values")


# ---------------------------------------------------------------- the runner


class HostRunner:
    """Runs device tools in this process and everything else in ``fallback``.

    Device tools are host code that talks to a link the sandbox child could
    not reach; the safety around them is the bridge's, not a sandbox's. Only
    tools this runner knows by identity (the bridge's own, or ones passed to
    :meth:`add`) run here: a tools-folder module cannot name its way in.
    """

    def __init__(self, bridge: Bridge | None = None, *, fallback: Sandbox | None = None) -> None:
        self.bridge = bridge
        self.fallback = fallback
        self._extra: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        self._extra[tool.name] = tool

    def owns(self, tool: Tool) -> bool:
        extra = self._extra.get(tool.name)
        if extra is not None and extra.func is tool.func:
            return True
        return self.bridge is not None and self.bridge.is_own(tool)

    def run(self, tool: Tool, arguments: dict[str, Any]) -> SandboxResult:
        """Run the call. Text a sandboxed read or network tool brings in
        (a web page, a note) marks the request untrusted, so a later
        actuation in it needs the owner's confirmation."""
        if self.owns(tool):
            return _run_here(tool, arguments)
        if self.fallback is None:
            return SandboxResult(False, error=f"no sandbox to run {tool.name}",
                                 error_type="SandboxError")  # fmt: skip
        result = self.fallback.run(tool, arguments)
        brings_in = tool.policy.network or tool.policy.side_effect == "read"
        if brings_in and _has_text(result.value):
            _current().untrusted = True
        return result


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return any(_has_text(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_text(v) for v in value)
    return False


def _run_here(tool: Tool, arguments: dict[str, Any]) -> SandboxResult:
    from pydantic import ValidationError

    started = time.monotonic()
    assert tool.func is not None and tool.args_model is not None
    try:
        model = tool.args_model.model_validate(arguments)
        value = tool.func(**{k: getattr(model, k) for k in type(model).model_fields})
    except ValidationError as exc:
        return SandboxResult(False, error=str(exc.errors()[0]["msg"]), error_type="ValidationError")
    except EdgeAgentError as exc:
        error = exc.one_line()
        return SandboxResult(False, error=error, error_type=type(exc).__name__,
                             duration_s=time.monotonic() - started)  # fmt: skip
    return SandboxResult(True, value=value, duration_s=time.monotonic() - started)


# ---------------------------------------------------------------- helpers


def _current() -> ActuationContext:
    ctx = _CONTEXT.get()
    return ctx if ctx is not None else ActuationContext()


def _action(device: str, actuator: str, value: Any) -> dict[str, Any]:
    return {"device": device, "actuator": actuator, "value": value}


def _refusal(
    action: dict[str, Any], status: Status, reason: str, confirmation: ConfirmOutcome = "not_needed"
) -> Actuation:
    return Actuation(
        status, action["device"], action["actuator"], action["value"], action_hash(action),
        reason, confirmation,
    )  # fmt: skip


def _rule_problem(rule: ActuatorRule, value: Any) -> str | None:
    if rule.values is not None and not any(_same(value, v) for v in rule.values):
        return f"is not one of the allowed values {rule.values}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if rule.min is not None and value < rule.min:
        return f"is below the configured minimum {rule.min:g}"
    if rule.max is not None and value > rule.max:
        return f"is above the configured maximum {rule.max:g}"
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal, without True == 1."""
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _tighter(announced: float | None, configured: float | None, pick: Any) -> float:
    assert announced is not None  # capability_problems requires numeric bounds
    return float(announced if configured is None else pick(announced, configured))


def _same_device(known: _Device | None, link: Link, body: Announce) -> bool:
    """The same device session on the same link (a heartbeat, or the announce
    that answers a hello): nothing to rebuild."""
    if known is None or known.link is not link:
        return False
    return replace(known.announce, host="") == replace(body, host="")


def _reading_fits(cap: SensorCap, value: Value) -> bool:
    if cap.value == "bool":
        return isinstance(value, bool)
    if cap.value == "text":
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(body: Announce) -> str:
    sensors = ", ".join(f"{s.id}:{s.type}" for s in body.sensors)
    actuators = ", ".join(f"{a.id}:{a.kind}" for a in body.actuators)
    return f"fw {body.fw}; sensors [{sensors}]; actuators [{actuators}]"


def _give_signature(func: Callable[..., Any], name: str, params: Mapping[str, Any]) -> None:
    """Make ``func(**kwargs)`` look like ``name(p1: T1, …)`` to the registry."""
    parameters = [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=t)
        for p, t in params.items()
    ]
    func.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    func.__annotations__ = {**params, "return": dict[str, Any]}
    func.__name__ = name
    func.__qualname__ = name


_TIMEOUT = object()


def _call_with_timeout(confirm: Confirmer, request: ConfirmRequest, timeout_s: float) -> Any:
    box: list[Any] = []
    done = threading.Event()

    def ask() -> None:
        try:
            box.append(confirm(request, timeout_s))
        except Exception:
            log.exception("the confirmation callback failed; treating it as no")
            box.append(None)
        done.set()

    threading.Thread(target=ask, name="confirm", daemon=True).start()
    if not done.wait(timeout_s):
        return _TIMEOUT
    return box[0]
