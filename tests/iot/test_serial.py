"""The bridge and the simulated device over a pty pair: the host opens the
slave side with pyserial like a USB serial port; the device speaks on the
master side (in a thread, or as the ``simulate-device`` subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent.iot.bridge import Bridge, BridgeSettings
from firmware_bridge.protocol import (
    Command,
    Frame,
    FrameWriter,
    Hello,
    Nack,
    decode,
    encode,
    now_ms,
)
from firmware_bridge.serial_link import PtyPair, SerialLink
from firmware_bridge.simulator import Faults, SimulatedDevice
from tests.conftest import REPO
from tests.iot.conftest import AuditLog, SerialRig, wait_until

Start = Callable[..., SerialRig]


def test_command_ack_and_state_over_a_pty(serial_rig: Start) -> None:
    rig = serial_rig()
    assert rig.bridge.wait_for_device("sim1", 10)
    with rig.bridge.context(request_id="r1", source="test", untrusted=False):
        light = rig.bridge.actuate("sim1", "light", 65)
        heat = rig.bridge.actuate("sim1", "thermostat", 21.5)  # dangerous: the owner is asked
    assert light.ok and light.state == 65 and light.latency_s < 1.0
    assert heat.status == "unconfirmed" and heat.confirmation == "denied"
    assert rig.device.state == {"thermostat": 20.0, "light": 65, "lock": True, "valve": 0}
    assert rig.bridge.state("sim1", "light") == 65
    assert [a["status"] for a in rig.audit.actuations()] == ["done", "unconfirmed"]
    assert rig.owner.asked[0].action == {"device": "sim1", "actuator": "thermostat", "value": 21.5}


def test_readings_reach_the_bridge(serial_rig: Start) -> None:
    rig = serial_rig()
    assert rig.bridge.wait_for_device("sim1", 10)
    heard: list[Any] = []
    rig.bridge.subscribe(heard.append)
    rig.device.emit("temperature", 24.5)
    rig.device.emit("smoke", True)
    assert wait_until(lambda: rig.bridge.reading("sim1", "smoke"), 5)
    temperature = rig.bridge.reading("sim1", "temperature")
    assert temperature is not None and (temperature.value, temperature.unit) == (24.5, "C")
    assert [e.reading.sensor for e in heard if e.kind == "reading"] == ["temperature", "smoke"]


def test_malformed_serial_frames_and_bad_checksums_are_dropped(serial_rig: Start) -> None:
    rig = serial_rig()
    assert rig.bridge.wait_for_device("sim1", 10)
    stream = rig.device  # write garbage from the device's side of the line
    garbage = [
        b"\x00\x01\x02 line noise\n",
        b'{"v":1,"kind":"reading"}\n',
        b"x" * 5000 + b"\n",
        FrameWriter("sim1").line(Command("light", 1), 5000)[1].replace(b'"light"', b'"lighT"'),
    ]
    for chunk in garbage:
        os.write(rig.pty.master, chunk)
    assert wait_until(lambda: sum(rig.bridge.rejected.values()) >= 4, 5), rig.bridge.rejected
    assert {"not_json", "missing_field", "oversized", "bad_checksum"} <= set(rig.bridge.rejected)
    with rig.bridge.context(untrusted=False):
        assert rig.bridge.actuate("sim1", "light", 12).ok  # the line is still in step
    assert stream.state["light"] == 12


def test_a_device_that_never_acks_over_serial(serial_rig: Start) -> None:
    settings = BridgeSettings(ack_timeout_s=0.2, attempts=3)
    rig = serial_rig(settings, Faults(never_ack=True))
    assert rig.bridge.wait_for_device("sim1", 10)
    with rig.bridge.context(untrusted=False):
        failed = rig.bridge.actuate("sim1", "light", 30)
    assert (failed.status, failed.attempts) == ("no_ack", 3)
    assert wait_until(lambda: rig.device.log.counts["duplicates"] == 2, 5)
    assert rig.device.state["light"] == 0


def test_the_device_checks_ranges_itself() -> None:
    """Even a host that skipped its own checks cannot push the device out of range."""
    device = SimulatedDevice("sim1")
    host = FrameWriter("sim1")
    device.handle(host.line(Hello("00112233aabbccdd", now_ms()), 5000)[1])
    replies = [device.handle(host.line(Command(a, v), 5000)[1]) for a, v in
               [("thermostat", 95.0), ("light", 101), ("lock", "open"), ("fan", 1)]]  # fmt: skip
    codes = [frame.body.code for [(frame, _)] in replies if isinstance(frame.body, Nack)]
    assert codes == ["range", "range", "range", "unknown_actuator"]
    assert device.log.executed == []


def test_a_delayed_hello_cannot_turn_the_devices_clock_back() -> None:
    """A hello queued by a broker while the device was away arrives late; if
    the device took its clock from it, a stale command would look fresh."""
    boot = "00112233aabbccdd"
    device, host = SimulatedDevice("sim1"), FrameWriter("sim1")
    device.handle(host.line(Hello(boot, now_ms()), 30_000)[1])
    device.handle(host.line(Hello(boot, now_ms() - 3_000), 30_000)[1])
    stale = Frame("sim1", host.last_seq + 1, now_ms() - 1_000, Command("light", 5))
    [(reply, _)] = device.handle(encode(stale))
    assert isinstance(reply.body, Nack) and reply.body.code == "expired"
    assert device.log.executed == []


def test_commands_before_the_hosts_hello_are_refused() -> None:
    device = SimulatedDevice("sim1")
    [(frame, _)] = device.handle(FrameWriter("sim1").line(Command("light", 10), 5000)[1])
    assert isinstance(frame.body, Nack) and frame.body.code == "no_time"


# --- the simulate-device command in a subprocess --------------------------------------


@pytest.fixture
def simulator_process() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> tuple[subprocess.Popen[str], str]:
        cmd = [sys.executable, "-m", "edge_agent.cli.device", "--serial", "pty",
               "--device-id", "sim1", "--stdin", *extra]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("serial: "), first
        return proc, first.split(": ", 1)[1].strip()

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_simulate_device_command_over_serial(
    simulator_process: Callable[..., tuple[subprocess.Popen[str], str]],
) -> None:
    proc, path = simulator_process()
    audit = AuditLog()
    with Bridge(audit=audit) as bridge:
        bridge.attach(SerialLink(path))
        assert bridge.wait_for_device("sim1", 10)
        with bridge.context(untrusted=False):
            done = bridge.actuate("sim1", "light", 80)
        assert done.ok and done.state == 80
        assert proc.stdin is not None
        proc.stdin.write("temperature 28.5\n")
        proc.stdin.flush()
        reading = wait_until(lambda: bridge.reading("sim1", "temperature"), 10)
        assert reading.value == 28.5
    proc.terminate()
    assert proc.wait(10) == 0
    assert time.monotonic() > 0


def test_bridge_backend_lets_the_home_tools_drive_a_device(serial_rig: Start) -> None:
    from edge_agent.errors import ToolError
    from edge_agent.iot.bridge import BridgeBackend

    rig = serial_rig()
    assert rig.bridge.wait_for_device("sim1", 10)
    backend = BridgeBackend(
        rig.bridge, {"light.kitchen": "sim1/light", "temperature.kitchen": "sim1/temperature"}
    )
    with rig.bridge.context(untrusted=False):
        done = backend.set("light.kitchen", {"on": True, "brightness": 70})
        off = backend.set("light.kitchen", {"on": False, "brightness": 70})
    assert done["state"]["device_state"] == 70 and done["changed"]
    assert off["state"]["device_state"] == 0 and rig.device.state["light"] == 0
    rig.device.emit("temperature", 19.5)
    assert wait_until(lambda: rig.bridge.reading("sim1", "temperature"), 5)
    assert backend.read("temperature.kitchen")["value"] == 19.5
    with pytest.raises(ToolError, match="not mapped"):
        backend.set("lock.front", {"locked": False})


# --- the reference MicroPython firmware, run under CPython -----------------------------


class FakeBoard:
    """The firmware's hardware layer, without pins."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, Any]] = []
        self.values: dict[str, Any] = {"temperature": 21.5, "smoke": False, "motion": False}

    def apply(self, actuator: str, value: Any) -> None:
        self.applied.append((actuator, value))

    def read(self, sensor: str) -> Any:
        return self.values[sensor]

    def regulate(self, temperature: Any) -> None:
        del temperature


