"""The ``[automation]`` config section: sensor topics, rules, and the devices
behind the firmware bridge.

Plain pydantic, apart from :mod:`edge_agent.iot.automation` (threads, paho), so
that :mod:`edge_agent.config` can carry it without loading any of that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.routing.offload.settings import BrokerSettings
from firmware_bridge.settings import BridgeSettings

__all__ = [
    "Action",
    "AskAgent",
    "AutomationSettings",
    "Change",
    "Condition",
    "DeviceSettings",
    "Notify",
    "Rule",
    "Schedule",
    "SendCommand",
    "SensorTopic",
    "SerialPort",
    "Threshold",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_RATE = r"^\s*\d+\s*/\s*(s|sec|second|min|minute|h|hour)\s*$"


class SensorTopic(BaseModel):
    """An MQTT topic that carries readings of one sensor (or, with a wildcard,
    of several: the sensor id is then the topic)."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=256, description="MQTT topic filter")
    sensor: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-/]{1,128}$", description="sensor id; None = the topic"
    )
    field: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,7}$",
        description="dotted key of the value in a JSON object payload; None = the whole payload",
    )
    unit: str | None = Field(None, max_length=16, description="unit of the value")
    max_age_s: float = Field(
        300, gt=0, le=86400, description="a payload whose 'ts' is older than this is dropped"
    )


class Threshold(BaseModel):
    """Fires when the value crosses into the band (above / below / equals);
    re-arms once it leaves it by ``hysteresis``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["threshold"] = "threshold"
    above: float | None = Field(None, description="fire when the value rises above this")
    below: float | None = Field(None, description="fire when the value falls below this")
    equals: bool | str | None = Field(None, description="fire when the value becomes this")
    hysteresis: float = Field(0.0, ge=0, le=1e6, description="re-arm margin for above/below")

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.above is None and self.below is None and self.equals is None:
            raise ValueError("a threshold needs above, below or equals")
        return self


class Change(BaseModel):
    """Fires when the value changes (numbers: by at least ``min_delta``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["change"] = "change"
    min_delta: float = Field(0.0, ge=0, le=1e9, description="smallest change that counts")


class Schedule(BaseModel):
    """Fires every ``every_s`` seconds with the latest reading of each sensor."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["schedule"] = "schedule"
    every_s: float = Field(ge=1, le=7 * 86400, description="period in seconds")


Condition = Annotated[Threshold | Change | Schedule, Field(discriminator="kind")]


class AskAgent(BaseModel):
    """Wake the agent with the reading; it decides through the tools."""

    model_config = ConfigDict(extra="forbid")

    do: Literal["agent"] = "agent"
    instruction: str = Field(
        min_length=1, max_length=1000, description="what the owner wants done (trusted)"
    )
    tools: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=64,
        description="tool names or globs the agent may use for this rule (least privilege)",
    )


class SendCommand(BaseModel):
    """A deterministic command through the bridge's checks: no model involved."""

    model_config = ConfigDict(extra="forbid")

    do: Literal["command"] = "command"
    device: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,31}$", description="device id")
    actuator: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="actuator id")
    value: bool | int | float | str = Field(description="the value to set")
    preapproved: bool = Field(
        False,
        description="the owner approves this exact command in advance; without it a dangerous "
        "kind asks the owner, and the fast lane waits for the answer",
    )


class Notify(BaseModel):
    """Publish a notification; ``{rule}``, ``{sensor}``, ``{value}``, ``{unit}`` are filled in."""

    model_config = ConfigDict(extra="forbid")

    do: Literal["notify"] = "notify"
    message: str = Field(min_length=1, max_length=200, description="the notification text")


Action = Annotated[AskAgent | SendCommand | Notify, Field(discriminator="do")]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID, description="the rule's id")
    sensor: str = Field(min_length=1, max_length=128, description="sensor id or glob")
    when: Condition
    debounce_s: float = Field(
        0.0, ge=0, le=86400, description="after firing, stay quiet this long (counted)"
    )
    actions: list[Action] = Field(min_length=1, max_length=8)


class SerialPort(BaseModel):
    """A microcontroller on a serial line (USB or UART)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="the serial device, e.g. /dev/ttyUSB0 or a pty")
    baudrate: int = Field(115200, ge=1200, le=4_000_000, description="line speed")


class DeviceSettings(BaseModel):
    """Where the daemon finds firmware devices, and the safety around them
    (see ``firmware_bridge/PROTOCOL.md``)."""

    model_config = ConfigDict(extra="forbid")

    mqtt: bool = Field(
        False, description="talk to devices under <prefix>/fw/ on the automation broker"
    )
    serial: list[SerialPort] = Field(
        default_factory=list, max_length=64, description="devices on serial lines"
    )
    safety: BridgeSettings = Field(
        default_factory=lambda: BridgeSettings(),
        description="allowlist, ranges, rate limits and confirmation per actuator",
    )
    confirm_over_mqtt: bool = Field(
        True,
        description="ask the owner on <prefix>/<node>/confirm/request (needs the broker); "
        "without it every confirmation is a no",
    )


class AutomationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(pattern=_ID, description="this agent's id in topics and Home Assistant")
    broker: BrokerSettings | None = Field(None, description="the MQTT broker; None = no MQTT")
    sensors: list[SensorTopic] = Field(default_factory=list, max_length=256)
    rules: list[Rule] = Field(default_factory=list, max_length=256)
    discovery: bool = Field(True, description="publish Home Assistant discovery messages")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_\-]+$")
    device_silence_s: float = Field(
        90.0,
        ge=1,
        le=86400,
        description="a device not heard from for this long is offline in Home Assistant "
        "(devices announce themselves every 30 s)",
    )
    max_payload_bytes: int = Field(4096, ge=64, le=1 << 20, description="larger payloads dropped")
    max_sensors: int = Field(256, ge=1, le=100_000, description="distinct sensors tracked")
    max_pending: int = Field(256, ge=1, le=100_000, description="waiting firings per lane")
    notify_rate: str = Field("6/min", pattern=_RATE, description="notifications allowed")
    devices: DeviceSettings = Field(
        default_factory=lambda: DeviceSettings(), description="firmware devices (the bridge)"
    )

    @model_validator(mode="after")
    def _unique_rules(self) -> AutomationSettings:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError("rule names must be unique")
        return self
