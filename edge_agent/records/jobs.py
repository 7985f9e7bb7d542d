"""The daemon's jobs as plain data: what intake accepts, what the worker
answers, and how a request settles.

These types sit below the daemon and its hosts (automation, routing, the
API) so that each can speak of a job without importing the others: the
automation host submits through :class:`JobHost`, a narrow protocol the
daemon satisfies, instead of importing the daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from edge_agent.config import EdgeAgentConfig
    from edge_agent.records.journal import Journal, RequestRow, Source
    from edge_agent.toolbox.registry import Registry

FailureKind = Literal[
    "rejected", "expired", "error", "crashed", "interrupted", "failed", "queued", "declined"
]


# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Live:
    """What SIGHUP replaces: the config, the API token and the tools."""

    config: EdgeAgentConfig
    token: str | None
    registry: Registry


@dataclass(frozen=True)
class JobOptions:
    """How a job is to be answered: the ``options`` of its journaled payload,
    read once into named fields (they were read by string key all over the
    daemon). ``tool_source``: registry (run by name), inline (proposed
    only) or none. ``automation`` is the rule's context for an IoT job.
    ``stop``, ``logprobs`` (None: not asked; else how many alternatives per
    token) and ``response_format`` (``{"type": "json_object"}``, or
    ``{"type": "json_schema", "schema": ...}``) are the client's, from the
    OpenAI request."""

    tool_choice: str | None = None
    execute: bool = False
    max_tokens: int | None = None
    tool_source: str = "none"
    tool_names: tuple[str, ...] = ()
    parallel: bool | None = None
    model: str | None = None
    automation: Mapping[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    response_format: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, options: Mapping[str, Any] | None) -> JobOptions:
        o = options or {}
        return cls(
            tool_choice=o.get("tool_choice") or None,
            execute=bool(o.get("execute")),
            max_tokens=int(o["max_tokens"]) if o.get("max_tokens") else None,
            tool_source=str(o.get("tool_source") or "none"),
            tool_names=tuple(o.get("tool_names") or ()),
            parallel=None if o.get("parallel") is None else bool(o["parallel"]),
            model=o.get("model"),
            automation=dict(o.get("automation") or {}),
            stop=tuple(str(s) for s in o.get("stop") or ()),
            logprobs=None if o.get("logprobs") is None else int(o["logprobs"]),
            response_format=dict(o["response_format"]) if o.get("response_format") else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The journal's spelling (what :meth:`from_json` reads back)."""
        out: dict[str, Any] = {
            "tool_choice": self.tool_choice,
            "execute": self.execute,
            "max_tokens": self.max_tokens,
            "tool_source": self.tool_source,
            "tool_names": list(self.tool_names) if self.tool_source == "registry" else None,
            "parallel": self.parallel,
        }
        if self.model is not None:
            out["model"] = self.model
        if self.automation:
            out["automation"] = dict(self.automation)
        if self.stop:
            out["stop"] = list(self.stop)
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        if self.response_format:
            out["response_format"] = dict(self.response_format)
        return out


@dataclass(frozen=True)
class Job:
    """An accepted request, as the worker sees it (the journal's payload)."""

    request_id: str
    payload: dict[str, Any]
    source: str
    priority: int
    deadline: float | None
    queued_at: float = field(default_factory=time.monotonic, compare=False)
    idempotency_key: str | None = None

    @classmethod
    def from_row(cls, row: RequestRow) -> Job:
        return cls(
            row.id,
            row.payload,
            row.source,
            row.priority,
            row.deadline,
            idempotency_key=row.idempotency_key,
        )

    @property
    def options(self) -> JobOptions:
        return JobOptions.from_json(self.payload.get("options"))


@dataclass(frozen=True)
class Answer:
    """A request answered; ``result`` is what the journal stores for it."""

    request_id: str
    result: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """A request that ended without an answer, and why (in the journal too)."""

    request_id: str
    kind: FailureKind
    reason: str


Settled = Answer | Failure


@dataclass(frozen=True)
class Ticket:
    """What intake hands back: the journal id and the answer to come.
    ``duplicate`` when the idempotency key had been seen."""

    request_id: str
    duplicate: bool
    future: asyncio.Future[Settled]


@dataclass(frozen=True)
class JobEvent:
    """Telemetry for one settled request."""

    request_id: str
    source: str
    outcome: str  # call | answer | invalid, or a FailureKind
    queue_s: float
    run_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    energy_j: float = 0.0
    route: str = ""


class JobHost(Protocol):
    """What a host inside the daemon (automation) may use of it: submit a
    job and wait for it, read the live config and tools, write the audit."""

    @property
    def live(self) -> Live: ...

    @property
    def journal(self) -> Journal: ...

    async def submit(
        self,
        payload: Mapping[str, Any],
        *,
        source: Source = "api",
        idempotency_key: str | None = None,
    ) -> Ticket: ...


__all__ = [
    "Answer",
    "Failure",
    "FailureKind",
    "Job",
    "JobEvent",
    "JobHost",
    "JobOptions",
    "Live",
    "Settled",
    "Ticket",
]
