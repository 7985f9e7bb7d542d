"""The sentence a person reads about each call that ran (pure, no model)."""

from __future__ import annotations

from edge_agent.decoding.calls import ToolCall
from edge_agent.toolbox.registry import Registry
from edge_agent.toolbox.sentences import said, with_unit


def _builtin() -> Registry:
    return Registry.from_dirs()


def test_home_tools_read_as_sentences() -> None:
    tools = _builtin()
    light = ToolCall("set_light", {"room": "kitchen", "on": True})
    value = {"room": "kitchen", "on": True, "brightness": 100, "changed": True}
    assert said(tools.get("set_light"), light, status="done", value=value) == (
        "Kitchen light on, 100%."
    )
    reading = {"sensor": "temperature", "room": "living_room", "value": 21.5, "unit": "C"}
    call = ToolCall("read_sensor", {"sensor": "temperature", "room": "living_room"})
    assert said(tools.get("read_sensor"), call, status="done", value=reading) == (
        "The temperature in the living room is 21.5 °C."
    )
    lock = ToolCall("lock_door", {"door": "front", "locked": False})
    done = {"door": "front", "locked": False, "changed": True}
    assert said(tools.get("lock_door"), lock, status="done", value=done) == "Front door unlocked."


def test_a_template_over_arguments_and_result() -> None:
    tools = _builtin()
    call = ToolCall("calculate", {"expression": "17 * 23"})
    value = {"expression": "17 * 23", "result": 391}
    assert said(tools.get("calculate"), call, status="done", value=value) == "17 * 23 = 391."


def test_failures_and_refusals_say_why() -> None:
    tools = _builtin()
    call = ToolCall("lock_door", {"door": "front", "locked": True})
    assert said(tools.get("lock_door"), call, status="unconfirmed") == (
        "Lock door was not run: it needs your confirmation."
    )
    assert said(None, call, status="failed", error="device offline") == (
        "Lock door failed: device offline."
    )


def test_a_template_that_does_not_fit_falls_back_to_a_generic_sentence() -> None:
    tools = _builtin()
    call = ToolCall("set_light", {"room": "kitchen", "on": True})
    assert said(tools.get("set_light"), call, status="done", value={"odd": 1}) == (
        'Set light: {"odd": 1}.'
    )
    assert said(None, ToolCall("ping", {}), status="done", value=None) == "Done: ping."


def test_units_read_naturally() -> None:
    assert with_unit(21.5, "C") == "21.5 °C"
    assert with_unit(45, "%") == "45%"
    assert with_unit(True, None) == "yes"
