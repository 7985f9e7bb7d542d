"""The router's durable state, kept in the journal's SQLite file.

* :class:`SqliteLedger`: the budget ledger (:class:`edge_agent.routing.budget.Ledger`)
  in its own table ``budget_ledger``.
* :class:`SqliteOutbox`: offloads queued for later, in the journal's
  ``outbox`` table (one row per queued request, referencing ``requests``).

Both open their own connection to the file that :class:`~edge_agent.records.journal.
Journal` created (open the journal first: a file that is not an edge-agent
journal is refused), in WAL mode with ``synchronous=FULL``: a reservation or
a queued command is fsynced before the call returns, so neither a kill -9
nor a power cut loses it. Writes are ``BEGIN IMMEDIATE`` transactions, so a
check-and-reserve is atomic across threads and processes.

Table ``budget_ledger`` (created by the journal's migrations, schema
version 2; a file the journal has not upgraded yet is refused)::

    id INTEGER PK · at REAL (epoch s) · model TEXT · idempotency_key TEXT
    · state TEXT CHECK (reserved/settled) · estimate REAL · amount REAL
    · prompt_tokens INT · completion_tokens INT · settled_at REAL NULL

A reserved row counts at its estimate until it is settled; one left by a
crash keeps counting (spending less is the safe error).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_agent.errors import InputError, JournalError
from edge_agent.records.journal import APPLICATION_ID, BUSY_TIMEOUT_S, SCHEMA_VERSION
from edge_agent.routing.budget import Admit, Charge, Spent, Windows

_OUTBOX_SELECT = (
    "SELECT id, request_id, transport, payload, state, attempts, next_try_at, last_error"
    " FROM outbox"
)

OutboxState = Literal["pending", "sent", "failed"]


class _Store:
    """One connection to a journal file: WAL, synchronous=FULL, a lock."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise JournalError(
                f"no journal at {path}", hint="open the Journal first; it creates the file"
            )
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._configure()
        except BaseException:
            self._db.close()
            raise

    def _configure(self) -> None:
        with self._translated():
            (app,) = self._db.execute("PRAGMA application_id").fetchone()
            if app != APPLICATION_ID:
                raise JournalError(
                    f"{self.path} is not an edge-agent journal",
                    hint="open the Journal on this file first",
                )
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                # The journal owns the schema; writing to a file it has not
                # migrated (or a newer one) would use tables that may not match.
                raise JournalError(
                    f"the journal {self.path} has schema version {version}, not {SCHEMA_VERSION}",
                    hint="open the Journal on this file first; it upgrades the schema",
                )
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            yield self._db

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a broken constraint is a bug
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"the journal {self.path} failed: {exc}",
                hint="check the disk: free space, permissions, a writable file system",
                retryable="locked" in str(exc),
            ) from exc


class SqliteLedger(_Store):
    """:class:`~edge_agent.routing.budget.Ledger` in the journal file's ``budget_ledger``."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self._clock = clock

    def reserve(self, charge: Charge, since: Windows, admit: Admit) -> int:
        with self._write() as db:
            admit(_sum(db, since))
            cur = db.execute(
                "INSERT INTO budget_ledger (at, model, idempotency_key, state, estimate, amount)"
                " VALUES (?, ?, ?, 'reserved', ?, ?)",
                (charge.at, charge.model, charge.idempotency_key, charge.estimate, charge.estimate),
            )
            return int(cur.lastrowid or 0)

    def settle(self, entry: int, amount: float, prompt_tokens: int, completion_tokens: int) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE budget_ledger SET state = 'settled', amount = ?, prompt_tokens = ?,"
                " completion_tokens = ?, settled_at = ? WHERE id = ?",
                (amount, prompt_tokens, completion_tokens, self._clock(), entry),
            )
            if cur.rowcount != 1:
                raise InputError(f"no ledger entry {entry} in {self.path}")

    def spent(self, since: Windows) -> Spent:
        with self._read() as db:
            return _sum(db, since)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (for reports and tests)."""
        with self._read() as db:
            rows = db.execute("SELECT * FROM budget_ledger ORDER BY id").fetchall()
        return [dict(r) for r in rows]


