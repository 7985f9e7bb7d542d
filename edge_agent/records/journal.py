"""The journal: the durable record of every request, in SQLite (WAL mode).

Every accepted request is written here *before* it is acknowledged, every
attempt at answering it is recorded as a row of plain data, and a restart
after a crash (even ``kill -9``) finds what was left unanswered in
:meth:`Journal.unfinished` and settles it with :meth:`Journal.recover`.
Metrics (:meth:`Journal.stats`) and the LoRA traces export
(``edge_agent.runtime.traces``) read the same rows.

Tables (schema version 3, kept in ``PRAGMA user_version``; the file is marked
with ``PRAGMA application_id`` so another program's database is refused;
version 2 added ``budget_ledger``, which older releases created outside the
migrations, so a version-1 file that already has it keeps its rows; version
3 added ``requests.acted_at``)::

    requests   one row per accepted request
        id TEXT PK (uuid4 hex) · idempotency_key TEXT UNIQUE NULL · source TEXT
        (cli/api/mqtt/automation/bench) · priority INT · received_at REAL (epoch s)
        · deadline REAL NULL · payload TEXT JSON {messages, tools, options}
        · status TEXT CHECK (accepted/running/queued/done/failed/declined)
        · reason TEXT · result TEXT JSON NULL · updated_at REAL
        · latency_s REAL NULL (intake → terminal status) · recoveries INT
        · acted_at REAL NULL (when a tool that may change something first
        started: a request cut off before then is safe to run again)
    attempts   one row per generation (local, repair, offload), PK (request_id, n)
        request_id FK → requests ON DELETE CASCADE · n INT (1 = first attempt)
        · kind · route · model · raw_output · valid INT (0/1) · problem · stage
        · prompt_tokens · completion_tokens · queue_s · prefill_s · decode_s
        · verify_s · tool_s · offload_s · latency_s · energy_j · energy_source
        · peak_rss_bytes · cost_local · cost_cloud · outcome · reason
        · min_logprob · mean_logprob · mean_entropy · created_at
    outbox     offloads queued for later (filled by the router)
        id INTEGER PK · request_id FK · transport · payload TEXT JSON
        · state TEXT CHECK (pending/sent/failed) · attempts INT · next_try_at REAL
        · last_error TEXT · created_at · updated_at
    audit      security-relevant events (confirmations, sandbox refusals, recovery)
        id INTEGER PK · ts REAL · kind TEXT · request_id TEXT NULL (no FK: audit
        rows outlive pruned requests) · detail TEXT JSON
    budget_ledger  cloud spend (``edge_agent.routing.ledger.SqliteLedger``)
        id INTEGER PK · at REAL (epoch s) · model TEXT · idempotency_key TEXT
        · state TEXT CHECK (reserved/settled) · estimate REAL · amount REAL
        · prompt_tokens INT · completion_tokens INT · settled_at REAL NULL

Request status machine (anything else is refused with :class:`InputError`)::

    accepted ──► running ──► done
      │   ▲         ├──────► failed | declined | queued
      │   └─────────┘  recover(retry=True) after a crash
      ├──► queued ──► running | done | failed | declined
      └──► failed | declined

Durability. The database runs in WAL mode with ``synchronous=NORMAL``: a
commit is in the WAL file before the call returns, so it survives the
*process* dying at any moment (kill -9, OOM killer, a segfault in llama.cpp);
only a power cut or kernel crash can lose the last few commits, and the file
stays consistent either way. The one write whose loss matters on power loss
is the acceptance — the daemon acknowledges it to a client — so
:meth:`Journal.accept` commits with ``synchronous=FULL`` (an fsync of the WAL
per accept: a few ms on an SSD, tens on a slow SD card). A lost later write
(an attempt, a ``done``) only makes the request look unfinished, which
:meth:`Journal.recover` settles. An SD card that ignores fsync can still lose
data on power loss; nothing in software fixes that.

Limits. One writing process at a time by design (the daemon); other processes
(``edge-agent traces export``, a metrics reader) may read concurrently — WAL
readers never block the writer. One :class:`Journal` is safe to share between
threads: a lock serialises its use of the single connection. Do not put the
file on a network file system: WAL needs shared memory between processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_agent.config import state_dir
from edge_agent.errors import EdgeAgentError, InputError, JournalError, StateConflictError

if TYPE_CHECKING:
    from edge_agent.decoding.prompts import Message
    from edge_agent.decoding.schema import ToolSpec
    from edge_agent.records.run import Attempt, Result

Status = Literal["accepted", "running", "queued", "done", "failed", "declined"]
Source = Literal["cli", "api", "mqtt", "automation", "bench"]
SOURCES: tuple[str, ...] = ("cli", "api", "mqtt", "automation", "bench")
TERMINAL: frozenset[str] = frozenset({"done", "failed", "declined"})
# "a finished request" in SQL, with its parameters: what retention may delete
_FINISHED = f"status IN ({', '.join('?' * len(TERMINAL))})"
_FINISHED_ARGS = tuple(sorted(TERMINAL))

# Which statuses each transition may start from.
_FROM: dict[str, tuple[str, ...]] = {
    "running": ("accepted", "queued"),
    "done": ("running", "queued"),
    "failed": ("accepted", "running", "queued"),
    "declined": ("accepted", "running", "queued"),
    "queued": ("accepted", "running"),
}

APPLICATION_ID = 0x45414A4C  # "EAJL": marks the file as an edge-agent journal
BUSY_TIMEOUT_S = 5.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes kept after a checkpoint (SD cards)
_CORRUPT_HINT = "move the file aside (keep it for inspection); a new journal is created on start"

# Forward migrations: _MIGRATIONS[k] takes schema version k to k + 1. Never
# edit a released entry; append a new one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT UNIQUE,
            source TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            received_at REAL NOT NULL,
            deadline REAL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('accepted', 'running', 'queued', 'done', 'failed', 'declined')),
            reason TEXT NOT NULL DEFAULT '',
            result TEXT,
            updated_at REAL NOT NULL,
            latency_s REAL,
            recoveries INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX requests_status ON requests (status, priority DESC, received_at)",
        "CREATE INDEX requests_received ON requests (received_at)",
        """CREATE TABLE attempts (
            request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
            n INTEGER NOT NULL,
            kind TEXT NOT NULL,
            route TEXT NOT NULL,
            model TEXT NOT NULL,
            raw_output TEXT NOT NULL,
            valid INTEGER NOT NULL CHECK (valid IN (0, 1)),
            problem TEXT NOT NULL DEFAULT '',
            stage TEXT NOT NULL DEFAULT '',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            queue_s REAL, prefill_s REAL, decode_s REAL, verify_s REAL,
            tool_s REAL, offload_s REAL, latency_s REAL,
            energy_j REAL, energy_source TEXT, peak_rss_bytes INTEGER,
            cost_local REAL, cost_cloud REAL,
            outcome TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            min_logprob REAL, mean_logprob REAL, mean_entropy REAL,
            created_at REAL NOT NULL,
            PRIMARY KEY (request_id, n)
        )""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
            transport TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try_at REAL,
            last_error TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_try_at)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            request_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_ts ON audit (ts)",
    ),
    # 1 -> 2: budget_ledger. Before version 2, SqliteLedger created it on first
    # use with exactly this definition, so IF NOT EXISTS keeps those rows.
    (
        """CREATE TABLE IF NOT EXISTS budget_ledger (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            model TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('reserved', 'settled')),
            estimate REAL NOT NULL,
            amount REAL NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            settled_at REAL
        )""",
        "CREATE INDEX IF NOT EXISTS budget_ledger_at ON budget_ledger (at)",
    ),
    # 2 -> 3: when a request's first tool with side effects started (NULL: none
    # has), so a restart can tell a request safe to run again from one that
    # may have acted.
    ("ALTER TABLE requests ADD COLUMN acted_at REAL",),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def default_path() -> Path:
    """``journal.db`` in the state directory (``config.state_dir``)."""
    return state_dir() / "journal.db"


