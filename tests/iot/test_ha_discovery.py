"""Home Assistant on the real broker: every discovery payload checked against
a JSON schema written from Home Assistant's MQTT documentation (one per
component), a light switched through its command topic, a lock that waits
for the owner, malformed commands counted, and availability that follows
the device. Home Assistant itself is the ``hass`` user: it reads discovery
and states and may write only the command topics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import pytest
from jsonschema import Draft202012Validator

from edge_agent.iot.automation import AutomationEngine, AutomationSettings
from edge_agent.iot.bridge import Bridge, BridgeSettings
from edge_agent.iot.mqtt_link import DeviceMqttLink, MqttConfirmer, MqttLink
from firmware_bridge.protocol import ActuatorCap, SensorCap
from firmware_bridge.simulator import SimulatedDevice
from tests.iot.conftest import NODE, AuditLog, IotBroker, wait_until
from tests.offload.conftest import PREFIX, RawClient

EXTRA_SENSORS = (
    SensorCap("humidity", "humidity", "number", "%", 0, 100),
    SensorCap("pressure", "pressure", "number", "hPa", 300, 1100),
    SensorCap("co2", "co2", "number", "ppm", 0, 5000),
    SensorCap("illuminance", "illuminance", "number", "lx", 0, 100000),
    SensorCap("note", "text", "text"),
)
EXTRA_ACTUATORS = (
    ActuatorCap("plug", "switch", "bool"),
    ActuatorCap("fan", "fan", "enum", values=("low", "high")),  # no HA control fits: shown
)
# component → the object ids of its entities on sim1 (and the agent's "status")
ENTITIES = {
    "sensor": ("temperature", "humidity", "pressure", "co2", "illuminance", "note", "fan"),
    "binary_sensor": ("smoke", "motion"),
    "light": ("light",),
    "climate": ("thermostat",),
    "lock": ("lock",),
    "valve": ("valve",),
    "switch": ("plug",),
}


# --- the documented schema, per component ------------------------------------------------

STR: dict[str, Any] = {"type": "string"}
BOOL: dict[str, Any] = {"type": "boolean"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}


def _keys(*names: str, kind: dict[str, Any] = STR) -> dict[str, Any]:
    return dict.fromkeys(names, kind)


# Options every MQTT entity documents (availability, device, naming, QoS, …).
COMMON: dict[str, Any] = {
    "availability": {
        "type": "array", "minItems": 1,
        "items": {"type": "object", "required": ["topic"], "additionalProperties": False,
                  "properties": _keys("topic", "payload_available", "payload_not_available",
                                      "value_template")},
    },
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "device": {
        "type": "object", "additionalProperties": False,
        "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
        "properties": {
            **_keys("configuration_url", "hw_version", "manufacturer", "model", "model_id",
                    "name", "serial_number", "suggested_area", "sw_version", "via_device"),
            "identifiers": {"type": ["string", "array"], "items": STR},
            "connections": {"type": "array", "items": {"type": "array", "items": STR}},
        },
    },
    "name": {"type": ["string", "null"]},
    "entity_category": {"enum": ["config", "diagnostic"]},
    "qos": {"enum": [0, 1, 2]},
    **_keys("availability_template", "availability_topic", "payload_available",
            "payload_not_available", "unique_id", "encoding", "entity_picture", "icon",
            "json_attributes_template", "json_attributes_topic"),
    "enabled_by_default": BOOL,
}  # fmt: skip

SENSOR_UNITS = {  # sensor device class → the units Home Assistant accepts
    "temperature": ["°C", "°F", "K"],
    "humidity": ["%"],
    "carbon_dioxide": ["ppm"],
    "pressure": ["Pa", "kPa", "hPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"],
    "illuminance": ["lx"],
}
BINARY_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
]  # fmt: skip
CLIMATE_MODES = ["auto", "off", "cool", "heat", "dry", "fan_only", "heat_cool"]

COMPONENTS: dict[str, tuple[dict[str, Any], list[str], list[dict[str, Any]]]] = {
    # component: (its own options, required options, rules between options)
    "sensor": (
        {**_keys("state_topic", "device_class", "value_template", "last_reset_value_template"),
         "unit_of_measurement": {"type": ["string", "null"]},
         "state_class": {"enum": ["measurement", "measurement_angle", "total",
                                  "total_increasing"]},
         "options": {"type": "array", "minItems": 1, "items": STR},
         "expire_after": INT, "force_update": BOOL, "suggested_display_precision": INT},
        ["state_topic"],
        [{"if": {"required": ["options"]},
          "then": {"properties": {"device_class": {"const": "enum"}},
                   "not": {"anyOf": [{"required": ["state_class"]},
                                     {"required": ["unit_of_measurement"]}]}}},
         *({"if": {"properties": {"device_class": {"const": dc}}, "required": ["device_class"]},
            "then": {"required": ["unit_of_measurement"],
                     "properties": {"unit_of_measurement": {"enum": units}}}}
           for dc, units in SENSOR_UNITS.items())],
    ),
    "binary_sensor": (
        {**_keys("state_topic", "payload_on", "payload_off", "value_template"),
         "device_class": {"enum": BINARY_CLASSES},
         "expire_after": INT, "force_update": BOOL, "off_delay": INT},
        ["state_topic"],
        [],
    ),
    "light": (
        {**_keys("command_topic", "state_topic", "state_value_template", "payload_on",
                 "payload_off", "brightness_command_topic", "brightness_command_template",
                 "brightness_state_topic", "brightness_value_template", "color_mode_state_topic",
                 "color_mode_value_template", "color_temp_command_template",
                 "color_temp_command_topic", "color_temp_state_topic",
                 "color_temp_value_template", "effect_command_topic", "effect_command_template",
                 "effect_state_topic", "effect_value_template", "hs_command_topic",
                 "hs_command_template", "hs_state_topic", "hs_value_template",
                 "rgb_command_topic", "rgb_command_template", "rgb_state_topic",
                 "rgb_value_template", "white_command_topic", "xy_command_topic",
                 "xy_command_template", "xy_state_topic", "xy_value_template"),
         "brightness_scale": {"type": "integer", "minimum": 1},
         "on_command_type": {"enum": ["last", "first", "brightness"]},
         "schema": {"enum": ["basic"]}, "optimistic": BOOL, "retain": BOOL,
         "color_temp_kelvin": BOOL, "effect_list": {"type": "array", "items": STR},
         "white_scale": INT, **_keys("max_kelvin", "min_kelvin", "max_mireds", "min_mireds",
                                     kind=INT)},
        ["command_topic"],
        [],
    ),
    "climate": (
        {**_keys("action_template", "action_topic", "current_humidity_template",
                 "current_humidity_topic", "current_temperature_template",
                 "current_temperature_topic", "fan_mode_command_template",
                 "fan_mode_command_topic", "fan_mode_state_template", "fan_mode_state_topic",
                 "mode_command_template", "mode_command_topic", "mode_state_template",
                 "mode_state_topic", "payload_on", "payload_off", "power_command_template",
                 "power_command_topic", "preset_mode_command_template",
                 "preset_mode_command_topic", "preset_mode_state_topic",
                 "preset_mode_value_template", "swing_mode_command_template",
                 "swing_mode_command_topic", "swing_mode_state_template",
                 "swing_mode_state_topic", "target_humidity_command_template",
                 "target_humidity_command_topic", "target_humidity_state_template",
                 "target_humidity_state_topic", "temperature_command_template",
                 "temperature_command_topic", "temperature_high_command_template",
                 "temperature_high_command_topic", "temperature_high_state_template",
                 "temperature_high_state_topic", "temperature_low_command_template",
                 "temperature_low_command_topic", "temperature_low_state_template",
                 "temperature_low_state_topic", "temperature_state_template",
                 "temperature_state_topic", "value_template"),
         **_keys("min_temp", "max_temp", "min_humidity", "max_humidity", "initial", "temp_step",
                 kind=NUM),
         "modes": {"type": "array", "items": {"enum": CLIMATE_MODES}, "uniqueItems": True},
         "precision": {"enum": [0.1, 0.5, 1.0]}, "temperature_unit": {"enum": ["C", "F"]},
         "optimistic": BOOL, "retain": BOOL,
         **_keys("fan_modes", "preset_modes", "swing_modes",
                 kind={"type": "array", "items": STR})},
        [],
        [],
    ),
    "lock": (
        {**_keys("command_topic", "command_template", "code_format", "payload_lock",
                 "payload_unlock", "payload_open", "payload_reset", "state_topic",
                 "state_locked", "state_unlocked", "state_locking", "state_unlocking",
                 "state_jammed", "state_open", "state_opening", "value_template"),
         "optimistic": BOOL, "retain": BOOL},
        ["command_topic"],
        [],
    ),
    "valve": (
        {**_keys("command_topic", "command_template", "payload_open", "payload_close",
                 "payload_stop", "state_topic", "state_open", "state_opening", "state_closed",
                 "state_closing", "value_template"),
         "device_class": {"enum": ["water", "gas"]}, "reports_position": BOOL,
         "position_open": INT, "position_closed": INT, "optimistic": BOOL, "retain": BOOL},
        [],
        [{"if": {"properties": {"reports_position": {"const": True}},
                 "required": ["reports_position"]},
          "then": {"not": {"anyOf": [{"required": [k]} for k in
                                     ("payload_open", "payload_close", "state_open",
                                      "state_closed")]}}}],
    ),
    "switch": (
        {**_keys("command_topic", "command_template", "payload_on", "payload_off", "state_topic",
                 "state_on", "state_off", "value_template"),
         "device_class": {"enum": ["outlet", "switch"]}, "optimistic": BOOL, "retain": BOOL},
        ["command_topic"],
        [],
    ),
}  # fmt: skip


def schema_for(component: str) -> dict[str, Any]:
    own, required, rules = COMPONENTS[component]
    entity_id = {"type": "string", "pattern": rf"^{component}\.[a-z0-9_]+$"}
    return {
        "type": "object",
        "additionalProperties": False,  # object_id, a typo or a made-up option fails here
        "required": required,
        "properties": {**COMMON, "default_entity_id": entity_id, **own},
        "dependentRequired": {"device": ["unique_id"]},
        "not": {"required": ["availability", "availability_topic"]},
        **({"allOf": rules} if rules else {}),
    }


# --- the rig ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class HaRig:
    engine: AutomationEngine
    bridge: Bridge
    sim: SimulatedDevice
    audit: AuditLog
    hass: RawClient
    clock: Clock
    seen: dict[str, bytes] = field(default_factory=dict)

    def watch(self, done: Callable[[dict[str, bytes]], Any], timeout: float = 10) -> Any:
        """Read what Home Assistant receives until ``done(seen)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(self.seen):
            message = self.hass.next_message(timeout=0.2)
            if message is not None:
                self.seen[message.topic] = bytes(message.payload)
        return done(self.seen)

    def config(self, component: str, entity: str) -> dict[str, Any]:
        object_id = entity if entity == "status" else f"sim1_{entity}"
        found = json.loads(self.seen[f"homeassistant/{component}/{NODE}/{object_id}/config"])
        assert isinstance(found, dict)
        return found

    def command(self, actuator: str, payload: bytes) -> None:
        self.hass.publish(self.engine.ha_topics.command("sim1", actuator), payload)

    def state(self, entity: str) -> bytes | None:
        return self.seen.get(self.engine.state_topic("sim1", entity))

    def discovered(self) -> bool:
        expected = [f"homeassistant/{c}/{NODE}/sim1_{e}/config" for c, es in ENTITIES.items()
                    for e in es]  # fmt: skip
        return all(self.seen.get(t) for t in expected)


