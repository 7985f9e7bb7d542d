"""The routing policy: answer locally, repair, offload, queue or decline.

For each request, in order (README, "Routing to a cloud model"):

1. The SLM answers (``Agent.ask`` with ``execute=False``). The agent's own
   repair turn *is* the one local repair: when the first output fails the
   verifier, the agent feeds the error back once. The router therefore
   requires ``repair_attempts <= 1`` (:func:`cascade_agent_settings`) and
   never repairs a second time itself. A valid answer the model was unsure of
   has no verifier complaint to repair, so it goes straight to step 3.
2. ``P(success) >= τ`` and verified → **local**: the calls run.
3. Otherwise → **offload**, if a cloud is configured, the device is online
   (cached probe), the circuit breaker is closed and the budget admits the
   estimate. The reply passes the *same* verifier (the same tools, pydantic
   models and rules) before anything runs; a reply that fails it is a
   recorded failure, never executed.
4. Otherwise → **queued** in the durable outbox when the request may wait:
   it comes from a queueing source (``automation`` by default), it would
   actuate something (the proposed call's tool, else any offered tool, has
   side effect ``actuate`` or ``dangerous``), a journal is attached, and the
   obstacle can pass (offline, breaker, budget, a retryable cloud error).
   Else → **declined**, with the reason.

Every decision carries a one-line reason, e.g. ``offload: p=0.41<τ=0.60``
or ``declined: offline (...), budget 0.00 USD left today (p=0.41<τ=0.60)``.

Durability and exactly-once (with a :class:`~edge_agent.records.journal.Journal`):
the request is accepted (fsynced) before work starts, and a repeated
idempotency key is answered from the journal, never run again. A queued
request is written to the outbox *before* the journal marks it queued. When
:meth:`Router.drain_outbox` gets a verified reply, the outbox row is marked
``sent`` (fsynced) *before* any tool runs; a restart that finds a ``sent``
row whose request never finished marks it failed instead of running it
again. So a kill -9 at any point loses no accepted request and runs no
actuation twice; the price is that a crash in the middle of executing a
queued call leaves it recorded as failed, not retried.

Limits: the router decides on the first step of a request. Tool results are
not fed back to the model for a second step (``Agent.ask`` does that in SLM
mode); a gate hook in the agent would let the router decide per step.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings, RouterSettings
from edge_agent.decoding.calls import ParsedOutput, ToolCall
from edge_agent.decoding.prompts import Message
from edge_agent.decoding.schema import ToolSpec
from edge_agent.errors import (
    BudgetExceededError,
    ConfigError,
    EdgeAgentError,
    InputError,
    OffloadError,
)
from edge_agent.records.journal import AttemptRecord, attempt_records, request_payload
from edge_agent.records.run import Execution, Result
from edge_agent.routing.budget import ANY_MODEL, Budget, Reservation, estimate_tokens
from edge_agent.routing.confidence import ConfidenceModel, Features, features_from_attempts
from edge_agent.routing.connectivity import (
    Connectivity,
    ConnectivitySettings,
    backoff_delay,
    endpoint_probe,
)
from edge_agent.routing.offload.base import (
    OffloadReply,
    OffloadRequest,
    OffloadTransport,
    request_from_wire,
    request_to_wire,
)
from edge_agent.toolbox.registry import Registry, SideEffect
from edge_agent.toolbox.verify import Verdict, verify_output

if TYPE_CHECKING:
    from edge_agent.records.journal import Journal, Source
    from edge_agent.routing.ledger import OutboxRow, SqliteOutbox

Route = Literal["local", "offload:https", "offload:mqtt", "queued", "declined"]
Mode = Literal["cascade", "llm"]
RoutedOutcome = Literal["call", "answer", "invalid", "queued", "declined"]
DeliveryStatus = Literal["delivered", "failed", "retry", "postponed", "skipped"]
_SEVERITY: dict[str, int] = {"read": 0, "actuate": 1, "dangerous": 2}


def cascade_agent_settings(settings: AgentSettings) -> AgentSettings:
    """Agent settings for use under the router: at most one local repair."""
    return settings.model_copy(update={"repair_attempts": min(settings.repair_attempts, 1)})


# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Cloud:
    """The offload path: a transport, the budget that pays for it, and the
    connectivity watch in front of it. ``model`` is the cloud model asked for
    and priced; None leaves the choice to the endpoint (or the cloud-bridge)
    and prices the call at the budget's ``'*'`` entry."""

    transport: OffloadTransport
    budget: Budget
    connectivity: Connectivity
    model: str | None = None

    @property
    def route(self) -> Route:
        name = getattr(self.transport, "name", "https")
        return "offload:mqtt" if name == "mqtt" else "offload:https"

    @property
    def price_key(self) -> str:
        return self.model or ANY_MODEL


