"""The bridge's safety settings, apart from the bridge itself, so that the
typed config can carry them without importing links, threads or tools."""

from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BUILTIN_DANGEROUS", "RATE_PATTERN", "ActuatorRule", "BridgeSettings"]

BUILTIN_DANGEROUS = frozenset({"lock", "heater", "thermostat", "valve", "motor"})
RATE_PATTERN = r"^\s*\d+\s*/\s*(s|sec|second|min|minute|h|hour)\s*$"


class ActuatorRule(BaseModel):
    """Extra limits for the actuators a pattern matches; they only ever narrow
    what the device announced."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(None, description="lowest value allowed (within the announced)")
    max: float | None = Field(None, description="highest value allowed (within the announced)")
    values: list[bool | int | float | str] | None = Field(
        None, max_length=64, description="the only values allowed, when given"
    )
    rate_limit: str | None = Field(
        None, pattern=r"^\s*\d+\s*/\s*(s|sec|second|min|minute|h|hour)\s*$",
        description="e.g. '6/min'; None = the bridge default",
    )  # fmt: skip
    confirm: bool = Field(False, description="always ask the owner, whatever the kind")


class BridgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(
        default_factory=lambda: ["*"],
        max_length=256,
        description="glob patterns of '<device>/<actuator>' that may be commanded; "
        "anything else is refused before sending",
    )
    actuators: dict[str, ActuatorRule] = Field(
        default_factory=dict, description="'<device>/<actuator>' glob → extra limits (first match)"
    )
    dangerous_kinds: list[str] = Field(
        default_factory=list,
        description="kinds that need confirmation, in addition to lock, heater, thermostat, "
        "valve and motor (those cannot be removed)",
    )
    command_ttl_s: float = Field(5.0, ge=0.2, le=600, description="a command's expiry")
    ack_timeout_s: float = Field(1.0, ge=0.05, le=60, description="wait for an ack per attempt")
    attempts: int = Field(3, ge=1, le=10, description="sends of one command before giving up")
    confirm_timeout_s: float = Field(
        60.0, ge=0.1, le=3600, description="no answer from the owner within this is a no"
    )
    default_rate_limit: str = Field(
        "6/min", pattern=r"^\s*\d+\s*/\s*(s|sec|second|min|minute|h|hour)\s*$",
        description="per-actuator limit when no rule sets one",
    )  # fmt: skip

    @field_validator("allow")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if "/" not in pattern and pattern != "*":
                raise ValueError(f"{pattern!r}: patterns are '<device>/<actuator>' globs")
        return value

    def dangerous(self) -> frozenset[str]:
        return BUILTIN_DANGEROUS | frozenset(self.dangerous_kinds)

    def rule_for(self, key: str) -> ActuatorRule:
        for pattern, rule in self.actuators.items():
            if fnmatch.fnmatchcase(key, pattern):
                return rule
        return ActuatorRule()

    def allowed(self, key: str) -> bool:
        return any(p == "*" or fnmatch.fnmatchcase(key, p) for p in self.allow)
