"""Automation inside the real daemon (``python -m edge_agent run``): readings
from a device over MQTT and from a device on a pty cross rules, the real
model decides, the devices ack, and the chain shows in the journal, the
audit log and ``/metrics``; bad input of every kind arrives meanwhile and
the daemon stays up. Also: the example config of the README walk-through."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from edge_agent.config import load_config
from edge_agent.iot.bridge import Bridge
from edge_agent.iot.mqtt_link import DeviceMqttLink
from firmware_bridge.protocol import Reading
from firmware_bridge.serial_link import PtyPair, SerialLink
from firmware_bridge.simulator import Faults, SimulatedDevice
from tests.daemon.conftest import QWEN, DaemonProcess, run_daemon
from tests.iot.conftest import NODE, IotBroker, broker_table, wait_until
from tests.offload.conftest import RawClient

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "iot.toml"


def _config(broker: IotBroker, pty: str) -> str:
    return f"""
[model]
name = "{QWEN}"
n_threads = 2
max_tokens = 96

[agent]
max_steps = 1

[ladder]
enabled = false  # the rules' decisions are what this tests, not the climb

[server]
request_timeout_s = 1800
drain_timeout_s = 600

[automation]
node_id = "{NODE}"
max_payload_bytes = 1024

{broker_table(broker)}

[automation.devices]
mqtt = true
serial = [{{ path = "{pty}" }}]

[automation.devices.safety]
ack_timeout_s = 0.3
attempts = 2
confirm_timeout_s = 2

[[automation.sensors]]
topic = "home/sensors/+"
field = "temperature"
unit = "C"

[[automation.rules]]
name = "room-hot"
sensor = "home/sensors/*"
when = {{ kind = "threshold", above = 30 }}
[[automation.rules.actions]]
do = "notify"
message = "{{sensor}} is at {{value}}"
""" + "".join(
        f"""
