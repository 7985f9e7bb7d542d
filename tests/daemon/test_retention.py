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
