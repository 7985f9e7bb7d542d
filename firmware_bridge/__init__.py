"""edge-agent ⇄ microcontroller firmware: protocol, links, bridge, simulator.

* :mod:`~firmware_bridge.protocol`: the wire format (pure; ``PROTOCOL.md``).
* :mod:`~firmware_bridge.serial_link`, :mod:`~firmware_bridge.mqtt_link`:
  the same frames over a serial port (pyserial) and over MQTT v5.
* :mod:`~firmware_bridge.bridge`: devices → tools, and the actuator safety.
* :mod:`~firmware_bridge.simulator`: a virtual device for tests and laptops.
* ``firmware/``: reference MicroPython firmware for an ESP32.

Importing this package loads neither paho nor pyserial; the names below
load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_bridge.bridge import (
        Actuation,
        ActuationContext,
        Bridge,
        BridgeSettings,
        ConfirmRequest,
        HostRunner,
    )
    from firmware_bridge.mqtt_link import MqttConfirmer, MqttLink
    from firmware_bridge.protocol import PROTOCOL_VERSION, Frame, Rejection, decode, encode
    from firmware_bridge.serial_link import PtyPair, SerialLink
    from firmware_bridge.simulator import SimulatedDevice

_LAZY = {
    "Actuation": "bridge",
    "ActuationContext": "bridge",
    "Bridge": "bridge",
    "BridgeSettings": "bridge",
    "ConfirmRequest": "bridge",
    "HostRunner": "bridge",
    "MqttConfirmer": "mqtt_link",
    "MqttLink": "mqtt_link",
    "PROTOCOL_VERSION": "protocol",
    "Frame": "protocol",
    "Rejection": "protocol",
    "decode": "protocol",
    "encode": "protocol",
    "PtyPair": "serial_link",
    "SerialLink": "serial_link",
    "SimulatedDevice": "simulator",
}

__all__ = [
    "PROTOCOL_VERSION",
    "Actuation",
    "ActuationContext",
    "Bridge",
    "BridgeSettings",
    "ConfirmRequest",
    "Frame",
    "HostRunner",
    "MqttConfirmer",
    "MqttLink",
    "PtyPair",
    "Rejection",
    "SerialLink",
    "SimulatedDevice",
    "decode",
    "encode",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(f"firmware_bridge.{module}"), name)
