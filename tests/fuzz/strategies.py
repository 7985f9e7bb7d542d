"""Hypothesis strategies shared by the doors: JSON values, hostile text,
and protocol frames with a correct checksum (so generation reaches the body
parsers instead of stopping at the CRC)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from firmware_bridge.protocol import KINDS, canonical, crc_of

# Text that has broken parsers before: NULs, surrogates escaped in JSON,
# right-to-left marks, very long runs, number-like strings.
NASTY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "\x00", "\ud800", "\u202e", "NaN", "-Infinity", "1e999", "0x10", "🔥" * 8, "a"]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    NASTY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(NASTY_TEXT, inner, max_size=5)
    ),
    max_leaves=20,
)


def deep(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    """JSON nested ``depth`` levels: the decoder's recursion limit."""
    return (opener * depth + closer * depth).encode()


DEEP_JSON = st.builds(
    deep, st.integers(min_value=900, max_value=100_000), st.just("["), st.just("]")
) | st.integers(min_value=900, max_value=5000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode())


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, hostile text otherwise."""
    return st.integers(0, 3).flatmap(lambda n: valid if n else NASTY_TEXT)


IDS = mostly(st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,31}", fullmatch=True))
CAP_IDS = mostly(st.sampled_from(["temp", "lamp", "mode", "valve"]))
BOOTS = mostly(st.from_regex(r"[0-9a-f]{8,32}", fullmatch=True))
HUGE_INTS = st.integers(10**300, 10**400)  # JSON allows them; floats cannot hold them
VALUES = st.one_of(
    st.booleans(),
    HUGE_INTS,
    st.integers(-(2**60), 2**60),
    st.floats(),
    NASTY_TEXT,
    st.sampled_from([None, [], {}]),
)
RANGE = st.one_of(st.none(), st.floats(), st.integers(-(2**60), 2**60), HUGE_INTS)


def _cap(
    kinds: list[str], label: str, keys: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    plausible = st.fixed_dictionaries(
        {"id": CAP_IDS, "value": st.sampled_from([*kinds, "x"]), label: mostly(st.just("t"))},
        optional={**keys, "unit": mostly(st.just("C")), "min": RANGE, "max": RANGE},
    ).map(lambda d: {k: v for k, v in d.items() if v is not None})
    return st.one_of(plausible, plausible, JSON_VALUES)


SENSOR_CAPS = _cap(["number", "bool", "text"], "type", {})
ACTUATOR_CAPS = _cap(
    ["number", "integer", "bool", "enum"],
    "kind",
    {"values": st.lists(st.one_of(CAP_IDS, CAP_IDS, JSON_VALUES), max_size=4)},
)
# Each kind's body fields with plausible values, and sometimes any value at all.
BODY_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "hello": {"boot": BOOTS, "t": st.integers(-1, 2**64)},
    "announce": {
        "boot": BOOTS,
        "fw": NASTY_TEXT,
        "host": st.one_of(st.just(""), BOOTS),
        "sensors": st.lists(SENSOR_CAPS, max_size=4),
        "actuators": st.lists(ACTUATOR_CAPS, max_size=4),
    },
    "reading": {"sensor": CAP_IDS, "value": VALUES},
    "command": {"actuator": CAP_IDS, "value": VALUES},
    "ack": {"re": st.integers(-1, 2**32), "state": VALUES},
    "nack": {
        "re": st.integers(-1, 2**32),
        "code": st.sampled_from(["range", "busy", "bogus"]),
        "reason": NASTY_TEXT,
    },
    "error": {"code": NASTY_TEXT, "reason": NASTY_TEXT},
}


def with_crc(obj: dict[str, Any]) -> bytes:
    """A line whose ``crc`` matches its body, whatever the body holds."""
    body = {k: v for k, v in obj.items() if k != "crc"}
    try:
        text = canonical(body)
    except ValueError:
        text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if text == b"{}":
        return text + b"\n"
    crc = crc_of(text)
    line = text[:-1] + b',"crc":"' + crc.encode() + b'"}'
    return line + b"\n"


@st.composite
def frames(draw: st.DrawFn, now_ms: int) -> bytes:
    """A frame with a mostly valid header, a body of its kind's fields
    (plausible values, sometimes anything, sometimes a field missing or one
    too many) and a correct CRC; some are then mutated."""
    kind = draw(st.sampled_from(KINDS))
    obj: dict[str, Any] = {
        "v": 1,
        "seq": draw(st.integers(1, 200)),
        "kind": kind,
        "exp": draw(st.integers(now_ms, now_ms + 600_000)),
        "dev": draw(st.sampled_from(["sim1", "sim1", "sim2"])),
    }
    if kind == "announce" and draw(st.booleans()):
        obj["exp"], obj["host"] = 0, ""
    for name, values in BODY_FIELDS[kind].items():
        if draw(st.integers(0, 9)) > 0:
            obj[name] = draw(JSON_VALUES if draw(st.integers(0, 11)) == 0 else values)
    if draw(st.integers(0, 9)) == 0:  # a hostile header member
        key = draw(st.sampled_from(["v", "seq", "kind", "exp", "dev", "extra"]))
        obj[key] = draw(JSON_VALUES)
    line = with_crc(obj)
    if draw(st.integers(0, 4)) > 0:
        return line  # as sent
    return draw(mutated(line))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, cut, duplicated or inserted."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del buf[at:]
        elif op == "dup":
            buf[at:at] = buf[at : at + draw(st.integers(1, 64))]
        else:
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)
