"""The real daemon, as a subprocess: ``python -m edge_agent run``.

Each daemon gets its own state directory (the journal) and a free loopback
port; its log goes to a file shown when a test fails. SmolLM2 serves most
tests (fast); the OpenAI-client acceptance test uses the default Qwen model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.models import fetch_model

SMOL = "smollm2-135m"
QWEN = "qwen2.5-coder-0.5b"
TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT_S = 180.0  # the model load competes with other llama.cpp runs on 2 cores

SET_LIGHT = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Switch the light of a room on or off.",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"type": "string", "enum": ["kitchen", "bedroom", "living room"]},
                "on": {"type": "boolean"},
            },
            "required": ["room", "on"],
        },
    },
}
GET_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml(config: dict[str, dict[str, Any]], top: dict[str, Any] | None = None) -> str:
    """A small TOML writer for test configs (tables of scalars)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in (top or {}).items()]
    for table, values in config.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def smol_config(**server: Any) -> dict[str, dict[str, Any]]:
    return {
        # prefix_cache off: each start would write a 40 MB KV file into tmp
        # (test_a_restart_restores_the_tool_block_from_disk turns it on)
        "model": {
            "name": SMOL,
            "n_threads": 2,
            "max_tokens": 96,
            "n_ctx": 2048,
            "prefix_cache": False,
        },
        # the queue, durability and API are under test, not the climb to 1.5B
        "ladder": {"enabled": False},
        # generous: other llama.cpp runs may share these 2 cores and slow decoding 50x
        "server": {"queue_size": 8, "drain_timeout_s": 600, "request_timeout_s": 1800, **server},
    }


class OnLoopback:
    """A daemon listening on 127.0.0.1:``port``, with its API token if any:
    where a test sends its requests, and how."""

    port: int
    token: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=600, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """An error in OpenAI's shape, with this status (and code)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@dataclass
class DaemonProcess(OnLoopback):
    """One ``edge-agent run`` subprocess and what a test needs to talk to it."""

    proc: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log_path: Path
    token: str | None
    log_file: Any = field(repr=False)

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal.db"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Journal rows, read directly (WAL readers never block the daemon)."""
        with closing(sqlite3.connect(self.journal, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            query = f"SELECT * FROM requests {where}"
            return [dict(r) for r in db.execute(query, params).fetchall()]

    def wait_rows(self, predicate: Any, timeout: float = 600.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if predicate(rows):
                return rows
            time.sleep(0.05)
        raise AssertionError(f"journal never matched; rows: {self.rows()}\n{self.log()}")

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"daemon not healthy after {timeout} s:\n{self.log()}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 300.0) -> int:
        """Signal the daemon and reap it; returns its exit code."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log_file.close()
        return code


def start_daemon(
    tmp: Path,
    config: dict[str, dict[str, Any]],
    *,
    token: str | None = TOKEN,
    top: dict[str, Any] | None = None,
    state_dir: Path | None = None,
    port: int | None = None,
    wait: bool = True,
    name: str = "daemon",
    extra_toml: str = "",
) -> DaemonProcess:
    """Start ``python -m edge_agent run`` with its own state dir and port.
    ``extra_toml`` is appended to the config (arrays of tables, which
    :func:`toml` does not write)."""
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / f"{name}.toml"
    config_path.write_text(toml(config, top) + extra_toml)
    return run_daemon(
        config_path,
        state_dir or tmp / "state",
        tmp / f"{name}.log",
        token=token,
        port=port or free_port(),
        wait=wait,
    )


def run_daemon(
    config_path: Path,
    state: Path,
    log_path: Path,
    *,
    token: str | None = TOKEN,
    port: int | None = None,
    wait: bool = True,
) -> DaemonProcess:
    """``python -m edge_agent run`` on a written config, with its own state
    folder, port and log (appended, so a restarted daemon keeps one log)."""
    env = {**os.environ, "EDGE_AGENT_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("EDGE_AGENT_API_TOKEN", None)
    if token is not None:
        env["EDGE_AGENT_API_TOKEN"] = token
    port = port or free_port()
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config_path),
         "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    daemon = DaemonProcess(proc, port, state, log_path, token, log_file)
    if wait:
        try:
            daemon.wait_healthy()
        except BaseException:
            daemon.stop(signal.SIGKILL)
            raise
    return daemon


@pytest.fixture(scope="session")
def models_ready() -> None:
    """Both models in the store (a no-op when they are there already)."""
    for name in (SMOL, QWEN):
        fetch_model(name, progress=False)


@pytest.fixture
def spawn(tmp_path: Path, models_ready: None) -> Iterator[Any]:
    """Start daemons in a test; every one is stopped at the end."""
    started: list[DaemonProcess] = []

    def _spawn(config: dict[str, dict[str, Any]], **kwargs: Any) -> DaemonProcess:
        daemon = start_daemon(tmp_path, config, **kwargs)
        started.append(daemon)
        return daemon

    yield _spawn
    for daemon in started:
        if daemon.alive() or not daemon.log_file.closed:
            daemon.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def smol_daemon(
    tmp_path_factory: pytest.TempPathFactory, models_ready: None
) -> Iterator[DaemonProcess]:
    """One SmolLM2 daemon with a token, shared by the API tests."""
    daemon = start_daemon(tmp_path_factory.mktemp("smol"), smol_config(max_body_bytes=4096))
    yield daemon
    daemon.stop()


def sse_events(lines: Iterator[str]) -> Iterator[Any]:
    """Parsed ``data:`` payloads of an SSE stream; ``[DONE]`` as the string."""
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)


def chat_body(content: str = "Turn on the kitchen light", **extra: Any) -> dict[str, Any]:
    return {"model": SMOL, "messages": [{"role": "user", "content": content}], **extra}