@pytest.fixture
def ha_rig(
    iot_broker: IotBroker, raw: Callable[[str], RawClient]
) -> Iterator[Callable[..., HaRig]]:
    """A factory: the engine and the bridge as ``agent`` (owner confirmations
    over the MQTT confirm topic), ``sim1`` with more sensors and a switch,
    and Home Assistant watching. ``retained`` is published before the engine
    starts, as left on the broker from before."""
    parts: list[Any] = []  # closed in reverse at teardown

    def start(retained: Sequence[tuple[str, bytes]] = ()) -> HaRig:
        hass = raw("hass")
        for topic, payload in retained:
            hass._client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        hass.subscribe("homeassistant/#")
        hass.subscribe(f"{PREFIX}/{NODE}/#")
        confirmer = MqttConfirmer(iot_broker.settings("agent"), node_id=NODE)
        confirmer.connect()
        audit, clock = AuditLog(), Clock()
        bridge = Bridge(BridgeSettings(confirm_timeout_s=5), confirm=confirmer, audit=audit)
        settings = AutomationSettings(node_id=NODE, broker=iot_broker.settings("agent"))
        engine = AutomationEngine(settings, commander=bridge, tick_s=None, clock=clock)
        sim = SimulatedDevice("sim1")
        sim.sensors += EXTRA_SENSORS
        sim.actuators += EXTRA_ACTUATORS
        sim.state |= {"plug": False, "fan": "low"}
        parts.extend([confirmer, engine, bridge, sim])
        engine.start()
        bridge.subscribe(engine.on_device_event)
        bridge.attach(MqttLink(iot_broker.settings("agent")))
        sim.serve_link(DeviceMqttLink(iot_broker.settings("sim1"), sim.id))
        assert bridge.wait_for_device("sim1", 10)
        rig = HaRig(engine, bridge, sim, audit, hass, clock)
        assert rig.watch(lambda s: rig.discovered()), sorted(rig.seen)
        return rig

    yield start
    for part in reversed(parts):
        if isinstance(part, AutomationEngine):
            part.stop()
        else:
            part.close()


