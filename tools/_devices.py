"""The device boundary of the home tools: read a sensor, set an actuator.

:class:`DeviceBackend` is the whole interface (two methods). The firmware
bridge will provide a backend that talks to real boards; until then
:class:`FileDeviceBackend` keeps device state in one JSON file, so the state
survives between tool calls (each call runs in a fresh sandbox process).

Ids are ``"<kind>.<place>"``: ``"light.kitchen"``, ``"lock.front"``,
``"temperature.bedroom"``. Values are JSON objects.

The file backend simulates devices; it does not talk to hardware. Sensor
readings come from the file's ``"sensors"`` section (a simulator or a test
may write it) and fall back to plausible indoor defaults.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

STATE_ENV = "EDGE_AGENT_DEVICE_STATE"
DEFAULT_STATE_FILE = "device_state.json"

# kind -> (default value, unit); used when the state file has no reading.
SENSOR_DEFAULTS: dict[str, tuple[Any, str | None]] = {
    "temperature": (21.0, "C"),
    "humidity": (45.0, "%"),
    "co2": (600, "ppm"),
    "motion": (False, None),
    "door": ("closed", None),
    "smoke": (False, None),
}


class DeviceBackend(Protocol):
    """Where sensor readings come from and actuator commands go."""

    def read(self, sensor: str) -> dict[str, Any]:
        """The current reading of ``sensor``, e.g. ``{"value": 21.0, "unit": "C"}``."""
        ...

    def set(self, actuator: str, value: dict[str, Any]) -> dict[str, Any]:
        """Apply ``value`` to ``actuator``; return the new and previous state."""
        ...


class FileDeviceBackend:
    """Device state in a JSON file, updated atomically under a file lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, sensor: str) -> dict[str, Any]:
        kind = sensor.partition(".")[0]
        if kind not in SENSOR_DEFAULTS:
            raise ValueError(f"unknown sensor {sensor!r}")
        stored = self._load().get("sensors", {}).get(sensor)
        value, unit = SENSOR_DEFAULTS[kind]
        reading: dict[str, Any] = {"sensor": sensor, "value": value, "unit": unit}
        if isinstance(stored, dict):
            reading.update({k: v for k, v in stored.items() if k in ("value", "unit", "at")})
        return reading

    def set(self, actuator: str, value: dict[str, Any]) -> dict[str, Any]:
        with self._locked():
            state = self._load()
            actuators = state.setdefault("actuators", {})
            previous = actuators.get(actuator)
            new = {**value, "at": _now()}
            actuators[actuator] = new
            self._save(state)
        changed = previous is None or {k: v for k, v in previous.items() if k != "at"} != value
        return {"actuator": actuator, "state": new, "previous": previous, "changed": changed}

    def actuator_state(self, actuator: str) -> dict[str, Any] | None:
        """The last value set on ``actuator`` (not part of the interface)."""
        found = self._load().get("actuators", {}).get(actuator)
        return found if isinstance(found, dict) else None

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            state = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise RuntimeError(f"device state file {self.path} is not valid JSON") from exc
        if not isinstance(state, dict):
            raise RuntimeError(f"device state file {self.path} must hold a JSON object")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".device_state.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write between concurrent tool processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def state_path() -> Path:
    """``$EDGE_AGENT_DEVICE_STATE``, else ``device_state.json`` in the tool's
    persistent sandbox folder (``$EDGE_AGENT_TOOL_STATE``), else in the working
    directory."""
    configured = os.environ.get(STATE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    folder = os.environ.get("EDGE_AGENT_TOOL_STATE", "").strip()
    return (Path(folder) if folder else Path.cwd()) / DEFAULT_STATE_FILE


def default_backend() -> DeviceBackend:
    """The backend the home tools use; the firmware bridge will plug in here."""
    return FileDeviceBackend(state_path())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
