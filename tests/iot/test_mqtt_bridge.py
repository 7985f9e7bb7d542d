"""The bridge and the simulated device over a real mosquitto (TLS, passwords,
ACL): announcements become tools, the device's correlated reply is the ack,
expired commands never run, silence and absurd devices are handled."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent.iot.bridge import Bridge, BridgeSettings
from edge_agent.iot.mqtt_link import DeviceMqttLink, MqttConfirmer, MqttLink, device_topics
from firmware_bridge.protocol import Command, FrameWriter, Reading, decode, encode, now_ms
from firmware_bridge.simulator import Faults, SimulatedDevice
from tests.iot.conftest import NODE, AuditLog, IotBroker, Owner, wait_until
from tests.offload.conftest import PREFIX, RawClient

Rig = Callable[..., tuple[Bridge, Owner, AuditLog]]


@pytest.fixture
def mqtt_bridge(iot_broker: IotBroker) -> Iterator[Rig]:
    """A factory for a bridge on the broker as ``agent``; closed at teardown."""
    bridges: list[Bridge] = []

    def start(
        settings: BridgeSettings | None = None, **kwargs: Any
    ) -> tuple[Bridge, Owner, AuditLog]:
        owner, audit = Owner(), AuditLog()
        bridge = Bridge(settings, confirm=kwargs.pop("confirm", owner), audit=audit)
        bridges.append(bridge)
        bridge.attach(MqttLink(iot_broker.settings("agent")))
        return bridge, owner, audit

    yield start
    for bridge in bridges:
        bridge.close()


@pytest.fixture
def device(iot_broker: IotBroker) -> Iterator[Callable[..., SimulatedDevice]]:
    devices: list[SimulatedDevice] = []

    def start(name: str = "sim1", faults: Faults | None = None) -> SimulatedDevice:
        sim = SimulatedDevice(name, faults=faults or Faults())
        devices.append(sim)
        sim.serve_link(DeviceMqttLink(iot_broker.settings(name), sim.id))
        return sim

    yield start
    for sim in devices:
        sim.close()


def test_announcement_registers_tools_with_their_ranges(mqtt_bridge: Rig, device: Any) -> None:
    bridge, _, _ = mqtt_bridge()
    device("sim1")
    assert bridge.wait_for_device("sim1", 10)
    tools = {t.name: t for t in bridge.tools()}
    assert set(tools) == {
        "set_sim1_thermostat", "set_sim1_light", "set_sim1_lock", "set_sim1_valve", "read_sim1",
    }  # fmt: skip
    thermostat = tools["set_sim1_thermostat"].spec.parameters["properties"]["target_c"]
    assert (thermostat["minimum"], thermostat["maximum"], thermostat["type"]) == (5, 30, "number")
    light = tools["set_sim1_light"].spec.parameters["properties"]["brightness"]
    assert (light["minimum"], light["maximum"], light["type"]) == (0, 100, "integer")
    assert tools["set_sim1_lock"].policy.side_effect == "dangerous"
    assert tools["set_sim1_lock"].policy.requires_confirmation
    assert tools["set_sim1_light"].policy.side_effect == "actuate"
    sensor = tools["read_sim1"].spec.parameters["properties"]["sensor"]
    assert sensor["enum"] == ["temperature", "smoke", "motion"]


def test_command_is_acked_by_the_devices_correlated_reply(
    mqtt_bridge: Rig, device: Any, raw: Callable[[str], RawClient]
) -> None:
    watcher = raw("agent")
    watcher.subscribe(f"{PREFIX}/fw/sim1/down")
    bridge, _, audit = mqtt_bridge()
    sim = device("sim1")
    assert bridge.wait_for_device("sim1", 10)
    with bridge.context(request_id="req-1", source="test", untrusted=False):
        done = bridge.actuate("sim1", "light", 40)
    assert done.ok, done
    assert (done.state, done.attempts) == (40, 1)
    assert sim.state["light"] == 40 and bridge.state("sim1", "light") == 40
    assert sim.log.executed == [(done.seq, "light", 40)]
    command = _next_command(watcher)
    assert command.properties.MessageExpiryInterval >= 1
    assert command.properties.ResponseTopic == device_topics(PREFIX, "sim1").up
    assert command.properties.CorrelationData == str(done.seq).encode()
    [record] = audit.actuations()
    assert record["status"] == "done" and record["request"]["id"] == "req-1"


def _next_command(watcher: RawClient) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = watcher.next_message(timeout=1)
        if message is not None and b'"kind":"command"' in message.payload:
            return message
    pytest.fail("no command seen on the device's down topic")


def test_expired_command_never_executes(
    mqtt_bridge: Rig, device: Any, iot_broker: IotBroker, raw: Callable[[str], RawClient]
) -> None:
    settings = BridgeSettings(command_ttl_s=1.0, ack_timeout_s=0.4, attempts=2)
    bridge, _, audit = mqtt_bridge(settings)
    sim = device("sim1")
    assert bridge.wait_for_device("sim1", 10)
    sim.pause_link()  # offline; the broker keeps its session and queues QoS 1
    with bridge.context(untrusted=False):
        missed = bridge.actuate("sim1", "light", 70)
    assert missed.status == "no_ack"
    time.sleep(1.5)  # the command's expiry passes while the device is away
    sim.resume_link(DeviceMqttLink(iot_broker.settings("sim1"), sim.id))
    assert wait_until(lambda: sim.log.counts["hello"] >= 2, 10)
    # A command frame that has expired but is otherwise perfect, straight onto
    # the device's topic (the broker's expiry is not the only guard).
    injector = raw("agent")
    stale = FrameWriter("sim1", clock_ms=lambda: now_ms() - 60_000)
    _, line = stale.line(Command("light", 90), 1_000)
    injector.publish(device_topics(PREFIX, "sim1").down, line)
    assert wait_until(lambda: sim.log.counts["expired"] >= 1, 10)
    assert sim.state["light"] == 0 and sim.log.executed == []
    assert [a["status"] for a in audit.actuations()] == ["no_ack"]


def test_device_that_never_acks_is_retried_then_fails_clearly(
    mqtt_bridge: Rig, device: Any
) -> None:
    settings = BridgeSettings(ack_timeout_s=0.3, attempts=3, command_ttl_s=5)
    bridge, _, audit = mqtt_bridge(settings)
    sim = device("sim1", Faults(never_ack=True))
    assert bridge.wait_for_device("sim1", 10)
    started = time.monotonic()
    with bridge.context(untrusted=False):
        failed = bridge.actuate("sim1", "light", 10)
    elapsed = time.monotonic() - started
    assert failed.status == "no_ack" and failed.attempts == 3
    assert "no ack after 3 attempt(s)" in failed.reason
    assert 0.8 < elapsed < 3.0
    # The same frame three times: one command, two duplicates, nothing done twice.
    assert wait_until(lambda: sim.log.counts["duplicates"] == 2, 5)
    assert sim.log.counts["commands"] == 1
    assert audit.actuations()[-1]["status"] == "no_ack"


def test_absurd_ranges_are_refused(mqtt_bridge: Rig, device: Any) -> None:
    bridge, _, audit = mqtt_bridge()
    device("bad1", Faults(absurd_ranges=True))
    assert wait_until(lambda: bridge.stats["devices_refused"] >= 1, 10)
    assert bridge.devices() == [] and bridge.tools() == []
    refused = [d for k, d, _ in audit.records if k == "device_refused"]
    assert "absurd" in refused[0]["problems"][0]
    with bridge.context(untrusted=False):
        assert bridge.actuate("bad1", "thermostat", 500.0).status == "offline"


def test_bad_frames_are_dropped_and_the_bridge_stays_up(
    mqtt_bridge: Rig, device: Any, raw: Callable[[str], RawClient]
) -> None:
    bridge, _, _ = mqtt_bridge()
    up = device_topics(PREFIX, "sim2").up
    forger = raw("sim2")
    writer = FrameWriter("sim2")
    good = writer.line(Reading("temperature", 20.5), 10_000)[1]
    other = FrameWriter("sim1").line(Reading("temperature", 1.0), 10_000)[1]
    expired = FrameWriter("sim2", clock_ms=lambda: now_ms() - 60_000).line(
        Reading("temperature", 1.0), 1_000
    )[1]
    wrong_type = json.loads(writer.line(Reading("temperature", 1.0), 10_000)[1])
    wrong_type["seq"] = "seven"
    payloads = {
        "not_json": b"{this is not json",
        "oversized": b"{" + b" " * 5000 + b"}",
        "wrong_type": json.dumps(wrong_type).encode(),
        "bad_checksum": good.replace(b"20.5", b"99.5"),
        "expired": expired,
        "wrong_device": other,
        "not_utf8": b"\xff\xfe{}",
    }
    for payload in payloads.values():
        forger.publish(up, payload)
    forger.publish(up, good)
    forger.publish(up, good)  # the same frame again: a replay
    expected = {**dict.fromkeys(payloads, 1), "replayed": 1}
    assert wait_until(lambda: dict(bridge.rejected) == expected, 10), dict(bridge.rejected)
    sim = device("sim1")  # and the bridge still works for everyone else
    assert bridge.wait_for_device("sim1", 10)
    with bridge.context(untrusted=False):
        assert bridge.actuate("sim1", "light", 5).ok
    assert sim.state["light"] == 5


def test_device_with_bad_checksums_is_never_registered(mqtt_bridge: Rig, device: Any) -> None:
    bridge, _, _ = mqtt_bridge()
    device("sim2", Faults(bad_checksum=True))
    assert wait_until(lambda: bridge.rejected["bad_checksum"] >= 2, 10)
    assert bridge.devices() == []


def test_confirmation_over_the_mqtt_confirm_topic(
    mqtt_bridge: Rig, device: Any, iot_broker: IotBroker, raw: Callable[[str], RawClient]
) -> None:
    """The owner approves on the confirm topic, bound to the exact action's hash;
    a reply for other arguments, or none at all, is a no."""
    owner = raw("owner")
    owner.subscribe(f"{PREFIX}/{NODE}/confirm/request")
    with MqttConfirmer(iot_broker.settings("agent"), node_id=NODE) as confirmer:
        bridge, _, audit = mqtt_bridge(BridgeSettings(confirm_timeout_s=3), confirm=confirmer)
        sim = device("sim1")
        assert bridge.wait_for_device("sim1", 10)
        answers = iter([
            lambda req: {"id": req["id"], "approve": True, "args_hash": req["args_hash"]},
            lambda req: {"id": req["id"], "approve": True, "args_hash": "0" * 64},
            None,
        ])  # fmt: skip
        results = [_confirmed_unlock(bridge, owner, next(answers)) for _ in range(3)]
    assert [r.status for r in results] == ["done", "unconfirmed", "unconfirmed"]
    assert [r.confirmation for r in results] == ["approved", "mismatch", "timeout"]
    assert sim.log.executed == [(results[0].seq, "lock", False)]
    assert [a["confirmation"] for a in audit.actuations()] == ["approved", "mismatch", "timeout"]


def _confirmed_unlock(bridge: Bridge, owner: RawClient, answer: Any) -> Any:
    import threading

    box: list[Any] = []
    worker = threading.Thread(
        target=lambda: box.append(_unlock(bridge)), name="unlock", daemon=True
    )
    worker.start()
    message = owner.next_message(timeout=5)
    assert message is not None
    request = json.loads(message.payload)
    assert request["action"] == {"device": "sim1", "actuator": "lock", "value": False}
    if answer is not None:
        reply = json.dumps(answer(request)).encode()
        owner.publish(message.properties.ResponseTopic, reply,
                      correlation=message.properties.CorrelationData)  # fmt: skip
    worker.join(10)
    return box[0]


def _unlock(bridge: Bridge) -> Any:
    with bridge.context(untrusted=False):
        return bridge.actuate("sim1", "lock", False)


def test_frames_round_trip_through_encode_and_decode() -> None:
    frame, line = FrameWriter("sim1").line(Command("light", 5), 5_000)
    assert decode(line) == frame and encode(frame) == line


def test_simulate_device_command_over_mqtt(mqtt_bridge: Rig, iot_broker: IotBroker) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    settings = iot_broker.settings("sim1")
    cmd = [sys.executable, "-m", "edge_agent.cli.device", "--mqtt", f"127.0.0.1:{iot_broker.port}",
           "--device-id", "sim1", "--tls-ca", str(settings.tls_ca), "--username", "sim1",
           "--password-file", str(settings.password_file), "--log-level", "WARNING"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "device sim1 ready"
        bridge, _, _ = mqtt_bridge()
        assert bridge.wait_for_device("sim1", 10)
        with bridge.context(untrusted=False):
            assert bridge.actuate("sim1", "light", 33).state == 33
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