def render(template: str, value: bytes) -> str:
    """A value template as Home Assistant renders it (its ``int(0)`` and
    ``float(0)`` filters are jinja2's own)."""
    return jinja2.Environment(autoescape=True).from_string(template).render(value=value.decode())


# --- discovery --------------------------------------------------------------------------


@pytest.mark.parametrize("component", list(ENTITIES))
def test_discovery_payloads_match_home_assistants_schema(ha_rig: Any, component: str) -> None:
    rig = ha_rig()
    validator = Draft202012Validator(schema_for(component))
    Draft202012Validator.check_schema(validator.schema)
    for entity in ENTITIES[component]:
        config = rig.config(component, entity)
        problems = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(config)]
        assert not problems, (entity, problems)
        assert config["name"] == entity  # Home Assistant puts the device's name in front
        assert config["default_entity_id"] == f"{component}.edge_agent_{NODE}_sim1_{entity}"
        assert config["device"]["name"] == "sim1" and config["device"]["sw_version"]
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [
            rig.engine.status_topic, rig.engine.ha_topics.availability("sim1"),
        ]  # fmt: skip
    if component == "binary_sensor":  # the agent's own entity too
        agent = rig.config("binary_sensor", "status")
        assert not list(validator.iter_errors(agent))
        assert agent["device_class"] == "connectivity"


