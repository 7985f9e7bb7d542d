"""The cloud-bridge through a real mosquitto: malformed requests get error
replies, repeats come from the cache, endpoint failures are relayed with their
retryable flag, and the CLI runs it as a process until SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError, InputError, OffloadError
from edge_agent.routing.offload.base import request_to_wire
from edge_agent.routing.offload.bridge import ReplyCache
from edge_agent.routing.offload.mqtt import MqttTransport, reply_topic, request_topic
from tests.offload.conftest import PREFIX, Answer, Broker, Pki
from tests.offload.test_https import light_request
from tests.offload.test_mqtt import LIGHT_ON, scripted_endpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bridge_and_server(broker: Broker, scripted: Any, pki: Pki, run_bridge: Any) -> tuple[Any, Any]:
    server = scripted([Answer(body=LIGHT_ON)])
    return run_bridge(broker.bridge_settings(scripted_endpoint(server, pki))), server


def reply_body(message: Any) -> dict[str, Any]:
    assert message is not None, "no reply arrived"
    body: dict[str, Any] = json.loads(message.payload)
    return body


# --- malformed requests: error replies, never a crash --------------------------


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\xff not json", "not valid JSON"),
        (b'{"v": 1, "messages": [{"role": "user", "content": "hi"}]}', "idempotency_key"),
        (b'{"v": 1, "idempotency_key": "k", "messages": []}', "messages"),
    ],
    ids=["not-json", "no-key", "no-messages"],
)
def test_malformed_request_gets_an_error_reply(
    payload: bytes, problem: str, broker: Broker, bridge_and_server: Any, raw_client: Any
) -> None:
    bridge, server = bridge_and_server
    device = raw_client("dev1")
    device.subscribe(reply_topic(PREFIX, "dev1"))
    device.publish(
        request_topic(PREFIX, "dev1"),
        payload,
        response_topic=reply_topic(PREFIX, "dev1"),
        correlation=b"corr-1",
    )
    message = device.next_message()
    body = reply_body(message)
    assert message.properties.CorrelationData == b"corr-1"
    assert body["ok"] is False and body["retryable"] is False and problem in body["error"]
    assert bridge.stats.malformed == 1 and server.received == []
    with MqttTransport(broker.device_settings("dev1")) as transport:
        assert transport.send(light_request()).calls  # the bridge is still serving


def test_request_without_correlation_is_answered_on_the_devices_reply_topic(
    bridge_and_server: Any, raw_client: Any
) -> None:
    bridge, _ = bridge_and_server
    device = raw_client("dev1")
    device.subscribe(reply_topic(PREFIX, "dev1"))
    device.publish(request_topic(PREFIX, "dev1"), request_to_wire(light_request()))
    body = reply_body(device.next_message())
    assert body["ok"] is False and "CorrelationData" in body["error"]
    assert bridge.stats.malformed == 1


def test_response_topic_of_another_device_is_refused(
    bridge_and_server: Any, raw_client: Any
) -> None:
    """dev1 cannot make the bridge write into dev2's reply topic."""
    _, server = bridge_and_server
    victim = raw_client("dev2")
    victim.subscribe(reply_topic(PREFIX, "dev2"))
    device = raw_client("dev1")
    device.subscribe(reply_topic(PREFIX, "dev1"))
    device.publish(
        request_topic(PREFIX, "dev1"),
        request_to_wire(light_request()),
        response_topic=reply_topic(PREFIX, "dev2"),
        correlation=b"c",
    )
    body = reply_body(device.next_message())
    assert body["ok"] is False and "ResponseTopic must be" in body["error"]
    assert victim.next_message(timeout=1) is None
    assert server.received == []


# --- idempotency: repeats from the cache ----------------------------------------


def test_repeated_key_is_answered_from_the_cache(broker: Broker, bridge_and_server: Any) -> None:
    bridge, server = bridge_and_server
    with MqttTransport(broker.device_settings("dev1")) as transport:
        first = transport.send(light_request(key="same"))
        second = transport.send(light_request(key="same"))
        transport.send(light_request(key="other"))
    assert first.calls == second.calls
    assert len(server.received) == 2
    assert (bridge.stats.answered, bridge.stats.from_cache) == (2, 1)


