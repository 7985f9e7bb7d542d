"""The router's policy, fast: which route, which reason, what is journaled,
spent and run. The SLM is the named FAKE (tests/fakes.py): it says what each
test scripts, at a log-probability that sets how sure the router thinks it
is. The cloud is the offload tests' scripted HTTPS server (a real TLS server
answering from a script, tests/offload/conftest.py). Journal, ledger, outbox
and sandbox are real. What a real model answers is in ``test_router.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.records.journal import Journal
from edge_agent.routing.budget import Budget, BudgetSettings, ModelPrice
from edge_agent.routing.confidence import HeuristicConfidence
from edge_agent.routing.connectivity import ConnectivitySettings
from edge_agent.routing.ledger import SqliteLedger, SqliteOutbox
from edge_agent.routing.offload.https import HttpsOffloadSettings, HttpsTransport
from edge_agent.routing.router import (
    Router,
    RouterSettings,
    Store,
    cascade_agent_settings,
    cloud_for,
)
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.fakes import ScriptedEngine
from tests.offload import conftest as offload
from tests.offload.conftest import Answer, completion, free_port, tool_call
from tests.routing import test_router as real
from tests.routing.test_router import Clock, enterable

pki = offload.pki
scripted = offload.scripted
registry = real.registry  # the same house tools as the real-model tests

KITCHEN_ON = (
    '<tool_call>\n{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}\n</tool_call>'
)
SURE, UNSURE = -0.01, -4.0  # the fake's log-probability per token: p≈0.95, p≈0.01
MODEL = "cloud-model"


@dataclass
class Rig:
    router: Router
    engine: ScriptedEngine
    journal: Journal
    outbox: SqliteOutbox
    ledger: SqliteLedger
    actions: Path

    def actions_run(self) -> list[str]:
        return self.actions.read_text().splitlines() if self.actions.exists() else []

    def status(self, request_id: str | None) -> str:
        return self.journal.get(request_id or "").status


@pytest.fixture
def rig(
    registry: Registry, tmp_path: Path, scripted: Any, pki: Any
) -> Iterator[Callable[..., Rig]]:
    """``rig(logprob, cloud=[Answer...] | None | "dead", budget=...)``."""
    journal = Journal(tmp_path / "journal.db")
    opened: list[Any] = [journal]
    state = enterable(tmp_path) / "tool-state"

    def build(
        logprob: float,
        cloud: list[Answer] | str | None = None,
        *,
        budget: BudgetSettings | None = None,
        link: ConnectivitySettings | None = None,
    ) -> Rig:
        engine = ScriptedEngine([KITCHEN_ON], logprob=logprob)
        settings = cascade_agent_settings(AgentSettings())
        agent = Agent(engine, registry, settings, sandbox=ProcessSandbox(state_root=state))
        link = link or ConnectivitySettings(probe="tcp", timeout_s=1)
        ledger, outbox = SqliteLedger(journal.path), SqliteOutbox(journal.path)
        opened.extend([ledger, outbox])
        offload = None
        if cloud is not None:
            if cloud == "dead":
                url = f"https://127.0.0.1:{free_port()}/v1"
            else:
                assert isinstance(cloud, list)
                url = scripted(cloud).base_url
            endpoint = HttpsOffloadSettings(
                base_url=url, model=MODEL, ca_bundle=pki.ca_file, max_retries=0
            )
            transport = HttpsTransport(endpoint)
            opened.append(transport)
            offload = cloud_for(
                transport, Budget(budget or BudgetSettings(), ledger), link, clock=Clock()
            )
        router = Router(
            agent,
            HeuristicConfidence(),
            RouterSettings(threshold=0.6, link=link),
            cloud=offload,
            store=Store(journal, outbox),
        )
        return Rig(router, engine, journal, outbox, ledger, state / "house" / "actions.log")

    yield build
    for item in reversed(opened):
        item.close()


def bedroom_on() -> Answer:
    return Answer(
        body=completion(tool_calls=[tool_call("set_light", {"room": "bedroom", "on": True})])
    )


def test_a_sure_answer_runs_locally_and_spends_nothing(rig: Callable[..., Rig]) -> None:
    r = rig(SURE, [bedroom_on()])
    routed = r.router.ask("Turn on the kitchen light")
    assert routed.route == "local", routed.reason
    assert routed.reason.startswith("local: p=") and "≥τ=0.60" in routed.reason
    assert r.actions_run() == ["set_light kitchen True"]
    assert r.status(routed.request_id) == "done"
    assert r.ledger.entries() == []


def test_an_unsure_answer_is_replaced_by_the_clouds_and_only_that_runs(
    rig: Callable[..., Rig],
) -> None:
    r = rig(UNSURE, [bedroom_on()])
    routed = r.router.ask("Make the sleeping room bright")
    assert routed.route == "offload:https", routed.reason
    assert "<τ=0.60" in routed.reason
    assert [c.to_dict() for c in routed.calls] == [
        {"name": "set_light", "arguments": {"room": "bedroom", "on": True}}
    ]
    assert r.actions_run() == ["set_light bedroom True"]  # never the unsure kitchen call
    [entry] = r.ledger.entries()
    assert entry["state"] == "settled"


def test_no_cloud_declines_an_unsure_answer_and_runs_nothing(rig: Callable[..., Rig]) -> None:
    r = rig(UNSURE)
    routed = r.router.ask("Make the sleeping room bright", source="automation")
    assert routed.route == "declined"
    assert routed.reason.startswith("declined: no cloud offload configured (p=")
    assert r.actions_run() == [] and r.status(routed.request_id) == "declined"


def test_broke_declines_a_users_request_and_queues_an_automations(rig: Callable[..., Rig]) -> None:
    broke = BudgetSettings(
        daily_limit=0,
        monthly_limit=0,
        prices={MODEL: ModelPrice(input_per_mtok=1, output_per_mtok=2)},
    )
    r = rig(UNSURE, [bedroom_on()], budget=broke)
    declined = r.router.ask("How warm is it?", source="cli")
    assert declined.route == "declined"
    assert declined.reason.startswith("declined: budget 0.00 USD left today")
    queued = r.router.ask("Make the sleeping room bright", source="automation")
    assert queued.route == "queued", queued.reason
    assert r.status(queued.request_id) == "queued"
    assert [o.state for o in r.outbox.for_request(queued.request_id or "")] == ["pending"]
    assert r.actions_run() == [] and r.ledger.entries() == []


def test_offline_and_broke_says_both(rig: Callable[..., Rig]) -> None:
    r = rig(UNSURE, "dead", budget=BudgetSettings(daily_limit=0, monthly_limit=0))
    routed = r.router.ask("Translate hello")
    assert routed.route == "declined"
    assert routed.reason.startswith("declined: offline (probe failed once: ConnectionRefused")
    assert "; budget 0.00 USD left today" in routed.reason


def test_a_cloud_reply_that_fails_verification_runs_nothing(rig: Callable[..., Rig]) -> None:
    attic = completion(tool_calls=[tool_call("set_light", {"room": "attic", "on": True})])
    r = rig(UNSURE, [Answer(body=attic)])
    routed = r.router.ask("Make the sleeping room bright")
    assert routed.outcome == "invalid" and routed.calls == ()
    assert "the reply failed verification: set_light: argument 'room'" in routed.reason
    assert r.actions_run() == [] and r.status(routed.request_id) == "failed"


def test_the_breaker_opens_after_two_failures(rig: Callable[..., Rig]) -> None:
    link = ConnectivitySettings(probe="tcp", timeout_s=1, breaker_failures=2, breaker_cooldown_s=60)
    r = rig(UNSURE, [Answer(status=503, body={"error": "overloaded"})], link=link)
    reasons = [r.router.ask("Translate hello").reason for _ in range(3)]
    assert "HTTP 503" in reasons[0] and reasons[1].startswith("declined: offload failed: ")
    assert reasons[2].startswith("declined: circuit open (2 consecutive failures; retry in 60s)")


def test_a_repeated_idempotency_key_runs_once(rig: Callable[..., Rig]) -> None:
    r = rig(SURE)
    first = r.router.ask("Turn on the kitchen light", idempotency_key="same")
    second = r.router.ask("Turn on the kitchen light", idempotency_key="same")
    assert second.reason.startswith(
        f"duplicate: idempotency key seen as request {first.request_id}"
    )
    assert len(r.engine.prompts) == 1  # the second never reached the model
    assert r.actions_run() == ["set_light kitchen True"]