[[automation.rules]]
name = "hot-{dev}"
sensor = "{dev}/temperature"
when = {{ kind = "threshold", above = 28 }}
[[automation.rules.actions]]
do = "agent"
instruction = "It is too warm: set the {dev} light to {level} percent brightness."
tools = ["set_{dev}_light", "notify"]
"""
        for dev, level in (("sim1", 40), ("sim2", 60))
    )


@pytest.fixture
def daemon_with_automation(
    iot_broker: IotBroker, tmp_path: Path
) -> Iterator[tuple[DaemonProcess, PtyPair]]:
    pty = PtyPair()
    config = tmp_path / "iot.toml"
    config.write_text(_config(iot_broker, pty.path))
    try:
        daemon = run_daemon(config, tmp_path / "state", tmp_path / "daemon.log", token=None)
        try:
            yield daemon, pty
        finally:
            daemon.stop(signal.SIGTERM, timeout=120)
    finally:
        pty.close()


def metrics(daemon: DaemonProcess) -> dict[str, float]:
    text = httpx.get(f"{daemon.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(edge_agent_\w+)(\{.*\})? (\S+)$", line)
        if match:
            out[f"{match.group(1)}{match.group(2) or ''}"] = float(match.group(3))
    return out


def counter(values: dict[str, float], family: str, name: str) -> float:
    return values.get(f'edge_agent_{family}_events{{counter="{name}"}}', 0.0)


def bridge_of(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if "_bridge_" in k or "_automation_" in k}


def audit_rows(daemon: DaemonProcess) -> list[tuple[str, str | None, dict[str, Any]]]:
    with closing(sqlite3.connect(daemon.journal, timeout=10)) as db:
        rows = db.execute("SELECT kind, request_id, detail FROM audit ORDER BY id").fetchall()
    return [(k, r, json.loads(d)) for k, r, d in rows]


@pytest.mark.model
@pytest.mark.slow
def test_daemon_runs_rules_to_devices_over_mqtt_and_pty_and_survives_bad_input(
    daemon_with_automation: tuple[DaemonProcess, PtyPair],
    iot_broker: IotBroker,
    raw: Callable[[str], RawClient],
) -> None:
    daemon, pty = daemon_with_automation
    sim1, sim2 = SimulatedDevice("sim1"), SimulatedDevice("sim2")
    absurd = SimulatedDevice("bad1", faults=Faults(absurd_ranges=True))
    try:
        sim1.serve_link(DeviceMqttLink(iot_broker.settings("sim1"), sim1.id))
        sim2.serve_serial(pty.device_stream())
        absurd.serve_link(DeviceMqttLink(iot_broker.settings("bad1"), absurd.id))
        assert sim1.synced.wait(20) and sim2.synced.wait(20), daemon.log()
        assert wait_until(lambda: counter(metrics(daemon), "bridge", "devices") == 2, 20)

        # Bad input, while running: sensor payloads of every bad kind...
        sensors = raw("sensors")
        now = time.time()
        for payload in (
            b"{not json",
            json.dumps({"temperature": 1, "pad": "x" * 2000}).encode(),
            b'{"temperature": [1, 2]}',
            json.dumps({"temperature": 35, "ts": now - 3600}).encode(),
        ):
            sensors.publish("home/sensors/k1", payload)
        sensors.publish("home/sensors/k2", json.dumps({"temperature": 20, "ts": now}).encode())
        sensors.publish("home/sensors/k2", json.dumps({"temperature": 20, "ts": now - 5}).encode())
        sensors.publish("home/sensors/k1", b'{"temperature": 31}')  # the good one: notify
        # ...and frames on the serial line: garbage, a bad checksum, a replay.
        _, line = sim2._writer.line(Reading("motion", True), 5000)
        _, other = sim2._writer.line(Reading("smoke", False), 5000)
        os.write(pty.master, b"\x00\xff\n")  # not UTF-8
        os.write(pty.master, b"not a frame\n")
        os.write(pty.master, other.replace(b'"smoke"', b'"smokE"'))  # a bad checksum
        os.write(pty.master, line + line)  # the second is a replay

        sim1.emit("temperature", 29.5)
        sim2.emit("temperature", 31.0)
        assert wait_until(lambda: (sim1.state["light"], sim2.state["light"]) == (40, 60), 600), (
            sim1.state, sim2.state, daemon.log(),
        )  # fmt: skip
        rows = daemon.wait_rows(
            lambda rs: sum(r["source"] == "automation" and r["status"] == "done" for r in rs) == 2
        )
        assert daemon.alive(), daemon.log()
        jobs_done = 'edge_agent_requests_total{outcome="call",source="automation"}'  # sorted
        values = wait_until(lambda: (m := metrics(daemon)).get(jobs_done) == 2 and m, 30)
        audit = audit_rows(daemon)
        burst = burst_figures(daemon, sensors)
    finally:
        for device in (sim1, sim2, absurd):
            device.close()

    # The journal: two automation jobs, done, each carrying its reading.
    jobs = {r["id"]: r for r in rows if r["source"] == "automation"}
    readings = {i: json.loads(r["payload"])["options"]["automation"]["reading"]
                for i, r in jobs.items()}  # fmt: skip
    assert sorted(r["sensor"] for r in readings.values()) == ["sim1/temperature",
                                                              "sim2/temperature"]  # fmt: skip
    # The audit log: each actuation names its job and the reading that caused it.
    actuations = [(rid, d) for kind, rid, d in audit if kind == "actuation"]
    assert {(d["device"], d["actuator"], d["value"], d["status"]) for _, d in actuations} == {
        ("sim1", "light", 40, "done"), ("sim2", "light", 60, "done"),
    }  # fmt: skip
    for rid, detail in actuations:
        assert rid in jobs and detail["reading"] == readings[rid]
        assert detail["request"]["source"] == "automation"
    assert any(kind == "device_refused" for kind, _, _ in audit), audit  # the absurd device
    # /metrics: the jobs, the rules, the bridge, and every bad input counted.
    assert values, "the two automation jobs never showed in /metrics"
    assert counter(values, "automation", "fired") == 3
    assert counter(values, "automation", "notify.sent") == 1
    assert counter(values, "automation", "agent.dispatched") == 2
    for reason in ("not_json_object", "oversized", "wrong_type", "expired", "replayed"):
        assert counter(values, "automation", f"malformed.{reason}") == 1, (
            reason,
            bridge_of(values),
        )
    for reason in ("not_utf8", "not_json", "bad_checksum", "replayed"):
        assert counter(values, "bridge", f"frames_rejected.{reason}") >= 1, (
            reason,
            bridge_of(values),
        )
    assert counter(values, "bridge", "devices") == 2  # bad1 was never registered
    # The burst: every firing handled or coalesced, none dropped, memory flat.
    print("daemon burst:", burst)
    assert burst["readings"] == 2000 and burst["fired"] == 1000, burst
    assert burst["fast.dropped"] == 0 and burst["pending.fast"] == 0, burst
    assert burst["fast.queued"] == burst["fast.dispatched"] + burst["fast.coalesced"], burst
    assert burst["fast.queued"] == burst["fired"], burst
    assert burst["rss_growth_mib"] < 8, burst


def burst_figures(daemon: DaemonProcess, sensors: RawClient) -> dict[str, float]:
    """Two bursts of 1,000 readings over 10 sensors, each swinging across the
    room-hot threshold on every message (500 firings a burst): the counter
    deltas over both, and the daemon's RSS growth over the second."""
    names = ("readings", "fired", "fast.queued", "fast.coalesced", "fast.dispatched",
             "fast.dropped", "notify.sent", "notify.suppressed")  # fmt: skip
    before = metrics(daemon)
    process = psutil.Process(daemon.proc.pid)
    rss = []
    for round_ in range(2):
        infos = []
        for i in range(1000):
            payload = json.dumps({"temperature": 40 if (i // 10) % 2 else 20}).encode()
            infos.append(sensors._client.publish(f"home/sensors/t{i % 10}", payload, qos=1))
        for info in infos:
            info.wait_for_publish(30)
        target = counter(before, "automation", "readings") + 1000 * (round_ + 1)

        def settled(target: float = target) -> dict[str, float] | None:
            now = metrics(daemon)
            done = counter(now, "automation", "readings") >= target
            idle = counter(now, "automation", "pending.fast") == 0
            return now if done and idle else None

        after = wait_until(settled, 60)
        assert after, metrics(daemon)
        time.sleep(0.5)
        rss.append(process.memory_info().rss)
    after = metrics(daemon)
    out = {n: counter(after, "automation", n) - counter(before, "automation", n) for n in names}
    out["pending.fast"] = counter(after, "automation", "pending.fast")
    out["rss_growth_mib"] = round((rss[1] - rss[0]) / 2**20, 2)
    out["rss_mib"] = round(rss[1] / 2**20, 1)
    return out


def test_the_example_config_loads_and_its_rules_fit_the_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README walk-through's config is valid, the environment can point
    it elsewhere, and every tool its rules name is one the simulator offers."""
    config = load_config(EXAMPLE)
    auto = config.automation
    assert auto is not None and auto.broker is not None and auto.devices.mqtt
    assert {r.name for r in auto.rules} == {"too-warm", "smoke", "room-hot"}
    monkeypatch.setenv("EDGE_AGENT_AUTOMATION__BROKER__PORT", "18830")
    monkeypatch.setenv("EDGE_AGENT_AUTOMATION__DEVICES__SERIAL", '[{"path": "/dev/ttyUSB0"}]')
    moved = load_config(EXAMPLE).automation
    assert moved is not None and moved.broker is not None and moved.broker.port == 18830
    assert [str(p.path) for p in moved.devices.serial] == ["/dev/ttyUSB0"]
    assert moved.rules == auto.rules

    pty = PtyPair()
    sim = SimulatedDevice("sim1")
    with Bridge(auto.devices.safety) as bridge:
        bridge.attach(SerialLink(pty.path))
        sim.serve_serial(pty.device_stream())
        try:
            assert bridge.wait_for_device("sim1", 10)
            offered = {t.name for t in bridge.tools()} | {"notify"}
        finally:
            sim.close()
            pty.close()
    for rule in auto.rules:
        for action in rule.actions:
            if action.do == "agent":
                assert set(action.tools) <= offered, (rule.name, offered)
            if action.do == "command":
                assert f"set_{action.device}_{action.actuator}" in offered