def test_sensors_carry_units_device_classes_and_statistics(ha_rig: Any) -> None:
    rig = ha_rig()
    shown = {e: rig.config("sensor", e) for e in ENTITIES["sensor"]}
    units = {e: (c.get("device_class"), c.get("unit_of_measurement"), c.get("state_class"))
             for e, c in shown.items()}  # fmt: skip
    assert units == {
        "temperature": ("temperature", "°C", "measurement"),
        "humidity": ("humidity", "%", "measurement"),
        "pressure": ("pressure", "hPa", "measurement"),
        "co2": ("carbon_dioxide", "ppm", "measurement"),
        "illuminance": ("illuminance", "lx", "measurement"),
        "note": (None, None, None),  # text: no statistics
        "fan": ("enum", None, None),  # an actuator without a fitting control: shown
    }
    assert shown["fan"]["options"] == ["low", "high"] and "command_topic" not in shown["fan"]
    assert rig.config("binary_sensor", "smoke")["device_class"] == "smoke"
    # the lock was a read-only binary_sensor before: its old config is cleared
    assert rig.seen[f"homeassistant/binary_sensor/{NODE}/sim1_lock/config"] == b""
    climate = rig.config("climate", "thermostat")
    assert (climate["min_temp"], climate["max_temp"], climate["temperature_unit"]) == (5, 30, "C")
    assert climate["current_temperature_topic"] == rig.engine.state_topic("sim1", "temperature")
    valve = rig.config("valve", "valve")
    assert (valve["reports_position"], valve["position_closed"], valve["position_open"]) == (
        True, 0, 100,
    )  # fmt: skip


# --- commands ---------------------------------------------------------------------------


def test_a_light_is_switched_through_its_command_topic_and_its_state_follows(
    ha_rig: Any,
) -> None:
    rig = ha_rig()
    light = rig.config("light", "light")
    rig.command("light", b"40")  # on_command_type brightness: turning on sends the brightness
    assert rig.watch(lambda s: rig.state("light") == b"40")
    state = rig.state("light")
    assert render(light["state_value_template"], state) == light["payload_on"]
    assert render(light["brightness_value_template"], state) == "40"
    rig.command("light", light["payload_off"].encode())
    assert rig.watch(lambda s: rig.state("light") == b"0")
    assert render(light["state_value_template"], b"0") == light["payload_off"]
    assert rig.sim.state["light"] == 0
    records = wait_until(lambda: len(rig.audit.actuations()) == 2 and rig.audit.actuations(), 5)
    assert [(r["value"], r["status"], r["confirmation"]) for r in records] == [
        (40, "done", "not_needed"), (0, "done", "not_needed"),
    ]  # fmt: skip
    assert {r["request"]["source"] for r in records} == {"home-assistant"}
    assert records[0]["reading"]["topic"] == light["command_topic"]
    assert rig.engine.stats["ha.done"] == 2


