"""Energy per request: measured where a sensor can be read, modelled where not.

``best_probe()`` returns the best source this machine offers, in this order:
RAPL (x86 package counters), hwmon (board sensors: Jetson INA3221, INA2xx
HATs, ``amd_energy``), then the CPU-time model with a device profile. It never
raises because a sensor is missing or unreadable: it falls back and records
why in every sample's ``note``, e.g. ``rapl unreadable: permission denied;
using cpu-model:generic-x86``. Usage::

    probe = best_probe()
    with measure(probe) as span:
        agent.ask(...)
    print(span.energy.joules, span.energy.source)
"""

from __future__ import annotations

from edge_agent.errors import ConfigError
from edge_agent.power.base import (
    EnergySample,
    PowerProbe,
    Reading,
    Span,
    SysPaths,
    Unavailable,
    measure,
)
from edge_agent.power.cpu_model import (
    PROFILES,
    CpuModelProbe,
    DeviceProfile,
    cpu_model_name,
    detect_profile,
    profile_named,
)
from edge_agent.power.hwmon import HwmonProbe, open_hwmon
from edge_agent.power.rapl import RaplProbe, open_rapl

__all__ = [
    "PREFERENCES",
    "PROFILES",
    "CpuModelProbe",
    "DeviceProfile",
    "EnergySample",
    "HwmonProbe",
    "PowerProbe",
    "RaplProbe",
    "Reading",
    "Span",
    "SysPaths",
    "best_probe",
    "cpu_model_name",
    "detect_profile",
    "measure",
]

PREFERENCES = ("auto", "rapl", "hwmon", "cpu-model")
"""What ``best_probe(prefer=...)`` accepts; ``cpu-model:<profile>`` names a profile."""

_SENSORS = {"auto": ("rapl", "hwmon"), "rapl": ("rapl",), "hwmon": ("hwmon",), "cpu-model": ()}


def best_probe(prefer: str | None = None, *, paths: SysPaths | None = None) -> PowerProbe:
    """The best available probe; ``prefer`` picks a source to try first.

    ``None``/``"auto"``: RAPL, then hwmon, then the CPU model. ``"rapl"`` or
    ``"hwmon"``: that sensor, else the CPU model. ``"cpu-model"``: the model
    with the detected profile; ``"cpu-model:raspberry-pi-5"``: with that one.
    A missing sensor is never an error; an unknown ``prefer`` is (ConfigError).
    """
    paths = paths or SysPaths()
    kind, profile = _parse_preference(prefer or "auto")
    reasons: list[str] = []
    for sensor in _SENSORS[kind]:
        found = _open_sensor(sensor, paths)
        if not isinstance(found, Unavailable):
            found.note = _fallback_note(reasons, found.source)
            return found
        reasons.append(found.reason)
    model = CpuModelProbe(profile or detect_profile(paths))
    model.note = _fallback_note(reasons, model.source)
    return model


def _parse_preference(prefer: str) -> tuple[str, DeviceProfile | None]:
    kind, _, profile = prefer.partition(":")
    if kind not in _SENSORS or (profile and kind != "cpu-model"):
        raise ConfigError(
            f"unknown energy source {prefer!r}",
            hint=f"use one of {', '.join(PREFERENCES)} or cpu-model:<profile>",
        )
    return kind, profile_named(profile) if profile else None


def _open_sensor(sensor: str, paths: SysPaths) -> RaplProbe | HwmonProbe | Unavailable:
    return open_rapl(paths.powercap) if sensor == "rapl" else open_hwmon(paths.hwmon)


def _fallback_note(reasons: list[str], source: str) -> str:
    return "; ".join([*reasons, f"using {source}"]) if reasons else ""
