"""Real servers on loopback for the offload tests: nothing here is a mock.

* ``pki``: a CA made for this session (trustme) and a server certificate for
  127.0.0.1 / localhost.
* ``llm_server``: llama-cpp-python's OpenAI-compatible server over TLS with a
  bearer token, serving Qwen2.5-Coder-1.5B on one thread (session scope).
* ``broker``: mosquitto on 127.0.0.1 with a password file, an ACL, a TLS
  listener and persistence, started and stopped per test.
* ``ScriptedLLM``: a stdlib HTTPS server that answers chat completions from a
  script (503s, 400s, canned answers) and records what it received; it makes
  the faults the real llama server cannot make on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import queue
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.models import fetch_model, resolve_model
from edge_agent.routing.offload.bridge import CloudBridge, CloudBridgeSettings
from edge_agent.routing.offload.https import HttpsOffloadSettings
from edge_agent.routing.offload.mqtt import MqttOffloadSettings

LLM_MODEL = "qwen2.5-coder-1.5b"
PREFIX = "edge-agent"
DEVICES = ("dev1", "dev2")
INSTALL_HINT = "run `./install.sh --dev` (it installs the Debian package mosquitto)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def write_secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- certificates -------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path  # server certificate chain for 127.0.0.1 and localhost
    key_file: Path
    folder: Path

    def leaf(self, *names: str) -> tuple[Path, Path]:
        """Another server certificate from the same CA, for other names."""
        cert = self.ca.issue_cert(*names)
        stem = "-".join(n.replace(".", "_") for n in names)
        cert_file, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_file.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def make_pki(folder: Path) -> Pki:
    """A fresh CA and a server certificate for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_file))
    return Pki(ca, ca_file, cert_file, key_file, folder)


@pytest.fixture(scope="session")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the servers use."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


# --- the LLM: llama-cpp-python's OpenAI-compatible server --------------------


@dataclass(frozen=True)
class LlmServer:
    base_url: str
    token: str
    token_file: Path
    ca_file: Path

    def settings(self, **overrides: Any) -> HttpsOffloadSettings:
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "model": LLM_MODEL,
            "ca_bundle": self.ca_file,
            "token_file": self.token_file,
            "read_timeout_s": 120,
            "max_retries": 0,
        }
        return HttpsOffloadSettings(**{**values, **overrides})


@pytest.fixture(scope="session")
def llm_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmServer]:
    fetch_model(LLM_MODEL, progress=False)
    model = resolve_model(LLM_MODEL)
    folder = tmp_path_factory.mktemp("llm")
    token = secrets.token_urlsafe(24)
    port = free_port()
    log = folder / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model.path), "--model_alias", LLM_MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--chat_format", "chatml-function-calling",
        "--ssl_keyfile", str(pki.key_file), "--ssl_certfile", str(pki.cert_file),
        f"--api_key={token}",  # one argument: a token may start with "-"
        "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "4096",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_llm(proc, port, pki.ca_file, token, log)
        yield LlmServer(
            base_url=f"https://127.0.0.1:{port}/v1",
            token=token,
            token_file=write_secret(folder / "token", token),
            ca_file=pki.ca_file,
        )
    finally:
        stop_process(proc)


