"""MQTT offload through a real mosquitto (TLS, passwords, ACL) and the
cloud-bridge, to the real llama.cpp server or a scripted HTTPS endpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.decoding.calls import ToolCall
from edge_agent.errors import InputError, OffloadError
from edge_agent.routing.offload import OffloadReply, OffloadRequest, OffloadTransport
from edge_agent.routing.offload.base import (
    error_to_wire,
    reply_from_wire,
    reply_to_wire,
    request_from_wire,
    request_to_wire,
)
from edge_agent.routing.offload.https import HttpsOffloadSettings
from edge_agent.routing.offload.mqtt import MqttOffloadSettings, MqttTransport, status_topic
from tests.offload.conftest import (
    PREFIX,
    Answer,
    Broker,
    LlmServer,
    Pki,
    completion,
    free_port,
    tool_call,
)
from tests.offload.test_https import HOME_TOOLS, check_verified, light_request

LIGHT_ON = completion(tool_calls=[tool_call("set_light", {"room": "kitchen", "on": True})])


def scripted_endpoint(server: Any, pki: Pki, **overrides: Any) -> HttpsOffloadSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "ca_bundle": pki.ca_file,
        "max_retries": 0,
        "read_timeout_s": 10,
    }
    return HttpsOffloadSettings(**{**values, **overrides})


# --- end to end ----------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_round_trip_to_the_real_llm(broker: Broker, llm_server: LlmServer, run_bridge: Any) -> None:
    """device → mosquitto (TLS, auth, ACL) → cloud-bridge → llama.cpp over TLS → back,
    correlated; the repeat with the same key comes from the bridge's cache."""
    bridge = run_bridge(broker.bridge_settings(llm_server.settings()))
    with MqttTransport(broker.device_settings("dev1", reply_timeout_s=120)) as transport:
        assert isinstance(transport, OffloadTransport)
        reply = transport.send(light_request(key="mqtt-e2e"))
        started = time.monotonic()
        again = transport.send(light_request(key="mqtt-e2e"))
        repeat_s = time.monotonic() - started
    assert reply.transport == "mqtt"
    assert [c.name for c in reply.calls] == ["set_light"]
    assert reply.calls[0].arguments["room"] == "kitchen"
    check_verified(reply.calls, HOME_TOOLS)
    assert reply.prompt_tokens > 50 and reply.completion_tokens > 0
    assert again.calls == reply.calls and repeat_s < 2.0
    assert (bridge.stats.answered, bridge.stats.from_cache) == (1, 1)


