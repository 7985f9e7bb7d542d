"""The /ui dashboard, rendered by a real headless Chromium against the real daemon.

Chromium runs the page's script (``--dump-dom`` after the virtual-time budget),
so the test sees what a person would: the cards filled from ``/ui/data`` and
the request just made listed by its journal id.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import httpx
import pytest

from tests.daemon.conftest import DaemonProcess, chat_body

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium: run ./install.sh --dev (Debian chromium-headless-shell)")


def render(url: str) -> str:
    """The DOM after the page's scripts ran (the browser's own sandbox is off:
    the tests run as root, where Chromium refuses it). Console errors and
    uncaught exceptions fail the test."""
    out = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
    assert "data-errors" not in out.stdout, out.stdout
    return out.stdout


def test_dashboard_shows_the_journal(smol_daemon: DaemonProcess) -> None:
    with smol_daemon.client() as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
        assert answer.status_code == 200
        request_id = answer.headers["x-edge-agent-request-id"]
        data = client.get("/ui/data").json()
    assert data["headline"]["requests"] >= 1
    assert any(r["id"] == request_id for r in data["recent"])

    dom = render(f"{smol_daemon.url}/ui#token={smol_daemon.token}")
    assert 'data-loaded="1"' in dom, dom
    assert f'data-id="{request_id}"' in dom
    requests_card = re.search(r'data-metric="requests"><b>(\d+)</b>', dom)
    assert requests_card is not None and int(requests_card.group(1)) >= 1
    assert re.search(r'data-metric="p50_s"><b>\d+\.\d\d</b>', dom)
    for chart in ("latency", "energy", "routes", "queue"):  # drawn from real requests
        points = re.search(rf'id="chart-{chart}"[^>]*data-points="(\d+)"', dom)
        assert points is not None and int(points.group(1)) >= 1, chart
    assert re.search(r'id="chart-latency".*?<rect', dom, re.S)
    assert "no cloud configured" in dom  # this daemon has no offload endpoint


def test_the_page_is_public_but_its_data_is_not(smol_daemon: DaemonProcess) -> None:
    page = httpx.get(f"{smol_daemon.url}/ui", timeout=30)
    assert page.status_code == 200
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{smol_daemon.url}/ui/data", timeout=30).status_code == 401

    dom = render(f"{smol_daemon.url}/ui")  # no token in the fragment
    assert "401: open /ui#token=" in dom
    assert 'data-loaded="1"' not in dom


def test_metrics_name_the_dashboard_route(smol_daemon: DaemonProcess) -> None:
    with smol_daemon.client() as client:
        client.get("/ui/data")
        text: Any = client.get("/metrics").text
    assert 'route="/ui/data"' in text