def _wait_for_llm(
    proc: subprocess.Popen[bytes], port: int, ca_file: Path, token: str, log: Path
) -> None:
    """Until GET /v1/models answers over TLS with the token (loading takes seconds)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 300
    with httpx.Client(verify=context, timeout=5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"https://127.0.0.1:{port}/v1/models", headers=headers).is_success:
                    return
            time.sleep(0.5)
    pytest.fail(f"llama_cpp.server did not answer within 300s:\n{log_tail(log)}")


# --- a scripted OpenAI-compatible server, for faults on demand ----------------


def completion(
    *, content: str | None = None, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A chat-completions answer body, as OpenAI-compatible servers send it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "call_0",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


@dataclass(frozen=True)
class Answer:
    """One scripted answer. ``delay_s`` waits before answering (a slow
    server); ``truncate`` promises more bytes than it sends, then closes."""

    status: int = 200
    body: Any = field(default_factory=lambda: completion(content="hello"))
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedLLM:
    """HTTPS on 127.0.0.1 that answers POSTs from ``script`` in order (the last
    answer repeats) and records every request it received."""

    def __init__(self, cert_file: Path, key_file: Path, script: list[Answer]) -> None:
        self.script = list(script)
        self.received: list[Received] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _next(self, received: Received) -> Answer:
        self.received.append(received)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = owner._next(Received(self.path, headers, json.loads(raw or b"null")))
                time.sleep(answer.delay_s)
                data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) + 100 * answer.truncate))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def scripted(pki: Pki) -> Iterator[Any]:
    """A factory: ``scripted([Answer(...), ...])`` starts a ScriptedLLM."""
    servers: list[ScriptedLLM] = []

    def start(script: list[Answer], cert: tuple[Path, Path] | None = None) -> ScriptedLLM:
        cert_file, key_file = cert or (pki.cert_file, pki.key_file)
        servers.append(ScriptedLLM(cert_file, key_file, script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- the broker: mosquitto with TLS, passwords and an ACL ---------------------


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"mosquitto is not installed: {INSTALL_HINT}")
    return found


def _acl() -> str:
    lines = [
        "user bridge",
        f"topic read {PREFIX}/+/offload/request",
        f"topic write {PREFIX}/+/offload/reply",
        f"topic read {PREFIX}/+/status",
    ]
    for device in DEVICES:
        lines += [
            "",
            f"user {device}",
            f"topic write {PREFIX}/{device}/offload/request",
            f"topic read {PREFIX}/{device}/offload/reply",
            f"topic readwrite {PREFIX}/{device}/status",
        ]
    return "\n".join(lines) + "\n"


class Broker:
    """One mosquitto process on a fixed port, restartable with its persistence."""

    def __init__(self, folder: Path, pki: Pki) -> None:
        self.folder = folder
        self.port = free_port()
        self.ca_file = pki.ca_file
        self.passwords = {user: secrets.token_urlsafe(16) for user in ("bridge", *DEVICES)}
        self.password_files = {
            user: write_secret(folder / f"{user}.password", pw)
            for user, pw in self.passwords.items()
        }
        self.log = folder / "mosquitto.log"
        self.config = self._write_config(pki)
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self, pki: Pki) -> Path:
        binary_dir = Path(mosquitto_binary()).parent
        passwd_tool = shutil.which("mosquitto_passwd") or str(binary_dir / "mosquitto_passwd")
        passwd = self.folder / "passwd"
        for i, (user, password) in enumerate(self.passwords.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([passwd_tool, *create, "-b", str(passwd), user, password], check=True)
        passwd.chmod(0o600)
        acl = self.folder / "acl"
        acl.write_text(_acl())
        data = self.folder / "data"
        data.mkdir()
        config = self.folder / "mosquitto.conf"
        config.write_text(
            f"""per_listener_settings false
allow_anonymous false
password_file {passwd}
acl_file {acl}
persistence true
persistence_location {data}/
autosave_interval 1
user {pwd.getpwuid(os.getuid()).pw_name}
log_dest file {self.log}
log_type all
connection_messages true
listener {self.port} 127.0.0.1
cafile {pki.ca_file}
certfile {pki.cert_file}
keyfile {pki.key_file}
"""
        )
        return config

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.port, 10, self._proc):
            exited = self._proc.poll() is not None
            err = self._proc.communicate(timeout=5)[1].decode() if exited else "no listener"
            self.stop()
            pytest.fail(f"mosquitto did not start: {err}\n{log_tail(self.log)}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()

    def device_settings(self, device: str, **overrides: Any) -> MqttOffloadSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "tls_ca": self.ca_file,
            "username": device,
            "password_file": self.password_files[device],
            "device_id": device,
            "connect_timeout_s": 5,
            "reply_timeout_s": 20,
        }
        return MqttOffloadSettings(**{**values, **overrides})

    def bridge_settings(
        self, endpoint: HttpsOffloadSettings, **overrides: Any
    ) -> CloudBridgeSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "tls_ca": self.ca_file,
            "username": "bridge",
            "password_file": self.password_files["bridge"],
            "connect_timeout_s": 5,
            "endpoint": endpoint,
        }
        return CloudBridgeSettings(**{**values, **overrides})


@pytest.fixture
def broker(pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Broker(folder, pki)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run_bridge() -> Iterator[Any]:
    """A factory: ``run_bridge(settings)`` starts a CloudBridge, closed at teardown."""
    bridges: list[CloudBridge] = []

    def start(settings: CloudBridgeSettings) -> CloudBridge:
        bridge = CloudBridge(settings)
        bridges.append(bridge)
        bridge.start()
        return bridge

    yield start
    for bridge in bridges:
        bridge.close()


class RawClient:
    """A plain paho MQTT v5 client logged in as ``user``: it sends what the
    transport never would (non-JSON, missing properties) and watches topics."""

    def __init__(self, broker: Broker, user: str, client_id: str | None = None) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"raw-{user}-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(user, broker.passwords[user])
        self._client.tls_set_context(ssl.create_default_context(cafile=str(broker.ca_file)))
        self._client.on_message = lambda client, userdata, msg: self.messages.put(msg)
        connected = threading.Event()
        self._client.on_connect = lambda *args: connected.set()
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        assert connected.wait(5), "raw client could not connect"

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self._client.on_subscribe = lambda *args: done.set()
        self._client.subscribe(topic, qos=1)
        assert done.wait(5), "no SUBACK"

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        self._client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)

    def next_message(self, timeout: float = 10) -> mqtt.MQTTMessage | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def raw_client(broker: Broker) -> Iterator[Any]:
    """A factory: ``raw_client("dev1")`` logs in a plain client, closed at teardown."""
    clients: list[RawClient] = []

    def connect(user: str) -> RawClient:
        clients.append(RawClient(broker, user))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()
