"""The edge-agent ⇄ microcontroller wire protocol, version 1 (pure: no I/O).

One frame is one line of JSON, UTF-8, ending in ``\\n``, at most
:data:`MAX_FRAME_BYTES` bytes. Every frame carries a header::

    v    protocol version (1)
    seq  the sender's sequence number, 1 … 2**31-1, strictly increasing
    kind hello | announce | reading | command | ack | nack | error
    exp  expiry: Unix time in *milliseconds*, in the host's clock
    dev  the device the frame is from (device → host) or for (host → device)
    crc  CRC-32 of the frame's text without the crc member, 8 hex digits

A sender writes canonical JSON (sorted keys, no whitespace, ASCII escapes),
so the text without the ``"crc":"…"`` member *is* the canonical body; a
receiver checks the CRC over the bytes it received with that member cut
out, never re-encoding (float formatting differs between CPython and a
single-precision MicroPython). ``PROTOCOL.md`` is the full specification.

Everything that can go wrong with a frame is a :class:`Rejection` (plain
data with a reason code), never an exception: :func:`decode` and
:class:`Receiver` take any bytes at all. CRC-32 detects line noise, not an
attacker; authentication is the transport's job (MQTT with TLS and an ACL;
a serial cable is physical access).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "KINDS",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "ActuatorCap",
    "Announce",
    "Body",
    "Command",
    "ErrorBody",
    "Frame",
    "FrameWriter",
    "Hello",
    "Nack",
    "Reading",
    "Receiver",
    "RejectReason",
    "Rejection",
    "SensorCap",
    "SeqWindow",
    "Value",
    "capability_problems",
    "check_value",
    "decode",
    "encode",
    "now_ms",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 2048  # the newline included
MAX_TEXT = 256  # characters of a text reading
MAX_REASON = 128
MAX_CAPS = 32  # sensors, and actuators, per device
MAX_EXPIRY_AHEAD_MS = 10 * 60 * 1000  # a frame valid for longer is refused
SEQ_MAX = 2**31 - 1
REPLAY_WINDOW = 64
MAX_BOOTS_REMEMBERED = 16

Kind = Literal["hello", "announce", "reading", "command", "ack", "nack", "error"]
KINDS: tuple[str, ...] = ("hello", "announce", "reading", "command", "ack", "nack", "error")
Value: TypeAlias = bool | int | float | str
RejectReason = Literal[
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "bad_version",
    "missing_field",
    "wrong_type",
    "bad_value",
    "unknown_kind",
    "bad_checksum",
    "expired",
    "bad_expiry",
    "replayed",
    "stale",
    "wrong_device",
]
NackCode = Literal["range", "unknown_actuator", "expired", "no_time", "bad_value", "busy"]
NACK_CODES: tuple[str, ...] = get_args(NackCode)

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
CAP_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
BOOT_RE = re.compile(r"^[0-9a-f]{8,32}$")
CRC_RE = re.compile(rb'"crc":"([0-9a-f]{8})"')
HEADER = ("v", "seq", "kind", "exp", "dev", "crc")


def now_ms() -> int:
    """The protocol's clock: Unix time in milliseconds."""
    return int(time.time() * 1000)


# ---------------------------------------------------------------- frame bodies


@dataclass(frozen=True)
class SensorCap:
    """One announced sensor. ``value``: the reading's type."""

    id: str
    type: str
    value: Literal["number", "bool", "text"]
    unit: str | None = None
    min: float | None = None
    max: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _drop_none(
            {"id": self.id, "type": self.type, "value": self.value, "unit": self.unit}
            | {"min": self.min, "max": self.max}
        )


@dataclass(frozen=True)
class ActuatorCap:
    """One announced actuator: ``kind`` says what it is (lock, valve, …),
    ``value`` the command's type; numbers carry ``min``/``max``, enums ``values``."""

    id: str
    kind: str
    value: Literal["number", "integer", "bool", "enum"]
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "value": self.value}
        out |= {"unit": self.unit, "min": self.min, "max": self.max}
        out["values"] = list(self.values) or None
        return _drop_none(out)


