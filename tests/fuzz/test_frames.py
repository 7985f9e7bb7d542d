"""Door: device frames (``firmware_bridge.protocol``), in process.

Every line, whatever its bytes, must come back from :class:`Receiver` as a
``Frame`` or a ``Rejection`` with a reason, and be counted exactly once in
``accepted`` or ``rejected``; nothing may raise."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from firmware_bridge.protocol import Frame, Receiver, Rejection, decode
from tests.fuzz.conftest import FUZZ, Door
from tests.fuzz.strategies import DEEP_JSON, JSON_VALUES, frames, mutated, with_crc

NOW_MS = 1_773_568_800_000
HUGE_MIN = {
    "v": 1, "seq": 1, "kind": "announce", "exp": 0, "host": "", "dev": "sim1",
    "boot": "abcdef12", "fw": "1", "actuators": [],
    "sensors": [{"id": "temp", "type": "t", "value": "number", "min": 10**400}],
}  # fmt: skip

LINES = st.one_of(
    frames(NOW_MS),
    frames(NOW_MS),
    st.binary(max_size=2100),
    JSON_VALUES.map(lambda v: repr(v).encode("utf-8", "surrogatepass")),
    DEEP_JSON,
    st.binary(max_size=64).flatmap(mutated),
)


def test_device_frames(door: Door) -> None:
    receiver = Receiver("announce", clock_ms=lambda: NOW_MS)

    @FUZZ
    @given(line=LINES, source=st.sampled_from([None, "sim1"]))
    # Found by this test: a capability's min or max as an int too large for
    # a float raised OverflowError out of decode().
    @example(line=with_crc(HUGE_MIN), source=None)
    def one(line: bytes, source: str | None) -> None:
        before = receiver.accepted + receiver.rejected.total()
        result = door.run(lambda: receiver.receive(line, source=source))
        assert isinstance(result, Frame | Rejection)
        assert receiver.accepted + receiver.rejected.total() == before + 1
        ok = isinstance(result, Frame)
        door.tally(f"frame.{result.kind}" if ok else f"rejected.{result.reason}")
        assert isinstance(decode(line, now=NOW_MS), Frame | Rejection)

    one()