def load_firmware() -> Any:
    import importlib.util

    path = REPO / "firmware_bridge" / "firmware" / "main.py"
    spec = importlib.util.spec_from_file_location("edge_agent_reference_firmware", path)
    assert spec is not None and spec.loader is not None
    firmware = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(firmware)
    return firmware


def test_reference_firmware_speaks_the_same_protocol() -> None:
    """``firmware/main.py``'s protocol core, driven over a pty by the real
    bridge: clockless announce, hello, command, ack, its own range check."""
    import threading

    firmware = load_firmware()
    board, stop = FakeBoard(), threading.Event()
    with PtyPair() as pty, Bridge() as bridge:
        stream = pty.device_stream()
        node = firmware.Node("esp32-a1b2c3", stream.write, board,
                             lambda: int(time.monotonic() * 1000), lambda a, b: a - b,
                             "0123456789abcdef")  # fmt: skip

        def loop() -> None:
            while not stop.is_set():
                data = stream.read_some(0.02)
                if data:
                    node.feed(data)
                node.poll()

        worker = threading.Thread(target=loop, daemon=True)
        bridge.attach(SerialLink(pty.path))
        worker.start()
        try:
            assert bridge.wait_for_device("esp32-a1b2c3", 10)
            with bridge.context(untrusted=False):
                done = bridge.actuate("esp32-a1b2c3", "light", 55)
            assert done.ok and done.state == 55
            assert board.applied == [("light", 55)]
            board.values["smoke"] = True
            smoke = lambda: bridge.reading("esp32-a1b2c3", "smoke")  # noqa: E731
            assert wait_until(lambda: getattr(smoke(), "value", None) is True, 5)
            out_of_range = FrameWriter("esp32-a1b2c3").line(Command("thermostat", 99.0), 5000)
            node.handle(out_of_range[1].rstrip(b"\n"))
            assert board.applied == [("light", 55)]  # the firmware refused it itself
            assert bridge.rejected == {}
        finally:
            stop.set()
            worker.join(5)