def test_keys_are_scoped_per_device(broker: Broker, bridge_and_server: Any) -> None:
    _, server = bridge_and_server
    for device in ("dev1", "dev2"):
        with MqttTransport(broker.device_settings(device)) as transport:
            transport.send(light_request(key="shared-key"))
    assert len(server.received) == 2


def test_key_reused_for_a_different_request_is_refused(
    broker: Broker, bridge_and_server: Any
) -> None:
    with MqttTransport(broker.device_settings("dev1")) as transport:
        transport.send(light_request(key="k"))
        other = light_request(key="k", messages=[{"role": "user", "content": "Lights off."}])
        with pytest.raises(OffloadError, match="different request") as err:
            transport.send(other)
    assert err.value.retryable is False


def test_concurrent_repeats_wait_for_the_first(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    server = scripted([Answer(body=LIGHT_ON, delay_s=1.0)])
    bridge = run_bridge(broker.bridge_settings(scripted_endpoint(server, pki), workers=4))
    results: list[Any] = []
    with MqttTransport(broker.device_settings("dev1")) as transport:
        threads = [
            threading.Thread(target=lambda: results.append(transport.send(light_request("dup"))))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(results) == 3 and all(r.calls == results[0].calls for r in results)
    assert len(server.received) == 1 and bridge.stats.from_cache == 2


# --- endpoint failures are relayed ------------------------------------------------


def test_permanent_endpoint_error_is_relayed(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    server = scripted([Answer(400, {"error": "bad request"})])
    run_bridge(broker.bridge_settings(scripted_endpoint(server, pki)))
    device = broker.device_settings("dev1")
    with MqttTransport(device) as transport, pytest.raises(OffloadError, match="HTTP 400") as err:
        transport.send(light_request())
    assert err.value.retryable is False


def test_retryable_endpoint_error_is_relayed_and_not_cached(
    broker: Broker, scripted: Any, pki: Pki, run_bridge: Any
) -> None:
    server = scripted([Answer(503, {"error": "busy"}), Answer(body=LIGHT_ON)])
    run_bridge(broker.bridge_settings(scripted_endpoint(server, pki)))
    with MqttTransport(broker.device_settings("dev1")) as transport:
        with pytest.raises(OffloadError, match="HTTP 503") as err:
            transport.send(light_request(key="again"))
        assert err.value.retryable is True
        assert transport.send(light_request(key="again")).calls
    assert len(server.received) == 2


# --- the reply cache (pure) -------------------------------------------------------


def test_reply_cache_expires_and_bounds() -> None:
    now = [0.0]
    cache = ReplyCache(window_s=10, max_entries=2, clock=lambda: now[0])
    future, owner = cache.claim(("t", "a"), "fp")
    assert owner
    again, owner = cache.claim(("t", "a"), "fp")
    assert again is future and not owner
    with pytest.raises(InputError, match="different request"):
        cache.claim(("t", "a"), "other-fp")
    cache.finish(("t", "a"), b"reply-a", keep=True)
    assert future.result(0) == b"reply-a"
    now[0] = 11
    assert cache.claim(("t", "a"), "fp")[1]  # expired: a new owner
    cache.finish(("t", "a"), b"x", keep=True)
    for key in ("b", "c"):
        cache.claim(("t", key), "fp")
        cache.finish(("t", key), b"x", keep=True)
    assert cache.claim(("t", "d"), "fp")[1]
    assert cache.claim(("t", "a"), "fp")[1]  # evicted as the oldest of too many


def test_reply_cache_drops_what_must_not_be_kept() -> None:
    cache = ReplyCache(window_s=60, max_entries=10)
    waiter: Future[bytes]
    _, _ = cache.claim(("t", "k"), "fp")
    waiter, owner = cache.claim(("t", "k"), "fp")
    assert not owner
    cache.finish(("t", "k"), b"retryable error", keep=False)
    assert waiter.result(0) == b"retryable error"  # waiters still get the answer
    assert cache.claim(("t", "k"), "fp")[1]  # but the next repeat runs again


# --- the CLI -----------------------------------------------------------------------


def _parse(*argv: str) -> Any:
    from edge_agent.cli.offload import register, settings_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return settings_from_args(parser.parse_args(["cloud-bridge", *argv]))


def test_cli_flags_map_onto_settings(tmp_path: Path) -> None:
    settings = _parse(
        "--broker", "broker.example:8884", "--endpoint", "https://llm.example/v1",
        "--device-topic", "site/+/offload/request", "--workers", "3", "--model", "qwen",
    )  # fmt: skip
    assert (settings.host, settings.port, settings.tls, settings.workers) == (
        "broker.example",
        8884,
        True,
        3,
    )
    assert settings.subscription == "$share/edge-agent-bridge/site/+/offload/request"
    assert settings.endpoint.base_url == "https://llm.example/v1"
    assert settings.endpoint.model == "qwen"
    plain = _parse("--broker", "h:1", "--endpoint", "https://e/v1", "--no-share")
    assert plain.subscription == "edge-agent/+/offload/request"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--broker", "nohost", "--endpoint", "https://e/v1"], "HOST:PORT"),
        (["--broker", "h:1", "--endpoint", "ftp://e"], "endpoint.base_url"),
        (["--broker", "h:1", "--endpoint", "https://e/v1", "--workers", "0"], "workers"),
    ],
)
def test_cli_rejects_bad_flags(argv: list[str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _parse(*argv)


def test_cli_config_file_with_flags_on_top(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        'host = "mqtt.example"\nport = 8884\nworkers = 4\nshare_group = "g1"\n'
        '[endpoint]\nbase_url = "https://llm.example/v1"\nmodel = "from-file"\n'
    )
    settings = _parse("--config", str(config), "--model", "from-flag", "--broker", "b:1")
    assert (settings.host, settings.port, settings.workers) == ("b", 1, 4)
    assert settings.subscription.startswith("$share/g1/")
    assert (settings.endpoint.base_url, settings.endpoint.model) == (
        "https://llm.example/v1",
        "from-flag",
    )
    config.write_text('host = "h"\nwrokers = 2\n[endpoint]\nbase_url = "https://e/v1"\n')
    with pytest.raises(ConfigError, match="wrokers"):
        _parse("--config", str(config))
    with pytest.raises(ConfigError, match=r"endpoint\.base_url"):
        _parse("--broker", "h:1")


_CLI = """
import argparse, sys
from edge_agent.cli.offload import register
parser = argparse.ArgumentParser()
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


@pytest.mark.slow  # the real CLI in a subprocess
def test_cloud_bridge_command_serves_until_sigterm(
    broker: Broker, scripted: Any, pki: Pki, tmp_path: Path
) -> None:
    server = scripted([Answer(body=LIGHT_ON)])
    key_file = tmp_path / "api.key"
    key_file.write_text("cli-secret-key")
    key_file.chmod(0o600)
    argv = [
        "cloud-bridge", "--broker", f"127.0.0.1:{broker.port}", "--tls-ca", str(pki.ca_file),
        "--username", "bridge", "--password-file", str(broker.password_files["bridge"]),
        "--endpoint", server.base_url, "--api-key-file", str(key_file),
        "--ca-bundle", str(pki.ca_file), "--client-id", "cli-bridge",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, *argv], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    try:
        with MqttTransport(broker.device_settings("dev1", reply_timeout_s=3)) as transport:
            reply = _send_when_up(transport, proc)
        assert reply.calls
        assert server.received[0].headers["authorization"] == "Bearer cli-secret-key"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        log = proc.stderr.read()
        proc.stderr.close()
    assert "subscribed to $share/edge-agent-bridge/edge-agent/+/offload/request" in log
    assert "cli-secret-key" not in log and broker.passwords["bridge"] not in log


def _send_when_up(transport: MqttTransport, proc: subprocess.Popen[str]) -> Any:
    """The bridge process needs a moment to start: retry while it does."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "cloud-bridge exited early"
        try:
            return transport.send(light_request(key=f"cli-{time.monotonic()}"))
        except OffloadError:
            if time.monotonic() > deadline:
                raise
