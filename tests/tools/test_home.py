"""Home tools over the file device backend: state persists in a JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_agent.toolbox.registry import BUILTIN_TOOLS_DIR

from . import load_tool_module

home = load_tool_module("home")
devices = load_tool_module("_devices")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state" / "devices.json"
    monkeypatch.setenv("EDGE_AGENT_DEVICE_STATE", str(path))
    return path


def stored(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_home_uses_the_same_devices_module() -> None:
    assert home.default_backend is devices.default_backend


def test_set_light(state: Path) -> None:
    out = home.set_light("kitchen", True, 40)
    assert out == {"room": "kitchen", "on": True, "brightness": 40, "changed": True}
    light = stored(state)["actuators"]["light.kitchen"]
    assert light["on"] is True and light["brightness"] == 40
    json.dumps(out)


def test_set_light_default_brightness_and_no_change(state: Path) -> None:
    assert home.set_light("bedroom", True)["brightness"] == 100
    assert home.set_light("bedroom", True)["changed"] is False
    assert home.set_light("bedroom", False)["changed"] is True


def test_set_thermostat(state: Path) -> None:
    out = home.set_thermostat("living_room", 21.5)
    assert out == {"room": "living_room", "target_c": 21.5, "mode": "auto", "changed": True}
    assert home.set_thermostat("living_room", 19, "heat")["mode"] == "heat"
    assert stored(state)["actuators"]["thermostat.living_room"]["target_c"] == 19


def test_lock_door_and_valve(state: Path) -> None:
    assert home.lock_door("front", True) == {"door": "front", "locked": True, "changed": True}
    assert home.set_valve("garden", 30) == {"valve": "garden", "open_percent": 30, "changed": True}
    actuators = stored(state)["actuators"]
    assert actuators["lock.front"]["locked"] is True
    assert actuators["valve.garden"]["open_percent"] == 30


def test_read_sensor_defaults(state: Path) -> None:
    assert home.read_sensor("temperature", "kitchen") == {
        "sensor": "temperature",
        "room": "kitchen",
        "value": 21.0,
        "unit": "C",
    }
    assert home.read_sensor("smoke", "garage")["value"] is False
    assert home.read_sensor("door", "hallway")["value"] == "closed"
    assert not state.exists()  # reading never writes


def test_read_sensor_from_state_file(state: Path) -> None:
    state.parent.mkdir(parents=True)
    sensors = {"co2.bedroom": {"value": 1250, "unit": "ppm"}, "motion.hallway": {"value": True}}
    state.write_text(json.dumps({"sensors": sensors}), encoding="utf-8")
    assert home.read_sensor("co2", "bedroom")["value"] == 1250
    assert home.read_sensor("motion", "hallway") == {
        "sensor": "motion",
        "room": "hallway",
        "value": True,
        "unit": None,
    }
    home.set_light("hallway", True)  # writing keeps the sensors section
    assert stored(state)["sensors"] == sensors


def test_default_state_path_is_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_AGENT_DEVICE_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    home.set_light("garage", True)
    assert "light.garage" in stored(tmp_path / "device_state.json")["actuators"]


def test_state_survives_across_processes(state: Path) -> None:
    """Each tool call runs in its own sandbox process: state must be on disk."""
    script = (
        "import sys\n"
        "from edge_agent.toolbox.registry import load_module\n"
        "from pathlib import Path\n"
        "home = load_module(Path(sys.argv[1]))\n"
        "home.lock_door('back', True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(BUILTIN_TOOLS_DIR.parent)}
    subprocess.run(
        [sys.executable, "-c", script, str(BUILTIN_TOOLS_DIR / "home.py")],
        check=True,
        env=env,
        timeout=60,
    )
    assert home.lock_door("back", True)["changed"] is False
    assert stored(state)["actuators"]["lock.back"]["locked"] is True


def test_concurrent_writers_lose_nothing(state: Path) -> None:
    rooms = ["living_room", "kitchen", "bedroom", "bathroom", "hallway", "garage"]
    errors: list[BaseException] = []

    def flip(room: str) -> None:
        try:
            for level in range(10):
                home.set_light(room, True, level)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(room,)) for room in rooms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    actuators = stored(state)["actuators"]
    assert {f"light.{r}" for r in rooms} <= set(actuators)
    assert all(actuators[f"light.{r}"]["brightness"] == 9 for r in rooms)
    assert not [p for p in state.parent.iterdir() if p.name.startswith(".device_state.")]


def test_corrupt_state_file_is_an_error(state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_text("{not json", encoding="utf-8")
    with pytest.raises(RuntimeError, match="not valid JSON"):
        home.set_light("kitchen", True)
    assert state.read_text(encoding="utf-8") == "{not json"  # left for a human to inspect
    state.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(RuntimeError, match="JSON object"):
        home.read_sensor("humidity", "bathroom")


def test_unknown_sensor_kind(state: Path) -> None:
    with pytest.raises(ValueError, match="unknown sensor"):
        devices.FileDeviceBackend(state).read("radiation.kitchen")


class RecordingBackend:
    """Another DeviceBackend, as the firmware bridge will provide."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def read(self, sensor: str) -> dict[str, Any]:
        self.calls.append(("read", sensor))
        return {"sensor": sensor, "value": 7, "unit": "x"}

    def set(self, actuator: str, value: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("set", actuator, value))
        return {"actuator": actuator, "state": value, "previous": None, "changed": True}


def test_tools_go_through_the_backend_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = RecordingBackend()
    monkeypatch.setattr(home, "default_backend", lambda: backend)
    home.set_valve("main_water", 0)
    assert home.read_sensor("humidity", "bathroom")["value"] == 7
    assert backend.calls == [
        ("set", "valve.main_water", {"open_percent": 0}),
        ("read", "humidity.bathroom"),
    ]


def test_policies() -> None:
    policy = {
        name: getattr(home, name).__edge_agent_tool__
        for name in ("set_light", "set_thermostat", "read_sensor", "lock_door", "set_valve")
    }
    assert policy["read_sensor"].side_effect == "read"
    assert policy["set_light"].side_effect == "actuate"
    assert policy["set_thermostat"].side_effect == "actuate"
    for name in ("lock_door", "set_valve"):
        assert policy[name].side_effect == "dangerous"
        assert policy[name].requires_confirmation is True
    for name in ("set_light", "set_thermostat", "lock_door", "set_valve"):
        assert policy[name].rate_per_second() is not None
    assert policy["set_thermostat"].rate_per_second() == (6, 60.0)