def cloud_for(
    transport: OffloadTransport,
    budget: Budget,
    link: ConnectivitySettings,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Cloud:
    """A :class:`Cloud` for an HTTPS or MQTT transport, probing its endpoint
    (the HTTPS base URL, or the broker) as ``link`` says."""
    settings: Any = getattr(transport, "settings", None)
    if settings is not None and hasattr(settings, "base_url"):
        url, ca, model = settings.base_url, settings.ca_bundle, settings.model
    elif settings is not None and hasattr(settings, "host"):
        scheme = "mqtts" if settings.tls else "mqtt"
        url, ca, model = f"{scheme}://{settings.host}:{settings.port}", settings.tls_ca, None
    else:
        raise ConfigError(f"cannot tell where {transport!r} connects to probe it")
    probe = endpoint_probe(url, link, ca)
    return Cloud(transport, budget, Connectivity(link, probe, clock=clock), model)


@dataclass(frozen=True)
class Store:
    """Durable state: the journal and the outbox in its file."""

    journal: Journal
    outbox: SqliteOutbox


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str
    p: float | None
    threshold: float
    attempts: int  # SLM attempts (initial + repair)
    estimate: float | None = None  # cloud cost, worst case, before the call
    cost: float | None = None  # cloud cost settled after it
    currency: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "reason": self.reason,
            "p_success": None if self.p is None else round(self.p, 4),
            "threshold": self.threshold,
            "slm_attempts": self.attempts,
            "cost": {
                "estimate": _round(self.estimate),
                "settled": _round(self.cost),
                "currency": self.currency,
            },
        }