@dataclass(frozen=True)
class Hello:
    """Host → device: the host's session (``boot``) and clock (``t``, ms)."""

    boot: str
    t: int
    KIND: Literal["hello"] = field(default="hello", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"boot": self.boot, "t": self.t}


@dataclass(frozen=True)
class Announce:
    """Device → host: its session (``boot``), firmware and capabilities, and
    the host session it has the clock of (``host``; "" before any hello)."""

    boot: str
    fw: str
    sensors: tuple[SensorCap, ...]
    actuators: tuple[ActuatorCap, ...]
    host: str = ""  # the boot id of the host whose hello the device has seen, or ""
    KIND: Literal["announce"] = field(default="announce", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "boot": self.boot,
            "fw": self.fw,
            "host": self.host,
            "sensors": [s.to_json() for s in self.sensors],
            "actuators": [a.to_json() for a in self.actuators],
        }


@dataclass(frozen=True)
class Reading:
    sensor: str
    value: Value
    KIND: Literal["reading"] = field(default="reading", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "value": self.value}


@dataclass(frozen=True)
class Command:
    actuator: str
    value: Value
    KIND: Literal["command"] = field(default="command", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"actuator": self.actuator, "value": self.value}


@dataclass(frozen=True)
class Ack:
    """The device applied command ``re``; ``state`` is the actuator's value now."""

    re: int
    state: Value
    KIND: Literal["ack"] = field(default="ack", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"re": self.re, "state": self.state}


@dataclass(frozen=True)
class Nack:
    """The device refused command ``re`` and did nothing."""

    re: int
    code: str
    reason: str = ""
    KIND: Literal["nack"] = field(default="nack", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"re": self.re, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class ErrorBody:
    """Either side: something went wrong that no command is waiting for."""

    code: str
    reason: str = ""
    KIND: Literal["error"] = field(default="error", init=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason}


Body: TypeAlias = Hello | Announce | Reading | Command | Ack | Nack | ErrorBody


@dataclass(frozen=True)
class Frame:
    """A decoded, checked frame."""

    dev: str
    seq: int
    exp: int
    body: Body
    v: int = PROTOCOL_VERSION

    @property
    def kind(self) -> str:
        return self.body.KIND


@dataclass(frozen=True)
class Rejection:
    """Why a frame was dropped. ``seq``/``dev``/``kind`` when they could be read."""

    reason: RejectReason
    detail: str
    seq: int | None = None
    dev: str | None = None
    kind: str | None = None

    def __str__(self) -> str:
        where = f" (dev={self.dev}, seq={self.seq}, kind={self.kind})" if self.dev else ""
        return f"{self.reason}: {self.detail}{where}"


class _Reject(Exception):  # internal control flow: never leaves this module
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- encoding


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, ASCII only; NaN and infinities refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")  # fmt: skip


def crc_of(body: bytes) -> str:
    return f"{zlib.crc32(body) & 0xFFFFFFFF:08x}"


def encode(frame: Frame) -> bytes:
    """The frame as one canonical line, checksum included, newline-terminated."""
    fields = {**frame.body.to_json(), **_header(frame)}
    line = canonical({**fields, "crc": crc_of(canonical(fields))}) + b"\n"
    if len(line) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(line)} bytes exceeds {MAX_FRAME_BYTES}")
    return line


def _header(frame: Frame) -> dict[str, Any]:
    return {"v": frame.v, "seq": frame.seq, "kind": frame.kind, "exp": frame.exp, "dev": frame.dev}


class FrameWriter:
    """A sender's side of one conversation: numbers frames and sets expiries.

    ``dev`` is this device's id (device side) or the peer's (host side).
    After 2**31-1 frames the sender must start a new session (a new boot id).
    """

    def __init__(self, dev: str, *, clock_ms: Callable[[], int] = now_ms) -> None:
        self.dev = dev
        self._clock_ms = clock_ms
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def frame(self, body: Body, ttl_ms: int) -> Frame:
        if self._seq >= SEQ_MAX:
            raise OverflowError("sequence numbers exhausted: start a new session")
        self._seq += 1
        return Frame(self.dev, self._seq, int(self._clock_ms()) + ttl_ms, body)

    def line(self, body: Body, ttl_ms: int) -> tuple[Frame, bytes]:
        frame = self.frame(body, ttl_ms)
        return frame, encode(frame)

    def clockless(self, body: Announce) -> tuple[Frame, bytes]:
        """An announce from a device that has no clock yet (``exp`` 0)."""
        frame = replace(self.frame(body, 0), exp=0)
        return frame, encode(frame)