def test_round_trip_with_scripted_endpoint(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    server = scripted([Answer(body=LIGHT_ON)])
    run_bridge(broker.bridge_settings(scripted_endpoint(server, pki)))
    with MqttTransport(broker.device_settings("dev1")) as transport:
        reply = transport.send(light_request(key="k1", max_tokens=99))
    assert reply.calls == (ToolCall("set_light", {"room": "kitchen", "on": True}),)
    assert (reply.prompt_tokens, reply.completion_tokens, reply.model) == (42, 7, "scripted")
    assert server.received[0].headers["idempotency-key"] == "k1"
    assert server.received[0].body["max_tokens"] == 99


# --- faults ---------------------------------------------------------------------


def test_acl_denies_publishing_to_another_devices_topic(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    """dev1's credentials with dev2's topics: the broker refuses the request
    (PUBACK 'Not authorized'), the bridge never sees it, and nothing crashes."""
    server = scripted([Answer(body=LIGHT_ON)])
    bridge = run_bridge(broker.bridge_settings(scripted_endpoint(server, pki)))
    impostor = broker.device_settings("dev1", device_id="dev2", reply_timeout_s=5)
    started = time.monotonic()
    with MqttTransport(impostor) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    assert time.monotonic() - started < 4
    assert err.value.retryable is False and "Not authorized" in err.value.message
    assert bridge.stats.received == 0 and server.received == []
    with MqttTransport(broker.device_settings("dev1")) as transport:
        assert transport.send(light_request()).calls  # the legitimate path still works


def test_wrong_password_is_permanent(broker: Broker, tmp_path: Path) -> None:
    bad = tmp_path / "bad.password"
    bad.write_text("not-the-password")
    bad.chmod(0o600)
    settings = broker.device_settings("dev1", password_file=bad)
    with MqttTransport(settings) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    assert err.value.retryable is False
    assert "refused the connection" in err.value.message and "password" in err.value.hint


def test_wrong_ca_is_permanent(broker: Broker, other_ca_file: Path) -> None:
    settings = broker.device_settings("dev1", tls_ca=other_ca_file)
    with MqttTransport(settings) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    assert err.value.retryable is False
    assert "certificate verify failed" in err.value.message


def test_broker_down_is_retryable_and_quick() -> None:
    down = MqttOffloadSettings(
        host="127.0.0.1", port=free_port(), device_id="dev1", connect_timeout_s=2, tls=False
    )
    started = time.monotonic()
    with MqttTransport(down) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    assert err.value.retryable is True
    assert "cannot connect" in err.value.message
    assert time.monotonic() - started < 3


def test_no_bridge_times_out_retryable(broker: Broker) -> None:
    settings = broker.device_settings("dev1", reply_timeout_s=1)
    started = time.monotonic()
    with MqttTransport(settings) as transport, pytest.raises(OffloadError) as err:
        transport.send(light_request())
    assert err.value.retryable is True and "no reply" in err.value.message
    assert 1 <= time.monotonic() - started < 3


def test_broker_stops_mid_request_then_comes_back(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    """The wait ends at once with a retryable error, not at the reply timeout;
    after the broker returns, a retry with the same key is answered, and the
    endpoint generated only once."""
    server = scripted([Answer(body=LIGHT_ON, delay_s=2.0)])
    bridge = run_bridge(broker.bridge_settings(scripted_endpoint(server, pki)))
    with MqttTransport(broker.device_settings("dev1", reply_timeout_s=30)) as transport:
        transport.connect()
        stopper = threading.Timer(0.5, broker.stop)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(OffloadError) as err:
            transport.send(light_request(key="survivor"))
        assert err.value.retryable is True and "lost the connection" in err.value.message
        assert time.monotonic() - started < 5
        stopper.join()
        broker.start()
        _wait_until(lambda: bridge.is_connected, 40)
        reply = transport.send(light_request(key="survivor"))
    assert reply.calls and len(server.received) == 1


def _wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


# --- availability: retained online / offline and the last will ----------------

_DEVICE_SCRIPT = """
import json, sys, time
from edge_agent.routing.offload.mqtt import MqttOffloadSettings, MqttTransport
transport = MqttTransport(MqttOffloadSettings.model_validate_json(sys.argv[1]))
transport.connect()
print("connected", flush=True)
time.sleep(120)
"""


def test_last_will_is_retained_offline_after_sigkill(broker: Broker, raw_client: Any) -> None:
    settings = broker.device_settings("dev1")
    topic = status_topic(PREFIX, "dev1")
    device = subprocess.Popen(
        [sys.executable, "-c", _DEVICE_SCRIPT, settings.model_dump_json()],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert device.stdout is not None and device.stdout.readline() == b"connected\n"
        watcher = raw_client("bridge")
        watcher.subscribe(topic)
        online = watcher.next_message()
        assert online is not None and online.payload == b"online" and online.retain
        device.send_signal(signal.SIGKILL)
        device.wait(10)
        will = watcher.next_message()
        assert will is not None and will.payload == b"offline"
    finally:
        if device.poll() is None:
            device.kill()
            device.wait()
        if device.stdout is not None:
            device.stdout.close()
    late = raw_client("bridge")
    late.subscribe(topic)
    retained = late.next_message()
    assert retained is not None and retained.payload == b"offline" and retained.retain


def test_clean_close_publishes_offline(broker: Broker, raw_client: Any) -> None:
    with MqttTransport(broker.device_settings("dev2")) as transport:
        transport.connect()
    watcher = raw_client("bridge")
    watcher.subscribe(status_topic(PREFIX, "dev2"))
    message = watcher.next_message()
    assert message is not None and message.payload == b"offline" and message.retain


# --- the wire format --------------------------------------------------------------


def test_wire_round_trip() -> None:
    request = light_request(key="w1", tool_choice="set_light", max_tokens=32, model="m")
    decoded = request_from_wire(request_to_wire(request))
    assert decoded == request
    assert [t.to_openai() for t in decoded.tools] == [t.to_openai() for t in request.tools]
    reply = OffloadReply(
        calls=(ToolCall("set_light", {"room": "kitchen", "on": True}),),
        text="",
        model="m",
        prompt_tokens=3,
        completion_tokens=4,
        latency_s=0.5,
        transport="https",
        errors=("x",),
    )
    back = reply_from_wire(reply_to_wire(reply), transport="mqtt", latency_s=1.5)
    assert back == OffloadReply(**{**reply.__dict__, "transport": "mqtt", "latency_s": 1.5})


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"v": 2}', "unsupported request version"),
        (b'{"v": 1, "messages": [{"role": "user"}]}', "idempotency_key"),
        (b'{"v": 1, "idempotency_key": "k", "messages": []}', "messages must be a non-empty"),
        (b'{"v": 1, "idempotency_key": "k", "messages": [{"role": "x"}]}', "role"),
        (
            b'{"v": 1, "idempotency_key": "k", "messages": [{"role": "user", "content": ""}],'
            b' "tools": [{"name": "bad name!"}]}',
            "tools:",
        ),
        (
            b'{"v": 1, "idempotency_key": "k", "messages": [{"role": "user", "content": ""}],'
            b' "max_tokens": 0}',
            "max_tokens",
        ),
    ],
)
def test_malformed_requests_are_input_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        request_from_wire(payload)


def test_error_reply_is_raised_with_its_retryable_flag() -> None:
    for retryable in (True, False):
        with pytest.raises(OffloadError, match="boom") as err:
            reply_from_wire(
                error_to_wire("boom", retryable=retryable), transport="mqtt", latency_s=0
            )
        assert err.value.retryable is retryable
    with pytest.raises(OffloadError, match="malformed reply") as err:
        payload = json.dumps({"v": 1, "ok": True, "calls": 5}).encode()
        reply_from_wire(payload, transport="mqtt", latency_s=0)
    assert err.value.retryable is False


def test_import_loads_neither_paho_nor_httpx() -> None:
    code = (
        "import sys, edge_agent.routing.offload\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paho', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_request_is_frozen_data() -> None:
    request = OffloadRequest(
        messages=[{"role": "user", "content": "hi"}], tools=[], idempotency_key="k"
    )
    assert (request.tool_choice, request.max_tokens, request.model) == ("auto", 256, None)
    with pytest.raises(AttributeError):
        request.idempotency_key = "other"  # type: ignore[misc]
