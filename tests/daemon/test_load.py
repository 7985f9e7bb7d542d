"""Load: 200 concurrent requests against a real daemon (SmolLM2, short answers).

Every request gets an answer or a 429/503 with Retry-After; every answered
request is in the journal as done, nothing refused is; and the daemon's RSS
stays within 10% of its warmed-up level over the run. The figures are
printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import httpx
import psutil
import pytest

from tests.daemon.conftest import SET_LIGHT, DaemonProcess, chat_body, smol_config

pytestmark = [pytest.mark.model, pytest.mark.slow]
REQUESTS = 200
QUEUE = 32  # the default server.queue_size
RSS_TOLERANCE = 0.10


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def body(n: int) -> dict[str, Any]:
    if n % 2:
        return chat_body("Say hi.", max_tokens=8)
    choice = {"type": "function", "function": {"name": "set_light"}}
    return chat_body(tools=[SET_LIGHT], tool_choice=choice, max_tokens=48, stream=n % 4 == 0)


async def one(client: httpx.AsyncClient, n: int) -> tuple[int, str | None, str | None]:
    """(status, request id, Retry-After) of request ``n``; streams are read to the end."""
    async with client.stream("POST", "/v1/chat/completions", json=body(n)) as response:
        text = (await response.aread()).decode()
        rid = response.headers.get("x-edge-agent-request-id")
        if response.status_code == 200 and body(n).get("stream"):
            assert text.rstrip().endswith("data: [DONE]"), text
            assert '"error"' not in text, text
        return response.status_code, rid, response.headers.get("retry-after")


async def storm(daemon: DaemonProcess) -> list[tuple[int, str | None, str | None]]:
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=daemon.url, headers=daemon.headers, timeout=600, limits=limits
    ) as client:
        return await asyncio.gather(*(one(client, n) for n in range(REQUESTS)))


def warm_up(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for n in range(4):
            assert client.post("/v1/chat/completions", json=body(n + 1)).status_code == 200


def test_200_concurrent_requests(spawn: Any) -> None:
    daemon = spawn(smol_config(queue_size=QUEUE))
    warm_up(daemon)  # first inferences allocate llama.cpp's buffers: measure after them
    process = psutil.Process(daemon.proc.pid)
    baseline = process.memory_info().rss
    started = time.monotonic()
    with RssSampler(daemon.proc.pid) as rss:
        results = asyncio.run(storm(daemon))
    elapsed = time.monotonic() - started
    after = process.memory_info().rss

    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert sum(statuses.values()) == REQUESTS
    assert statuses[200] >= QUEUE  # at least a queue's worth was answered
    assert all(retry for status, _, retry in results if status in (429, 503))

    answered = {rid for status, rid, _ in results if status == 200}
    rows = daemon.rows()
    done = {r["id"] for r in rows if r["status"] == "done"}
    assert answered <= done  # every acknowledged answer is in the journal
    assert len(rows) == len(answered) + 4  # the warm-up; nothing refused was journaled
    assert all(r["status"] == "done" for r in rows), Counter(r["status"] for r in rows)

    peak, low = max(rss.samples), min(rss.samples)
    growth = (peak - baseline) / baseline
    print(
        f"\nload: {REQUESTS} concurrent in {elapsed:.1f} s; statuses {dict(statuses)}; "
        f"journal rows {len(rows)} (all done); RSS MiB baseline {baseline / 2**20:.1f}, "
        f"min {low / 2**20:.1f}, peak {peak / 2**20:.1f}, after {after / 2**20:.1f} "
        f"({growth:+.1%} peak vs baseline, {len(rss.samples)} samples)"
    )
    assert growth <= RSS_TOLERANCE
    assert abs(after - baseline) / baseline <= RSS_TOLERANCE
    assert daemon.alive()
    with daemon.client() as client:
        assert client.get("/healthz").status_code == 200
