"""The real daemon and its real HTTP app on loopback, in this process.

With the named FAKE engine (tests/fakes.py) in place of llama.cpp, it serves
tests of the API's shapes, errors, auth, queue and journal, where what a
model says is set by the test: no model loads, so each daemon starts in
milliseconds. With a real engine it serves tests that need to reach inside
the running daemon (its automation host's bridge and rule engine).

The daemon runs on a thread of its own and is stopped through
``Daemon.serve``'s ``stop`` event, as a program embedding it would. What a
real model answers through a real ``edge-agent run`` is in the tests that
use ``smol_daemon`` / ``spawn``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from edge_agent.config import EdgeAgentConfig
from edge_agent.engine.base import Engine
from edge_agent.records.journal import Journal
from edge_agent.runtime.api import create_app
from edge_agent.runtime.daemon import Daemon, Live, listen
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.daemon.conftest import TOKEN, OnLoopback

E = TypeVar("E", bound=Engine)


@dataclass
class InProcessDaemon(OnLoopback, Generic[E]):
    daemon: Daemon
    engine: E
    port: int
    token: str | None


@contextmanager
def in_process_daemon(
    tmp_path: Path,
    engine: E,
    config: dict[str, Any] | None = None,
    *,
    registry: Registry | None = None,
    token: str | None = TOKEN,
) -> Iterator[InProcessDaemon[E]]:
    """Serve ``engine`` through the real daemon and app until the block ends."""
    settings = EdgeAgentConfig.model_validate({"ladder": {"enabled": False}, **(config or {})})
    sock = listen("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    ready = threading.Event()
    box: dict[str, Any] = {}
    with Journal(tmp_path / "journal.db") as journal:
        tools = registry if registry is not None else Registry.from_dirs()
        sandbox = ProcessSandbox(state_root=tmp_path / "tool-state")
        daemon = Daemon(engine, journal, Live(settings, token, tools), sandbox=sandbox)

        async def serve() -> int:
            box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            return await daemon.serve(create_app(daemon), sock, stop=box["stop"])

        thread = threading.Thread(target=lambda: box.update(code=asyncio.run(serve())))
        thread.start()
        ready.wait(10)
        _wait_healthy(f"http://127.0.0.1:{port}")
        try:
            yield InProcessDaemon(daemon, engine, port, token)
        finally:
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(30)
            sock.close()
    assert box.get("code") == 0, "the in-process daemon did not drain cleanly"


def _wait_healthy(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the in-process daemon at {url} never answered /healthz")
