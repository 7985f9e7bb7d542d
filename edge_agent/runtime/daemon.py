"""The daemon: one process, one model, one inference at a time.

A single asyncio process serves every source of work (the HTTP API, later
MQTT automation). The model is loaded once; requests wait in a bounded
priority queue (automation events outrank chat) and a dedicated worker
thread answers them one by one, because llama.cpp is not re-entrant.

Durability, in order of events:

1. **Intake.** A request that fits in the queue is written to the journal
   (fsynced) *before* anything is acknowledged; one that does not fit is
   refused with :class:`~edge_agent.errors.BusyError` (429, or 503 while draining) and never
   journaled. Nothing accepted is dropped after that.
2. **Answer.** The worker marks it running, answers it with the
   :class:`~edge_agent.agent.Agent`, records every attempt, and marks it done
   (or failed, with a reason) before the waiting client hears back.
3. **SIGTERM.** Intake stops (503), the request in progress finishes, and
   the queued ones stay ``accepted`` in the journal; their clients get a 503
   naming the request id, and the next start answers them.
4. **Start.** :meth:`Journal.recover` settles what a crash left running (a
   request that did not run tools is retried, one that did is failed with a
   reason), and every unfinished request goes back in the queue.

SIGHUP reloads the config file and the tools; a change of model, host or
port needs a restart and is logged as such.

Telemetry is a callback: :meth:`Daemon.subscribe` receives a
:class:`JobEvent` (plain data) per settled request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn

from edge_agent.agent import Agent
from edge_agent.assemble import Assembly
from edge_agent.config import AgentSettings, state_dir
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.engine.base import Engine, Generation
from edge_agent.engine.text_stream import OnText, TextOptions, cut_at_stop
from edge_agent.errors import BusyError, ConfigError, EdgeAgentError, EngineError, InputError
from edge_agent.ladder import Ladder
from edge_agent.power import EnergySample, best_probe
from edge_agent.records.jobs import (
    Answer,
    Failure,
    FailureKind,
    Job,
    JobEvent,
    JobOptions,
    Live,
    Settled,
    Ticket,
)
from edge_agent.records.journal import Energy, Journal, RequestRow, Source, attempt_records
from edge_agent.records.run import Result
from edge_agent.routing.confidence import features_from_result
from edge_agent.routing.router import cascade_agent_settings
from edge_agent.runtime.crashes import CrashTrace
from edge_agent.runtime.routing_host import RoutingHost
from edge_agent.structured import answer_json
from edge_agent.toolbox.ratelimit import RateLimiter
from edge_agent.toolbox.registry import Registry, Tool

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from edge_agent.config import EdgeAgentConfig
    from edge_agent.decoding.prompts import Message
    from edge_agent.iot.automation_host import AutomationHost
    from edge_agent.sandbox.base import Sandbox

log = logging.getLogger("edge_agent.runtime.daemon")

# Journal priority: higher runs first. Automation events outrank chat.
URGENT_SOURCES = frozenset({"automation", "mqtt"})
URGENT_PRIORITY = 10
NORMAL_PRIORITY = 0
RETRY_AFTER_MAX_S = 120
DRAIN_RETRY_AFTER_S = 10
_STOP: tuple[int, int, None] = (-(10**9), 0, None)  # the consumer's "no more jobs"

OUTBOX_POLL_S = 5.0  # idle worker: how often queued offloads are retried
MAX_CRASH_RESTARTS = 2  # tries left to a request running when the daemon crashed itself
PRUNE_EVERY_S = 3600.0  # how often finished requests past retention leave the journal

Loader = Callable[[], "tuple[EdgeAgentConfig, str | None]"]
AppFactory = Callable[["Daemon"], "ASGIApp"]


# ---------------------------------------------------------------- the daemon


class Daemon:
    """The queue, the worker thread and the process lifecycle.

    ``engine`` and ``journal`` are passed in, built once; ``load`` re-reads the
    config and the token (SIGHUP); ``sandbox`` runs registry tools when a
    request asks for execution; ``ladder`` holds the bigger local models a
    request climbs to when the engine is unsure (every agent shares it).
    """

    def __init__(  # noqa: PLR0913 - keyword-only parts after the first three
        self,
        engine: Engine,
        journal: Journal,
        live: Live,
        *,
        load: Loader | None = None,
        sandbox: Sandbox | None = None,
        ladder: Ladder | None = None,
        crashed: bool = False,
    ) -> None:
        self.engine = engine
        # The last process died of a fatal signal of its own (edge_agent.runtime.crashes):
        # a request it was running gets only MAX_CRASH_RESTARTS more tries.
        self.crashed = crashed
        self.ladder = ladder
        self.journal = journal
        self.live = live
        self.sandbox = sandbox
        self.draining = False
        self._load = load
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job | None]] = asyncio.PriorityQueue()
        self._seq = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Settled]] = {}
        self._readers: dict[str, OnText] = {}  # streamed answers' readers, by request id
        self._reserved = 0  # intakes between the capacity check and the queue
        self._running: Job | None = None
        self._mean_run_s = 1.0
        self._pruned_at = float("-inf")  # monotonic time of the last journal prune
        self._limiter = RateLimiter()  # shared by every request: limits span requests
        self._probe = best_probe()  # per-request energy, with its source, in the journal
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-agent-inference")
        self._subscribers: list[Callable[[JobEvent], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.automation: AutomationHost | None = None  # started by serve() when configured
        self.routing = RoutingHost.from_config(live.config, journal)  # None: all local

    # -- what the API reads

    @property
    def model_ids(self) -> list[str]:
        return [self.engine.model_name]

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the one being answered)."""
        return self._queue.qsize() + self._reserved

    @property
    def busy(self) -> bool:
        return self._running is not None

    def subscribe(self, callback: Callable[[JobEvent], None]) -> None:
        self._subscribers.append(callback)

    # -- intake

    async def submit(
        self,
        payload: Mapping[str, Any],
        *,
        source: Source = "api",
        idempotency_key: str | None = None,
        on_text: OnText | None = None,
    ) -> Ticket:
        """Journal the request (durably), then queue it. Raises
        :class:`~edge_agent.errors.BusyError` when it does not fit; a seen
        idempotency key returns the earlier one. ``on_text`` receives a text
        answer's text as it is decoded, from the worker thread, when that
        text is sure to be the answer (see :meth:`_streams`)."""
        self._admit(source)
        priority = URGENT_PRIORITY if source in URGENT_SOURCES else NORMAL_PRIORITY
        deadline = time.time() + self.live.config.server.request_timeout_s
        self._reserved += 1
        try:
            accepted = await asyncio.to_thread(
                self.journal.accept,
                payload,
                source=source,
                priority=priority,
                idempotency_key=idempotency_key,
                deadline=deadline,
            )
        finally:
            self._reserved -= 1
        if accepted.duplicate:
            return Ticket(accepted.id, True, self._earlier(accepted.id))
        job = Job(
            accepted.id, dict(payload), source, priority, deadline, idempotency_key=idempotency_key
        )
        if on_text is not None:
            self._readers[job.request_id] = on_text
        return Ticket(job.request_id, False, self._enqueue(job))

    def _admit(self, source: str) -> None:
        server = self.live.config.server
        if self.draining:
            raise BusyError(
                "the daemon is shutting down", status=503, retry_after=DRAIN_RETRY_AFTER_S
            )
        room = server.queue_size + (server.automation_reserve if source in URGENT_SOURCES else 0)
        if self.depth >= room:
            raise BusyError(
                f"the queue is full ({self.depth} waiting)",
                status=429,
                retry_after=self._retry_after(),
            )

    def _retry_after(self) -> int:
        estimate = math.ceil(self._mean_run_s * (self.depth + 1))
        return max(1, min(RETRY_AFTER_MAX_S, estimate))

    def _enqueue(self, job: Job) -> asyncio.Future[Settled]:
        future = self._waiters.get(job.request_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[job.request_id] = future
        self._queue.put_nowait((-job.priority, next(self._seq), job))
        return future

    def _earlier(self, request_id: str) -> asyncio.Future[Settled]:
        """The answer of an earlier request with the same idempotency key."""
        waiting = self._waiters.get(request_id)
        if waiting is not None:
            return waiting
        future: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        row = self.journal.get(request_id)
        if row.status == "done" and row.result is not None:
            future.set_result(Answer(row.id, row.result))
        elif row.finished:
            future.set_result(Failure(row.id, "failed", row.reason or row.status))
        else:  # accepted by a process that is gone, and not resumed by this one
            future.set_result(Failure(row.id, "interrupted", "still waiting to be answered"))
        return future

    # -- the worker

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, _, job = await asyncio.wait_for(self._queue.get(), self._idle_wait())
            except asyncio.TimeoutError:  # idle: deliver what waits in the outbox
                await loop.run_in_executor(self._executor, self._drain_quietly)
                continue
            if job is None or self.draining:
                return  # anything still queued stays `accepted` in the journal
            self._running = job
            started = time.monotonic()
            try:
                settled = await loop.run_in_executor(self._executor, self._process, job)
            finally:
                self._running = None
            run_s = time.monotonic() - started
            self._mean_run_s = 0.8 * self._mean_run_s + 0.2 * run_s
            self._settle(job, settled, run_s, started - job.queued_at)
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                await loop.run_in_executor(self._executor, self.prune_journal)

    def _settle(self, job: Job, settled: Settled, run_s: float, queue_s: float) -> None:
        self._readers.pop(job.request_id, None)
        future = self._waiters.pop(job.request_id, None)
        if future is not None and not future.done():
            future.set_result(settled)
        self._emit(_event(job, settled, run_s, queue_s))

    def _emit(self, event: JobEvent) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # telemetry must never stop the queue
                log.exception("telemetry callback failed")

    def _process(self, job: Job) -> Settled:
        """On the worker thread: answer one job and journal the outcome."""
        rid = job.request_id
        try:
            if job.deadline is not None and time.time() > job.deadline:
                return self._fail(job, "expired", "deadline passed while it waited in the queue")
            self.journal.start(rid)
            if self.routing is not None and self._routed(job):
                return self._process_routed(job, self.live, self.routing)
            started, before = time.monotonic(), self._probe.sample()
            result = self._answer(job, self.live)
            if job.options.response_format and not _structured_ok(result):
                return self._fail(job, "failed", f"no valid JSON answer: {result.final.problem}")
            stored = stored_result(result, self.engine.model_name, job.options.execute)
            stored.update(_client_extras(result, job.options))
            spent = EnergySample.between(before, self._probe.sample())
            stored["energy_j"], stored["energy_source"] = spent.joules, spent.source
            records = attempt_records(
                result, model=self._models(), energy=Energy(spent.joules, spent.source)
            )
            peak = peak_rss_bytes()
            records = [replace(r, peak_rss_bytes=peak) for r in records]
            self.journal.record_attempts(rid, records)
            self.journal.finish(rid, stored, latency_s=time.monotonic() - started)
            return Answer(rid, stored)
        except InputError as exc:
            return self._fail(job, "rejected", exc.one_line())
        except EdgeAgentError as exc:
            return self._fail(job, "error", exc.one_line())
        except Exception as exc:  # a bug: keep serving, but say so loudly
            log.exception("request %s crashed the worker", rid)
            return self._fail(job, "crashed", f"internal error: {type(exc).__name__}: {exc}")

    def _routed(self, job: Job) -> bool:
        """Does the cascade answer this job? Structured output is decoded
        here only: the cloud's JSON mode is not the grammar's guarantee."""
        if self.routing is None or self._is_automation(job):
            return False
        return not job.options.response_format

    def _models(self) -> list[str]:
        upper = [t.engine.model_name for t in self.ladder.tiers] if self.ladder else []
        return [self.engine.model_name, *upper]

    def _is_automation(self, job: Job) -> bool:
        return self.automation is not None and self.automation.handles(job)

    def _process_routed(self, job: Job, live: Live, routing: RoutingHost) -> Settled:
        """The cascade: local when confident and verified, else the cloud,
        else queued or declined. The router journals the outcome itself."""
        rid, options = job.request_id, job.options
        before = self._probe.sample()
        routed = routing.answer(
            self._agent(job, live, routed=True),
            job.payload["messages"],
            request_id=rid,
            source=job.source,
            idempotency_key=job.idempotency_key or rid,
            tool_choice=options.tool_choice or "auto",
            execute=options.execute,
        )
        spent = EnergySample.between(before, self._probe.sample())
        if routed.route == "queued":
            return Failure(rid, "queued", routed.reason)
        if routed.route == "declined":
            return Failure(rid, "declined", routed.reason)
        if routed.outcome == "invalid":
            return Failure(rid, "failed", routed.reason)
        stored = {
            **routed.to_json(),
            "model": self.engine.model_name,
            "finish_reason": routed.result.final.generation.finish_reason
            if routed.result
            else "stop",
            "created": int(time.time()),
            "executed": options.execute,
            "energy_j": spent.joules,
            "energy_source": spent.source,
        }
        return Answer(rid, stored)

    def _idle_wait(self) -> float | None:
        """How long the worker waits for a job before it drains the outbox."""
        return None if self.routing is None else OUTBOX_POLL_S

    def _drain_quietly(self) -> None:
        try:
            self.drain_outbox()
        except EdgeAgentError as exc:
            log.warning("outbox: %s", exc.one_line())
        except Exception:  # a bug: keep serving, but say so loudly
            log.exception("outbox drain crashed")

    def drain_outbox(self) -> int:
        """On the worker thread, when idle: deliver queued offloads that are due."""
        if self.routing is None:
            return 0
        agent = Agent(
            self.engine,
            self.live.registry,
            cascade_agent_settings(self.live.config.agent),
            sandbox=self.sandbox,
            limiter=self._limiter,
            ladder=self.ladder,
        )
        return len(self.routing.drain(agent))

    def _fail(self, job: Job, kind: FailureKind, reason: str) -> Failure:
        try:
            self.journal.fail(job.request_id, reason)
        except EdgeAgentError as exc:
            log.error("could not journal the failure of %s: %s", job.request_id, exc.one_line())
        return Failure(job.request_id, kind, reason)

    def _answer(self, job: Job, live: Live) -> Result:
        if self.automation is not None and self.automation.handles(job):
            return self._answer_automation(job, live, self.automation)
        options = job.options
        if options.response_format:
            return answer_json(
                self._engine_for(job),
                job.payload["messages"],
                options.response_format,
                max_tokens=options.max_tokens or live.config.model.max_tokens,
            )
        agent = self._agent(job, live)
        return agent.ask(
            job.payload["messages"],
            tool_choice=options.tool_choice or "auto",
            execute=options.execute,
        )

    def _agent(self, job: Job, live: Live, *, routed: bool = False) -> Agent:
        """The agent for one API job: its tools, its options, the shared limiter.
        Under the router it makes at most one local repair (the policy's)."""
        options = job.options
        settings = _settings_for(options, live.config.agent)
        return Agent(
            self.engine if routed else self._engine_for(job),
            _tools_for(job.payload, live.registry),
            cascade_agent_settings(settings) if routed else settings,
            max_tokens=options.max_tokens or live.config.model.max_tokens,
            sandbox=self._acting(job, self.sandbox) if options.execute else None,
            limiter=self._limiter,
            ladder=self.ladder,
        )

    def _acting(self, job: Job, runner: _Runner | None) -> _ActingRunner | None:
        return None if runner is None else _ActingRunner(runner, self.journal, job.request_id)

    def _engine_for(self, job: Job) -> Engine:
        """The engine with the client's text options (stop strings, a reader
        of the streamed answer, top log-probabilities) where it takes them.
        An engine that does not (the GBNF engine) answers in one piece; the
        stop strings are then applied to its text afterwards."""
        options = job.options
        reader = self._readers.get(job.request_id) if self._streams(job) else None
        text = TextOptions(options.stop, reader, options.logprobs or 0)
        with_options = getattr(self.engine, "with_options", None)
        if with_options is None or (text == TextOptions() and reader is None):
            return self.engine
        forced = options.logprobs is not None or bool(getattr(self.engine, "score_forced", False))
        engine: Engine = with_options(text=text, score_forced=forced)
        return engine

    def _streams(self, job: Job) -> bool:
        """Is the first text the engine decodes sure to be the answer? Not
        when a ladder may replace it with a bigger model's, nor when the
        router may send the request to the cloud: streamed text cannot be
        taken back."""
        return self.ladder is None and self.routing is None and not self._is_automation(job)

    # -- automation (see edge_agent.iot.automation_host)

    def _answer_automation(self, job: Job, live: Live, host: AutomationHost) -> Result:
        """A rule's job: device tools run in this process, inside the job's
        bridge context (so the audit log names the job and the reading, and
        untrusted readings make any actuation ask the owner). When every call
        was refused, it is asked once more without the refused tools
        (:func:`~edge_agent.iot.automation.answer_rule`, the one automation path)."""
        from edge_agent.iot.automation import answer_rule

        options = job.options

        def ask(names: Sequence[str], messages: Sequence[Message]) -> Result:
            agent = Agent(
                self.engine,
                host.registry_for(names, live.registry),
                _settings_for(options, live.config.agent),
                max_tokens=options.max_tokens or live.config.model.max_tokens,
                sandbox=self._acting(job, host.runner(self.sandbox)),
                confirm=host.confirm,
                limiter=self._limiter,
                ladder=self.ladder,
            )
            return agent.ask(
                list(messages), tool_choice=options.tool_choice or "required", execute=True
            )

        with host.context(job):
            return answer_rule(ask, options.tool_names, job.payload["messages"])

    async def _start_automation(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = self.live.config.automation
        if settings is None:
            return
        from edge_agent.iot.automation_host import AutomationHost

        host = AutomationHost(self, settings)
        await asyncio.to_thread(host.start, loop)
        self.automation = host

    async def _stop_automation(self) -> None:
        host, self.automation = self.automation, None
        if host is not None:
            await asyncio.to_thread(host.stop)

    # -- lifecycle

    def prune_journal(self) -> int:
        """Drop finished requests older than ``server.journal_keep_days``,
        then the oldest finished ones while the journal holds more than
        ``server.journal_keep_mb`` (audit rows stay): without it the journal
        grows for as long as the device runs. Returns how many went; a
        failure is logged, not raised."""
        self._pruned_at = time.monotonic()
        server = self.live.config.server
        try:
            aged = sized = 0
            if server.journal_keep_days > 0:
                aged = self.journal.prune(time.time() - server.journal_keep_days * 86_400)
            if server.journal_keep_mb > 0:
                sized = self.journal.prune_to_size(int(server.journal_keep_mb * 1_000_000))
        except EdgeAgentError as exc:
            log.warning("journal prune: %s", exc.one_line())
            return 0
        if aged:
            log.info(
                "journal: dropped %d finished request(s) older than %g days",
                aged, server.journal_keep_days,
            )  # fmt: skip
        if sized:
            log.info(
                "journal: dropped the %d oldest finished request(s) to stay under %g MB",
                sized, server.journal_keep_mb,
            )  # fmt: skip
        return aged + sized

    def resume(self) -> int:
        """Settle what the last run left and queue what is unfinished."""
        self.prune_journal()
        routing = self.routing

        def retry(row: RequestRow) -> bool:
            cut_mid_offload = routing is not None and routing.cut_off_in_flight(row.id)
            return _safe_to_retry(row) or cut_mid_offload

        cap = MAX_CRASH_RESTARTS if self.crashed else None  # an outside kill: no cap
        rows = self.journal.recover("interrupted by a restart", retry=retry, max_recoveries=cap)
        for row in rows:
            self._enqueue(Job.from_row(row))
        return len(rows)

    async def serve(
        self, app: ASGIApp, sock: socket.socket, stop: asyncio.Event | None = None
    ) -> int:
        """Run until SIGTERM/SIGINT, then drain. Returns the exit code.

        A program that runs the daemon on a thread of its own (signals reach
        only the main thread) passes ``stop`` and sets it to shut down; the
        daemon then installs no signal handlers."""
        loop = asyncio.get_running_loop()
        resumed = self.resume()
        if resumed:
            log.info("resumed %d unfinished request(s) from the journal", resumed)
        # The automation host first: a resumed automation job needs it (and
        # its devices), or it would be answered as a plain API job.
        await self._start_automation(loop)
        consumer = asyncio.create_task(self._consume())
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
        server = _Server(_uvicorn_config(app))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        log.info("stopping: finishing the request in progress, keeping the queue")
        drained = await self.drain(consumer)
        await self._stop_automation()
        server.should_exit = True
        await serving
        self._executor.shutdown(wait=drained)
        if self.routing is not None:
            self.routing.close()
        kept = len(self.journal.unfinished())
        log.info("stopped; %d request(s) kept in the journal for the next start", kept)
        return 0 if drained else 1

    async def drain(self, consumer: asyncio.Task[None]) -> bool:
        """Stop intake, let the request in progress finish, and tell the
        queued requests' clients they are kept for the next start."""
        self.draining = True
        self._queue.put_nowait(_STOP)  # ahead of every job
        timeout = self.live.config.server.drain_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(consumer), timeout)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            log.error(
                "request still running after %.0f s; it is settled at the next start", timeout
            )
            return False
        for request_id, future in list(self._waiters.items()):
            if not future.done():
                reason = "the daemon stopped; the request is kept and answered after a restart"
                future.set_result(Failure(request_id, "interrupted", reason))
        self._waiters.clear()
        return True

    def _spawn_reload(self) -> None:
        task = asyncio.create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """SIGHUP: re-read the config, the token and the tools. A broken
        config is logged and the running one kept."""
        if self._load is None:
            return False
        try:
            config, token = await asyncio.to_thread(self._load)
            registry = await asyncio.to_thread(build_registry, config)
        except EdgeAgentError as exc:
            log.error("reload failed, keeping the running config: %s", exc.one_line())
            return False
        for key in _needs_restart(self.live.config, config):
            log.warning("reload: %s changed; that takes effect after a restart", key)
        self.live = Live(config, token, registry)
        log.info("reloaded the config and %d tool(s)", len(registry))
        # Read the new tool block now, on the inference thread (so never
        # during a request), rather than in the first request after reload.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, warm_tool_block, self.engine, registry, config)
        return True


# ---------------------------------------------------------------- helpers


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stored_result(result: Result, model: str, executed: bool) -> dict[str, Any]:
    """What the journal keeps for an answered request; the API renders its
    responses (and idempotent replays) from this alone."""
    stored = {
        **result.to_json(),
        "model": model,
        "finish_reason": result.final.generation.finish_reason,
        "created": int(time.time()),
        "executed": executed,
    }
    if any(a.kind == "shadow" for a in result.attempts):
        # the label's inputs: router calibrate --from-journal learns from them
        stored["features"] = features_from_result(result).to_json()
    return stored


def _structured_ok(result: Result) -> bool:
    """A structured answer is kept when valid, or cut short by max_tokens
    (the client sees ``finish_reason: length``, as from OpenAI)."""
    return result.final.valid or result.final.generation.finish_reason == "length"


def _client_extras(result: Result, options: JobOptions) -> dict[str, Any]:
    """What the client asked for besides the answer: the stop strings applied
    (again: an engine without text options decodes past them) and the
    answer's token log-probabilities."""
    extras: dict[str, Any] = {}
    if options.stop and result.text:
        extras["text"] = extras["answer"] = cut_at_stop(result.text, options.stop)
    if options.logprobs is not None and result.text:
        extras["logprobs"] = token_logprobs(result.final.generation, options.logprobs)
    return extras


def token_logprobs(generation: Generation, top: int) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for a generation: each token's log p
    under the model's own distribution (before any grammar mask) and its
    ``top`` best alternatives."""
    return [
        {
            "token": t.text,
            "logprob": round(t.logprob, 6),
            "bytes": list(t.text.encode("utf-8")),
            "top_logprobs": [
                {"token": alt, "logprob": round(lp, 6), "bytes": list(alt.encode("utf-8"))}
                for alt, lp in t.top[:top]
            ],
        }
        for t in generation.tokens
    ]


def _event(job: Job, settled: Settled, run_s: float, queue_s: float) -> JobEvent:
    if isinstance(settled, Failure):
        return JobEvent(job.request_id, job.source, settled.kind, queue_s, run_s)
    tokens = settled.result.get("tokens") or {}
    return JobEvent(
        job.request_id,
        job.source,
        str(settled.result.get("outcome", "")),
        queue_s,
        run_s,
        int(tokens.get("prompt", 0)),
        int(tokens.get("completion", 0)),
        float(settled.result.get("energy_j") or 0.0),
        str(settled.result.get("route") or ""),
    )


def _tools_for(payload: Mapping[str, Any], registry: Registry) -> Registry | list[ToolSpec]:
    """Registry tools by name (runnable), inline tools (proposed only), or none."""
    options = JobOptions.from_json(payload.get("options"))
    if options.tool_source == "registry":
        return registry.subset(options.tool_names)
    if payload.get("tools"):
        return normalize_tools(payload["tools"])
    return []


def _settings_for(options: JobOptions, settings: AgentSettings) -> AgentSettings:
    if options.parallel is None:
        return settings
    return settings.model_copy(update={"parallel_calls": options.parallel})


def _safe_to_retry(row: RequestRow) -> bool:
    """A request cut off mid-way is run again only if no tool that may
    change something had started for it: side effects must not happen
    twice. Reads may run again."""
    return row.acted_at is None or not JobOptions.from_json(row.payload.get("options")).execute


class _Runner(Protocol):
    """What the agent runs tools with (a sandbox, or the bridge's runner)."""

    def run(self, tool: Tool, arguments: dict[str, Any]) -> Any: ...


class _ActingRunner:
    """A job's runner: before the first tool that may change something
    runs, the journal records that the job may have acted
    (:meth:`Journal.acting`), so a restart runs again only a job that had
    not. The mark is written before the tool starts, never after."""

    def __init__(self, runner: _Runner, journal: Journal, request_id: str) -> None:
        self.runner = runner
        self.journal = journal
        self.request_id = request_id
        self._marked = False

    def run(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        if not self._marked and tool.policy.side_effect != "read":
            self.journal.acting(self.request_id)
            self._marked = True
        return self.runner.run(tool, arguments)


def _needs_restart(old: EdgeAgentConfig, new: EdgeAgentConfig) -> Iterator[str]:
    if old.model != new.model:
        yield "model"
    if old.automation != new.automation:
        yield "automation"
    if (old.server.host, old.server.port) != (new.server.host, new.server.port):
        yield "server.host/server.port"


def build_registry(config: EdgeAgentConfig) -> Registry:
    """The built-in tools (when installed) plus the config's tool folders."""
    return Assembly(config).registry()


def warm_tool_block(engine: Engine, registry: Registry, config: EdgeAgentConfig) -> None:
    """Read the registry's tool block before the first request, or restore it
    from an earlier start; a failure costs only the first request's time."""
    if not config.model.prefix_cache:
        return
    agent = Agent(engine, registry, config.agent)
    try:
        warm = agent.warm(state_dir() / "kv")
    except (EngineError, OSError) as exc:
        log.warning("tool block: not cached: %s", exc)
        return
    if warm is None:
        log.info("tool block: not cached (tools selected per request, or no tools)")
        return
    how = {"disk": "restored from disk", "computed": "read and saved", "memory": "resident"}
    log.info("tool block: %d tokens, %s, %.2f s", warm.n_tokens, how[warm.source], warm.seconds)


def listen(host: str, port: int) -> socket.socket:
    """Bind the API socket before the (slow) model load, so a busy port fails fast."""
    try:
        return socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="another process may hold the port; pass --port or set server.port",
        ) from exc


def _uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        server_header=False,
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(load: Loader, app_factory: AppFactory) -> int:
    """The process: check the config, bind, load the models once, serve."""
    _log_to_stderr()
    config, token = load()
    parts = Assembly(config, status=lambda line: log.info("%s", line.rstrip("…")))
    sock = listen(config.server.host, config.server.port)
    trace = CrashTrace(state_dir() / "crash.trace")
    crashed = trace.died_of_itself()
    if crashed:
        log.warning("the last run died of a fatal signal (trace kept in %s.last)", trace.path)
    trace.arm()
    with contextlib.closing(sock), parts.journal() as journal:
        registry = parts.registry()
        engine = parts.engine()
        live = Live(config, token, registry)
        warm_tool_block(engine, registry, config)
        ladder = load_ladder(parts, registry)
        # Tools that keep state (home devices, notes) share it with `edge-agent ask`.
        daemon = Daemon(
            engine,
            journal,
            live,
            load=load,
            sandbox=parts.sandbox(),
            ladder=ladder,
            crashed=crashed,
        )
        host, port = sock.getsockname()[:2]
        log.info(
            "serving %s on http://%s:%s (%d threads, %d tools, journal %s)",
            engine.model_name, host, port, getattr(engine, "n_threads", 0), len(registry),
            journal.path,
        )  # fmt: skip
        code = asyncio.run(daemon.serve(app_factory(daemon), sock))
        trace.disarm()
        if code != 0:
            os._exit(code)  # the worker thread is still inside llama.cpp: don't join it
        return code


def load_ladder(parts: Assembly, registry: Registry) -> Ladder | None:
    """The ladder's tiers, loaded now: a daemon keeps every local model
    resident, so the first request that climbs does not pay for a load."""
    for status in parts.tier_status():
        state = "on" if status.on else "off"
        log.info("ladder tier %s: %s (%s)", status.name, state, status.detail)
    ladder = parts.ladder(warm_tools=registry, shadow=True)
    for tier in ladder.tiers if ladder is not None else ():
        tier.engine  # noqa: B018 - loads the model and warms its tool block
    return ladder


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="edge-agent: %(levelname)s: %(message)s", force=False
    )


__all__ = [
    "Answer",
    "Daemon",
    "Failure",
    "Job",
    "JobEvent",
    "Live",
    "Settled",
    "Ticket",
    "build_registry",
    "listen",
    "main",
    "stored_result",
]
