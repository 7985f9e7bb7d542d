"""Sensors and devices: readings in, rules, commands out through the safety bridge.

``automation`` (rules and their runner), ``automation_settings`` (the
``[automation]`` section), ``automation_host`` (automation inside the
daemon) and Home Assistant's side (``ha_discovery``, ``ha_commands``). The
device's own side (protocol, links, simulator, firmware) is the separate
``firmware_bridge`` package. A new sensor source or rule kind goes here.
"""
