"""The journal's versioned migrations on files made by older releases.

Before schema version 2, ``SqliteLedger`` created ``budget_ledger`` itself on
first use. These tests build such files the old way (raw SQL, as the release
did) and check that opening the journal upgrades them in place, keeping every
row of every table.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from edge_agent.errors import JournalError
from edge_agent.records.journal import _MIGRATIONS, APPLICATION_ID, SCHEMA_VERSION, Journal
from edge_agent.routing.budget import Windows
from edge_agent.routing.ledger import SqliteLedger

# budget_ledger exactly as edge_agent/routing/ledger.py created it before version 2.
OLD_LEDGER_TABLE = """CREATE TABLE IF NOT EXISTS budget_ledger (
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
)"""
OLD_LEDGER_INDEX = "CREATE INDEX IF NOT EXISTS budget_ledger_at ON budget_ledger (at)"
NOW = 1_773_568_800.0  # 2026-03-15T10:00:00Z


def make_version_1(path: Path, *, with_ledger: bool) -> None:
    """A journal file as the version-1 release left it, with rows in it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    for statement in _MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(
        "INSERT INTO requests (id, source, received_at, payload, status, updated_at)"
        " VALUES ('r1', 'cli', ?, '{\"messages\": []}', 'done', ?)",
        (NOW, NOW),
    )
    if with_ledger:
        db.execute(OLD_LEDGER_TABLE)
        db.execute(OLD_LEDGER_INDEX)
        db.executemany(
            "INSERT INTO budget_ledger (at, model, idempotency_key, state, estimate, amount,"
            " prompt_tokens, completion_tokens, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (NOW - 60, "cloud", "key-1", "settled", 0.5, 0.25, 100, 20, NOW - 59),
                (NOW - 30, "cloud", "key-2", "reserved", 0.75, 0.75, 0, 0, None),
            ],
        )
    db.execute("COMMIT")
    db.close()


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_schema_version_2_creates_budget_ledger(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path).close()
    assert SCHEMA_VERSION >= 2 and version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"budget_ledger", "budget_ledger_at"} <= names


def test_a_version_1_file_with_a_ledger_upgrades_in_place_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    make_version_1(path, with_ledger=True)
    with Journal(path) as journal:
        assert journal.get("r1").status == "done"
        assert journal.check() == "ok"
    assert version(path) == SCHEMA_VERSION
    ledger = SqliteLedger(path, clock=lambda: NOW)
    try:
        rows = ledger.entries()
        assert [(r["idempotency_key"], r["state"], r["amount"]) for r in rows] == [
            ("key-1", "settled", 0.25),
            ("key-2", "reserved", 0.75),
        ]
        assert ledger.spent(Windows.at(NOW)).day == pytest.approx(1.0)
    finally:
        ledger.close()


def test_a_version_1_file_without_a_ledger_gets_an_empty_one(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    make_version_1(path, with_ledger=False)
    Journal(path).close()
    assert version(path) == SCHEMA_VERSION
    ledger = SqliteLedger(path)
    try:
        assert ledger.entries() == []
    finally:
        ledger.close()


def test_the_ledger_refuses_a_file_the_journal_has_not_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    make_version_1(path, with_ledger=True)
    with pytest.raises(JournalError, match="schema version 1"):
        SqliteLedger(path)
    assert version(path) == 1  # refused before any write


def test_a_version_2_file_gains_acted_at_and_keeps_its_requests(tmp_path: Path) -> None:
    """2 -> 3: ``acted_at`` is added empty, so every old request counts as not
    having acted (the rule the daemon used before: by its options alone)."""
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        rid = journal.accept({"messages": [{"role": "user", "content": "hi"}]}, source="api").id
    with closing(sqlite3.connect(path)) as db:  # back to version 2, as an older release left it
        db.execute("ALTER TABLE requests DROP COLUMN acted_at")
        db.execute("PRAGMA user_version = 2")
        db.commit()
    with Journal(path) as journal:
        assert journal.get(rid).acted_at is None
        journal.acting(rid)
        assert journal.get(rid).acted_at is not None
    assert version(path) == SCHEMA_VERSION == 3
