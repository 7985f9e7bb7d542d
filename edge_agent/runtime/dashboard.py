"""The daemon's dashboard: one static page at ``/ui`` and its data at ``/ui/data``.

The page holds no data and no secret, so it is served without a token (a
browser cannot attach a bearer token to a plain navigation). Its script
fetches ``/ui/data``, which the API's token guard protects like every other
endpoint; the token, when one is set, is given once in the URL fragment
(``/ui#token=...``), which browsers never send to the server, and kept in
``sessionStorage``. Everything shown comes from the journal, so the page
tells the same story as ``edge-agent traces`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from edge_agent.routing.budget import BudgetSettings, Windows
from edge_agent.routing.ledger import SqliteLedger

if TYPE_CHECKING:
    from edge_agent.records.journal import Journal, RequestRow
    from edge_agent.runtime.daemon import Daemon

PAGE_PATH = "/ui"
DATA_PATH = "/ui/data"
WINDOW_S = 24 * 3600.0
RECENT = 25


def snapshot(
    journal: Journal,
    *,
    queue_depth: int = 0,
    budget: dict[str, Any] | None = None,
    window_s: float = WINDOW_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The headline figures over the last ``window_s``, the latest requests
    with their decisions, the queue depth and the cloud budget."""
    since = (time.time() if now is None else now) - window_s
    stats = journal.stats(since)
    done = stats.by_status.get("done", 0)
    routed = sum(stats.by_route.values())
    offloaded = sum(n for route, n in stats.by_route.items() if route.startswith("offload"))
    cost = stats.cost_local + stats.cost_cloud
    return {
        "window_s": window_s,
        "stats": dataclasses.asdict(stats),
        "headline": {
            "requests": stats.requests,
            "done": done,
            "valid_at_1": stats.valid_at_1,
            "offload_rate": offloaded / routed if routed else None,
            "p50_s": stats.latency_p50,
            "p95_s": stats.latency_p95,
            "energy_j_per_request": stats.energy_j / stats.requests if stats.requests else None,
            "cost_per_success": cost / done if done else None,
            "queue_depth": queue_depth,
        },
        "routes": stats.by_route,
        "budget": budget,
        "recent": [_recent(journal, row) for row in journal.recent(RECENT)],
    }


def _recent(journal: Journal, row: RequestRow) -> dict[str, Any]:
    attempts = [a.record for a in journal.attempts(row.id)]
    last = attempts[-1] if attempts else None
    energy = [a.energy_j for a in attempts if a.energy_j is not None]
    return {
        "id": row.id,
        "source": row.source,
        "status": row.status,
        "received_at": row.received_at,
        "latency_s": row.latency_s,
        "route": last.route if last else None,
        "decision": (last.reason or last.outcome) if last else None,
        "energy_j": sum(energy) if energy else None,
        "reason": row.reason,
    }


def budget_view(ledger: SqliteLedger, settings: BudgetSettings) -> dict[str, Any]:
    """Spent and left today and this month, in the budget's currency."""
    spent = ledger.spent(Windows.at(time.time()))
    return {
        "currency": settings.currency,
        "spent_day": spent.day,
        "daily_limit": settings.daily_limit,
        "spent_month": spent.month,
        "monthly_limit": settings.monthly_limit,
    }


def routes(daemon: Daemon) -> list[Route]:
    """``/ui`` and ``/ui/data`` for the API app."""
    ledger = SqliteLedger(daemon.journal.path)

    def data_now() -> dict[str, Any]:
        config = daemon.live.config
        has_cloud = config.offload.https is not None or config.offload.mqtt is not None
        budget = budget_view(ledger, config.budget) if has_cloud else None
        return snapshot(daemon.journal, queue_depth=daemon.depth, budget=budget)

    async def page(request: Request) -> Response:
        return HTMLResponse(_PAGE, headers=_PAGE_HEADERS)

    async def data(request: Request) -> Response:
        # SQLite reads are quick but blocking: keep them off the event loop.
        body = await asyncio.to_thread(data_now)
        return JSONResponse(body, headers={"cache-control": "no-store"})

    return [
        Route(PAGE_PATH, page, methods=["GET"]),
        Route(DATA_PATH, data, methods=["GET"]),
    ]


_PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

# One self-contained page (no CDN, no build step: the device may be offline).
_PAGE = (files("edge_agent.runtime") / "ui" / "dashboard.html").read_text(encoding="utf-8")
