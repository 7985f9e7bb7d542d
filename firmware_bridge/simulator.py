"""A virtual device that speaks the protocol, for tests and for trying
edge-agent on a laptop (``edge-agent simulate-device``).

It has a thermostat (5-30 °C), a light (0-100 %), a lock and a valve
(0-100 %), and temperature, smoke and motion sensors. It behaves like the
reference firmware: it announces itself until the host greets it, refuses
commands until it has the host's clock, checks every value against its own
ranges (the host's checks are not trusted blindly), acks each command by its
``seq``, answers a repeated command with the same reply without acting twice,
and never acts on an expired command.

It can be told to misbehave (:class:`Faults`): never ack, corrupt its
checksums, or announce absurd ranges — the cases the bridge must survive.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    check_value,
    encode,
    now_ms,
)
from firmware_bridge.serial_link import ByteStream, LineSplitter

__all__ = ["FIRMWARE", "DeviceLink", "Faults", "SimulatedDevice", "default_capabilities"]

log = logging.getLogger(__name__)

FIRMWARE = "edge-agent-sim/1.0"
READING_TTL_MS = 60_000
REPLY_TTL_MS = 10_000
ANNOUNCE_RETRY_S = 1.0
HEARTBEAT_S = 30.0
CLOCK_BACK_MS = 60_000  # a hello may not move the device's clock back further
REPLIES_KEPT = 64

Send = Callable[[Frame, bytes, "bytes | None"], None]
Receive = Callable[[bytes, "bytes | None"], None]


class DeviceLink(Protocol):
    """A message link as the device sees it (MQTT in edge_agent.iot.mqtt_link):
    ``start`` delivers each incoming line with its correlation data, ``send``
    publishes one frame, replying to ``correlation`` if given."""

    def start(self, on_line: Receive) -> None: ...

    def send(self, frame: Frame, line: bytes, correlation: bytes | None = None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Faults:
    """Ways to misbehave, for tests."""

    never_ack: bool = False  # take commands, do nothing, say nothing
    bad_checksum: bool = False  # every frame it sends has a wrong crc
    absurd_ranges: bool = False  # announce a thermostat up to 1000 °C


def default_capabilities(
    faults: Faults = Faults(),
) -> tuple[tuple[SensorCap, ...], tuple[ActuatorCap, ...]]:
    sensors = (
        SensorCap("temperature", "temperature", "number", "C", -40, 125),
        SensorCap("smoke", "smoke", "bool"),
        SensorCap("motion", "motion", "bool"),
    )
    top = 1000.0 if faults.absurd_ranges else 30.0
    actuators = (
        ActuatorCap("thermostat", "thermostat", "number", "C", 5, top),
        ActuatorCap("light", "light", "integer", "%", 0, 100),
        ActuatorCap("lock", "lock", "bool"),
        ActuatorCap("valve", "valve", "integer", "%", 0, 100),
    )
    return sensors, actuators


@dataclass
class _Log:
    """What the device saw and did, for tests and the console."""

    counts: Counter[str] = field(default_factory=Counter)
    executed: list[tuple[int, str, Value]] = field(default_factory=list)


class SimulatedDevice:
    """One virtual device. Attach it to a serial stream (:meth:`serve_serial`)
    or to a message link such as MQTT (:meth:`serve_link`); :meth:`close` stops it."""

    def __init__(
        self,
        device_id: str,
        *,
        faults: Faults = Faults(),
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.id = device_id
        self.faults = faults
        self.boot = secrets.token_hex(8)
        self.sensors, self.actuators = default_capabilities(faults)
        self.state: dict[str, Value] = {"thermostat": 20.0, "light": 0, "lock": True, "valve": 0}
        self.readings: dict[str, Value] = {"temperature": 21.0, "smoke": False, "motion": False}
        self.log = _Log()
        self._local_ms = clock_ms
        self._offset_ms: int | None = None  # host clock − local clock, once greeted
        self._host_boot = ""
        self._receiver = Receiver("hello", clock_ms=self._host_ms)
        self._writer = FrameWriter(device_id, clock_ms=self._host_ms)
        self._replies: OrderedDict[int, Ack | Nack] = OrderedDict()
        self._lock = threading.RLock()
        self._send: Send | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[Callable[[], None]] = []
        self.synced = threading.Event()

    # -- transports

    def serve_serial(self, stream: ByteStream) -> None:
        """Speak on ``stream`` (a pty master, a serial port) from a thread."""

        def send(frame: Frame, line: bytes, correlation: bytes | None) -> None:
            del frame, correlation
            stream.write(line)

        self._send = send
        self._spawn(self._read_serial, stream)
        self._spawn(self._announce_until_greeted)
        self._closers.append(stream.close)

    def serve_link(self, link: DeviceLink) -> None:
        """Serve on a message link, e.g. :class:`edge_agent.iot.mqtt_link.DeviceMqttLink`
        (which raises OffloadError if it cannot reach its broker)."""
        self._attach(link)
        self._spawn(self._announce_until_greeted)

    def pause_link(self) -> None:
        """Go offline cleanly; the broker keeps the session (and queues commands)."""
        while self._closers:
            self._closers.pop()()

    def resume_link(self, link: DeviceLink) -> None:
        """Back online on a fresh link (the broker kept the session)."""
        self._attach(link)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()

    def __enter__(self) -> SimulatedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a test or the console does to the device

    def emit(self, sensor: str, value: Value) -> None:
        """A sensor reads ``value``; the device reports it."""
        with self._lock:
            self.readings[sensor] = value
        self._out(Reading(sensor, value), READING_TTL_MS)

    def announce(self) -> None:
        """Like the firmware: without the host's clock yet, ``exp`` is 0."""
        body = Announce(self.boot, FIRMWARE, self.sensors, self.actuators, self._host_boot)
        if self._offset_ms is not None:
            self._out(body, 30_000)
            return
        with self._lock:
            frame, line = self._writer.clockless(body)
            if self.faults.bad_checksum:
                line = _corrupt(frame)
        self._deliver(frame, line, None)

    # -- the protocol

    def handle(self, line: bytes) -> list[tuple[Frame, bytes]]:
        """One received line in, the frames to send back out (pure but for state)."""
        with self._lock:
            result = self._receiver.receive(line, source=self.id)
            if isinstance(result, Rejection):
                return self._on_rejection(result)
            body = result.body
            if isinstance(body, Hello):
                return self._on_hello(body)
            if isinstance(body, Command):
                return self._on_command(result.seq, body)
            self.log.counts[f"ignored_{result.kind}"] += 1
            return []

    def _on_rejection(self, rejection: Rejection) -> list[tuple[Frame, bytes]]:
        self.log.counts[f"rejected_{rejection.reason}"] += 1
        if rejection.kind != "command" or rejection.seq is None:
            return [self._line(ErrorBody(rejection.reason, rejection.detail[:100]), REPLY_TTL_MS)]
        if rejection.reason == "replayed":
            cached = self._replies.get(rejection.seq)  # a retry: same answer, no second action
            self.log.counts["duplicates"] += 1
            return [self._line(cached, REPLY_TTL_MS)] if cached is not None else []
        if rejection.reason == "expired":
            self.log.counts["expired"] += 1
            return [self._reply(Nack(rejection.seq, "expired", "command expired; not executed"))]
        return [self._line(ErrorBody(rejection.reason, rejection.detail[:100]), REPLY_TTL_MS)]

    def _on_hello(self, body: Hello) -> list[tuple[Frame, bytes]]:
        """Take the host's clock. Within one host session the clock never goes
        back: a hello delayed in a broker queue would otherwise make the
        commands sent after it look fresh. A new session may not turn it back
        by more than :data:`CLOCK_BACK_MS` (a replayed hello)."""
        offset = body.t - self._local_ms()
        if self._offset_ms is not None:
            if body.boot == self._host_boot:
                offset = max(offset, self._offset_ms)
            elif offset < self._offset_ms - CLOCK_BACK_MS:
                self.log.counts["hello_refused"] += 1
                return []
        self._offset_ms = offset
        self._host_boot = body.boot
        self.synced.set()
        self.log.counts["hello"] += 1
        announce = Announce(self.boot, FIRMWARE, self.sensors, self.actuators, body.boot)
        return [self._line(announce, 30_000)]

    def _on_command(self, seq: int, body: Command) -> list[tuple[Frame, bytes]]:
        self.log.counts["commands"] += 1
        if self.faults.never_ack:
            return []
        if self._offset_ms is None:
            return [self._reply(Nack(seq, "no_time", "no hello from the host yet"))]
        cap = next((a for a in self.actuators if a.id == body.actuator), None)
        if cap is None:
            return [self._reply(Nack(seq, "unknown_actuator", body.actuator))]
        problem = check_value(cap, body.value)
        if problem is not None:
            self.log.counts["out_of_range"] += 1
            return [self._reply(Nack(seq, "range", f"{body.actuator} {problem}"[:100]))]
        self.state[body.actuator] = body.value
        self.log.executed.append((seq, body.actuator, body.value))
        return [self._reply(Ack(seq, body.value))]

    def _reply(self, body: Ack | Nack) -> tuple[Frame, bytes]:
        self._replies[body.re] = body
        while len(self._replies) > REPLIES_KEPT:
            self._replies.popitem(last=False)
        return self._line(body, REPLY_TTL_MS)

    def _line(self, body: Any, ttl_ms: int) -> tuple[Frame, bytes]:
        frame, line = self._writer.line(body, ttl_ms)
        if self.faults.bad_checksum:
            line = _corrupt(frame)
        return frame, line

    def _host_ms(self) -> int:
        return int(self._local_ms()) + (self._offset_ms or 0)

    # -- plumbing

    def _out(self, body: Any, ttl_ms: int, correlation: bytes | None = None) -> None:
        with self._lock:
            frame, line = self._line(body, ttl_ms)
        self._deliver(frame, line, correlation)

    def _deliver(self, frame: Frame, line: bytes, correlation: bytes | None) -> None:
        if self._send is None:
            return
        try:
            self._send(frame, line, correlation)
        except OSError as exc:
            log.warning("device %s could not send: %s", self.id, exc)

    def _receive(self, line: bytes, correlation: bytes | None = None) -> None:
        for frame, out in self.handle(line):
            self._deliver(frame, out, correlation)

    def _read_serial(self, stream: ByteStream) -> None:
        splitter = LineSplitter()
        while not self._stop.is_set():
            try:
                data = stream.read_some(0.1)
            except OSError:
                return
            for line in splitter.feed(data):
                self._receive(line)

    def _announce_until_greeted(self) -> None:
        """Announce now, every second until the host says hello, and then
        every :data:`HEARTBEAT_S` (so a restarted host finds the device)."""
        while not self._stop.is_set():
            self.announce()
            self._stop.wait(HEARTBEAT_S if self.synced.is_set() else ANNOUNCE_RETRY_S)

    def _attach(self, link: DeviceLink) -> None:
        self._send = link.send
        link.start(self._receive)
        self._closers.append(lambda: self._detach(link))

    def _detach(self, link: DeviceLink) -> None:
        self._send = None
        link.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"sim-{self.id}", daemon=True)
        self._threads.append(thread)
        thread.start()


def _corrupt(frame: Frame) -> bytes:
    """The frame with a checksum that cannot match."""
    line = encode(frame)
    good = line.split(b'"crc":"', 1)[1][:8]
    bad = f"{(int(good, 16) ^ 0x1) & 0xFFFFFFFF:08x}".encode()
    return line.replace(b'"crc":"' + good, b'"crc":"' + bad, 1)