# ---------------------------------------------------------------- decoding


def decode(line: bytes, *, now: int | None = None) -> Frame | Rejection:
    """Check and parse one line (with or without its newline). ``now`` is the
    receiver's protocol clock (ms); replay is the :class:`Receiver`'s job."""
    now = now_ms() if now is None else now
    if len(line) > MAX_FRAME_BYTES:
        return Rejection("oversized", f"{len(line)} bytes > {MAX_FRAME_BYTES}")
    raw = line.rstrip(b"\r\n")
    obj: dict[str, Any] = {}
    try:
        obj = _load(raw)
        _check_header(obj)
        _check_crc(raw, obj["crc"])
        if not _clockless_announce(obj):
            _check_expiry(obj["exp"], now)
        return Frame(obj["dev"], obj["seq"], obj["exp"], _body(obj), obj["v"])
    except _Reject as exc:
        return _rejection(exc, obj)


def _rejection(exc: _Reject, obj: Mapping[str, Any]) -> Rejection:
    seq, dev, kind = obj.get("seq"), obj.get("dev"), obj.get("kind")
    return Rejection(
        exc.reason,
        exc.detail,
        seq if _is_int(seq) else None,
        dev if isinstance(dev, str) and ID_RE.match(dev) else None,
        kind if kind in KINDS else None,
    )


