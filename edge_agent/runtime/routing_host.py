"""The daemon's side of routing: what lives as long as the process does.

A :class:`~edge_agent.routing.router.Router` wraps one agent, and the daemon builds
an agent per request (its tools come with the request). What must outlive a
request lives here instead: the cloud (its transport, the budget ledger in
the journal file, the connectivity breaker), the confidence model and the
durable outbox. Requests are journaled by the daemon before they are
acknowledged, so the router records its decision against that journal row.

Built only when the config names an offload endpoint and ``router.offload``
is on; without one the daemon answers locally as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_agent.assemble import Assembly
from edge_agent.routing.budget import Budget
from edge_agent.routing.confidence import ConfidenceModel
from edge_agent.routing.ledger import SqliteLedger, SqliteOutbox
from edge_agent.routing.router import Cloud, Delivery, RoutedResult, Router, Store, cloud_for

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.config import EdgeAgentConfig
    from edge_agent.decoding.prompts import Message
    from edge_agent.records.journal import Journal
    from edge_agent.routing.offload.base import OffloadTransport

log = logging.getLogger("edge_agent.routing")


class RoutingHost:
    """One cloud, one confidence model and the outbox, for the daemon's life."""

    def __init__(
        self,
        config: EdgeAgentConfig,
        journal: Journal,
        transport: OffloadTransport,
        confidence: ConfidenceModel,
    ) -> None:
        self.config = config
        self.ledger = SqliteLedger(journal.path)
        self.outbox = SqliteOutbox(journal.path)
        self.store = Store(journal, self.outbox)
        self.transport = transport
        self.cloud: Cloud = cloud_for(
            transport, Budget(config.budget, self.ledger), config.router.link
        )
        self.confidence = confidence
        self.parts = Assembly(config)  # builds each request's router; loads nothing
        self._drain_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EdgeAgentConfig, journal: Journal) -> RoutingHost | None:
        """The host for ``config``, or None when nothing may leave the device.
        The transport and the confidence model come from the composition root,
        so ``ask --mode cascade`` and the daemon honour the same config."""
        parts = Assembly(config)
        if not config.router.offload:
            return None
        transport = parts.transport()
        if transport is None:
            return None
        return cls(config, journal, transport, parts.confidence())

    def router(self, agent: Agent) -> Router:
        return self.parts.router(agent, self.store, self.cloud, confidence=self.confidence)

    def answer(  # noqa: PLR0913 - keyword-only request options
        self,
        agent: Agent,
        messages: Sequence[Message],
        *,
        request_id: str,
        source: str,
        idempotency_key: str,
        tool_choice: str,
        execute: bool,
    ) -> RoutedResult:
        """Route one journaled request; the router records the outcome."""
        return self.router(agent).ask(
            list(messages),
            source=source,  # type: ignore[arg-type]
            idempotency_key=idempotency_key,
            tool_choice=tool_choice,
            execute=execute,
            request_id=request_id,
        )

    def drain(self, agent: Agent) -> list[Delivery]:
        """Send what waits in the outbox, if the link and the budget allow.
        ``agent`` runs the tools of delivered replies (its registry and sandbox)."""
        if not self._drain_lock.acquire(blocking=False):
            return []
        try:
            deliveries = self.router(agent).drain_outbox()
        finally:
            self._drain_lock.release()
        for d in deliveries:
            log.info("outbox: request %s %s: %s", d.request_id, d.status, d.reason)
        return deliveries

    def cut_off_in_flight(self, request_id: str) -> bool:
        """True when the request's direct offload was in flight at a crash:
        its write-ahead row is still pending, so no reply was used and no
        tool ran; running it again (same idempotency key) is safe."""
        return any(
            row.state == "pending" and row.payload.get("in_flight")
            for row in self.outbox.for_request(request_id)
        )

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()
        self.outbox.close()
        self.ledger.close()