def test_a_lock_command_waits_for_the_owners_confirmation_and_is_audited(
    ha_rig: Any, raw: Callable[[str], RawClient]
) -> None:
    rig = ha_rig()
    owner = raw("owner")
    owner.subscribe(f"{PREFIX}/{NODE}/confirm/request")
    lock = rig.config("lock", "lock")
    rig.command("lock", lock["payload_unlock"].encode())
    asked = owner.next_message(timeout=5)
    assert asked is not None
    request = json.loads(asked.payload)
    assert request["action"] == {"device": "sim1", "actuator": "lock", "value": False}
    assert request["reasons"] == ["lock is a dangerous kind"]
    assert request["reading"]["source"] == "home-assistant"
    time.sleep(0.3)
    assert rig.sim.state["lock"] is True and not rig.audit.actuations()  # it waits
    reply = {"id": request["id"], "approve": True, "args_hash": request["args_hash"]}
    owner.publish(asked.properties.ResponseTopic, json.dumps(reply).encode(),
                  correlation=asked.properties.CorrelationData)  # fmt: skip
    assert rig.watch(lambda s: rig.state("lock") == lock["state_unlocked"].encode())
    assert rig.sim.state["lock"] is False
    rig.command("lock", lock["payload_lock"].encode())  # the owner says no this time
    denied = owner.next_message(timeout=5)
    assert denied is not None
    no = {"id": json.loads(denied.payload)["id"], "approve": False}
    owner.publish(denied.properties.ResponseTopic, json.dumps(no).encode(),
                  correlation=denied.properties.CorrelationData)  # fmt: skip
    records = wait_until(lambda: len(rig.audit.actuations()) == 2 and rig.audit.actuations(), 8)
    assert [(r["value"], r["status"], r["confirmation"]) for r in records] == [
        (False, "done", "approved"), (True, "unconfirmed", "denied"),
    ]  # fmt: skip
    assert {r["request"]["source"] for r in records} == {"home-assistant"}
    assert rig.sim.state["lock"] is False
    assert rig.engine.stats["ha.done"] == 1 and rig.engine.stats["ha.unconfirmed"] == 1


def test_malformed_commands_are_dropped_counted_and_the_engine_stays_up(ha_rig: Any) -> None:
    rig = ha_rig(retained=[(f"{PREFIX}/{NODE}/devices/sim1/light/set", b"100")])
    bad = [
        ("light", b"\xff\xfe", "not_utf8"),
        ("lock", b"OPEN", "unknown_word"),  # no payload_open was offered
        ("thermostat", b"warm", "not_a_number"),
        ("thermostat", b"nan", "not_a_number"),
        ("valve", b"1" * 100, "oversized"),
        ("fan", b"high", "not_controllable"),  # shown, never commanded
    ]
    for actuator, payload, _ in bad:
        rig.command(actuator, payload)
    rig.hass.publish(f"{PREFIX}/{NODE}/devices/ghost/light/set", b"10")
    rig.command("light", b"25")  # and a good one after them all
    assert rig.watch(lambda s: rig.state("light") == b"25")
    assert rig.engine.wait_idle(5)
    malformed = {k.split(".", 2)[2]: v for k, v in rig.engine.stats.items()
                 if k.startswith("ha.malformed.")}  # fmt: skip
    assert malformed == {"retained": 1, "not_utf8": 1, "unknown_word": 1, "not_a_number": 2,
                         "oversized": 1, "not_controllable": 2}  # fmt: skip
    assert [(r["actuator"], r["value"]) for r in rig.audit.actuations()] == [("light", 25)]
    assert rig.engine.stats["ha.commands"] == 1
    assert rig.sim.state["light"] == 25


def test_an_out_of_range_command_is_refused_by_the_bridge_and_audited(ha_rig: Any) -> None:
    rig = ha_rig()
    rig.command("valve", b"140")
    records = wait_until(lambda: rig.audit.actuations(), 5)
    assert [(r["status"], r["request"]["source"]) for r in records] == [
        ("refused", "home-assistant"),
    ]  # fmt: skip
    assert "between 0 and 100" in records[0]["reason"] and rig.sim.state["valve"] == 0


# --- availability ------------------------------------------------------------------------


def test_availability_follows_the_device(ha_rig: Any) -> None:
    rig = ha_rig()
    available = rig.engine.ha_topics.availability("sim1")
    assert rig.watch(lambda s: s.get(available) == b"online")
    rig.engine.tick()  # heard from just now: stays online
    rig.clock.t += rig.engine.settings.device_silence_s + 1
    rig.engine.tick()
    assert rig.watch(lambda s: s.get(available) == b"offline")
    rig.sim.emit("temperature", 19.5)  # heard again
    assert rig.watch(lambda s: s.get(available) == b"online")
    assert rig.seen[rig.engine.status_topic] == b"online"
