"""Door: MQTT sensor payloads, parsed in process
(``edge_agent.iot.automation.parse_payload``; the live broker path is in
``test_live_doors.py``).

Every payload must come back as a :class:`SensorEvent` or a reason string
(the engine counts it as ``malformed.<reason>``); nothing may raise."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from edge_agent.iot.automation import SensorEvent, parse_payload
from edge_agent.iot.automation_settings import SensorTopic
from tests.fuzz.conftest import FUZZ, Door
from tests.fuzz.strategies import DEEP_JSON, JSON_VALUES, NASTY_TEXT, mutated

NOW = 1_773_568_800.0
SOURCES = [
    SensorTopic(topic="home/sensors/+", field="temperature"),
    SensorTopic(topic="home/sensors/+", field="a.b"),
    SensorTopic(topic="home/sensors/+"),
    SensorTopic(topic="home/sensors/+", sensor="kitchen", unit="C", max_age_s=10),
]
NUMBERS = st.one_of(
    st.integers(),
    st.integers(10**300, 10**4000),  # JSON allows any size; floats do not
    st.floats(),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1" * 400]),
)
TIMESTAMPS = st.one_of(
    st.floats(NOW - 1000, NOW + 1000), st.floats(), NUMBERS, st.just(NOW * 1000), JSON_VALUES
)


def _object(fields: dict[str, object]) -> bytes:
    text = json.dumps(fields, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.one_of(NUMBERS, JSON_VALUES),
        "a": st.one_of(st.fixed_dictionaries({"b": st.one_of(NUMBERS, JSON_VALUES)}), JSON_VALUES),
        "ts": TIMESTAMPS,
        "humidity": st.one_of(NUMBERS, NASTY_TEXT),
    },
).map(_object)
RAW_NUMBERS = NUMBERS.map(lambda n: str(n).encode())
PAYLOADS = st.one_of(
    OBJECTS,
    OBJECTS.flatmap(mutated),
    RAW_NUMBERS,
    st.binary(max_size=300),
    NASTY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    JSON_VALUES.map(_object),
    DEEP_JSON,
)


def test_sensor_payloads(door: Door) -> None:
    @FUZZ
    @given(payload=PAYLOADS, source=st.sampled_from(SOURCES))
    # Found by this test: an int too large for a float raised OverflowError
    # out of math.isfinite, as a value and as a timestamp.
    @example(payload=b"1" + b"0" * 400, source=SOURCES[2])
    @example(payload=b'{"temperature": 1' + b"0" * 400 + b"}", source=SOURCES[0])
    @example(payload=b'{"temperature": 20, "ts": 1' + b"0" * 400 + b"}", source=SOURCES[0])
    # ... and a null ts (taken as no time) raised TypeError (found at 10,000).
    @example(payload=b'{"temperature": 20, "ts": null}', source=SOURCES[0])
    def one(payload: bytes, source: SensorTopic) -> None:
        result = door.run(lambda: parse_payload(source, "home/sensors/x", payload, NOW))
        assert isinstance(result, SensorEvent | str)
        door.tally("event" if isinstance(result, SensorEvent) else f"dropped.{result}")

    one()
