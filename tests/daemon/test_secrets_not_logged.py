"""Secrets never reach the log or the journal.

One full run of the real daemon (SmolLM2 135M) with every secret configured:
the API token (``EDGE_AGENT_API_TOKEN``), a cloud offload token file (a
loopback TLS stand-in answers every request, τ = 1), and an MQTT password
file (the real mosquitto, with a rule that fires and notifies). Requests
with the right token, a wrong token and a reading go through; then every log
line, every cell of every journal table and every byte of every file in the
state directory are searched for each secret. The stand-in must have seen
the cloud token, so the secrets were really in use."""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from tests.daemon.conftest import SMOL, smol_config, start_daemon
from tests.iot.conftest import NODE, IotBroker, broker_table, wait_until
from tests.iot.conftest import iot_broker as iot_broker  # the real broker, as a fixture here
from tests.offload.conftest import (
    PREFIX,
    Answer,
    RawClient,
    completion,
    tool_call,
    write_secret,
)
from tests.offload.conftest import pki as pki
from tests.offload.conftest import scripted as scripted

LIGHT_ARGS = {"room": "kitchen", "on": True}


def _automation(broker: IotBroker) -> str:
    return f"""
[automation]
node_id = "{NODE}"
discovery = false

{broker_table(broker)}

[[automation.sensors]]
topic = "home/sensors/+"
field = "temperature"

[[automation.rules]]
name = "room-hot"
sensor = "home/sensors/*"
when = {{ kind = "threshold", above = 30 }}
[[automation.rules.actions]]
do = "notify"
message = "{{sensor}} is at {{value}}"
"""


def _journal_cells(path: Path) -> list[str]:
    """Every cell of every table, as text."""
    with closing(sqlite3.connect(path)) as db:
        tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [
            str(cell)
            for table in tables
            for row in db.execute(f'SELECT * FROM "{table}"')
            for cell in row
        ]


def test_no_secret_in_any_log_line_or_journal_row(
    tmp_path: Path, iot_broker: IotBroker, scripted: Any, pki: Any, models_ready: None
) -> None:
    api_token = "api-" + secrets.token_urlsafe(24)
    cloud_token = "cloud-" + secrets.token_urlsafe(24)
    mqtt_password = iot_broker.passwords["agent"]
    cloud = scripted(
        [
            Answer(
                body=completion(
                    tool_calls=[tool_call("set_light", {"room": "kitchen", "on": True})]
                )
            )
        ]
    )
    config: dict[str, Any] = {
        **smol_config(),
        "router": {"threshold": 1.0},  # every request offloads: the cloud token is used
        "offload.https": {
            "base_url": cloud.base_url,
            "model": "scripted",
            "ca_bundle": str(pki.ca_file),
            "token_file": str(write_secret(tmp_path / "cloud.token", cloud_token)),
            "max_retries": 0,
        },
    }
    daemon = start_daemon(tmp_path, config, token=api_token, extra_toml=_automation(iot_broker))
    owner, sensors = RawClient(iot_broker, "owner"), RawClient(iot_broker, "sensors")
    try:
        owner.subscribe(f"{PREFIX}/{NODE}/notify")
        body = {
            "model": SMOL,
            "messages": [{"role": "user", "content": "Turn on the kitchen light"}],
            "x_edge_agent_tools": ["set_light"],
        }
        with daemon.client() as client:
            answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["x_edge_agent"]["route"] == "offload:https"
        wrong = httpx.post(f"{daemon.url}/v1/chat/completions", json=body, timeout=60,
                           headers={"authorization": f"Bearer {api_token[:-1]}x"})  # fmt: skip
        assert wrong.status_code == 401
        sensors.publish("home/sensors/room", json.dumps({"temperature": 35}).encode())
        assert owner.next_message(timeout=60) is not None, daemon.log()
        assert wait_until(lambda: cloud.received, timeout=10)
        assert cloud.received[0].headers["authorization"] == f"Bearer {cloud_token}"
    finally:
        owner.close()
        sensors.close()
        assert daemon.stop(signal.SIGTERM) == 0, daemon.log()

    log_lines = daemon.log().splitlines()
    cells = _journal_cells(daemon.journal)
    files = {p: p.read_bytes() for p in daemon.state_dir.rglob("*") if p.is_file()}
    assert len(log_lines) > 5 and len(cells) > 20 and daemon.journal in files
    for name, secret in (("API token", api_token), ("cloud token", cloud_token),
                         ("MQTT password", mqtt_password)):  # fmt: skip
        assert not [line for line in log_lines if secret in line], f"{name} in the log"
        assert not [cell for cell in cells if secret in cell], f"{name} in the journal"
        leaked = [str(p) for p, data in files.items() if secret.encode() in data]
        assert not leaked, f"{name} in {leaked}"
