"""The wire protocol, pure: round trips, checksums, expiry, replay, limits,
and a fuzzed parser that must answer every input with a frame or a typed
rejection, never an exception."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocol import (
    MAX_FRAME_BYTES,
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
    SeqWindow,
    capability_problems,
    check_value,
    decode,
    encode,
)
from firmware_bridge.serial_link import LineSplitter

NOW = 1_700_000_000_000
BOOT = "0123456789abcdef"


def clock() -> int:
    return NOW


def writer(dev: str = "sim1") -> FrameWriter:
    return FrameWriter(dev, clock_ms=clock)


SENSORS = (SensorCap("temperature", "temperature", "number", "C", -40, 125),)
ACTUATORS = (
    ActuatorCap("thermostat", "thermostat", "number", "C", 5, 30),
    ActuatorCap("lock", "lock", "bool"),
    ActuatorCap("mode", "fan", "enum", values=("low", "high")),
)
BODIES = [
    Hello(BOOT, NOW),
    Announce(BOOT, "fw/1", SENSORS, ACTUATORS, ""),
    Reading("temperature", 21.5),
    Reading("temperature", "dusty"),
    Command("thermostat", 22.5),
    Command("lock", False),
    Ack(7, 22.5),
    Nack(7, "range", "too hot"),
    ErrorBody("bad_checksum", "line noise"),
]


def with_crc(fields: dict[str, object]) -> bytes:
    """A canonical line with a correct CRC for arbitrary fields."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    crc = f"{zlib.crc32(body) & 0xFFFFFFFF:08x}"
    return json.dumps({**fields, "crc": crc}, sort_keys=True, separators=(",", ":")).encode()


def header(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {"v": 1, "seq": 1, "kind": "reading", "exp": NOW + 5000,
                                 "dev": "sim1", "sensor": "temperature", "value": 20}  # fmt: skip
    fields.update(overrides)
    return fields


# --- round trip and checksum ------------------------------------------------------


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_every_kind_round_trips(body: object) -> None:
    frame, line = writer().line(body, 5000)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line, now=NOW) == frame
    assert encode(frame) == line


def test_line_is_canonical_json_and_crc_covers_the_rest() -> None:
    _, line = writer().line(Command("thermostat", 22.5), 5000)
    obj = json.loads(line)
    assert list(obj) == sorted(obj)
    body = {k: v for k, v in obj.items() if k != "crc"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert obj["crc"] == f"{zlib.crc32(canonical) & 0xFFFFFFFF:08x}"
    assert b" " not in line


def test_a_flipped_bit_anywhere_is_a_bad_checksum_or_malformed() -> None:
    _, line = writer().line(Command("thermostat", 22.5), 5000)
    for i in range(len(line) - 1):
        for bit in (1, 2, 4):
            damaged = bytearray(line)
            damaged[i] ^= bit
            assert isinstance(decode(bytes(damaged), now=NOW), Rejection), (i, bit)


def test_checksum_is_checked_over_the_bytes_received() -> None:
    """Numbers are not re-encoded: "22.50", as a single-precision firmware may
    print 22.5, verifies when the CRC was computed over that text, and a
    re-encoding receiver would have got it wrong."""
    canonical = json.dumps(header(value=22.5), sort_keys=True, separators=(",", ":")).encode()
    as_printed = canonical.replace(b"22.5", b"22.50")
    crc = f"{zlib.crc32(as_printed) & 0xFFFFFFFF:08x}".encode()
    line = as_printed.replace(b'"dev"', b'"crc":"' + crc + b'","dev"')  # crc sorts before dev
    frame = decode(line, now=NOW)
    assert isinstance(frame, Frame) and frame.body == Reading("temperature", 22.5)
    mangled = with_crc(header(value=22.5)).replace(b"22.5", b"22.50")
    assert decode(mangled, now=NOW).reason == "bad_checksum"  # type: ignore[union-attr]


# --- expiry, limits, malformed ------------------------------------------------------


def test_expired_and_far_future_frames_are_rejected() -> None:
    assert decode(with_crc(header(exp=NOW - 1)), now=NOW).reason == "expired"  # type: ignore[union-attr]
    far = header(exp=NOW + 11 * 60_000)
    assert decode(with_crc(far), now=NOW).reason == "bad_expiry"  # type: ignore[union-attr]
    assert isinstance(decode(with_crc(header(exp=NOW)), now=NOW), Frame)


def test_only_a_clockless_announce_may_carry_exp_zero() -> None:
    """A device without a clock announces with exp 0 until the host's hello."""
    frame, line = writer().clockless(Announce(BOOT, "fw", SENSORS, ()))
    assert frame.exp == 0 and decode(line, now=NOW) == frame
    at_zero = FrameWriter("sim1", clock_ms=lambda: 0)
    greeted = at_zero.line(Announce(BOOT, "fw", (), (), host=BOOT), 0)[1]
    reading = at_zero.line(Reading("temperature", 1.0), 0)[1]
    for late in (greeted, reading):
        assert decode(late, now=NOW).reason == "expired"  # type: ignore[union-attr]


def test_oversized_frames_are_rejected_before_parsing() -> None:
    huge = with_crc(header(value="x" * 200)) + b" " * MAX_FRAME_BYTES
    assert decode(huge, now=NOW).reason == "oversized"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "not_json"),
        (b"not json at all", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b"\xff\xfe", "not_utf8"),
        (b"[" * 1000 + b"]" * 1000, "not_json"),  # RecursionError inside json
        (with_crc(header(v=2)), "bad_version"),
        (with_crc(header(v=True)), "wrong_type"),
        (with_crc(header(seq=0)), "wrong_type"),
        (with_crc(header(seq=True)), "wrong_type"),
        (with_crc(header(seq=2**31)), "wrong_type"),
        (with_crc(header(kind="reboot")), "unknown_kind"),
        (with_crc(header(dev="Not A Device")), "wrong_type"),
        (with_crc(header(value=[1, 2])), "wrong_type"),
        (with_crc(header(value="x" * 300)), "wrong_type"),
        (with_crc(header(sensor="../etc")), "wrong_type"),
        (with_crc(header(extra=1)), "wrong_type"),
        (with_crc({k: v for k, v in header().items() if k != "seq"}), "missing_field"),
        (with_crc({k: v for k, v in header().items() if k != "value"}), "missing_field"),
        (with_crc(header(kind="nack", re=3, code="shrug", reason="")), "wrong_type"),
        (b'{"v":1,"v":1}', "not_json"),
        (b'{"v":NaN}', "not_json"),
        (with_crc(header()).replace(b'"crc"', b'"crc":"00000000","crc"', 1), "not_json"),
    ],
)
def test_malformed_frames_are_typed_rejections(line: bytes, reason: str) -> None:
    result = decode(line, now=NOW)
    assert isinstance(result, Rejection)
    assert result.reason == reason, result