def _load(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _Reject("not_json", _short(str(exc) or type(exc).__name__)) from None
    if not isinstance(obj, dict):
        raise _Reject("not_object", f"a frame is a JSON object, not {type(obj).__name__}")
    return obj


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_header(obj: Mapping[str, Any]) -> None:
    for key in HEADER:
        if key not in obj:
            raise _Reject("missing_field", f"no {key!r}")
    if not _is_int(obj["v"]):
        raise _Reject("wrong_type", "v must be an integer")
    if obj["v"] != PROTOCOL_VERSION:
        raise _Reject("bad_version", f"protocol version {obj['v']} (this host speaks 1)")
    if obj["kind"] not in KINDS:
        raise _Reject("unknown_kind", f"unknown kind {_short(repr(obj['kind']))}")
    if not _is_int(obj["seq"]) or not 1 <= obj["seq"] <= SEQ_MAX:
        raise _Reject("wrong_type", "seq must be an integer in 1..2**31-1")
    if not _is_int(obj["exp"]) or obj["exp"] < 0:
        raise _Reject("wrong_type", "exp must be a non-negative integer (Unix ms)")
    if not isinstance(obj["dev"], str) or not ID_RE.match(obj["dev"]):
        raise _Reject("wrong_type", "dev must be a device id ([a-z0-9_-], 1-32)")
    if not isinstance(obj["crc"], str) or not re.fullmatch(r"[0-9a-f]{8}", obj["crc"]):
        raise _Reject("wrong_type", "crc must be 8 lowercase hex digits")


def _check_crc(raw: bytes, crc: str) -> None:
    """CRC-32 over the received text with the top-level crc member cut out.
    ``"crc":"`` can only be a key there: inside a JSON string every quote is
    escaped, and nested objects may not use the key ``crc``."""
    found = list(CRC_RE.finditer(raw))
    if len(found) != 1:
        raise _Reject("bad_checksum", "the crc member must appear exactly once")
    start, end = found[0].span()
    if raw[start - 1 : start] == b",":
        body = raw[: start - 1] + raw[end:]
    elif raw[end : end + 1] == b",":
        body = raw[:start] + raw[end + 1 :]
    else:
        raise _Reject("bad_checksum", "the crc member must sit between other members")
    if crc_of(body) != crc:
        raise _Reject("bad_checksum", f"crc {crc} does not match the body ({crc_of(body)})")


def _clockless_announce(obj: Mapping[str, Any]) -> bool:
    """A device without a clock announces with ``exp`` 0 and ``host`` "" until
    the host's hello gives it one; nothing else may skip the expiry."""
    return obj["kind"] == "announce" and obj["exp"] == 0 and obj.get("host") == ""


def _check_expiry(exp: int, now: int) -> None:
    if exp < now:
        raise _Reject("expired", f"expired {now - exp} ms ago")
    if exp > now + MAX_EXPIRY_AHEAD_MS:
        raise _Reject("bad_expiry", f"expiry {exp - now} ms ahead exceeds {MAX_EXPIRY_AHEAD_MS}")


def _body(obj: Mapping[str, Any]) -> Body:
    fields = {k: v for k, v in obj.items() if k not in HEADER}
    kind = obj["kind"]
    parser: Callable[[Mapping[str, Any]], Body] = _PARSERS[kind]
    allowed = _FIELDS[kind]
    extra = sorted(set(fields) - allowed)
    if extra:
        raise _Reject("wrong_type", f"{kind} has unexpected field {extra[0]!r}")
    return parser(fields)


def _hello(f: Mapping[str, Any]) -> Hello:
    return Hello(_boot(f), _int(f, "t", lo=0))


def _announce(f: Mapping[str, Any]) -> Announce:
    sensors = _list(f, "sensors")
    actuators = _list(f, "actuators")
    parsed_s = tuple(_sensor_cap(s) for s in sensors)
    parsed_a = tuple(_actuator_cap(a) for a in actuators)
    ids = [c.id for c in parsed_s] + [c.id for c in parsed_a]
    if len(ids) != len(set(ids)):
        raise _Reject("bad_value", "announced ids must be unique")
    host = _str(f, "host", 32)
    if host and not BOOT_RE.match(host):
        raise _Reject("wrong_type", 'host must be "" or a boot id')
    return Announce(_boot(f), _str(f, "fw", 64), parsed_s, parsed_a, host)


def _reading(f: Mapping[str, Any]) -> Reading:
    return Reading(_cap_id(f, "sensor"), _value(f))


def _command(f: Mapping[str, Any]) -> Command:
    return Command(_cap_id(f, "actuator"), _value(f))


def _ack(f: Mapping[str, Any]) -> Ack:
    return Ack(_int(f, "re", lo=1, hi=SEQ_MAX), _value(f, "state"))


def _nack(f: Mapping[str, Any]) -> Nack:
    code = _str(f, "code", 32)
    if code not in NACK_CODES:
        raise _Reject("bad_value", f"unknown nack code {code!r}")
    return Nack(_int(f, "re", lo=1, hi=SEQ_MAX), code, _str(f, "reason", MAX_REASON, ""))


def _error(f: Mapping[str, Any]) -> ErrorBody:
    return ErrorBody(_str(f, "code", 32), _str(f, "reason", MAX_REASON, ""))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Body]] = {
    "hello": _hello,
    "announce": _announce,
    "reading": _reading,
    "command": _command,
    "ack": _ack,
    "nack": _nack,
    "error": _error,
}
_FIELDS: dict[str, frozenset[str]] = {
    "hello": frozenset({"boot", "t"}),
    "announce": frozenset({"boot", "fw", "host", "sensors", "actuators"}),
    "reading": frozenset({"sensor", "value"}),
    "command": frozenset({"actuator", "value"}),
    "ack": frozenset({"re", "state"}),
    "nack": frozenset({"re", "code", "reason"}),
    "error": frozenset({"code", "reason"}),
}
_SENSOR_KEYS = frozenset({"id", "type", "value", "unit", "min", "max"})
_ACTUATOR_KEYS = frozenset({"id", "kind", "value", "unit", "min", "max", "values"})


def _sensor_cap(item: Any) -> SensorCap:
    entry = _entry(item, _SENSOR_KEYS, "sensor")
    kind = _str(entry, "value", 8)
    if kind not in ("number", "bool", "text"):
        raise _Reject("bad_value", f"sensor value type {kind!r}")
    return SensorCap(
        _cap_id(entry, "id"),
        _str(entry, "type", 32),
        kind,  # type: ignore[arg-type]
        _opt_str(entry, "unit"),
        _opt_num(entry, "min"),
        _opt_num(entry, "max"),
    )


