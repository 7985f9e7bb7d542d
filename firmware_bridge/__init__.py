"""The device's side of edge-agent ⇄ microcontroller firmware: protocol, serial link, simulator.

* :mod:`~firmware_bridge.protocol`: the wire format (pure; ``PROTOCOL.md``).
* :mod:`~firmware_bridge.serial_link`: frames over a serial port (pyserial).
* :mod:`~firmware_bridge.settings`: the bridge's typed settings.
* :mod:`~firmware_bridge.simulator`: a virtual device for tests and laptops,
  on a serial stream or on any link handed to it.
* ``firmware/``: reference MicroPython firmware for an ESP32.

This package imports nothing from ``edge_agent``: the host's side (the
safety bridge that turns devices into tools, and the MQTT link that rides on
the runtime's broker client) is :mod:`edge_agent.iot.bridge` and
:mod:`edge_agent.iot.mqtt_link`.

Importing this package loads neither paho nor pyserial; the names below
load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_bridge.protocol import PROTOCOL_VERSION, Frame, Rejection, decode, encode
    from firmware_bridge.serial_link import PtyPair, SerialLink
    from firmware_bridge.settings import BridgeSettings
    from firmware_bridge.simulator import SimulatedDevice

_LAZY = {
    "PROTOCOL_VERSION": "protocol",
    "Frame": "protocol",
    "Rejection": "protocol",
    "decode": "protocol",
    "encode": "protocol",
    "PtyPair": "serial_link",
    "SerialLink": "serial_link",
    "BridgeSettings": "settings",
    "SimulatedDevice": "simulator",
}

__all__ = [
    "PROTOCOL_VERSION",
    "BridgeSettings",
    "Frame",
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