def test_reference_firmware_keeps_its_clock_and_refuses_stale_commands() -> None:
    firmware, board, sent = load_firmware(), FakeBoard(), []
    ticks = lambda: int(time.monotonic() * 1000)  # noqa: E731
    node = firmware.Node("esp32-a1b2c3", sent.append, board, ticks, lambda a, b: a - b,
                         "0123456789abcdef")  # fmt: skip
    host, boot = FrameWriter("esp32-a1b2c3"), "00112233aabbccdd"
    node.feed(host.line(Command("light", 5), 5_000)[1])  # before any hello: no clock
    node.feed(host.line(Hello(boot, now_ms()), 30_000)[1])
    node.feed(host.line(Hello(boot, now_ms() - 3_000), 30_000)[1])  # delayed in a queue
    node.feed(encode(Frame("esp32-a1b2c3", host.last_seq + 1, now_ms() - 1_000,
                           Command("light", 6))))  # fmt: skip
    replies = [decode(line) for line in sent]
    nacks = [r.body.code for r in replies if isinstance(r, Frame) and isinstance(r.body, Nack)]
    assert nacks == ["expired"] and board.applied == []  # no clock yet: not even a nack
    assert all(isinstance(r, Frame) for r in replies), replies  # all valid for the host


def test_simulate_device_registers_as_a_subcommand() -> None:
    import argparse

    from edge_agent.cli import device

    parser = argparse.ArgumentParser()
    device.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate-device", "--serial", "pty", "--device-id", "porch"])
    assert args.handler is device.run and args.serial == "pty"
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate-device", "--device-id", "porch"])  # needs --mqtt or --serial
