"""An edited tools module is read again: a reload (the daemon's SIGHUP)
must give the verifier the schema of the code the sandbox will run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.toolbox.registry import Registry

VERSION_1 = '''
from edge_agent.toolbox.registry import tool

@tool(side_effect="actuate")
def set_fan(room: str, speed: int) -> str:
    """Set a fan's speed."""
    return f"v1 {room} {speed}"
'''

VERSION_2 = VERSION_1.replace("speed: int", "speed: str").replace("v1", "v2")


def speed_type(openai: dict[str, Any]) -> str:
    return str(openai["function"]["parameters"]["properties"]["speed"]["type"])


def test_a_reload_reads_the_edited_module(tmp_path: Path) -> None:
    module = tmp_path / "fans.py"
    module.write_text(VERSION_1)
    before = Registry.from_dirs(tmp_path, builtin=False).get("set_fan")
    module.write_text(VERSION_2)
    after = Registry.from_dirs(tmp_path, builtin=False).get("set_fan")
    assert speed_type(before.spec.to_openai()) == "integer"
    assert speed_type(after.spec.to_openai()) == "string"
    assert after.func is not None and after.func("hall", "high") == "v2 hall high"


def test_an_unchanged_module_is_imported_once(tmp_path: Path) -> None:
    (tmp_path / "fans.py").write_text(VERSION_1)
    first = Registry.from_dirs(tmp_path, builtin=False).get("set_fan")
    again = Registry.from_dirs(tmp_path, builtin=False).get("set_fan")
    assert first.func is again.func