# ---------------------------------------------------------------- plain data


@dataclass(frozen=True)
class Accepted:
    """What :meth:`Journal.accept` answers: the id to acknowledge, and whether
    the idempotency key had been seen (then ``status`` is the earlier one's)."""

    id: str
    duplicate: bool
    status: str


@dataclass(frozen=True)
class RequestRow:
    id: str
    idempotency_key: str | None
    source: str
    priority: int
    received_at: float
    deadline: float | None
    payload: dict[str, Any]
    status: str
    reason: str
    result: dict[str, Any] | None
    updated_at: float
    latency_s: float | None
    recoveries: int
    acted_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Energy:
    """Energy spent on a request and where the figure came from
    (``cpu_model``, ``rapl``, ``hwmon``, ``ina3221``, ...)."""

    joules: float
    source: str


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as a journal row. Times in seconds, energy in joules,
    costs in the configured currency; ``None`` means "not measured"."""

    kind: str
    route: str
    model: str
    raw_output: str
    valid: bool
    problem: str = ""
    stage: str = ""
    outcome: str = ""
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    verify_s: float | None = None
    tool_s: float | None = None
    offload_s: float | None = None
    latency_s: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    peak_rss_bytes: int | None = None
    cost_local: float | None = None
    cost_cloud: float | None = None
    min_logprob: float | None = None
    mean_logprob: float | None = None
    mean_entropy: float | None = None


_ATTEMPT_COLUMNS = tuple(f.name for f in dataclasses.fields(AttemptRecord))


@dataclass(frozen=True)
class AttemptRow:
    """A stored attempt: its number within the request, when it was written,
    and the record itself."""

    request_id: str
    n: int
    created_at: float
    record: AttemptRecord


@dataclass(frozen=True)
class AuditEvent:
    ts: float
    kind: str
    request_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    """Aggregates over requests received at or after ``since`` (all if None).

    ``by_route``/``by_outcome`` count requests by their *last* attempt;
    latency percentiles (nearest rank) are over ``done`` requests; tokens,
    energy and costs are summed over every attempt, repairs included.
    """

    since: float | None
    requests: int
    by_status: dict[str, int]
    by_route: dict[str, int]
    by_outcome: dict[str, int]
    attempts: int
    repairs: int
    valid_at_1: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    prompt_tokens: int
    completion_tokens: int
    energy_j: float
    energy_sources: tuple[str, ...]
    cost_local: float
    cost_cloud: float


# ---------------------------------------------------------------- the journal


class Journal:
    """The request journal over one SQLite file. See the module docstring."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path if path is not None else default_path()
        self._clock = clock
        self._lock = threading.RLock()
        _prepare_file(self.path, create=create)
        self._db = _connect(self.path)

    # -- lifecycle

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes

    def accept(
        self,
        payload: Mapping[str, Any],
        *,
        source: Source,
        priority: int = 0,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> Accepted:
        """Record a new request, durably (fsynced), before it is acknowledged.

        A seen ``idempotency_key`` returns the earlier request's id with
        ``duplicate=True`` and writes nothing; the payloads are not compared.
        ``deadline`` is in epoch seconds, like every time in the journal.
        """
        if source not in SOURCES:
            raise InputError(f"unknown request source {source!r}; one of {', '.join(SOURCES)}")
        text = _dumps(payload, "request payload")
        with self._write(durable=True) as db:
            if idempotency_key is not None:
                seen = db.execute(
                    "SELECT id, status FROM requests WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if seen is not None:
                    return Accepted(seen["id"], True, seen["status"])
            rid, now = uuid.uuid4().hex, self._clock()
            db.execute(
                "INSERT INTO requests (id, idempotency_key, source, priority, received_at,"
                " deadline, payload, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rid, idempotency_key, source, priority, now, deadline, text, "accepted", now),
            )
        return Accepted(rid, False, "accepted")

    def start(self, request_id: str) -> None:
        """accepted/queued → running."""
        self._move(request_id, "running", "")

    def acting(self, request_id: str) -> None:
        """A tool that may change something is about to run for this request.
        Written durably (fsync) before the tool starts: a power cut must not
        make a request that acted look safe to run again. Later calls keep
        the first time."""
        with self._write(durable=True) as db:
            db.execute(
                "UPDATE requests SET acted_at = COALESCE(acted_at, ?) WHERE id = ?",
                (time.time(), request_id),
            )

    def finish(
        self, request_id: str, result: Mapping[str, Any], *, latency_s: float | None = None
    ) -> None:
        """running/queued → done, with the answer. ``latency_s`` defaults to
        now − received_at; pass a monotonic measurement when you have one."""
        self._move(request_id, "done", "", result=_dumps(result, "result"), latency_s=latency_s)

    def fail(self, request_id: str, reason: str, *, latency_s: float | None = None) -> None:
        self._move(request_id, "failed", _reason(reason), latency_s=latency_s)

    def decline(self, request_id: str, reason: str, *, latency_s: float | None = None) -> None:
        self._move(request_id, "declined", _reason(reason), latency_s=latency_s)

    def queue(self, request_id: str, reason: str) -> None:
        """accepted/running → queued (the router keeps the offload in ``outbox``)."""
        self._move(request_id, "queued", _reason(reason))

    def record_attempt(self, request_id: str, record: AttemptRecord) -> int:
        """Append one attempt; returns its number (1 for the first)."""
        return self.record_attempts(request_id, [record])[0]

    def record_attempts(self, request_id: str, records: Sequence[AttemptRecord]) -> list[int]:
        """Append several attempts in one transaction; returns their numbers.
        Allowed in any status: a measurement that arrives late is still data."""
        columns = ", ".join(("request_id", "n", "created_at", *_ATTEMPT_COLUMNS))
        marks = ", ".join("?" * (len(_ATTEMPT_COLUMNS) + 3))
        with self._write() as db:
            self._require(db, request_id)
            (last,) = db.execute(
                "SELECT COALESCE(MAX(n), 0) FROM attempts WHERE request_id = ?", (request_id,)
            ).fetchone()
            numbers = list(range(last + 1, last + 1 + len(records)))
            now = self._clock()
            db.executemany(
                f"INSERT INTO attempts ({columns}) VALUES ({marks})",  # noqa: S608 - fixed names
                [
                    (request_id, n, now, *dataclasses.astuple(r))
                    for n, r in zip(numbers, records, strict=True)
                ],
            )
        return numbers

    def audit(
        self, kind: str, detail: Mapping[str, Any] | None = None, *, request_id: str | None = None
    ) -> None:
        """Record a security-relevant event (a confirmation, a sandbox refusal)."""
        text = _dumps(detail or {}, "audit detail")
        with self._write() as db:
            db.execute(
                "INSERT INTO audit (ts, kind, request_id, detail) VALUES (?, ?, ?, ?)",
                (self._clock(), kind, request_id, text),
            )

    def recover(
        self,
        reason: str = "interrupted by restart",
        *,
        retry: bool | Callable[[RequestRow], bool] = False,
        max_recoveries: int | None = 2,
    ) -> list[RequestRow]:
        """Settle what a crash left behind; returns the requests to run now.

        A ``running`` request was cut off mid-way, perhaps after a tool with
        side effects ran, so by default it is marked failed with ``reason``.
        With ``retry`` (True, or a predicate, e.g. "only read-only tools") it
        goes back to ``accepted`` — at most ``max_recoveries`` times, so a
        request that crashes the process cannot crash it forever; None when
        the process was killed from outside (see :mod:`edge_agent.runtime.crashes`):
        then only its deadline ends it. Accepted
        requests whose deadline passed meanwhile are failed too. ``queued``
        requests are the router's (the outbox) and are left alone.
        """
        with self._write() as db:
            cut_off = [_request(r) for r in db.execute(_SELECT + " WHERE status = 'running'")]
            for row in cut_off:
                self._recover_one(db, row, reason, retry, max_recoveries)
            self._fail_expired(db)
        return self.unfinished()

    def prune(self, before: float) -> int:
        """Delete finished requests last updated before ``before`` (epoch s),
        with their attempts. Audit rows are kept. Returns how many went."""
        with self._write() as db:
            cur = db.execute(
                f"DELETE FROM requests WHERE {_FINISHED} AND updated_at < ?",  # noqa: S608
                (*_FINISHED_ARGS, before),
            )
            return cur.rowcount

    def prune_to_size(self, max_bytes: int) -> int:
        """Delete the oldest finished requests (with their attempts) until the
        journal's live data fits in ``max_bytes``; unfinished requests and
        audit rows stay, so it may stay above the bound. SQLite keeps freed
        pages in the file for reuse: the file stops growing rather than
        shrinking. Returns how many went."""
        gone = 0
        while (used := self.used_bytes()) > max_bytes:
            with self._write() as db:
                finished = db.execute(
                    f"SELECT COUNT(*) FROM requests WHERE {_FINISHED}",  # noqa: S608
                    _FINISHED_ARGS,
                ).fetchone()[0]
                # as many as the excess is of the data, assuming rows of like size
                batch = max(1, math.ceil(finished * (used - max_bytes) / used))
                cur = db.execute(
                    f"DELETE FROM requests WHERE id IN (SELECT id FROM requests "  # noqa: S608
                    f"WHERE {_FINISHED} ORDER BY updated_at, rowid LIMIT ?)",
                    (*_FINISHED_ARGS, batch),
                )
            if cur.rowcount <= 0:
                break
            gone += cur.rowcount
        return gone

    def used_bytes(self) -> int:
        """Bytes of the database file in use (its pages less the free ones)."""
        with self._read() as db:
            pages = int(db.execute("PRAGMA page_count").fetchone()[0])
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
            size = int(db.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    # -- reads

    def get(self, request_id: str) -> RequestRow:
        with self._read() as db:
            row = db.execute(_SELECT + " WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise InputError(f"no request {request_id!r} in the journal {self.path}")
        return _request(row)

    def unfinished(self) -> list[RequestRow]:
        """accepted and running requests, most urgent first: what a restart resumes."""
        return self._requests(
            " WHERE status IN ('accepted', 'running') ORDER BY priority DESC, received_at, rowid"
        )

    def recent(self, limit: int = 50) -> list[RequestRow]:
        return self._requests(" ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,))

    def attempts(self, request_id: str) -> list[AttemptRow]:
        columns = ", ".join(("request_id", "n", "created_at", *_ATTEMPT_COLUMNS))
        with self._read() as db:
            rows = db.execute(
                f"SELECT {columns} FROM attempts WHERE request_id = ? ORDER BY n",  # noqa: S608
                (request_id,),
            ).fetchall()
        return [_attempt(r) for r in rows]

    def audit_events(self, since: float | None = None, limit: int = 100) -> list[AuditEvent]:
        with self._read() as db:
            rows = db.execute(
                "SELECT ts, kind, request_id, detail FROM audit WHERE ts >= ?"
                " ORDER BY ts DESC, id DESC LIMIT ?",
                (_since(since), limit),
            ).fetchall()
        return [
            AuditEvent(r["ts"], r["kind"], r["request_id"], json.loads(r["detail"])) for r in rows
        ]

    def failed_first(
        self, since: float | None = None, *, batch: int = 200
    ) -> Iterator[tuple[RequestRow, list[AttemptRow]]]:
        """Requests whose first attempt was invalid, oldest first, with all
        their attempts (for the traces export). Reads in batches; the lock
        is not held between them."""
        after = -1
        query = (
            f"SELECT {_REQUEST_COLUMNS}, rowid AS _rowid FROM requests"  # noqa: S608
            " WHERE rowid > ? AND received_at >= ? AND EXISTS (SELECT 1 FROM attempts a"
            " WHERE a.request_id = requests.id AND a.n = 1 AND a.valid = 0)"
            " ORDER BY rowid LIMIT ?"
        )
        while True:
            with self._read() as db:
                rows = db.execute(query, (after, _since(since), batch)).fetchall()
            for row in rows:
                yield _request(row), self.attempts(row["id"])
            if len(rows) < batch:
                return
            after = rows[-1]["_rowid"]

    def stats(self, since: float | None = None) -> Stats:
        """Aggregates for /metrics and reports; one consistent snapshot."""
        with self._read(snapshot=True) as db:
            return _stats(db, since)

    def check(self) -> str:
        """``PRAGMA quick_check``: "ok", or the first problem found. Reads
        the whole file: for ``doctor``, not for every start."""
        with self._read() as db:
            return str(db.execute("PRAGMA quick_check(1)").fetchone()[0])

    # -- internals

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            db = self._db
            if durable:
                db.execute("PRAGMA synchronous = FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled back already
                        db.execute("ROLLBACK")
                    raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated(self.path):
            if not snapshot:
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _requests(self, where: str, params: Sequence[Any] = ()) -> list[RequestRow]:
        with self._read() as db:
            return [_request(r) for r in db.execute(_SELECT + where, params).fetchall()]

    def _require(self, db: sqlite3.Connection, request_id: str) -> sqlite3.Row:
        row = db.execute("SELECT status, received_at FROM requests WHERE id = ?", (request_id,))
        found: sqlite3.Row | None = row.fetchone()
        if found is None:
            raise InputError(f"no request {request_id!r} in the journal {self.path}")
        return found

    def _move(
        self,
        request_id: str,
        status: str,
        reason: str,
        *,
        result: str | None = None,
        latency_s: float | None = None,
    ) -> None:
        allowed = _FROM[status]
        with self._write() as db:
            row = self._require(db, request_id)
            if row["status"] not in allowed:
                raise StateConflictError(
                    f"request {request_id} is {row['status']}; it cannot become {status}",
                    hint=f"only a request that is {' or '.join(allowed)} can become {status}",
                )
            now = self._clock()
            if status in TERMINAL and latency_s is None:
                latency_s = max(0.0, now - row["received_at"])
            db.execute(
                "UPDATE requests SET status = ?, reason = ?, result = COALESCE(?, result),"
                " latency_s = COALESCE(?, latency_s), updated_at = ? WHERE id = ?",
                (status, reason, result, latency_s, now, request_id),
            )

    def _recover_one(
        self,
        db: sqlite3.Connection,
        row: RequestRow,
        reason: str,
        retry: bool | Callable[[RequestRow], bool],
        max_recoveries: int | None,
    ) -> None:
        wanted = retry(row) if callable(retry) else retry
        now = self._clock()
        if wanted and (max_recoveries is None or row.recoveries < max_recoveries):
            status, why = "accepted", f"{reason}; resumed"
        else:
            status = "failed"
            gave_up = wanted and max_recoveries is not None and row.recoveries >= max_recoveries
            why = (
                f"{reason}: the daemon itself crashed while running it; gave up after "
                f"{row.recoveries} restarts"
                if gave_up
                else reason
            )
        db.execute(
            "UPDATE requests SET status = ?, reason = ?, recoveries = recoveries + 1,"
            " latency_s = CASE WHEN ? = 'failed' THEN ? ELSE latency_s END, updated_at = ?"
            " WHERE id = ?",
            (status, why, status, max(0.0, now - row.received_at), now, row.id),
        )
        db.execute(
            "INSERT INTO audit (ts, kind, request_id, detail) VALUES (?, 'recover', ?, ?)",
            (now, row.id, json.dumps({"status": status, "reason": why})),
        )

    def _fail_expired(self, db: sqlite3.Connection) -> None:
        now = self._clock()
        db.execute(
            "UPDATE requests SET status = 'failed', reason = 'deadline passed before it could run',"
            " latency_s = MAX(0.0, ? - received_at), updated_at = ?"
            " WHERE status = 'accepted' AND deadline IS NOT NULL AND deadline < ?",
            (now, now, now),
        )


# ---------------------------------------------------------------- rows ↔ data

_REQUEST_COLUMNS = (
    "id, idempotency_key, source, priority, received_at, deadline, payload, status,"
    " reason, result, updated_at, latency_s, recoveries, acted_at"
)
_SELECT = f"SELECT {_REQUEST_COLUMNS} FROM requests"  # noqa: S608 - fixed names


def _request(row: sqlite3.Row) -> RequestRow:
    return RequestRow(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        source=row["source"],
        priority=row["priority"],
        received_at=row["received_at"],
        deadline=row["deadline"],
        payload=json.loads(row["payload"]),
        status=row["status"],
        reason=row["reason"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        updated_at=row["updated_at"],
        latency_s=row["latency_s"],
        recoveries=row["recoveries"],
        acted_at=row["acted_at"],
    )


def _attempt(row: sqlite3.Row) -> AttemptRow:
    values = {name: row[name] for name in _ATTEMPT_COLUMNS}
    values["valid"] = bool(values["valid"])
    return AttemptRow(row["request_id"], row["n"], row["created_at"], AttemptRecord(**values))


def _dumps(value: Mapping[str, Any], what: str) -> str:
    if not isinstance(value, Mapping):
        raise InputError(f"the {what} must be a JSON object, got {type(value).__name__}")
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InputError(f"the {what} is not JSON-serialisable: {exc}") from exc


def _reason(reason: str) -> str:
    if not reason.strip():
        raise InputError("a failed, declined or queued request needs a reason")
    return reason


def _since(since: float | None) -> float:
    return -math.inf if since is None else since


# ---------------------------------------------------------------- stats


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): always a latency that was
    observed, which is what an operator reading ``/metrics`` expects. The
    benchmarks interpolate instead (``bench.bfcl_run.percentile``), the usual
    choice for comparing runs; on small samples the two differ."""
    if not sorted_values:
        return None
    return float(np.percentile(sorted_values, q, method="inverted_cdf"))


def _stats(db: sqlite3.Connection, since: float | None) -> Stats:
    t0 = _since(since)
    by_status = dict(
        db.execute(
            "SELECT status, COUNT(*) FROM requests WHERE received_at >= ? GROUP BY status", (t0,)
        ).fetchall()
    )
    last = (
        "FROM attempts a JOIN requests r ON r.id = a.request_id WHERE r.received_at >= ?"
        " AND a.n = (SELECT MAX(n) FROM attempts b WHERE b.request_id = a.request_id)"
    )
    by_route = dict(db.execute(f"SELECT a.route, COUNT(*) {last} GROUP BY a.route", (t0,)))
    by_outcome = dict(db.execute(f"SELECT a.outcome, COUNT(*) {last} GROUP BY a.outcome", (t0,)))
    latencies = [
        v
        for (v,) in db.execute(
            "SELECT latency_s FROM requests WHERE received_at >= ? AND status = 'done'"
            " AND latency_s IS NOT NULL ORDER BY latency_s",
            (t0,),
        )
    ]
    sums = _attempt_sums(db, t0)
    return Stats(
        since=since,
        requests=sum(by_status.values()),
        by_status=by_status,
        by_route=by_route,
        by_outcome=by_outcome,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_p99=percentile(latencies, 99),
        **sums,
    )


def _attempt_sums(db: sqlite3.Connection, t0: float) -> dict[str, Any]:
    row = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(a.kind = 'repair'), 0),"
        " COALESCE(SUM(a.prompt_tokens), 0), COALESCE(SUM(a.completion_tokens), 0),"
        " COALESCE(SUM(a.energy_j), 0.0), COALESCE(SUM(a.cost_local), 0.0),"
        " COALESCE(SUM(a.cost_cloud), 0.0), AVG(CASE WHEN a.n = 1 THEN a.valid END)"
        " FROM attempts a JOIN requests r ON r.id = a.request_id WHERE r.received_at >= ?",
        (t0,),
    ).fetchone()
    sources = db.execute(
        "SELECT DISTINCT a.energy_source FROM attempts a JOIN requests r ON r.id = a.request_id"
        " WHERE r.received_at >= ? AND a.energy_source IS NOT NULL ORDER BY 1",
        (t0,),
    ).fetchall()
    return {
        "attempts": row[0],
        "repairs": row[1],
        "prompt_tokens": row[2],
        "completion_tokens": row[3],
        "energy_j": float(row[4]),
        "cost_local": float(row[5]),
        "cost_cloud": float(row[6]),
        "valid_at_1": row[7],
        "energy_sources": tuple(s for (s,) in sources),
    }


# ---------------------------------------------------------------- Result → rows


def request_payload(
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload shape the journal stores and the traces export reads:
    the conversation, the tools offered (OpenAI form), and request options."""
    return {
        "messages": [dict(m) for m in messages],
        "tools": [t.to_openai() for t in tools],
        "options": dict(options or {}),
    }


def attempt_records(
    result: Result,
    *,
    model: str | Sequence[str],
    route: str | None = None,
    energy: Energy | None = None,
) -> list[AttemptRecord]:
    """Map an agent :class:`~edge_agent.agent.Result` to journal rows.

    ``model``: one name, or one per ladder tier (``Agent.tier_models``), so
    each attempt is recorded against the model that made it.
    ``route`` defaults to ``result.route``. A request's energy is measured
    once; it is shared out over the attempts in proportion to their
    compute time (prefill + decode).
    """
    shares = _shares([a.generation.timings.total_s for a in result.attempts])
    return [
        _record(
            a, model=_model_of(model, a), route=route or result.route, energy=energy, share=share
        )
        for a, share in zip(result.attempts, shares, strict=True)
    ]


def _model_of(model: str | Sequence[str], attempt: Attempt) -> str:
    if isinstance(model, str):
        return model
    return model[min(attempt.tier, len(model) - 1)]


def _record(
    attempt: Attempt, *, model: str, route: str, energy: Energy | None, share: float
) -> AttemptRecord:
    gen = attempt.generation
    lps = [t.logprob for t in gen.tokens]
    entropies = [t.entropy for t in gen.tokens]
    failed = next((v for v in attempt.verdicts if not v.ok), None)
    return AttemptRecord(
        kind=attempt.kind,
        route=route,
        model=model,
        raw_output=gen.text,
        valid=attempt.valid,
        problem=attempt.problem,
        stage=failed.stage if failed else "ok",
        outcome=_attempt_outcome(attempt),
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        prefill_s=gen.timings.prefill_s,
        decode_s=gen.timings.decode_s,
        latency_s=gen.timings.total_s,
        energy_j=energy.joules * share if energy else None,
        energy_source=energy.source if energy else None,
        min_logprob=min(lps) if lps else None,
        mean_logprob=sum(lps) / len(lps) if lps else None,
        mean_entropy=sum(entropies) / len(entropies) if entropies else None,
    )


def _attempt_outcome(attempt: Attempt) -> str:
    """The same vocabulary as ``Result.outcome``, for one attempt."""
    if not attempt.valid:
        return "invalid"
    return "call" if any(v.call for v in attempt.verdicts) else "answer"


def _shares(times: Sequence[float]) -> list[float]:
    total = sum(times)
    if total <= 0:
        return [1 / len(times)] * len(times) if times else []
    return [t / total for t in times]


# ---------------------------------------------------------------- file and connection


def _prepare_file(path: Path, *, create: bool) -> None:
    """The directory 0700 and the file 0600 (it holds users' prompts)."""
    try:
        if path.is_dir():
            raise JournalError(f"the journal path {path} is a directory")
        if not path.exists():
            if not create:
                raise JournalError(
                    f"no journal at {path}", hint="pass --journal, or run edge-agent once first"
                )
            _make_dir(path.parent)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for item in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            _private(item)
    except OSError as exc:
        raise JournalError(
            f"cannot create or open the journal {path}: {exc.strerror or exc}",
            hint="check the permissions of the state directory (EDGE_AGENT_STATE_DIR)",
        ) from exc


def _make_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def _private(item: Path) -> None:
    """0600 for a file we own; SQLite gives -wal/-shm the database's mode."""
    try:
        st = item.stat()
    except FileNotFoundError:
        return
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        item.chmod(0o600)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    db.row_factory = sqlite3.Row
    try:
        with _translated(path):
            _configure(db, path)
            _migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _configure(db: sqlite3.Connection, path: Path) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    db.execute("PRAGMA foreign_keys = ON")
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise JournalError(
            f"the journal {path} cannot use WAL mode (got {mode!r})",
            hint="put the state directory on a local file system, not NFS or tmpfs-less media",
        )
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    db.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock
    try:
        version = _check_identity(db, path)
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _check_identity(db: sqlite3.Connection, path: Path) -> int:
    (app,) = db.execute("PRAGMA application_id").fetchone()
    (version,) = db.execute("PRAGMA user_version").fetchone()
    (tables,) = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    if app not in (0, APPLICATION_ID) or (app == 0 and tables):
        raise JournalError(
            f"{path} is an SQLite database but not an edge-agent journal", hint=_CORRUPT_HINT
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} has schema version {version}; this edge-agent knows "
            f"up to {SCHEMA_VERSION}",
            hint="upgrade edge-agent, or point it at another journal",
        )
    return int(version)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """SQLite failures (corrupt file, full disk, locked) as one-line errors."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise  # a constraint we rely on was broken: a bug, not a condition
    except sqlite3.DatabaseError as exc:
        raise _journal_error(path, exc) from exc


def _journal_error(path: Path, exc: sqlite3.DatabaseError) -> EdgeAgentError:
    """The one place that picks the error class for SQLite failures."""
    text = str(exc)
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or any(
        s in text for s in ("not a database", "malformed")
    ):
        return JournalError(f"{path} is not a usable journal: {text}", hint=_CORRUPT_HINT)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return JournalError(
            f"the journal {path} is locked: {text}",
            hint="another edge-agent process is writing it; stop it or use another journal",
            retryable=True,
        )
    return JournalError(
        f"the journal {path} failed: {text}",
        hint="check the disk: free space, permissions, a writable file system",
    )


__all__ = [
    "SCHEMA_VERSION",
    "Accepted",
    "AttemptRecord",
    "AttemptRow",
    "AuditEvent",
    "Energy",
    "Journal",
    "RequestRow",
    "Stats",
    "attempt_records",
    "default_path",
    "percentile",
    "request_payload",
]