def _sum(db: sqlite3.Connection, since: Windows) -> Spent:
    day, month = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN at >= ? THEN amount END), 0.0),"
        " COALESCE(SUM(CASE WHEN at >= ? THEN amount END), 0.0) FROM budget_ledger",
        (since.day, since.month),
    ).fetchone()
    return Spent(float(day), float(month))


# ---------------------------------------------------------------- the outbox


@dataclass(frozen=True)
class OutboxRow:
    id: int
    request_id: str
    transport: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_try_at: float | None
    last_error: str


class SqliteOutbox(_Store):
    """Queued offloads in the journal's ``outbox`` table.

    States: ``pending`` (waiting for the network, the breaker or the budget)
    → ``sent`` (a verified reply arrived; written *before* any tool runs, so
    a restart never runs it twice) or ``failed`` (given up, with the error).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self._clock = clock

    def add(self, request_id: str, transport: str, payload: Mapping[str, Any]) -> int:
        """Queue one offload for a journal request; durable when it returns."""
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        now = self._clock()
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO outbox (request_id, transport, payload, state, attempts,"
                " next_try_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
                (request_id, transport, text, now, now, now),
            )
            return int(cur.lastrowid or 0)

    def due(self, limit: int = 100) -> list[OutboxRow]:
        """Pending rows whose next try is due, oldest first."""
        return self._rows(
            "WHERE state = 'pending' AND (next_try_at IS NULL OR next_try_at <= ?)"
            " ORDER BY id LIMIT ?",
            (self._clock(), limit),
        )

    def pending(self) -> list[OutboxRow]:
        return self._rows("WHERE state = 'pending' ORDER BY id", ())

    def get(self, row_id: int) -> OutboxRow:
        rows = self._rows("WHERE id = ?", (row_id,))
        if not rows:
            raise InputError(f"no outbox row {row_id} in {self.path}")
        return rows[0]

    def for_request(self, request_id: str) -> list[OutboxRow]:
        return self._rows("WHERE request_id = ? ORDER BY id", (request_id,))

    def stranded(self) -> list[OutboxRow]:
        """Rows marked sent whose request is still queued: the process died
        between the reply and the end of execution."""
        return self._rows(
            "WHERE state = 'sent' AND request_id IN"
            " (SELECT id FROM requests WHERE status = 'queued') ORDER BY id",
            (),
        )

    def mark_sent(self, row_id: int) -> None:
        self._update(row_id, "sent", "", None, attempt=True)

    def defer(self, row_id: int, error: str, next_try_at: float) -> None:
        self._update(row_id, "pending", error, next_try_at, attempt=True)

    def postpone(self, row_id: int, reason: str, next_try_at: float) -> None:
        """Not tried (offline, budget): a later try, the attempt not counted."""
        self._update(row_id, "pending", reason, next_try_at, attempt=False)

    def mark_failed(self, row_id: int, error: str) -> None:
        self._update(row_id, "failed", error, None, attempt=True)

    def _update(
        self,
        row_id: int,
        state: OutboxState,
        error: str,
        next_try_at: float | None,
        *,
        attempt: bool,
    ) -> None:
        with self._write() as db:
            cur = db.execute(
                "UPDATE outbox SET state = ?, last_error = ?, next_try_at = ?,"
                " attempts = attempts + ?, updated_at = ? WHERE id = ?",
                (state, error, next_try_at, int(attempt), self._clock(), row_id),
            )
            if cur.rowcount != 1:
                raise InputError(f"no outbox row {row_id} in {self.path}")

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[OutboxRow]:
        with self._read() as db:
            query = f"{_OUTBOX_SELECT} {where}"
            rows = db.execute(query, params).fetchall()
        return [
            OutboxRow(
                r["id"],
                r["request_id"],
                r["transport"],
                json.loads(r["payload"]),
                r["state"],
                r["attempts"],
                r["next_try_at"],
                r["last_error"],
            )
            for r in rows
        ]


__all__ = ["OutboxRow", "SqliteLedger", "SqliteOutbox"]