def test_nested_crc_keys_cannot_fool_the_checksum() -> None:
    sneaky = header(kind="announce", boot=BOOT, fw="x", host="", sensors=[{"crc": "00000000"}],
                    actuators=[])  # fmt: skip
    for key in ("sensor", "value"):
        sneaky.pop(key)
    assert isinstance(decode(with_crc(sneaky), now=NOW), Rejection)


# --- duplicates and sessions ---------------------------------------------------------


def test_seq_window_suppresses_duplicates_and_stale_numbers() -> None:
    window = SeqWindow(size=8)
    for seq in (1, 2, 5, 3):
        assert window.check(seq) is None
        window.commit(seq)
    assert [window.check(s) for s in (1, 2, 3, 5)] == ["replayed"] * 4
    assert window.check(4) is None  # late but new: accepted once
    window.commit(4)
    assert window.check(4) == "replayed"
    window.commit(20)
    assert window.check(12) == "stale" and window.check(13) is None


def test_receiver_drops_replays_and_counts_them() -> None:
    receiver = Receiver("announce", clock_ms=clock)
    w = writer()
    _, announce = w.line(Announce(BOOT, "fw", SENSORS, ACTUATORS), 5000)
    _, reading = w.line(Reading("temperature", 20.0), 5000)
    assert isinstance(receiver.receive(announce), Frame)
    assert isinstance(receiver.receive(reading), Frame)
    assert receiver.receive(reading).reason == "replayed"  # type: ignore[union-attr]
    assert receiver.receive(b"junk").reason == "not_json"  # type: ignore[union-attr]
    assert dict(receiver.rejected) == {"replayed": 1, "not_json": 1}
    assert receiver.accepted == 2