@dataclass(frozen=True)
class OffloadOutcome:
    """The cloud's reply and what the verifier made of it."""

    reply: OffloadReply
    verdicts: tuple[Verdict, ...]

    @property
    def valid(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        if not self.valid:
            return ()
        return tuple(v.call for v in self.verdicts if v.call is not None)

    @property
    def problem(self) -> str:
        return next((v.message for v in self.verdicts if not v.ok), "")

    def to_json(self) -> dict[str, Any]:
        r = self.reply
        return {
            "transport": r.transport,
            "model": r.model,
            "calls": [c.to_dict() for c in r.calls],
            "text": r.text,
            "valid": self.valid,
            "problem": self.problem,
            "latency_s": round(r.latency_s, 4),
            "tokens": {"prompt": r.prompt_tokens, "completion": r.completion_tokens},
        }


@dataclass(frozen=True)
class RoutedResult:
    """An agent :class:`~edge_agent.agent.Result` (None in ``llm`` mode), the
    routing decision, the cloud's verified reply if there was one, and what ran."""

    result: Result | None
    decision: Decision
    latency_s: float
    offload: OffloadOutcome | None = None
    executions: tuple[Execution, ...] = ()
    features: Features | None = None
    request_id: str | None = None
    idempotency_key: str = ""

    @property
    def route(self) -> Route:
        return self.decision.route

    @property
    def reason(self) -> str:
        return self.decision.reason

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        """The verified calls of the route taken (none when queued or declined)."""
        if self.offload is not None:
            return self.offload.calls
        if self.route == "local" and self.result is not None:
            return self.result.calls
        return ()

    @property
    def final_parsed(self) -> ParsedOutput:
        """The answer the route settled on, as a benchmark scores it."""
        if self.offload is not None:
            r = self.offload.reply
            return ParsedOutput(calls=r.calls, text=r.text, errors=r.errors)
        if self.result is not None and self.route == "local":
            return self.result.final.parsed
        return ParsedOutput()

    @property
    def text(self) -> str:
        return self.final_parsed.text if not self.calls else ""

    @property
    def outcome(self) -> RoutedOutcome:
        if self.route in ("queued", "declined"):
            return "queued" if self.route == "queued" else "declined"
        if self.calls:
            return "call"
        if self.offload is not None:
            valid = self.offload.valid
        else:
            valid = self.result is not None and self.result.final.valid
        return "answer" if valid and self.final_parsed.text else "invalid"

    @property
    def tier(self) -> int | str:
        """Which rung answered: a local tier's number, or ``"cloud"``."""
        if self.offload is not None:
            return "cloud"
        return self.result.tier if self.result is not None else 0

    @property
    def answer(self) -> str:
        """What a person reads: the text, else one sentence per call that ran."""
        return self.text or " ".join(e.said for e in self.executions if e.said)

    def to_json(self) -> dict[str, Any]:
        """``Result.to_json()`` with the route's answer, plus the decision."""
        base = self.result.to_json() if self.result is not None else _empty_result_json()
        base.update(
            {
                "tool_calls": [c.to_dict() for c in self.calls],
                "route": self.route,
                "reason": self.reason,
                "outcome": self.outcome,
                "text": self.text,
                "answer": self.answer,
                "tier": self.tier,
                "latency_s": round(self.latency_s, 4),
                "executions": [e.to_json() for e in self.executions],
                "decision": self.decision.to_json(),
                "features": self.features.to_json() if self.features else None,
                "offload": self.offload.to_json() if self.offload else None,
                "request_id": self.request_id,
                "idempotency_key": self.idempotency_key,
            }
        )
        return base


@dataclass(frozen=True)
class Delivery:
    """What :meth:`Router.drain_outbox` did with one queued request."""

    outbox_id: int
    request_id: str
    idempotency_key: str
    status: DeliveryStatus
    reason: str
    calls: tuple[ToolCall, ...] = ()
    executions: tuple[Execution, ...] = ()


@dataclass(frozen=True)
class _NotSent:
    """Why a cloud call did not happen or did not answer."""

    reason: str
    retryable: bool


@dataclass
class _Request:
    """One request in flight through :meth:`Router.ask`."""

    messages: list[Message]
    choice: str
    specs: list[ToolSpec]
    source: str
    key: str
    execute: bool
    started: float
    request_id: str | None = None
    result: Result | None = None
    features: Features | None = None
    p: float | None = None
    why: str = ""
    records: list[AttemptRecord] = field(default_factory=list)
    in_flight: int | None = None  # the write-ahead outbox row of a direct offload


# ---------------------------------------------------------------- the router


Executor = Callable[[Sequence[ToolCall]], tuple[Execution, ...]]
IN_FLIGHT_PARK_S = 86_400.0


class Router:
    """Routes requests between the local agent and the cloud. See the module
    docstring for the policy; everything heavy is passed in."""

    def __init__(
        self,
        agent: Agent,
        confidence: ConfidenceModel,
        settings: RouterSettings,
        *,
        cloud: Cloud | None = None,
        store: Store | None = None,
    ) -> None:
        if agent.settings.repair_attempts > 1:
            raise ConfigError(
                f"the router makes one local repair; the agent is set to "
                f"{agent.settings.repair_attempts}",
                hint="build the agent with cascade_agent_settings(settings)",
            )
        self.agent = agent
        self.confidence = confidence
        self.settings = settings
        self.cloud = cloud if settings.offload else None
        self.store = store
        self.execute_calls: Executor = self._agent_executor
        self._clock = time.time
        self._drain_lock = threading.Lock()

    # -- one request

    def ask(  # noqa: PLR0913 - keyword-only options after the request
        self,
        request: str | Sequence[Message],
        *,
        source: Source = "cli",
        idempotency_key: str | None = None,
        tool_choice: str | None = None,
        execute: bool = True,
        mode: Mode = "cascade",
        request_id: str | None = None,
    ) -> RoutedResult:
        """Route one request. ``mode="llm"`` skips the SLM and offloads.

        ``request_id`` names a request the caller has already accepted and
        started in the store's journal (the daemon journals before it
        acknowledges); the router then records the outcome against it."""
        req = self._intake(request, source, idempotency_key, tool_choice, execute)
        if request_id is not None:
            req.request_id = request_id
        elif self.store is not None:
            seen = self._accept(req)
            if seen is not None:
                return seen
        try:
            if mode == "llm":
                req.why = "llm mode"
                return self._escalate(req)
            return self._decide(req)
        except BaseException as exc:
            self._fail_open(req, exc)
            raise

    def _intake(
        self,
        request: str | Sequence[Message],
        source: str,
        key: str | None,
        tool_choice: str | None,
        execute: bool,
    ) -> _Request:
        messages = _messages(request)
        choice = tool_choice or self.agent.settings.tool_choice
        return _Request(
            messages=messages,
            choice=choice,
            specs=self._offered(choice),
            source=source,
            key=key or uuid.uuid4().hex,
            execute=execute,
            started=time.perf_counter(),
        )

    def _accept(self, req: _Request) -> RoutedResult | None:
        """Write the request to the journal; a seen key returns its record."""
        assert self.store is not None
        journal = self.store.journal
        options = {"tool_choice": req.choice, "execute": req.execute}
        accepted = journal.accept(
            request_payload(req.messages, req.specs, options),
            source=req.source,  # type: ignore[arg-type]
            idempotency_key=req.key,
        )
        req.request_id = accepted.id
        if accepted.duplicate:
            return self._duplicate(req, accepted.id)
        journal.start(accepted.id)
        return None

    def _duplicate(self, req: _Request, request_id: str) -> RoutedResult:
        assert self.store is not None
        row = self.store.journal.get(request_id)
        route: Route = "queued" if row.status in ("queued", "accepted", "running") else "declined"
        if row.result and row.result.get("route") in ("local", "offload:https", "offload:mqtt"):
            route = row.result["route"]
        reason = f"duplicate: idempotency key seen as request {request_id} ({row.status})"
        decision = Decision(route, reason, None, self.settings.threshold, 0)
        return RoutedResult(None, decision, 0.0, request_id=request_id, idempotency_key=req.key)

    def _fail_open(self, req: _Request, exc: BaseException) -> None:
        """An exception escaped mid-request: record it, let it propagate."""
        if self.store is None or req.request_id is None:
            return
        journal = self.store.journal
        if journal.get(req.request_id).status in ("accepted", "running"):
            message = exc.one_line() if isinstance(exc, EdgeAgentError) else type(exc).__name__
            journal.fail(req.request_id, f"error: {message}")

    def _decide(self, req: _Request) -> RoutedResult:
        result = self.agent.ask(req.messages, tool_choice=req.choice, execute=False)
        req.result = result
        # The settled tier's attempts only: a climb leaves the lower tier's
        # attempts in the result too, and they say nothing about this answer.
        settled = [a for a in result.attempts if a.step == 0 and a.tier == result.tier]
        req.features = features_from_attempts(settled)
        req.p = self.confidence.p_success(req.features)
        tau = self.settings.threshold
        repaired = " after 1 repair" if len(settled) > 1 else ""
        if result.tier:
            repaired += f" (tier {result.tier})"
        if result.final.valid and req.p >= tau:
            reason = f"local: p={req.p:.2f}≥τ={tau:.2f}{repaired}"
            return self._local(req, reason)
        if not result.final.valid:
            problem = result.final.problem
            req.why = f"invalid{repaired}: {problem}" if problem else f"invalid{repaired}"
        else:
            req.why = f"p={req.p:.2f}<τ={tau:.2f}"
        return self._escalate(req)

    def _local(self, req: _Request, reason: str) -> RoutedResult:
        assert req.result is not None
        calls = req.result.calls
        executions = self.execute_calls(calls) if req.execute and calls else ()
        result = replace(req.result, route="local", executions=executions)
        decision = self._decision("local", reason, req)
        routed = self._routed(req, decision, result=result, executions=executions)
        self._record_slm(req, "local", reason)
        self._finish(req, routed)
        return routed

    # -- offload

    def _escalate(self, req: _Request) -> RoutedResult:
        cloud = self.cloud
        if cloud is None:
            return self._fallback(req, ["no cloud offload configured"], retryable=False)
        offload = self._offload_request(req.messages, req.specs, req.choice, req.key)
        estimate = self._estimate(cloud, offload)
        blockers = self._blockers(cloud, estimate)
        if blockers:
            return self._fallback(req, blockers, retryable=True, estimate=estimate)
        self._write_ahead(req, cloud, offload)
        sent = self._send(cloud, offload)
        if isinstance(sent, _NotSent):
            self._close_in_flight(req, f"not sent: {sent.reason}")
            return self._fallback(req, [sent.reason], retryable=sent.retryable, estimate=estimate)
        reply, reservation, cost = sent
        outcome = OffloadOutcome(reply, self._verify_reply(reply, req.specs, req.choice))
        return self._offloaded(req, outcome, reservation, cost)

    def _write_ahead(self, req: _Request, cloud: Cloud, offload: OffloadRequest) -> None:
        """An outbox row, durable before the call goes out and marked sent
        before any tool runs. After a crash, a request still ``running`` whose
        row is pending was cut off before its reply was used, so it may be
        retried (same idempotency key) without running anything twice. The row
        is parked a day ahead: the drainer never sends it itself."""
        if self.store is None or req.request_id is None:
            return
        payload = {
            "request": json.loads(request_to_wire(offload)),
            "execute": req.execute,
            "source": req.source,
            "in_flight": True,
        }
        outbox = self.store.outbox
        for old in outbox.for_request(req.request_id):
            if old.state == "pending" and old.payload.get("in_flight"):
                outbox.mark_failed(old.id, "cut off by a restart; sent again with the same key")
        req.in_flight = outbox.add(req.request_id, cloud.route.split(":")[1], payload)
        outbox.postpone(req.in_flight, "in flight", self._clock() + IN_FLIGHT_PARK_S)

    def _close_in_flight(self, req: _Request, reason: str | None) -> None:
        """Settle the write-ahead row: sent (None) or failed (the reason)."""
        if self.store is None or req.in_flight is None:
            return
        if reason is None:
            self.store.outbox.mark_sent(req.in_flight)
        else:
            self.store.outbox.mark_failed(req.in_flight, reason)
        req.in_flight = None

    def _blockers(self, cloud: Cloud, estimate: float) -> list[str]:
        """Why a call cannot go out now; empty when it can (the breaker's
        half-open trial slot is taken then, and must be used or cancelled)."""
        budget_problem = cloud.budget.check(estimate)
        if budget_problem is None:
            status = cloud.connectivity.status()
            return [] if status.ok else [status.reason]
        blockers = []
        breaker = cloud.connectivity.breaker
        if breaker.state == "open":
            blockers.append(breaker.describe())
        else:
            link = cloud.connectivity.link()
            if not link.ok:
                blockers.append(link.reason)
        return [*blockers, budget_problem]

    def _estimate(self, cloud: Cloud, offload: OffloadRequest) -> float:
        tokens = self._prompt_tokens(offload)
        return cloud.budget.estimate(cloud.price_key, tokens, offload.max_tokens)

    def _send(
        self, cloud: Cloud, offload: OffloadRequest
    ) -> tuple[OffloadReply, Reservation, float] | _NotSent:
        """Reserve, send, settle; or the one-line reason it did not work."""
        prompt_tokens = self._prompt_tokens(offload)
        try:
            reservation = cloud.budget.reserve(
                cloud.price_key, prompt_tokens, offload.max_tokens, offload.idempotency_key
            )
        except BudgetExceededError as exc:
            cloud.connectivity.cancel()
            return _NotSent(exc.message, retryable=True)
        try:
            reply = cloud.transport.send(offload)
        except OffloadError as exc:
            cloud.budget.release(reservation)
            cloud.connectivity.record_failure(network=exc.retryable)
            kind = "failed" if exc.retryable else "failed permanently"
            return _NotSent(f"offload {kind}: {exc.message}", retryable=exc.retryable)
        cloud.connectivity.record_success()
        cost = cloud.budget.settle(reservation, reply.prompt_tokens, reply.completion_tokens)
        return reply, reservation, cost

    def _offloaded(
        self, req: _Request, outcome: OffloadOutcome, reservation: Reservation, cost: float
    ) -> RoutedResult:
        assert self.cloud is not None
        route = self.cloud.route
        prefix = f"offload: {req.why}" if req.why else "offload"
        if outcome.valid:
            reason = prefix
            calls = outcome.calls
            self._close_in_flight(req, None)  # durable before anything runs: never twice
            executions = self.execute_calls(calls) if req.execute and calls else ()
        else:
            reason = f"{prefix}; the reply failed verification: {outcome.problem}"
            self._close_in_flight(req, reason)
            executions = ()
        decision = self._decision(route, reason, req, reservation.estimate, cost)
        result = replace(req.result, route=route) if req.result is not None else None
        routed = self._routed(req, decision, result=result, executions=executions)
        routed = replace(routed, offload=outcome)
        self._record_slm(req, "local", "")
        req.records.append(_offload_record(outcome, route, reason, cost))
        if outcome.valid:
            self._finish(req, routed)
        else:
            self._settle(req, "fail", reason)
        return routed

    def _fallback(
        self,
        req: _Request,
        blockers: list[str],
        *,
        retryable: bool,
        estimate: float | None = None,
    ) -> RoutedResult:
        """Queue or decline, by the request's source and side effect."""
        why = f" ({req.why})" if req.why else ""
        obstacles = "; ".join(blockers)
        if retryable and self._may_queue(req):
            reason = f"queued: {obstacles}{why}"
            route: Route = "queued"
        else:
            reason = f"declined: {obstacles}{why}"
            route = "declined"
        decision = self._decision(route, reason, req, estimate)
        result = replace(req.result, route=route) if req.result is not None else None
        routed = self._routed(req, decision, result=result)
        self._record_slm(req, route, reason)
        if route == "queued":
            self._enqueue(req, reason)
        else:
            self._settle(req, "decline", reason)
        return routed

    def _may_queue(self, req: _Request) -> bool:
        s = self.settings
        return (
            self.store is not None
            and self.cloud is not None
            and req.source in s.queue_sources
            and self._side_effect(req) in s.queue_side_effects
        )

    def _side_effect(self, req: _Request) -> SideEffect:
        """The proposed calls' tools, else every offered tool: the most severe."""
        tools = self.agent.tools
        if not isinstance(tools, Registry):
            return "read"
        attempts = req.result.attempts if req.result is not None else ()
        proposed = [c.name for a in attempts for c in a.parsed.calls if c.name in tools]
        names = proposed or [s.name for s in req.specs if s.name in tools]
        effects = [tools.get(n).policy.side_effect for n in names]
        return max(effects, key=lambda e: _SEVERITY[e], default="read")

    # -- journal

    def _record_slm(self, req: _Request, route: str, reason: str) -> None:
        if req.result is None or self.store is None:
            return
        records = attempt_records(req.result, model=self.agent.tier_models, route="local")
        if reason:
            records[-1] = replace(records[-1], route=route, reason=reason)
        req.records[:0] = records

    def _finish(self, req: _Request, routed: RoutedResult) -> None:
        if self.store is None or req.request_id is None:
            return
        journal = self.store.journal
        journal.record_attempts(req.request_id, req.records)
        journal.finish(req.request_id, routed.to_json(), latency_s=routed.latency_s)

    def _settle(self, req: _Request, how: Literal["fail", "decline"], reason: str) -> None:
        if self.store is None or req.request_id is None:
            return
        journal = self.store.journal
        journal.record_attempts(req.request_id, req.records)
        latency = time.perf_counter() - req.started
        if how == "fail":
            journal.fail(req.request_id, reason, latency_s=latency)
        else:
            journal.decline(req.request_id, reason, latency_s=latency)

    def _enqueue(self, req: _Request, reason: str) -> None:
        """Outbox row first, then the journal status (see the module docstring)."""
        assert self.store is not None and self.cloud is not None and req.request_id is not None
        outbox, journal = self.store.outbox, self.store.journal
        for old in outbox.for_request(req.request_id):
            if old.state == "pending":
                outbox.mark_failed(old.id, "superseded by a newer queue entry")
        offload = self._offload_request(req.messages, req.specs, req.choice, req.key)
        payload = {
            "request": json.loads(request_to_wire(offload)),
            "execute": req.execute,
            "source": req.source,
        }
        outbox.add(req.request_id, self.cloud.route.split(":")[1], payload)
        journal.record_attempts(req.request_id, req.records)
        journal.queue(req.request_id, reason)

    # -- the outbox

    def drain_outbox(self, limit: int = 100) -> list[Delivery]:
        """Send queued requests that are due, oldest first, each exactly once
        per idempotency key; stops at the first that cannot go out (offline,
        breaker open, budget exhausted). Call it when connectivity returns."""
        if self.store is None or self.cloud is None:
            return []
        with self._drain_lock:  # one drainer at a time: a row is sent once
            self._settle_stranded()
            deliveries: list[Delivery] = []
            for row in self.store.outbox.due(limit):
                delivery = self._deliver(row)
                deliveries.append(delivery)
                if delivery.status == "postponed":
                    break
            return deliveries

    def _settle_stranded(self) -> None:
        assert self.store is not None
        for row in self.store.outbox.stranded():
            self.store.journal.fail(
                row.request_id,
                "interrupted after the cloud's verified reply; not run again, so no "
                "actuation happens twice",
            )

    def _deliver(self, row: OutboxRow) -> Delivery:
        assert self.store is not None and self.cloud is not None
        cloud, outbox, journal = self.cloud, self.store.outbox, self.store.journal
        status = journal.get(row.request_id).status
        try:
            offload = request_from_wire(json.dumps(row.payload.get("request")).encode())
        except InputError as exc:  # a row this version cannot read: settle it, loudly
            reason = f"unreadable outbox entry: {exc.message}"
            outbox.mark_failed(row.id, reason)
            if status == "queued":
                journal.fail(row.request_id, reason)
            return Delivery(row.id, row.request_id, "", "failed", reason)
        key = offload.idempotency_key

        def delivery(state: DeliveryStatus, reason: str) -> Delivery:
            return Delivery(row.id, row.request_id, key, state, reason)

        if status != "queued":
            outbox.mark_failed(row.id, f"the request is already {status}")
            return delivery("skipped", f"the request is already {status}")
        blockers = self._blockers(cloud, self._estimate(cloud, offload))
        if blockers:
            outbox.postpone(row.id, "; ".join(blockers), self._clock())
            return delivery("postponed", "; ".join(blockers))
        sent = self._send(cloud, offload)
        if isinstance(sent, _NotSent):
            return self._send_failed(row, key, sent)
        reply, _, cost = sent
        verdicts = self._verify_reply(reply, offload.tools, offload.tool_choice)
        outcome = OffloadOutcome(reply, verdicts)
        return self._delivered(row, key, outcome, cost)

    def _send_failed(self, row: OutboxRow, key: str, failure: _NotSent) -> Delivery:
        assert self.store is not None
        outbox, journal = self.store.outbox, self.store.journal
        attempts, reason = row.attempts + 1, failure.reason
        s = self.settings
        if failure.retryable and attempts < s.outbox_max_attempts:
            wait = backoff_delay(attempts, s.outbox_retry_initial_s, s.outbox_retry_max_s)
            outbox.defer(row.id, reason, self._clock() + wait)
            return Delivery(row.id, row.request_id, key, "retry", reason)
        final = f"{reason} (after {attempts} sends)"
        outbox.mark_failed(row.id, final)
        journal.fail(row.request_id, final)
        return Delivery(row.id, row.request_id, key, "failed", final)

    def _delivered(
        self, row: OutboxRow, key: str, outcome: OffloadOutcome, cost: float
    ) -> Delivery:
        assert self.store is not None and self.cloud is not None
        outbox, journal = self.store.outbox, self.store.journal
        route = self.cloud.route
        if not outcome.valid:
            reason = f"offload from the outbox: the reply failed verification: {outcome.problem}"
            outbox.mark_failed(row.id, reason)
            journal.record_attempt(row.request_id, _offload_record(outcome, route, reason, cost))
            journal.fail(row.request_id, reason)
            return Delivery(row.id, row.request_id, key, "failed", reason)
        outbox.mark_sent(row.id)  # durable before anything runs: never twice
        calls = outcome.calls
        execute = bool(row.payload.get("execute", True))
        executions = self.execute_calls(calls) if execute and calls else ()
        reason = "offload from the outbox"
        journal.record_attempt(row.request_id, _offload_record(outcome, route, reason, cost))
        result = {
            "tool_calls": [c.to_dict() for c in calls],
            "route": route,
            "reason": reason,
            "outcome": "call" if calls else "answer",
            "text": outcome.reply.text if not calls else "",
            "executions": [e.to_json() for e in executions],
            "offload": outcome.to_json(),
            "idempotency_key": key,
        }
        journal.finish(row.request_id, result)
        return Delivery(row.id, row.request_id, key, "delivered", reason, calls, executions)

    # -- helpers

    def _decision(
        self,
        route: Route,
        reason: str,
        req: _Request,
        estimate: float | None = None,
        cost: float | None = None,
    ) -> Decision:
        attempts = len(req.result.attempts) if req.result is not None else 0
        currency = self.cloud.budget.currency if self.cloud is not None else ""
        return Decision(
            route, reason, req.p, self.settings.threshold, attempts, estimate, cost, currency
        )

    def _routed(
        self,
        req: _Request,
        decision: Decision,
        *,
        result: Result | None,
        executions: tuple[Execution, ...] = (),
    ) -> RoutedResult:
        return RoutedResult(
            result=result,
            decision=decision,
            latency_s=time.perf_counter() - req.started,
            executions=executions,
            features=req.features,
            request_id=req.request_id,
            idempotency_key=req.key,
        )

    def _offload_request(
        self, messages: list[Message], specs: list[ToolSpec], choice: str, key: str
    ) -> OffloadRequest:
        system = self.agent.settings.system_prompt
        if system:
            messages = _with_system(messages, system)
        assert self.cloud is not None
        return OffloadRequest(
            messages=messages,
            tools=specs,
            idempotency_key=key,
            tool_choice=choice,
            max_tokens=self.settings.offload_max_tokens,
            model=self.cloud.model,
        )

    def _prompt_tokens(self, offload: OffloadRequest) -> int:
        """The prompt counted with the local tokenizer when the engine has
        one, else characters / 4 (the chat template's few tokens aside)."""
        text = json.dumps(offload.messages, ensure_ascii=False) + json.dumps(
            [t.to_openai() for t in offload.tools], ensure_ascii=False
        )
        count = getattr(self.agent.engine, "count_tokens", None)
        if callable(count):
            return int(count(text))
        assert self.cloud is not None
        return estimate_tokens(text, self.cloud.budget.settings.chars_per_token)

    def _offered(self, choice: str) -> list[ToolSpec]:
        specs = self.agent.specs
        if choice == "none":
            return []
        if choice in ("auto", "required"):
            return specs
        named = [s for s in specs if s.name == choice]
        if not named:
            raise InputError(f"tool_choice names unknown tool {choice!r}")
        return named

    def _verify_reply(
        self, reply: OffloadReply, specs: Sequence[ToolSpec], choice: str
    ) -> tuple[Verdict, ...]:
        """The same checks as a local answer: tools offered, schema, the
        tool's pydantic model and rules."""
        parsed = ParsedOutput(calls=reply.calls, text=reply.text, errors=reply.errors)
        if parsed.is_call or parsed.errors:
            return tuple(verify_output(parsed, self._verifying(specs), self.agent.rules))
        if choice in ("auto", "none") and parsed.text.strip():
            return (Verdict(True, "ok"),)
        if choice in ("auto", "none"):
            return (Verdict(False, "no_call", "the cloud model's reply was empty"),)
        return (Verdict(False, "no_call", "no tool was called; call one of the tools"),)

    def _verifying(self, specs: Sequence[ToolSpec]) -> Registry | list[ToolSpec]:
        tools = self.agent.tools
        if isinstance(tools, Registry) and all(s.name in tools for s in specs):
            return tools.subset(s.name for s in specs)
        return list(specs)

    def _agent_executor(self, calls: Sequence[ToolCall]) -> tuple[Execution, ...]:
        """Run verified calls through the agent's sandbox (confirmation and
        rate limits included); nothing runs without a sandbox and a registry."""
        agent = self.agent
        if agent.sandbox is None or not isinstance(agent.tools, Registry):
            return ()
        return tuple(agent._run_calls(list(calls), 0, []))


# ---------------------------------------------------------------- pure helpers


def routing_quality(
    escalated: Sequence[bool], slm_correct: Sequence[bool]
) -> tuple[float | None, float | None]:
    """(precision, recall) of escalation (a metric of ``bench``): of the
    escalated requests, the share the SLM would have got wrong; of the SLM's
    wrong answers, the share escalated. None where the denominator is 0."""
    if len(escalated) != len(slm_correct):
        raise ValueError("one escalation flag per SLM outcome")
    pairs = list(zip(escalated, slm_correct, strict=True))
    caught = sum(1 for e, ok in pairs if e and not ok)
    n_escalated = sum(1 for e, _ in pairs if e)
    n_wrong = sum(1 for _, ok in pairs if not ok)
    precision = caught / n_escalated if n_escalated else None
    recall = caught / n_wrong if n_wrong else None
    return precision, recall


def _offload_record(outcome: OffloadOutcome, route: str, reason: str, cost: float) -> AttemptRecord:
    reply = outcome.reply
    failed = next((v for v in outcome.verdicts if not v.ok), None)
    raw = json.dumps(
        {"calls": [c.to_dict() for c in reply.calls], "text": reply.text}, ensure_ascii=False
    )
    return AttemptRecord(
        kind="offload",
        route=route,
        model=reply.model,
        raw_output=raw,
        valid=outcome.valid,
        problem=outcome.problem,
        stage=failed.stage if failed else "ok",
        outcome=("call" if outcome.calls else "answer") if outcome.valid else "invalid",
        reason=reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        offload_s=reply.latency_s,
        latency_s=reply.latency_s,
        cost_cloud=cost,
    )


def _messages(request: str | Sequence[Message]) -> list[Message]:
    if isinstance(request, str):
        if not request.strip():
            raise InputError("the prompt is empty", hint="pass a non-empty prompt")
        return [{"role": "user", "content": request}]
    return [dict(m) for m in request]


def _with_system(messages: list[Message], text: str) -> list[Message]:
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{text}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 8)


def _empty_result_json() -> dict[str, Any]:
    return {
        "tool_calls": [],
        "tokens": {"prompt": 0, "completion": 0},
        "valid_at_1": None,
        "attempts": [],
    }


__all__ = [
    "Cloud",
    "Decision",
    "Delivery",
    "OffloadOutcome",
    "RoutedResult",
    "Router",
    "RouterSettings",
    "Store",
    "cascade_agent_settings",
    "cloud_for",
    "routing_quality",
]
