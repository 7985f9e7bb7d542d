"""Fixtures for the IoT tests: a real mosquitto (TLS, passwords, ACL) with
the firmware and automation topics, a simulated device over a pty pair or
MQTT, and a bridge attached to it. Nothing here is a mock.

The broker reuses the offload fixtures' :class:`~tests.offload.conftest.Broker`
(and its session CA) with more users and an ACL of its own:

* devices (``sim1``, ``sim2``, ``bad1``) may each read only their own
  ``fw/<id>/down`` and write only their own ``fw/<id>/up`` and status;
* ``agent`` (the bridge, the automation engine, the confirmer) reads the
  devices' ``up``, writes their ``down``, reads ``home/sensors/#`` and owns
  ``edge-agent/hub/#`` and ``homeassistant/#``;
* ``sensors`` publishes third-party readings; ``owner`` answers confirmations;
* ``hass`` is Home Assistant: it reads discovery, states and availability
  and writes only the command topics.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_agent.iot.bridge import Bridge, BridgeSettings, ConfirmRequest
from edge_agent.routing.offload.mqtt import BrokerSettings
from firmware_bridge.serial_link import PtyPair, SerialLink
from firmware_bridge.simulator import Faults, SimulatedDevice
from tests.offload.conftest import PREFIX, Broker, Pki, RawClient, write_secret
from tests.offload.conftest import pki as pki  # the session CA, as a fixture here too

NODE = "hub"
DEVICE_USERS = ("sim1", "sim2", "bad1")
OTHER_USERS = ("agent", "sensors", "owner", "hass")


def _iot_acl() -> str:
    fw = f"{PREFIX}/fw"
    return "\n".join(
        [
            f"pattern read {fw}/%u/down",
            f"pattern write {fw}/%u/up",
            f"pattern readwrite {fw}/%u/status",
            "",
            "user agent",
            f"topic read {fw}/+/up",
            f"topic read {fw}/+/status",
            f"topic readwrite {fw}/+/down",
            "topic read home/sensors/#",
            f"topic readwrite {PREFIX}/{NODE}/#",
            "topic readwrite homeassistant/#",
            "",
            "user sensors",
            "topic write home/sensors/#",
            "",
            "user owner",
            f"topic read {PREFIX}/+/confirm/request",
            f"topic write {PREFIX}/+/confirm/reply",
            f"topic read {PREFIX}/{NODE}/#",
            "topic read homeassistant/#",
            "",
            "user hass",
            "topic read homeassistant/#",
            f"topic read {PREFIX}/{NODE}/#",
            f"topic write {PREFIX}/{NODE}/devices/+/+/set",
            "",
        ]
    )


class IotBroker(Broker):
    """The offload broker with the IoT users and ACL."""

    def _write_config(self, pki: Pki) -> Path:
        for user in (*DEVICE_USERS, *OTHER_USERS):
            self.passwords[user] = secrets.token_urlsafe(16)
            self.password_files[user] = write_secret(self.folder / f"{user}.password",
                                                     self.passwords[user])  # fmt: skip
        config = super()._write_config(pki)
        (self.folder / "acl").write_text(_iot_acl())
        return config

    def settings(self, user: str, **overrides: Any) -> BrokerSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "tls_ca": self.ca_file,
            "username": user,
            "password_file": self.password_files[user],
            "connect_timeout_s": 5,
        }
        return BrokerSettings(**{**values, **overrides})


def broker_table(broker: IotBroker, user: str = "agent") -> str:
    """The ``[automation.broker]`` table of a daemon config for ``broker``."""
    settings = broker.settings(user)
    return f"""[automation.broker]
host = "127.0.0.1"
port = {settings.port}
tls_ca = "{settings.tls_ca}"
username = "{user}"
password_file = "{settings.password_file}"
topic_prefix = "{PREFIX}"
"""


@pytest.fixture
def iot_broker(pki: Pki, tmp_path: Path) -> Iterator[IotBroker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = IotBroker(folder, pki)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def raw(iot_broker: IotBroker) -> Iterator[Callable[[str], RawClient]]:
    """A factory: ``raw("owner")`` logs in a plain paho client, closed at teardown."""
    clients: list[RawClient] = []

    def connect(user: str) -> RawClient:
        clients.append(RawClient(iot_broker, user))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


# --- the owner who answers confirmations ------------------------------------------


@dataclass
class Owner:
    """A scripted owner: approves exactly the actions in ``approve`` (by
    their content, so the approval is bound to the hash), says no to the
    rest, and remembers every question."""

    approve: list[dict[str, Any]] = field(default_factory=list)
    asked: list[ConfirmRequest] = field(default_factory=list)
    silent: bool = False  # never answers: the bridge's timeout must be a no

    def __call__(self, request: ConfirmRequest, timeout_s: float) -> str | None:
        self.asked.append(request)
        if self.silent:
            time.sleep(timeout_s + 1)
            return None
        return request.args_hash if request.action in self.approve else None


class AuditLog:
    """An in-memory audit sink with the Journal's signature."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any], str | None]] = []
        self._lock = threading.Lock()

    def audit(self, kind: str, detail: Any = None, *, request_id: str | None = None) -> None:
        with self._lock:
            self.records.append((kind, json.loads(json.dumps(detail or {})), request_id))

    def actuations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for k, d, _ in self.records if k == "actuation"]


# --- a device on a pty, and a bridge ------------------------------------------------


@dataclass
class SerialRig:
    pty: PtyPair
    device: SimulatedDevice
    bridge: Bridge
    owner: Owner
    audit: AuditLog


@pytest.fixture
def serial_rig() -> Iterator[Callable[..., SerialRig]]:
    """A factory: ``serial_rig(settings=..., faults=...)`` starts a bridge on
    the slave side of a fresh pty pair and a simulated device ``sim1`` on the
    master side; both are closed at teardown."""
    made: list[SerialRig] = []

    def start(settings: BridgeSettings | None = None, faults: Faults | None = None) -> SerialRig:
        owner, audit = Owner(), AuditLog()
        pty = PtyPair()
        bridge = Bridge(settings, confirm=owner, audit=audit)
        bridge.attach(SerialLink(pty.path))
        device = SimulatedDevice("sim1", faults=faults or Faults())
        rig = SerialRig(pty, device, bridge, owner, audit)
        made.append(rig)
        device.serve_serial(pty.device_stream())
        return rig

    yield start
    for rig in made:
        rig.bridge.close()
        rig.device.close()
        rig.pty.close()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return check()


def drain(q: queue.Queue[Any]) -> list[Any]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out
