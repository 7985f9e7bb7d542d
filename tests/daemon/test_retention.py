"""Journal retention: the daemon drops finished requests older than
``server.journal_keep_days`` at start (and hourly), keeps unfinished ones
and the audit, so a journal on an SD card does not grow for ever.

The engine is the named fake (:mod:`tests.fakes`): what is tested is the
daemon and the journal, not what a model says.
"""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent.config import EdgeAgentConfig
from edge_agent.records.journal import Journal
from edge_agent.runtime.daemon import Daemon, Live
from edge_agent.toolbox.registry import Registry
from tests.fakes import ScriptedEngine

DAY = 86_400.0


def daemon_on(journal: Journal, keep_days: float) -> Daemon:
    config = EdgeAgentConfig.model_validate(
        {"server": {"journal_keep_days": keep_days}, "ladder": {"enabled": False}}
    )
    return Daemon(ScriptedEngine(["done"]), journal, Live(config, None, Registry()))


def old_and_new(path: Path) -> tuple[str, str, str]:
    """A request finished 40 days ago, one finished now, one never finished."""
    now = time.time()
    with Journal(path, clock=lambda: now - 40 * DAY) as j:
        old = j.accept({"prompt": "old"}, source="cli").id
        j.start(old)
        j.finish(old, {})
        j.audit("confirmation", {"tool": "unlock_door", "granted": False}, request_id=old)
    with Journal(path) as j:
        new = j.accept({"prompt": "new"}, source="cli").id
        j.start(new)
        j.finish(new, {})
        waiting = j.accept({"prompt": "waiting"}, source="cli").id
    return old, new, waiting


def test_start_drops_finished_requests_past_retention(tmp_path: Path) -> None:
    old, new, waiting = old_and_new(tmp_path / "journal.db")
    with Journal(tmp_path / "journal.db") as journal:
        daemon = daemon_on(journal, keep_days=30)
        assert daemon.prune_journal() == 1
        kept = {r.id for r in journal.recent()}
        assert old not in kept and {new, waiting} <= kept
        assert [e.detail["tool"] for e in journal.audit_events()] == ["unlock_door"]


def test_keep_days_zero_keeps_everything(tmp_path: Path) -> None:
    old, new, waiting = old_and_new(tmp_path / "journal.db")
    with Journal(tmp_path / "journal.db") as journal:
        assert daemon_on(journal, keep_days=0).prune_journal() == 0
        assert {old, new, waiting} <= {r.id for r in journal.recent()}


def test_past_the_size_bound_the_oldest_finished_requests_go(tmp_path: Path) -> None:
    """200 finished requests of 10 kB each (about 2 MB) under a 0.5 MB bound:
    the oldest go until the data fits; the newest, the unfinished request and
    the audit stay."""
    path = tmp_path / "journal.db"
    with Journal(path) as journal:
        ids = []
        for i in range(200):
            rid = journal.accept({"prompt": f"request {i}", "pad": "x" * 10_000}, source="cli").id
            journal.start(rid)
            journal.finish(rid, {})
            ids.append(rid)
        waiting = journal.accept({"prompt": "waiting", "pad": "x" * 10_000}, source="cli").id
        journal.audit("confirmation", {"tool": "unlock_door"}, request_id=ids[0])
        assert journal.used_bytes() > 2_000_000
        config = EdgeAgentConfig.model_validate(
            {"server": {"journal_keep_mb": 0.5}, "ladder": {"enabled": False}}
        )
        daemon = Daemon(ScriptedEngine(["done"]), journal, Live(config, None, Registry()))
        gone = daemon.prune_journal()
        assert journal.used_bytes() <= 500_000
        kept = {r.id for r in journal.recent(limit=500)}
        assert 150 < gone < 200 and len(kept) == 201 - gone
        assert ids[-1] in kept and waiting in kept and ids[0] not in kept
        assert kept - {waiting} == set(ids[gone:])  # oldest first
        assert [e.detail["tool"] for e in journal.audit_events()] == ["unlock_door"]


def test_a_size_bound_of_zero_keeps_everything(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.db") as journal:
        for i in range(20):
            rid = journal.accept({"prompt": f"{i}", "pad": "x" * 10_000}, source="cli").id
            journal.start(rid)
            journal.finish(rid, {})
        config = EdgeAgentConfig.model_validate(
            {"server": {"journal_keep_mb": 0, "journal_keep_days": 0}, "ladder": {"enabled": False}}
        )
        daemon = Daemon(ScriptedEngine(["done"]), journal, Live(config, None, Registry()))
        assert daemon.prune_journal() == 0
        assert len(journal.recent()) == 20
