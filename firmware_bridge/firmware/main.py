"""edge-agent reference firmware for an ESP32 running MicroPython.

Speaks the edge-agent firmware protocol (``firmware_bridge/PROTOCOL.md``)
over the USB serial port: newline-delimited JSON frames with a version, a
sequence number, a CRC-32 and an expiry. It announces a thermostat, a light,
a lock and a valve, and temperature, smoke and motion sensors, and it checks
every command against its own ranges before touching a pin: the host's
checks are not trusted blindly.

Wiring (change the PIN_* constants below to match your board):

* light: an LED or MOSFET on PIN_LIGHT (PWM brightness 0-100 %)
* heater relay: PIN_HEATER, switched by the thermostat with 0.5 °C hysteresis
* lock: a relay or solenoid on PIN_LOCK (high = unlocked)
* valve: a relay or PWM driver on PIN_VALVE (0-100 %)
* temperature: a DS18B20 on PIN_ONEWIRE (4.7 kΩ pull-up)
* smoke: the digital output of an MQ-2 module on PIN_SMOKE (active low)
* motion: a PIR sensor on PIN_MOTION (active high)

The protocol core (:class:`Node`) has no hardware in it, so the host's tests
run it under CPython against the real bridge.

Hold PIN_SAFE (BOOT, GPIO0) low at power-up to skip the protocol and get
the REPL back.
"""

import json
import time

try:
    from typing import Any, Callable  # noqa: UP035 - MicroPython has no collections.abc
except ImportError:  # MicroPython: no typing module; it ignores annotations anyway
    Any = Callable = None  # type: ignore[assignment,misc]

try:
    import binascii

    _crc32 = binascii.crc32
except (ImportError, AttributeError):  # a port built without binascii.crc32
    _crc32 = None  # type: ignore[assignment]

PROTOCOL_VERSION = 1
FIRMWARE = "edge-agent-esp32/1.0"
MAX_FRAME = 2048
WINDOW = 64
REPLIES_KEPT = 64
READING_TTL_MS = 60_000
REPLY_TTL_MS = 10_000
ANNOUNCE_TTL_MS = 30_000
ANNOUNCE_RETRY_MS = 1_000
HEARTBEAT_MS = 30_000
TEMPERATURE_EVERY_MS = 10_000
MAX_AHEAD_MS = 600_000
CLOCK_BACK_MS = 60_000

PIN_LIGHT = 2
PIN_HEATER = 4
PIN_LOCK = 5
PIN_VALVE = 18
PIN_ONEWIRE = 15
PIN_SMOKE = 34
PIN_MOTION = 35
PIN_SAFE = 0

SENSORS = [  # type: list[dict[str, Any]]
    {"id": "temperature", "type": "temperature", "value": "number", "unit": "C",
     "min": -55, "max": 125},
    {"id": "smoke", "type": "smoke", "value": "bool"},
    {"id": "motion", "type": "motion", "value": "bool"},
]  # fmt: skip
ACTUATORS = [  # type: list[dict[str, Any]]
    {"id": "thermostat", "kind": "thermostat", "value": "number", "unit": "C",
     "min": 5, "max": 30},
    {"id": "light", "kind": "light", "value": "integer", "unit": "%", "min": 0, "max": 100},
    {"id": "lock", "kind": "lock", "value": "bool"},
    {"id": "valve", "kind": "valve", "value": "integer", "unit": "%", "min": 0, "max": 100},
]  # fmt: skip
HEADER = ("v", "seq", "kind", "exp", "dev", "crc")


# ---------------------------------------------------------------- encoding


def crc32(data: bytes) -> int:
    if _crc32 is not None:
        return int(_crc32(data)) & 0xFFFFFFFF
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def canon(obj: "Any") -> str:
    """Canonical JSON: sorted keys, no whitespace (MicroPython's json.dumps
    neither sorts keys nor takes separators everywhere)."""
    if isinstance(obj, dict):
        items = [json.dumps(k) + ":" + canon(obj[k]) for k in sorted(obj)]
        return "{" + ",".join(items) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(canon(v) for v in obj) + "]"
    return json.dumps(obj)