def test_a_new_boot_starts_a_new_session_and_old_boots_are_refused() -> None:
    receiver = Receiver("announce", clock_ms=clock)
    first, second = writer(), writer()
    assert isinstance(receiver.receive(first.line(Announce(BOOT, "fw", (), ()), 5000)[1]), Frame)
    for _ in range(3):
        receiver.receive(first.line(Reading("temperature", 1.0), 5000)[1])
    rebooted = second.line(Announce("fedcba9876543210", "fw", (), ()), 5000)[1]
    assert isinstance(receiver.receive(rebooted), Frame)  # seq 1 again, new session
    assert receiver.session("sim1") == "fedcba9876543210"
    old = writer()
    for _ in range(10):
        old.frame(Reading("temperature", 1.0), 5000)
    replayed_session = old.line(Announce(BOOT, "fw", (), ()), 5000)[1]
    assert receiver.receive(replayed_session).reason == "replayed"  # type: ignore[union-attr]


def test_a_frame_on_another_devices_channel_is_refused() -> None:
    receiver = Receiver("announce", clock_ms=clock)
    line = writer("sim1").line(Reading("temperature", 1.0), 5000)[1]
    assert receiver.receive(line, source="sim2").reason == "wrong_device"  # type: ignore[union-attr]


# --- capabilities and values -------------------------------------------------------------


def test_sane_capabilities_pass_and_absurd_ones_are_named() -> None:
    assert capability_problems(Announce(BOOT, "fw", SENSORS, ACTUATORS)) == []
    absurd = (
        ActuatorCap("thermostat", "thermostat", "number", "C", 0, 1000),
        ActuatorCap("valve", "valve", "number", "%", 100, 0),
        ActuatorCap("lock", "lock", "number", None, 0, 1),
        ActuatorCap("door", "portal", "bool"),
        ActuatorCap("light", "light", "number", "lm", 0, 100),
        ActuatorCap("light2", "light", "number", "%"),
    )
    problems = capability_problems(Announce(BOOT, "fw", (), absurd))
    assert len(problems) == len(absurd)
    assert "absurd" in problems[0] and "not below" in problems[1]
    hot = SensorCap("temp", "temperature", "number", "C", -1000, 5000)
    assert "absurd" in capability_problems(Announce(BOOT, "fw", (hot,), ()))[0]


def test_check_value_is_the_devices_rule_too() -> None:
    thermostat, lock, mode = ACTUATORS
    assert check_value(thermostat, 22.5) is None
    assert check_value(thermostat, 30) is None
    assert "between 5 and 30" in str(check_value(thermostat, 31))
    assert check_value(thermostat, True) == "must be a number"
    assert check_value(thermostat, "22") == "must be a number"
    assert check_value(lock, 0) == "must be true or false"
    assert check_value(mode, "high") is None and check_value(mode, "turbo") is not None
    light = ActuatorCap("light", "light", "integer", "%", 0, 100)
    assert check_value(light, 50.5) == "must be a whole number"


def test_line_splitter_cuts_oversized_lines_and_keeps_the_stream_in_step() -> None:
    splitter = LineSplitter(limit=16)
    out = splitter.feed(b'{"a":1}\n' + b"x" * 40)
    out += splitter.feed(b"yyy\n" + b'{"b":2}\n\n')
    assert out[0] == b'{"a":1}\n'
    assert len(out[1]) == 17  # cut to limit + 1: rejected as oversized downstream
    assert out[2:] == [b'{"b":2}\n']


# --- fuzzing --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzzed_bytes_never_crash_the_parser(data: bytes) -> None:
    assert isinstance(decode(data, now=NOW), Frame | Rejection)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(
    ["v", "seq", "kind", "exp", "dev", "crc", "sensor", "value", "actuator", "re", "state",
     "code", "reason", "boot", "t", "fw", "host", "sensors", "actuators", "x"]), json_values,
    max_size=10))  # fmt: skip
def test_fuzzed_frames_with_valid_checksums_never_crash(fields: dict[str, object]) -> None:
    try:
        line = with_crc(fields)
    except ValueError:
        return  # not encodable as canonical JSON
    assert isinstance(decode(line, now=NOW), Frame | Rejection)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BODIES), st.integers(0, 2**31 - 2), st.integers(0, 600_000))
def test_fuzzed_valid_frames_round_trip(body: object, skip: int, ttl: int) -> None:
    w = writer()
    w._seq = skip  # start anywhere in the sequence space
    frame, line = w.line(body, ttl)  # type: ignore[arg-type]
    assert decode(line, now=NOW) == frame


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_fuzzed_streams_never_crash_the_receiver(chunks: list[bytes]) -> None:
    receiver = Receiver("announce", clock_ms=clock)
    splitter = LineSplitter()
    for chunk in chunks:
        for line in splitter.feed(chunk):
            receiver.receive(line)
    assert receiver.accepted + sum(receiver.rejected.values()) >= 0
