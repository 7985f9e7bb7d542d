"""Doors through a live process: MQTT sensor payloads over a real mosquitto
(TLS, passwords, ACL) and device frames over a pty, into
``tests/fuzz/door_host.py`` (the daemon's automation engine and firmware
bridge, no model).

After each input the test asks the process for its counters and waits until
the input is accounted for: a reading, or a drop counted by reason
(``malformed.*`` for MQTT, ``frames_rejected`` for serial). An input not
accounted for within the deadline is a hang; a process that exits is a
crash. RSS comes from ``/proc/<pid>/status`` before and after."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.serial_link import LineSplitter
from tests.fuzz.conftest import DEADLINE_MS, FUZZ, Door, rss_kib
from tests.fuzz.strategies import DEEP_JSON, JSON_VALUES, frames, mutated
from tests.fuzz.test_sensor_payloads import PAYLOADS
from tests.iot.conftest import NODE, IotBroker
from tests.iot.conftest import iot_broker as iot_broker  # the real broker, as a fixture here
from tests.offload.conftest import PREFIX, RawClient

REPO = Path(__file__).resolve().parents[2]
MAX_PAYLOAD = 1024


class Host:
    """``door_host`` as a child process, with a line-based control channel."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.door_host", json.dumps(spec)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._reply(30.0) == {"ready": True}

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        assert ready, "the door host did not answer"
        line = self.proc.stdout.readline()
        assert line, f"the door host exited ({self.proc.poll()})"
        return dict(json.loads(line))

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.poll() is None, f"the door host exited ({self.proc.returncode})"
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._reply(10.0)

    def wait_for(self, door: Door, count: Any, target: int) -> dict[str, Any]:
        """Poll until ``count(stats) >= target`` or the per-input deadline;
        the wait is the input's time in ``door.slowest_s``."""
        start = time.monotonic()
        while True:
            stats = self.stats()
            waited = time.monotonic() - start
            if count(stats) >= target or waited > DEADLINE_MS / 1000:
                door.slowest_s = max(door.slowest_s, waited)
                return stats
            time.sleep(0.001)

    def close(self) -> int:
        assert self.proc.stdin is not None
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        code = self.proc.wait(30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return code


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A raw pty: the master for the test, the slave's path for the host.
    The test keeps the slave open too, so the master never reads EIO."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def drain() -> None:  # the bridge's hellos and commands: read and drop
        while not stop.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 4096)
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    yield master, os.ttyname(slave)
    stop.set()
    reader.join(2)
    os.close(master)
    os.close(slave)


@pytest.fixture
def host(iot_broker: IotBroker, pty_pair: tuple[int, str]) -> Iterator[Host]:
    agent = iot_broker.settings("agent").model_dump(mode="json")
    spec = {
        "serial": pty_pair[1],
        "automation": {
            "node_id": NODE,
            "broker": {**agent, "topic_prefix": PREFIX},
            "discovery": False,
            "max_payload_bytes": MAX_PAYLOAD,
            "max_sensors": 32,
            "sensors": [
                {"topic": "home/sensors/json/+", "field": "temperature"},
                {"topic": "home/sensors/plain/+"},
            ],
            "rules": [
                {
                    "name": "hot",
                    "sensor": "*",
                    "when": {"kind": "threshold", "above": 30},
                    "actions": [{"do": "notify", "message": "hot"}],
                }
            ],
        },
    }
    process = Host(spec)
    yield process
    assert process.close() == 0


def _mqtt_seen(stats: dict[str, Any]) -> int:
    engine = stats["engine"]
    return int(engine["readings"]) + sum(
        int(v) for k, v in engine.items() if k.startswith("malformed.")
    )


def _frames_seen(stats: dict[str, Any]) -> int:
    bridge = stats["bridge"]
    return int(bridge["frames_accepted"]) + sum(bridge["frames_rejected"].values())


TOPICS = st.tuples(
    st.sampled_from(["json", "plain"]), st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)
)
MQTT_PAYLOADS = st.one_of(PAYLOADS, st.binary(min_size=MAX_PAYLOAD + 1, max_size=MAX_PAYLOAD + 64))


def test_mqtt_sensor_payloads_live(door: Door, host: Host, iot_broker: IotBroker) -> None:
    sensors = RawClient(iot_broker, "sensors")
    sent = 0
    door.rss_kib["before"] = rss_kib(host.proc.pid)

    @FUZZ
    @given(topic=TOPICS, payload=MQTT_PAYLOADS)
    def one(topic: tuple[str, str], payload: bytes) -> None:
        nonlocal sent
        sensors.publish(f"home/sensors/{topic[0]}/{topic[1]}", payload)
        sent += 1
        stats = host.wait_for(door, _mqtt_seen, sent)
        assert _mqtt_seen(stats) == sent, f"input {sent} not accounted for: {stats['engine']}"
        door.count("accounted")

    try:
        one()
    finally:
        sensors.close()
    stats = host.stats()
    door.rss_kib["after"] = rss_kib(host.proc.pid)
    door.detail.update({k: int(v) for k, v in stats["engine"].items() if isinstance(v, int)})
    assert host.proc.poll() is None


SERIAL_LINES = st.one_of(
    frames(int(time.time() * 1000)),
    st.binary(max_size=2100),
    st.binary(max_size=2100).map(lambda b: b + b"\n"),
    JSON_VALUES.map(lambda v: json.dumps(v).encode() + b"\n"),
    DEEP_JSON.map(lambda b: b + b"\n"),
    st.binary(max_size=64).flatmap(mutated),
)


def test_serial_frames_live(door: Door, host: Host, pty_pair: tuple[int, str]) -> None:
    master = pty_pair[0]
    mirror = LineSplitter()  # what the host's splitter makes of the same bytes
    expected = 0
    door.rss_kib["before"] = rss_kib(host.proc.pid)

    @FUZZ
    @given(data=SERIAL_LINES)
    def one(data: bytes) -> None:
        nonlocal expected
        view = memoryview(data)
        while view:
            view = view[os.write(master, view) :]
        expected += len(mirror.feed(data))
        stats = host.wait_for(door, _frames_seen, expected)
        assert _frames_seen(stats) == expected, f"{expected} lines, host: {stats['bridge']}"
        door.count("accounted")

    one()
    stats = host.stats()
    door.rss_kib["after"] = rss_kib(host.proc.pid)
    door.detail.update({f"rejected.{k}": v for k, v in stats["bridge"]["frames_rejected"].items()})
    door.detail["frames_accepted"] = stats["bridge"]["frames_accepted"]
    door.notes["lines"] = expected
    assert host.proc.poll() is None