def encode(fields: "dict[str, Any]") -> bytes:
    body = canon(fields).encode()
    fields["crc"] = f"{crc32(body):08x}"
    return canon(fields).encode() + b"\n"


def verify(raw: bytes) -> bool:
    """CRC-32 over the received bytes with the crc member cut out."""
    key = b'"crc":"'
    at = raw.find(key)
    if at < 0 or raw.find(key, at + 1) >= 0 or len(raw) < at + len(key) + 9:
        return False
    end = at + len(key) + 9
    if raw[end - 1 : end] != b'"':
        return False
    given = raw[at + len(key) : end - 1]
    if raw[at - 1 : at] == b",":
        body = raw[: at - 1] + raw[end:]
    elif raw[end : end + 1] == b",":
        body = raw[:at] + raw[end + 1 :]
    else:
        return False
    return f"{crc32(body):08x}".encode() == given


def check(cap: "dict[str, Any]", value: "Any") -> "str | None":
    """The device's own range check (the same rule as the host's)."""
    kind = cap["value"]
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if kind == "integer" and not isinstance(value, int):
        return "must be a whole number"
    if not cap["min"] <= value <= cap["max"]:
        return "must be between {} and {}".format(cap["min"], cap["max"])
    return None


# ---------------------------------------------------------------- the protocol core


