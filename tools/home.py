"""Home automation: lights, thermostats, sensors, door locks and water valves.

Every call goes through the :class:`DeviceBackend` in ``_devices.py``: today a
simulated state file (``$EDGE_AGENT_DEVICE_STATE``), later the firmware bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from edge_agent.toolbox.registry import load_module, tool
from edge_agent.toolbox.sentences import place, with_unit

if TYPE_CHECKING:
    from _devices import DeviceBackend, default_backend
else:
    # tools/ is not a package: load the sibling module by path, as the registry does.
    _devices = load_module(Path(__file__).with_name("_devices.py"))
    DeviceBackend = _devices.DeviceBackend
    default_backend = _devices.default_backend

Room = Literal["living_room", "kitchen", "bedroom", "bathroom", "hallway", "garage"]
Sensor = Literal["temperature", "humidity", "co2", "motion", "door", "smoke"]
Door = Literal["front", "back", "garage"]
Valve = Literal["garden", "main_water"]
Mode = Literal["heat", "cool", "auto", "off"]

Percent = Annotated[int, Field(ge=0, le=100)]


def _say_light(r: dict[str, Any]) -> str:
    room = place(r["room"]).capitalize()
    return f"{room} light on, {r['brightness']}%." if r["on"] else f"{room} light off."


def _say_thermostat(r: dict[str, Any]) -> str:
    room = place(r["room"]).capitalize()
    return f"{room} thermostat set to {r['target_c']} °C ({r['mode']})."


def _say_reading(r: dict[str, Any]) -> str:
    sensor = "CO2" if r["sensor"] == "co2" else r["sensor"]
    return f"The {sensor} in the {place(r['room'])} is {with_unit(r['value'], r['unit'])}."


def _say_lock(r: dict[str, Any]) -> str:
    return f"{r['door'].capitalize()} door {'locked' if r['locked'] else 'unlocked'}."


def _say_valve(r: dict[str, Any]) -> str:
    valve = place(r["valve"]).capitalize()
    opened = r["open_percent"]
    return f"{valve} valve closed." if opened == 0 else f"{valve} valve open {opened}%."


def backend() -> DeviceBackend:
    """The device backend for this call (state lives outside the process)."""
    return default_backend()


@tool(
    "Switch a room's light on or off and set its brightness.",
    side_effect="actuate",
    rate_limit="20/min",
    tags=("home",),
    state=True,
    say=_say_light,
)
def set_light(
    room: Room,
    on: Annotated[bool, Field(description="true switches the light on, false off")],
    brightness: Annotated[int, Field(ge=0, le=100, description="percent")] = 100,
) -> dict[str, Any]:
    done = backend().set(f"light.{room}", {"on": on, "brightness": brightness})
    return {"room": room, **_public(done)}


@tool(
    "Set the heating or cooling target temperature (Celsius) of a room.",
    side_effect="actuate",
    rate_limit="6/min",
    tags=("home",),
    state=True,
    say=_say_thermostat,
)
def set_thermostat(
    room: Room,
    temperature_c: Annotated[float, Field(ge=5, le=30)],
    mode: Annotated[
        Mode,
        Field(description="heat warms, cool cools, auto picks"),
    ] = "auto",
) -> dict[str, Any]:
    done = backend().set(f"thermostat.{room}", {"target_c": temperature_c, "mode": mode})
    return {"room": room, **_public(done)}


@tool(
    "Read a room sensor: temperature, humidity, CO2, motion, door or smoke.",
    side_effect="read",
    tags=("home",),
    state=True,
    say=_say_reading,
)
def read_sensor(sensor: Sensor, room: Room) -> dict[str, Any]:
    reading = backend().read(f"{sensor}.{room}")
    return {"sensor": sensor, "room": room, "value": reading["value"], "unit": reading["unit"]}


@tool(
    "Lock or unlock a door.",
    side_effect="dangerous",
    rate_limit="6/min",
    tags=("home", "security"),
    state=True,
    say=_say_lock,
)
def lock_door(
    door: Door,
    locked: Annotated[bool, Field(description="true locks the door, false unlocks it")],
) -> dict[str, Any]:
    done = backend().set(f"lock.{door}", {"locked": locked})
    return {"door": door, **_public(done)}


@tool(
    "Open a water valve to a percentage (0 closes it).",
    side_effect="dangerous",
    rate_limit="6/min",
    tags=("home", "water"),
    state=True,
    say=_say_valve,
)
def set_valve(
    valve: Valve,
    open_percent: Annotated[
        int, Field(ge=0, le=100, description="0 closes it, 100 opens it fully")
    ],
) -> dict[str, Any]:
    done = backend().set(f"valve.{valve}", {"open_percent": open_percent})
    return {"valve": valve, **_public(done)}


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """The new state and whether it changed: what the model needs to answer."""
    state = {k: v for k, v in result["state"].items() if k != "at"}
    return {**state, "changed": bool(result["changed"])}