def _actuator_cap(item: Any) -> ActuatorCap:
    entry = _entry(item, _ACTUATOR_KEYS, "actuator")
    kind = _str(entry, "value", 8)
    if kind not in ("number", "integer", "bool", "enum"):
        raise _Reject("bad_value", f"actuator value type {kind!r}")
    values = entry.get("values", [])
    if not isinstance(values, list) or len(values) > MAX_CAPS:
        raise _Reject("wrong_type", "values must be a list of at most 32 strings")
    if not all(isinstance(v, str) and CAP_ID_RE.match(v) for v in values):
        raise _Reject("wrong_type", "enum values must be ids ([a-z0-9_], 1-32)")
    return ActuatorCap(
        _cap_id(entry, "id"),
        _str(entry, "kind", 32),
        kind,  # type: ignore[arg-type]
        _opt_str(entry, "unit"),
        _opt_num(entry, "min"),
        _opt_num(entry, "max"),
        tuple(values),
    )


def _entry(item: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise _Reject("wrong_type", f"a {what} capability is an object")
    extra = sorted(set(item) - allowed)
    if extra:
        raise _Reject("wrong_type", f"{what} capability has unexpected field {extra[0]!r}")
    return item


def _list(f: Mapping[str, Any], key: str) -> list[Any]:
    value = f.get(key)
    if not isinstance(value, list):
        raise _Reject("missing_field" if value is None else "wrong_type", f"{key} must be a list")
    if len(value) > MAX_CAPS:
        raise _Reject("bad_value", f"more than {MAX_CAPS} {key}")
    return value


def _boot(f: Mapping[str, Any]) -> str:
    boot = f.get("boot")
    if not isinstance(boot, str) or not BOOT_RE.match(boot):
        raise _Reject("wrong_type", "boot must be 8-32 lowercase hex digits")
    return boot


def _cap_id(f: Mapping[str, Any], key: str) -> str:
    value = f.get(key)
    if not isinstance(value, str) or not CAP_ID_RE.match(value):
        raise _Reject("wrong_type", f"{key} must be an id ([a-z][a-z0-9_], 1-32)")
    return value


def _str(f: Mapping[str, Any], key: str, limit: int, default: str | None = None) -> str:
    value = f.get(key, default)
    if value is None:
        raise _Reject("missing_field", f"no {key!r}")
    if not isinstance(value, str) or len(value) > limit:
        raise _Reject("wrong_type", f"{key} must be a string of at most {limit} characters")
    return value


def _opt_str(f: Mapping[str, Any], key: str) -> str | None:
    return _str(f, key, 16) if key in f else None


def _opt_num(f: Mapping[str, Any], key: str) -> float | None:
    if key not in f:
        return None
    value = f[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Reject("wrong_type", f"{key} must be a number")
    try:
        return float(value)
    except OverflowError:  # JSON allows an int of any size; a float does not
        raise _Reject("bad_value", f"{key} is too large for a number") from None


def _int(f: Mapping[str, Any], key: str, *, lo: int, hi: int = 2**53) -> int:
    value = f.get(key)
    if value is None:
        raise _Reject("missing_field", f"no {key!r}")
    if not _is_int(value) or not lo <= value <= hi:
        raise _Reject("wrong_type", f"{key} must be an integer in {lo}..{hi}")
    return int(value)


def _value(f: Mapping[str, Any], key: str = "value") -> Value:
    if key not in f:
        raise _Reject("missing_field", f"no {key!r}")
    value = f[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) <= 2**53:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        return value
    raise _Reject("wrong_type", f"{key} must be a bool, a number or a short string")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# ---------------------------------------------------------------- values and ranges


def check_value(cap: ActuatorCap, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``cap`` (None when it is). The same
    rule the firmware applies on the device."""
    if cap.value == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if cap.value == "enum":
        ok = isinstance(value, str) and value in cap.values
        return None if ok else f"must be one of {', '.join(cap.values)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if cap.value == "integer" and not isinstance(value, int):
        return "must be a whole number"
    if not math.isfinite(value):
        return "must be finite"
    lo = cap.min if cap.min is not None else -math.inf
    hi = cap.max if cap.max is not None else math.inf
    if not lo <= value <= hi:
        return f"must be between {_num(cap.min)} and {_num(cap.max)}"
    return None


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


# What a sane device may announce, per kind: (units accepted, lowest min, highest max).
# Anything outside is refused as absurd; ``None`` bounds mean the value is not a number.
ACTUATOR_ENVELOPES: dict[str, tuple[frozenset[str | None], float | None, float | None]] = {
    "light": (frozenset({"%"}), 0, 100),
    "dimmer": (frozenset({"%"}), 0, 100),
    "switch": (frozenset({None}), None, None),
    "fan": (frozenset({"%"}), 0, 100),
    "vent": (frozenset({"%"}), 0, 100),
    "blind": (frozenset({"%"}), 0, 100),
    "thermostat": (frozenset({"C"}), 5, 30),
    "heater": (frozenset({"C"}), 5, 30),
    "valve": (frozenset({"%"}), 0, 100),
    "lock": (frozenset({None}), None, None),
    "motor": (frozenset({"%"}), -100, 100),
    "siren": (frozenset({None}), None, None),
}
SENSOR_ENVELOPES: dict[str, tuple[frozenset[str | None], float | None, float | None]] = {
    "temperature": (frozenset({"C"}), -60, 150),
    "humidity": (frozenset({"%"}), 0, 100),
    "co2": (frozenset({"ppm"}), 0, 50000),
    "pressure": (frozenset({"hPa"}), 300, 1100),
    "illuminance": (frozenset({"lx"}), 0, 200000),
    "smoke": (frozenset({None}), None, None),
    "motion": (frozenset({None}), None, None),
    "door": (frozenset({None}), None, None),
    "water_leak": (frozenset({None}), None, None),
    "text": (frozenset({None}), None, None),
}
_BOOL_KINDS = frozenset({"switch", "lock", "siren"})


def capability_problems(announce: Announce) -> list[str]:
    """Why an announcement is not believable: unknown kinds, units that do
    not fit the kind, and absurd ranges (min ≥ max, or beyond the envelope
    of the kind, e.g. a thermostat up to 1000 °C). Empty when it is sane."""
    problems = [p for s in announce.sensors for p in _sensor_problems(s)]
    problems += [p for a in announce.actuators for p in _actuator_problems(a)]
    return problems


def _sensor_problems(cap: SensorCap) -> list[str]:
    envelope = SENSOR_ENVELOPES.get(cap.type)
    if envelope is None:
        return [f"sensor {cap.id}: unknown type {cap.type!r}"]
    numeric = envelope[1] is not None
    expected = "number" if numeric else ("text" if cap.type == "text" else "bool")
    if cap.value != expected:
        return [f"sensor {cap.id}: a {cap.type} sensor reads a {expected}, not a {cap.value}"]
    return _range_problems(f"sensor {cap.id}", cap.unit, cap.min, cap.max, envelope)


def _actuator_problems(cap: ActuatorCap) -> list[str]:
    envelope = ACTUATOR_ENVELOPES.get(cap.kind)
    where = f"actuator {cap.id}"
    if envelope is None:
        return [f"{where}: unknown kind {cap.kind!r}"]
    if cap.kind in _BOOL_KINDS:
        return [] if cap.value == "bool" else [f"{where}: a {cap.kind} takes true/false"]
    if cap.value == "enum":
        return [] if cap.values else [f"{where}: an enum needs values"]
    if cap.value not in ("number", "integer"):
        return [f"{where}: a {cap.kind} takes a number"]
    if cap.min is None or cap.max is None:
        return [f"{where}: a {cap.kind} must announce min and max"]
    return _range_problems(where, cap.unit, cap.min, cap.max, envelope)


def _range_problems(
    where: str,
    unit: str | None,
    lo: float | None,
    hi: float | None,
    envelope: tuple[frozenset[str | None], float | None, float | None],
) -> list[str]:
    units, env_lo, env_hi = envelope
    if unit not in units:
        return [f"{where}: unit {unit!r} is not one of {sorted(map(str, units))}"]
    if env_lo is None or env_hi is None:
        return [] if lo is None and hi is None else [f"{where}: has no range"]
    if lo is None or hi is None:
        return []
    if not lo < hi:
        return [f"{where}: min {lo:g} is not below max {hi:g}"]
    if lo < env_lo or hi > env_hi:
        plausible = f"plausible {env_lo:g}..{env_hi:g}"
        return [f"{where}: range {lo:g}..{hi:g} {unit} is absurd ({plausible})"]
    return []


# ---------------------------------------------------------------- replay and receiving


class SeqWindow:
    """Anti-replay for one sender: the highest sequence number seen and a
    bitmap of the :data:`REPLAY_WINDOW` numbers below it (as in IPsec).
    A number seen before is ``replayed``; one older than the window ``stale``."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.top = 0
        self._bits = 0

    def check(self, seq: int) -> RejectReason | None:
        if seq > self.top:
            return None
        offset = self.top - seq
        if offset >= self.size:
            return "stale"
        return "replayed" if self._bits >> offset & 1 else None

    def commit(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self._bits |= 1 << (self.top - seq)


@dataclass
class _Session:
    boot: str | None = None
    window: SeqWindow = field(default_factory=SeqWindow)
    old_boots: list[str] = field(default_factory=list)


class Receiver:
    """Decoding plus duplicate suppression per sender, with counts.

    A session starts with a frame of kind ``session_kind`` (``announce`` on
    the host, ``hello`` on a device) carrying a new ``boot`` id: the sender
    restarted, so its sequence numbers start again. A boot id seen before is
    a replayed session and is refused. Every rejection is counted in
    :attr:`rejected`, logged (throttled) and returned, never raised.
    """

    def __init__(
        self, session_kind: Literal["announce", "hello"], *, clock_ms: Callable[[], int] = now_ms
    ) -> None:
        self.session_kind = session_kind
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self._clock_ms = clock_ms
        self._sessions: dict[str, _Session] = {}
        self._last_log: dict[str, float] = {}

    def receive(self, line: bytes, *, source: str | None = None) -> Frame | Rejection:
        """``source``: the device id the transport vouches for (an MQTT topic,
        a serial port bound to a device); a frame naming another is refused."""
        result = decode(line, now=int(self._clock_ms()))
        if isinstance(result, Frame):
            result = self._admit(result, source)
        if isinstance(result, Rejection):
            self._count(result)
        else:
            self.accepted += 1
        return result

    def session(self, dev: str) -> str | None:
        """The current boot id of ``dev``'s session, if any."""
        found = self._sessions.get(dev)
        return found.boot if found else None

    def _admit(self, frame: Frame, source: str | None) -> Frame | Rejection:
        if source is not None and frame.dev != source:
            detail = f"frame names device {frame.dev!r} on {source!r}'s channel"
            return Rejection("wrong_device", detail, frame.seq, frame.dev, frame.kind)
        session = self._sessions.setdefault(frame.dev, _Session())
        if frame.kind == self.session_kind:
            problem = self._new_session(session, getattr(frame.body, "boot", ""))
            if problem is not None:
                return Rejection("replayed", problem, frame.seq, frame.dev, frame.kind)
        reason = session.window.check(frame.seq)
        if reason is not None:
            detail = f"seq {frame.seq} (highest seen {session.window.top})"
            return Rejection(reason, detail, frame.seq, frame.dev, frame.kind)
        session.window.commit(frame.seq)
        return frame

    def _new_session(self, session: _Session, boot: str) -> str | None:
        if boot == session.boot:
            return None
        if boot in session.old_boots:
            return f"boot {boot} belongs to an earlier session"
        if session.boot is not None:
            session.old_boots = [*session.old_boots, session.boot][-MAX_BOOTS_REMEMBERED:]
        session.boot = boot
        session.window = SeqWindow()
        return None

    def _count(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        now = time.monotonic()
        if now - self._last_log.get(rejection.reason, -math.inf) >= 10.0:
            self._last_log[rejection.reason] = now
            total = self.rejected[rejection.reason]
            log.warning("dropped a frame: %s (%d %s so far)", rejection, total, rejection.reason)
        else:
            log.debug("dropped a frame: %s", rejection)