class Node:
    """One device's side of the protocol. ``write(bytes)`` sends a line;
    ``hw`` applies actuator values and reads sensors; ``ticks`` and ``diff``
    are ``time.ticks_ms``/``time.ticks_diff`` (injectable for tests)."""

    def __init__(  # noqa: PLR0913 - the board's parts, injected
        self,
        dev: str,
        write: "Callable[[bytes], Any]",
        hw: "Any",
        ticks: "Callable[[], int]",
        diff: "Callable[[int, int], int]",
        boot: str,
    ) -> None:
        self.dev = dev
        self.write = write
        self.hw = hw
        self.ticks = ticks
        self.diff = diff
        self.boot = boot
        self.seq = 0
        self.host = ""
        self.base_ms = -1  # host clock at base_ticks; -1 until a hello
        self.base_ticks = 0
        self.top = 0
        self.bits = 0
        self.replies = {}  # type: dict[int, dict[str, Any]]
        self.order = []  # type: list[int]
        self.buf = b""
        self.skipping = False
        self.next_announce = 0
        self.next_temperature = 0
        self.last = {}  # type: dict[str, Any]
        self.old_hosts = []  # type: list[str]

    # -- clock

    def now(self) -> int:
        """The host's clock in ms (re-based hourly: ticks wrap after days)."""
        elapsed = self.diff(self.ticks(), self.base_ticks)
        if elapsed > 3_600_000:
            self.base_ms += elapsed
            self.base_ticks = self.ticks()
            elapsed = 0
        return self.base_ms + elapsed

    def synced(self) -> bool:
        return self.base_ms >= 0

    # -- sending

    def send(self, fields: "dict[str, Any]", ttl_ms: int) -> None:
        """Number, date and send a frame; before the host's hello the device
        has no clock, and only a clockless announce (``exp`` 0) may go out."""
        if not self.synced() and fields["kind"] != "announce":
            return
        self.seq += 1
        exp = self.now() + ttl_ms if self.synced() else 0
        header = {"v": PROTOCOL_VERSION, "seq": self.seq, "dev": self.dev, "exp": exp}
        fields.update(header)
        self.write(encode(fields))

    def announce(self) -> None:
        self.send({"kind": "announce", "boot": self.boot, "fw": FIRMWARE, "host": self.host,
                   "sensors": SENSORS, "actuators": ACTUATORS}, ANNOUNCE_TTL_MS)  # fmt: skip

    def reply(self, re: int, fields: "dict[str, Any]") -> None:
        self.replies[re] = fields
        self.order.append(re)
        if len(self.order) > REPLIES_KEPT:
            self.replies.pop(self.order.pop(0), None)
        self.send(dict(fields), REPLY_TTL_MS)

    # -- receiving

    def feed(self, data: bytes) -> None:
        """Bytes from the line; complete lines are handled, a line over
        MAX_FRAME bytes is dropped up to its newline."""
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if self.skipping:
                self.skipping = False
                continue
            if line.strip():
                self.handle(line.rstrip(b"\r"))
        if len(self.buf) >= MAX_FRAME:
            self.buf = b""
            self.skipping = True
            self.error("oversized")

    def handle(self, raw: bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            return self.error("not_json")
        if not isinstance(frame, dict) or any(k not in frame for k in HEADER):
            return self.error("missing_field")
        if frame["v"] != PROTOCOL_VERSION or frame["dev"] != self.dev:
            return self.error("bad_version" if frame["v"] != PROTOCOL_VERSION else "wrong_device")
        if not verify(raw):
            return self.error("bad_checksum")
        kind, seq = frame["kind"], frame["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return self.error("wrong_type")
        if kind == "hello":
            return self.on_hello(frame)
        if kind == "command":
            return self.on_command(frame, seq)
        return None

    def expired(self, exp: "Any") -> bool:
        if not isinstance(exp, int) or isinstance(exp, bool):
            return True
        now = self.now()
        return exp < now or exp > now + MAX_AHEAD_MS

    def fresh(self, seq: int) -> "str | None":
        if seq > self.top:
            return None
        offset = self.top - seq
        if offset >= WINDOW:
            return "stale"
        return "replayed" if (self.bits >> offset) & 1 else None

    def commit(self, seq: int) -> None:
        if seq > self.top:
            self.bits = ((self.bits << (seq - self.top)) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)

    def on_hello(self, frame: "dict[str, Any]") -> None:
        boot, t = frame.get("boot"), frame.get("t")
        if not isinstance(boot, str) or not isinstance(t, int) or isinstance(t, bool):
            return self.error("wrong_type")
        if self.synced() and (self.expired(frame["exp"]) or t < self.now() - CLOCK_BACK_MS):
            return None  # stale, or a replayed hello trying to turn the clock back
        if boot in self.old_hosts:
            return None  # an earlier host session, replayed
        if boot != self.host:
            if self.host:
                self.old_hosts = ([*self.old_hosts, self.host])[-8:]
            self.top, self.bits = 0, 0  # the host restarted: its numbers start again
        if self.fresh(frame["seq"]) is not None:
            return None
        self.commit(frame["seq"])
        # Within one host session the clock never goes back: a hello delayed
        # in a queue must not make the commands sent after it look fresh.
        if not (self.synced() and boot == self.host and t <= self.now()):
            self.base_ms, self.base_ticks = t, self.ticks()
        self.host = boot
        self.announce()
        return None

    def on_command(self, frame: "dict[str, Any]", seq: int) -> None:
        seen = self.fresh(seq)
        if seen == "replayed":
            cached = self.replies.get(seq)
            if cached is not None:
                self.send(dict(cached), REPLY_TTL_MS)  # a retry: same answer, no second action
            return None
        if seen is not None:
            return None
        if not self.synced():
            # No clock: nothing runs, and the nack cannot carry a valid expiry
            # (send() drops it). The seq is not committed: a retry after the
            # host's hello is judged afresh, expiry included.
            return self.reply(seq, {"kind": "nack", "re": seq, "code": "no_time",
                                    "reason": "no hello from the host yet"})  # fmt: skip
        if self.expired(frame["exp"]):
            self.commit(seq)
            return self.reply(seq, {"kind": "nack", "re": seq, "code": "expired",
                                    "reason": "command expired; not executed"})  # fmt: skip
        self.commit(seq)
        return self.execute(seq, frame.get("actuator"), frame.get("value"))

    def execute(self, seq: int, actuator: "Any", value: "Any") -> None:
        cap = None
        for item in ACTUATORS:
            if item["id"] == actuator:
                cap = item
        if cap is None:
            return self.reply(seq, {"kind": "nack", "re": seq, "code": "unknown_actuator",
                                    "reason": str(actuator)[:64]})  # fmt: skip
        problem = check(cap, value)
        if problem is not None:
            return self.reply(seq, {"kind": "nack", "re": seq, "code": "range",
                                    "reason": f"{actuator} {problem}"})  # fmt: skip
        self.hw.apply(actuator, value)
        return self.reply(seq, {"kind": "ack", "re": seq, "state": value})

    def error(self, code: str) -> None:
        self.send({"kind": "error", "code": code, "reason": ""}, REPLY_TTL_MS)

    # -- periodic work

    def poll(self) -> None:
        now = self.ticks()
        if self.diff(now, self.next_announce) >= 0:
            self.announce()
            wait = HEARTBEAT_MS if self.synced() else ANNOUNCE_RETRY_MS
            self.next_announce = now + wait
        if self.synced():
            self.report(now)

    def report(self, now: int) -> None:
        for sensor in ("smoke", "motion"):
            value = self.hw.read(sensor)
            if value != self.last.get(sensor):
                self.last[sensor] = value
                self.send({"kind": "reading", "sensor": sensor, "value": value}, READING_TTL_MS)
        if self.diff(now, self.next_temperature) >= 0:
            self.next_temperature = now + TEMPERATURE_EVERY_MS
            value = self.hw.read("temperature")
            if value is not None:
                self.send({"kind": "reading", "sensor": "temperature", "value": value},
                          READING_TTL_MS)  # fmt: skip
            self.hw.regulate(value)


# ---------------------------------------------------------------- the hardware


class Hardware:  # pragma: no cover - runs on the board only
    def __init__(self) -> None:
        from machine import PWM, Pin  # type: ignore[import-not-found]

        self.light = PWM(Pin(PIN_LIGHT), freq=1000, duty=0)
        self.valve = PWM(Pin(PIN_VALVE), freq=1000, duty=0)
        self.heater = Pin(PIN_HEATER, Pin.OUT, value=0)
        self.lock = Pin(PIN_LOCK, Pin.OUT, value=0)
        self.smoke = Pin(PIN_SMOKE, Pin.IN)
        self.motion = Pin(PIN_MOTION, Pin.IN)
        self.setpoint = 20.0
        self.probe = self._probe()

    def _probe(self) -> "Any":
        try:
            import ds18x20  # type: ignore[import-not-found]
            import onewire  # type: ignore[import-not-found]
            from machine import Pin

            sensor = ds18x20.DS18X20(onewire.OneWire(Pin(PIN_ONEWIRE)))
            roms = sensor.scan()
            return (sensor, roms[0]) if roms else None
        except (ImportError, OSError):
            return None

    def apply(self, actuator: str, value: "Any") -> None:
        if actuator == "light":
            self.light.duty(int(value) * 1023 // 100)
        elif actuator == "valve":
            self.valve.duty(int(value) * 1023 // 100)
        elif actuator == "lock":
            self.lock.value(0 if value else 1)  # high = unlocked
        elif actuator == "thermostat":
            self.setpoint = float(value)

    def read(self, sensor: str) -> "Any":
        if sensor == "smoke":
            return self.smoke.value() == 0  # MQ-2 DO is active low
        if sensor == "motion":
            return self.motion.value() == 1
        if self.probe is None:
            return None
        probe, rom = self.probe
        probe.convert_temp()
        time.sleep_ms(750)  # type: ignore[attr-defined]
        return round(probe.read_temp(rom), 2)

    def regulate(self, temperature: "Any") -> None:
        if temperature is None:
            self.heater.value(0)  # no reading, no heat
        elif temperature < self.setpoint - 0.5:
            self.heater.value(1)
        elif temperature > self.setpoint + 0.5:
            self.heater.value(0)


def run() -> None:  # pragma: no cover - runs on the board only
    import os
    import select
    import sys

    import machine  # type: ignore[import-not-found]
    import micropython  # type: ignore[import-not-found]

    if machine.Pin(PIN_SAFE, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0:
        return  # safe mode: back to the REPL
    micropython.kbd_intr(-1)  # 0x03 in the stream is data, not Ctrl-C
    dev = "esp32-" + "".join(f"{b:02x}" for b in machine.unique_id()[-3:])
    boot = "".join(f"{b:02x}" for b in os.urandom(8))
    out = sys.stdout.buffer
    node = Node(dev, out.write, Hardware(), time.ticks_ms, time.ticks_diff, boot)  # type: ignore[attr-defined]
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    while True:
        if poller.poll(50):
            data = sys.stdin.buffer.read(1)
            if data:
                node.feed(data)
        node.poll()


if __name__ == "__main__":
    run()
