"""What Home Assistant is told: the MQTT discovery payloads of the agent and
of every firmware-bridge device, and the topics they name.

Payloads follow Home Assistant's documented MQTT discovery schema (2025.10
and later), per component (``homeassistant/<component>/<node>/<object>/config``,
retained):

* ``default_entity_id`` (``sensor.edge_agent_hub_sim1_temperature``) sets the
  first entity id; ``object_id``, which Home Assistant stops reading in
  2026.4, is not sent.
* An entity is named after its sensor or actuator only (``temperature``):
  MQTT entities that belong to a device always get the device's name in
  front, so repeating it would show "sim1 sim1 temperature".
* Numeric sensors carry ``state_class: measurement``, so Home Assistant keeps
  long-term statistics, and a unit it knows (``C`` → ``°C``). A device class
  is only sent with a unit Home Assistant accepts for it; otherwise the unit
  alone, so a sensor with an odd unit is shown rather than rejected.
* A device's entities are available only while the agent (its status topic,
  with a retained last will) *and* the device (its availability topic, which
  the automation engine keeps: online when the device is heard, offline when
  it falls silent) both say ``online`` (``availability_mode: all``).
* Actuators whose kind fits a Home Assistant component are offered for
  control (:data:`CONTROLLED`): light, climate, lock, valve, switch, each
  with a command topic ``<prefix>/<node>/devices/<device>/<actuator>/set``.
  What arrives there is checked like any other actuation
  (:mod:`edge_agent.iot.ha_commands`). Other actuators are shown, read-only.

Command topics are published with Home Assistant's default QoS 0 and no
retain flag, so a command sent while the agent is away is not queued for it
and replayed later. Pure: no paho, no threads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_bridge.protocol import ActuatorCap, Announce, SensorCap

__all__ = [
    "CONTROLLED",
    "HaTopics",
    "agent_discovery",
    "control_component",
    "device_discovery",
    "ha_unit",
]

ONLINE = "online"
OFFLINE = "offline"
# Actuator kind → the Home Assistant component that can drive it.
CONTROLLED = {
    "light": "light",
    "dimmer": "light",
    "thermostat": "climate",
    "heater": "climate",
    "lock": "lock",
    "valve": "valve",
    "switch": "switch",
}
_NUMERIC_COMPONENTS = frozenset({"light", "climate", "valve"})
# Units as firmware writes them → Home Assistant's spelling.
_UNIT_ALIASES = {"C": "°C", "F": "°F", "degC": "°C", "degF": "°F", "lux": "lx"}
# Sensor type → (device class, the units Home Assistant accepts for it).
_SENSOR_CLASSES: dict[str, tuple[str, frozenset[str]]] = {
    "temperature": ("temperature", frozenset({"°C", "°F", "K"})),
    "humidity": ("humidity", frozenset({"%"})),
    "co2": ("carbon_dioxide", frozenset({"ppm"})),
    "pressure": ("pressure", frozenset({"Pa", "hPa", "kPa", "mbar", "bar", "mmHg", "inHg", "psi"})),
    "illuminance": ("illuminance", frozenset({"lx"})),
    "power": ("power", frozenset({"W", "kW"})),
    "voltage": ("voltage", frozenset({"V", "mV"})),
    "current": ("current", frozenset({"A", "mA"})),
}
_BINARY_CLASSES = {"smoke": "smoke", "motion": "motion", "door": "door", "water_leak": "moisture"}


@dataclass(frozen=True)
class HaTopics:
    """The topics one node uses with Home Assistant."""

    prefix: str  # the broker's topic prefix, e.g. "edge-agent"
    node: str
    discovery_prefix: str = "homeassistant"

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.root}/automation/status"

    @property
    def command_filter(self) -> str:
        return f"{self.root}/devices/+/+/set"

    @property
    def availability_filter(self) -> str:
        return f"{self.root}/devices/+/availability"

    def state(self, device: str, entity: str) -> str:
        return f"{self.root}/devices/{device}/{entity}/state"

    def command(self, device: str, entity: str) -> str:
        return f"{self.root}/devices/{device}/{entity}/set"

    def availability(self, device: str) -> str:
        return f"{self.root}/devices/{device}/availability"

    def config(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def command_target(self, topic: str) -> tuple[str, str] | None:
        """(device, actuator) of a command topic, or None when it is not one."""
        parts = self._device_path(topic, "/set")
        return (parts[0], parts[1]) if len(parts) == 2 else None

    def availability_target(self, topic: str) -> str | None:
        """The device of an availability topic, or None when it is not one."""
        parts = self._device_path(topic, "/availability")
        return parts[0] if len(parts) == 1 else None

    def _device_path(self, topic: str, leaf: str) -> list[str]:
        head = f"{self.root}/devices/"
        if not topic.startswith(head) or not topic.endswith(leaf):
            return []
        parts = topic[len(head) : -len(leaf)].split("/")
        return parts if all(parts) else []


def ha_unit(unit: str | None) -> str | None:
    return None if unit is None else _UNIT_ALIASES.get(unit, unit)


def control_component(cap: ActuatorCap) -> str | None:
    """The component that drives ``cap``, or None when it is shown read-only
    (a kind Home Assistant has no fitting control for, or a value type the
    component cannot send, such as an enum light)."""
    component = CONTROLLED.get(cap.kind)
    if component is None:
        return None
    numeric = cap.value in ("number", "integer")
    fits = numeric if component in _NUMERIC_COMPONENTS else cap.value == "bool"
    return component if fits else None


# ---------------------------------------------------------------- the agent


def agent_discovery(topics: HaTopics) -> list[tuple[str, Any]]:
    """The agent's own entity: a connectivity binary_sensor on its status
    topic (retained ``online``, and ``offline`` by last will)."""
    node = topics.node
    config = {
        "name": "status",
        "unique_id": f"edge-agent-{node}-status",
        "default_entity_id": _entity_id("binary_sensor", f"edge_agent_{node}_status"),
        "state_topic": topics.status,
        "payload_on": ONLINE,
        "payload_off": OFFLINE,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [f"edge-agent-{node}"],
            "name": f"edge-agent {node}",
            "manufacturer": "edge-agent",
            "model": "agent",
        },
    }
    return [(topics.config("binary_sensor", "status"), config)]


# ---------------------------------------------------------------- devices


def device_discovery(topics: HaTopics, device: str, announce: Announce) -> list[tuple[str, Any]]:
    """Every entity of a bridge device, as (topic, payload). A controllable
    actuator's old read-only config (from before it could be controlled) is
    cleared with an empty retained payload, so Home Assistant drops it."""
    base = _Base(topics, device, _device_block(topics.node, device, announce.fw))
    out = [_sensor(base, cap) for cap in announce.sensors]
    current = _current_temperature(topics, device, announce.sensors)
    for cap in announce.actuators:
        component = control_component(cap)
        if component is None:
            out.append(_shown(base, cap))
            continue
        old = "binary_sensor" if cap.value == "bool" else "sensor"
        out.append((topics.config(old, _object_id(device, cap.id)), b""))
        out.append(_controlled(base, cap, component, current))
    return out


@dataclass(frozen=True)
class _Base:
    topics: HaTopics
    device: str
    block: dict[str, Any]

    def entity(self, component: str, entity: str) -> tuple[str, dict[str, Any]]:
        """The topic and the fields every device entity has."""
        node, topics = self.topics.node, self.topics
        object_id = _object_id(self.device, entity)
        config = {
            "name": entity,
            "unique_id": f"edge-agent-{node}-{self.device}-{entity}",
            "default_entity_id": _entity_id(component, f"edge_agent_{node}_{object_id}"),
            "availability": [
                {"topic": topics.status, "payload_available": ONLINE,
                 "payload_not_available": OFFLINE},
                {"topic": topics.availability(self.device), "payload_available": ONLINE,
                 "payload_not_available": OFFLINE},
            ],
            "availability_mode": "all",
            "device": self.block,
        }  # fmt: skip
        return topics.config(component, object_id), config


def _device_block(node: str, device: str, firmware: str) -> dict[str, Any]:
    return {"identifiers": [f"edge-agent-fw-{device}"], "name": device,
            "manufacturer": "edge-agent", "model": "firmware device", "sw_version": firmware,
            "via_device": f"edge-agent-{node}"}  # fmt: skip


def _sensor(base: _Base, cap: SensorCap) -> tuple[str, Any]:
    state = base.topics.state(base.device, cap.id)
    if cap.value == "bool":
        topic, config = base.entity("binary_sensor", cap.id)
        config |= {"state_topic": state, "payload_on": "true", "payload_off": "false"}
        if cap.type in _BINARY_CLASSES:
            config["device_class"] = _BINARY_CLASSES[cap.type]
        return topic, config
    topic, config = base.entity("sensor", cap.id)
    config["state_topic"] = state
    if cap.value == "number":
        config |= _measurement(cap.type, ha_unit(cap.unit))
    return topic, config


def _measurement(kind: str, unit: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"state_class": "measurement"}
    if unit is not None:
        out["unit_of_measurement"] = unit
    device_class, units = _SENSOR_CLASSES.get(kind, (None, frozenset()))
    if device_class is not None and unit in units:
        out["device_class"] = device_class
    return out


def _shown(base: _Base, cap: ActuatorCap) -> tuple[str, Any]:
    """An actuator Home Assistant only watches: its acked state."""
    state = base.topics.state(base.device, cap.id)
    if cap.value == "bool":
        topic, config = base.entity("binary_sensor", cap.id)
        return topic, config | {"state_topic": state, "payload_on": "true", "payload_off": "false"}
    topic, config = base.entity("sensor", cap.id)
    config["state_topic"] = state
    if cap.value == "enum":
        return topic, config | {"device_class": "enum", "options": list(cap.values)}
    return topic, config | _measurement(cap.kind, ha_unit(cap.unit))


def _controlled(
    base: _Base, cap: ActuatorCap, component: str, current: str | None
) -> tuple[str, Any]:
    topic, config = base.entity(component, cap.id)
    state = base.topics.state(base.device, cap.id)
    command = base.topics.command(base.device, cap.id)
    config["optimistic"] = False  # the state topic carries the device's acked state
    if component == "light":
        config |= _light(cap, state, command)
    elif component == "climate":
        config |= _climate(cap, state, command, current)
    elif component == "lock":
        config |= {"command_topic": command, "state_topic": state, "payload_lock": "LOCK",
                   "payload_unlock": "UNLOCK", "state_locked": "true",
                   "state_unlocked": "false"}  # fmt: skip
    elif component == "valve":
        assert cap.min is not None and cap.max is not None  # capability_problems ensures it
        config |= {"command_topic": command, "state_topic": state, "reports_position": True,
                   "position_closed": int(cap.min), "position_open": int(cap.max)}  # fmt: skip
    else:
        config |= {"command_topic": command, "state_topic": state, "payload_on": "ON",
                   "payload_off": "OFF", "state_on": "true", "state_off": "false"}  # fmt: skip
    return topic, config


def _light(cap: ActuatorCap, state: str, command: str) -> dict[str, Any]:
    """A dimmable light on one value, the brightness (0 = off): ``OFF`` and
    brightness numbers arrive on the same command topic, and on/off is read
    from the brightness the device acked."""
    assert cap.max is not None
    return {
        "command_topic": command,
        "payload_on": "ON",
        "payload_off": "OFF",
        "on_command_type": "brightness",
        "brightness_command_topic": command,
        "brightness_scale": int(cap.max),
        "state_topic": state,
        "state_value_template": "{{ 'ON' if (value | float(0)) > 0 else 'OFF' }}",
        "brightness_state_topic": state,
        "brightness_value_template": "{{ value | int(0) }}",
    }


def _climate(cap: ActuatorCap, state: str, command: str, current: str | None) -> dict[str, Any]:
    """A heating set point: the one mode is ``heat`` (there is no off to send)."""
    assert cap.min is not None and cap.max is not None
    integer = cap.value == "integer"
    out: dict[str, Any] = {
        "temperature_command_topic": command,
        "temperature_state_topic": state,
        "modes": ["heat"],
        "mode_state_topic": state,
        "mode_state_template": "heat",
        "min_temp": cap.min,
        "max_temp": cap.max,
        "temp_step": 1 if integer else 0.5,
        "precision": 1.0 if integer else 0.1,
    }
    if cap.unit in ("C", "F"):
        out["temperature_unit"] = cap.unit
    if current is not None:
        out["current_temperature_topic"] = current
    return out


def _current_temperature(
    topics: HaTopics, device: str, sensors: tuple[SensorCap, ...]
) -> str | None:
    """The state topic of the device's first temperature sensor, shown as a
    climate entity's current temperature."""
    found = next((s for s in sensors if s.type == "temperature" and s.value == "number"), None)
    return None if found is None else topics.state(device, found.id)


def _object_id(device: str, entity: str) -> str:
    return f"{device}_{entity}".replace("-", "_")


def _entity_id(component: str, object_id: str) -> str:
    return f"{component}.{re.sub(r'[^a-z0-9_]', '_', object_id.lower())}"
