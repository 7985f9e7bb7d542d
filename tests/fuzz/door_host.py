"""The live process behind the MQTT and serial doors (run as
``python -m tests.fuzz.door_host SETTINGS_JSON``).

It runs the daemon's own input parts and nothing else (no model): an
:class:`~edge_agent.iot.automation.AutomationEngine` subscribed to the sensor
topics on a real broker, and a :class:`~edge_agent.iot.bridge.Bridge` with
a :class:`~firmware_bridge.serial_link.SerialLink` on a pty, its device
events feeding the engine. It answers ``stats`` on stdin with one JSON line
of both parts' counters, and exits on ``quit`` or end of input, so the test
can check that every input was counted while the process stays up.
"""

from __future__ import annotations

import json
import sys

from edge_agent.iot.automation import AutomationEngine
from edge_agent.iot.automation_settings import AutomationSettings
from edge_agent.iot.bridge import Bridge
from firmware_bridge.serial_link import SerialLink


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    settings = AutomationSettings.model_validate(spec["automation"])
    bridge = Bridge()
    engine = AutomationEngine(settings, commander=bridge, tick_s=None)
    bridge.subscribe(engine.on_device_event)
    engine.start()
    bridge.attach(SerialLink(spec["serial"]))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            stats = {"engine": engine.metrics(), "bridge": bridge.metrics()}
            print(json.dumps(stats, default=str), flush=True)
        elif line.strip() == "quit":
            break
    bridge.close()
    engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
