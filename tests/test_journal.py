"""The journal on real SQLite files: idempotent intake, the status machine,
crash safety against a child process killed with SIGKILL, concurrent readers,
file permissions, corrupt files, and the statistics /metrics will serve."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_agent.agent import Attempt, Result
from edge_agent.decoding.calls import ToolCall, parse_output
from edge_agent.engine.base import Generation, Timings, TokenScore
from edge_agent.errors import EdgeAgentError, InputError, JournalError, StateConflictError
from edge_agent.records.journal import (
    SCHEMA_VERSION,
    AttemptRecord,
    Energy,
    Journal,
    attempt_records,
    default_path,
    percentile,
)
from edge_agent.toolbox.verify import Verdict
from tests.conftest import REPO

PAYLOAD = {"messages": [{"role": "user", "content": "Turn on the kitchen light"}], "tools": []}


class Clock:
    """A settable clock, so times in the journal are known exactly."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


@pytest.fixture
def journal(db_path: Path):
    with Journal(db_path) as j:
        yield j


def raw(path: Path) -> sqlite3.Connection:
    """A plain SQLite connection beside the journal (close it!)."""
    return sqlite3.connect(path)


def query(path: Path, sql: str) -> list[tuple]:
    db = raw(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------- intake


def test_accept_is_idempotent(journal: Journal, db_path: Path) -> None:
    first = journal.accept(PAYLOAD, source="api", idempotency_key="key-1")
    again = journal.accept({"other": True}, source="api", idempotency_key="key-1")
    assert not first.duplicate and first.status == "accepted"
    assert again.duplicate and again.id == first.id
    journal.start(first.id)
    assert journal.accept(PAYLOAD, source="api", idempotency_key="key-1").status == "running"
    assert journal.get(first.id).payload == PAYLOAD  # the first payload is kept
    other = journal.accept(PAYLOAD, source="api", idempotency_key="key-2")
    keyless = [journal.accept(PAYLOAD, source="cli").id for _ in range(2)]
    assert len({first.id, other.id, *keyless}) == 4
    assert query(db_path, "SELECT COUNT(*) FROM requests") == [(4,)]


def test_accepted_request_is_stored_whole(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        rid = j.accept(PAYLOAD, source="mqtt", priority=5, deadline=clock.now + 30).id
    with Journal(db_path) as j:
        row = j.get(rid)
    assert (row.source, row.priority, row.deadline) == ("mqtt", 5, clock.now + 30)
    assert (row.received_at, row.status, row.payload) == (clock.now, "accepted", PAYLOAD)
    assert len(rid) == 32 and int(rid, 16) >= 0


@pytest.mark.parametrize(
    ("payload", "source", "needle"),
    [
        ({"x": float("nan")}, "api", "not JSON"),
        ({"x": object()}, "api", "not JSON"),
        (["not", "an", "object"], "api", "JSON object"),
        (PAYLOAD, "email", "unknown request source"),
    ],
)
def test_bad_requests_are_refused(journal: Journal, payload, source, needle) -> None:
    with pytest.raises(InputError, match=needle):
        journal.accept(payload, source=source)
    assert journal.recent() == []


def test_wal_mode_and_schema_version(journal: Journal, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    tables = {n for (n,) in query(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"requests", "attempts", "outbox", "audit"} <= tables
    columns = [r[1] for r in query(db_path, "PRAGMA table_info(attempts)")]
    record_fields = list(AttemptRecord.__dataclass_fields__)
    assert columns[:2] == ["request_id", "n"] and set(record_fields) <= set(columns)


def test_reopening_keeps_the_schema_and_rows(db_path: Path) -> None:
    with Journal(db_path) as j:
        rid = j.accept(PAYLOAD, source="cli").id
    with Journal(db_path) as j:
        assert j.get(rid).status == "accepted"
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


# ---------------------------------------------------------------- status machine


def test_happy_path_and_terminal_states(journal: Journal) -> None:
    rid = journal.accept(PAYLOAD, source="cli").id
    journal.start(rid)
    journal.finish(rid, {"tool_calls": []}, latency_s=0.25)
    row = journal.get(rid)
    assert (row.status, row.result, row.latency_s, row.finished) == (
        "done",
        {"tool_calls": []},
        0.25,
        True,
    )


def test_queue_then_run(journal: Journal) -> None:
    rid = journal.accept(PAYLOAD, source="api").id
    journal.start(rid)
    journal.queue(rid, "offline; offload later")
    assert journal.get(rid).reason == "offline; offload later"
    journal.start(rid)
    journal.finish(rid, {"ok": True})
    assert journal.get(rid).status == "done"


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        (["fail"], "finish"),
        (["fail"], "start"),
        (["start", "finish"], "fail"),
        (["start", "finish"], "start"),
        (["decline"], "queue"),
        ([], "finish"),  # never started
        (["start"], "start"),
    ],
)
def test_illegal_transitions_are_refused(journal: Journal, steps, illegal) -> None:
    rid = journal.accept(PAYLOAD, source="cli").id
    for step in steps:
        _do(journal, step, rid)
    before = journal.get(rid)
    with pytest.raises(StateConflictError, match="cannot become"):
        _do(journal, illegal, rid)
    assert journal.get(rid) == before  # nothing changed


def _do(journal: Journal, step: str, rid: str) -> None:
    if step == "finish":
        journal.finish(rid, {"ok": True})
    elif step == "start":
        journal.start(rid)
    else:
        getattr(journal, step)(rid, f"{step} for a test")


def test_unknown_id_and_missing_reason(journal: Journal) -> None:
    with pytest.raises(InputError, match="no request"):
        journal.get("nope")
    with pytest.raises(InputError, match="no request"):
        journal.start("nope")
    with pytest.raises(InputError, match="no request"):
        journal.record_attempt("nope", AttemptRecord("initial", "local", "m", "x", True))
    rid = journal.accept(PAYLOAD, source="cli").id
    with pytest.raises(InputError, match="needs a reason"):
        journal.fail(rid, "  ")


def test_latency_defaults_to_intake_to_result(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        rid = j.accept(PAYLOAD, source="cli").id
        j.start(rid)
        clock.now += 1.5
        j.fail(rid, "tool timed out")
        row = j.get(rid)
    assert (row.status, row.reason, row.latency_s, row.updated_at) == (
        "failed",
        "tool timed out",
        1.5,
        clock.now,
    )


def test_attempts_are_numbered_and_read_back(journal: Journal) -> None:
    rid = journal.accept(PAYLOAD, source="cli").id
    bad = AttemptRecord(
        "initial", "local", "qwen", "{bad", False, problem="not JSON", stage="parse"
    )
    good = AttemptRecord("repair", "local", "qwen", "<tool_call>", True, outcome="call")
    assert journal.record_attempt(rid, bad) == 1
    assert journal.record_attempts(rid, [good, good]) == [2, 3]
    rows = journal.attempts(rid)
    assert [r.n for r in rows] == [1, 2, 3]
    assert [r.record for r in rows] == [bad, good, good]
    assert rows[0].record.valid is False and rows[1].record.valid is True


# ---------------------------------------------------------------- recovery


def test_recover_fails_running_by_default(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        waiting = j.accept(PAYLOAD, source="api").id
        cut = j.accept(PAYLOAD, source="api").id
        expired = j.accept(PAYLOAD, source="api", deadline=clock.now + 5).id
        j.start(cut)
        assert {r.id for r in j.unfinished()} == {waiting, cut, expired}
        clock.now += 60
        resume = j.recover()
        assert [r.id for r in resume] == [waiting]
        assert j.get(cut).status == "failed" and j.get(cut).reason == "interrupted by restart"
        assert j.get(expired).status == "failed" and "deadline" in j.get(expired).reason
        [event] = j.audit_events()
    assert (event.kind, event.request_id, event.detail["status"]) == ("recover", cut, "failed")


def test_recover_retries_at_most_max_times(journal: Journal) -> None:
    rid = journal.accept(PAYLOAD, source="api").id
    for n in range(1, 3):
        journal.start(rid)
        assert [r.id for r in journal.recover(retry=True, max_recoveries=2)] == [rid]
        row = journal.get(rid)
        assert (row.status, row.recoveries) == ("accepted", n)
        assert row.reason == "interrupted by restart; resumed"
    journal.start(rid)
    assert journal.recover(retry=True, max_recoveries=2) == []
    row = journal.get(rid)
    assert row.status == "failed" and "gave up after 2 restarts" in row.reason
    assert "crashed while running it" in row.reason


def test_after_outside_kills_a_safe_request_is_retried_every_time(journal: Journal) -> None:
    """max_recoveries=None: the process was killed from outside (no crash
    of its own), so a request no tool can have touched is run again however
    many restarts it takes."""
    rid = journal.accept(PAYLOAD, source="api").id
    for n in range(1, 8):
        journal.start(rid)
        assert [r.id for r in journal.recover(retry=True, max_recoveries=None)] == [rid]
        assert journal.get(rid).recoveries == n
    journal.start(rid)
    assert journal.recover(retry=False, max_recoveries=None) == []  # tools may have run
    assert journal.get(rid).status == "failed"


def test_recover_with_a_predicate(journal: Journal) -> None:
    safe = journal.accept({**PAYLOAD, "options": {"read_only": True}}, source="api").id
    risky = journal.accept(PAYLOAD, source="api").id
    journal.start(safe)
    journal.start(risky)
    resumed = journal.recover(retry=lambda row: row.payload.get("options", {}).get("read_only"))
    assert [r.id for r in resumed] == [safe]
    assert journal.get(risky).status == "failed"


def test_an_executing_request_that_had_not_acted_runs_again(journal: Journal) -> None:
    """The daemon's rule (``_safe_to_retry``): a request allowed to run tools
    is run again after a kill unless a tool that may change something had
    started for it, which ``acting`` records before the tool runs."""
    from edge_agent.runtime.daemon import _safe_to_retry

    executing = {**PAYLOAD, "options": {"execute": True}}
    before, after = (journal.accept(executing, source="api").id for _ in range(2))
    for rid in (before, after):
        journal.start(rid)
    journal.acting(after)
    first = journal.get(after).acted_at
    journal.acting(after)  # a second tool: the first time stays
    assert journal.get(after).acted_at == first is not None
    resumed = journal.recover(retry=_safe_to_retry, max_recoveries=None)
    assert [r.id for r in resumed] == [before]
    assert journal.get(before).acted_at is None
    assert journal.get(after).status == "failed"


def test_unfinished_is_most_urgent_first(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        ids = []
        for priority in (0, 5, 0, 9):
            clock.now += 1
            ids.append(j.accept(PAYLOAD, source="api", priority=priority).id)
        j.start(ids[0])
        j.finish(ids[0], {})
        assert [r.id for r in j.unfinished()] == [ids[3], ids[1], ids[2]]


# ---------------------------------------------------------------- crash safety

CHILD_PRELUDE = """
import sys, time
from pathlib import Path
from edge_agent.records.journal import AttemptRecord, Journal
j = Journal(Path(sys.argv[1]))
"""

CRASH_MIDWAY = """
a = j.accept({"messages": [{"role": "user", "content": "a"}]}, source="api").id
b = j.accept({"messages": [{"role": "user", "content": "b"}]}, source="api").id
j.start(a)
j.record_attempt(a, AttemptRecord("initial", "local", "m", "{bad", False, problem="not JSON"))
print(a, b, flush=True)
with j._write() as db:  # killed inside an open write transaction
    db.execute(
        "INSERT INTO requests (id, source, received_at, payload, status, updated_at)"
        " VALUES ('uncommitted', 'api', 0, '{}', 'accepted', 0)"
    )
    print("in-transaction", flush=True)
    time.sleep(120)
"""

BURST = """
for i in range(200):
    rid = j.accept({"n": i}, source="bench", idempotency_key=f"burst-{i}").id
    print(i, rid, flush=True)
    time.sleep(float(sys.argv[2]))  # a pause, so the kill lands mid-burst
print("finished", flush=True)
"""


def spawn(script: str, path: Path, pause: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = textwrap.dedent(CHILD_PRELUDE) + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(pause)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_after(child: subprocess.Popen[str], lines: int) -> list[str]:
    """Read ``lines`` lines, SIGKILL the child, then read what it had printed."""
    assert child.stdout is not None
    seen = [child.stdout.readline() for _ in range(lines)]
    child.send_signal(signal.SIGKILL)
    seen += child.stdout.readlines()
    child.stdout.close()
    assert child.wait(timeout=30) == -signal.SIGKILL
    return [line.strip() for line in seen if line.strip()]


def test_kill_9_mid_request_loses_nothing(db_path: Path) -> None:
    out = kill_after(spawn(CRASH_MIDWAY, db_path), 2)
    assert out[-1] == "in-transaction"
    a, b = out[0].split()
    with Journal(db_path) as j:  # the killed writer's lock is gone
        assert j.check() == "ok"
        assert {r.id: r.status for r in j.unfinished()} == {a: "running", b: "accepted"}
        assert [r.record.problem for r in j.attempts(a)] == ["not JSON"]
        with pytest.raises(InputError):
            j.get("uncommitted")  # the open transaction was rolled back
        resume = j.recover()
        assert [r.id for r in resume] == [b]
        assert j.get(a).status == "failed" and j.get(a).reason == "interrupted by restart"
        j.start(b)
        j.finish(b, {"answered": True})
        assert j.unfinished() == []


def test_kill_9_during_a_burst_of_accepts(db_path: Path) -> None:
    out = kill_after(spawn(BURST, db_path, pause=0.02), 50)
    assert "finished" not in out, "the child finished before the kill; slow it down"
    acked = dict(line.split() for line in out)
    assert len(acked) >= 50
    with Journal(db_path) as j:
        assert j.check() == "ok"
        for n, rid in acked.items():
            row = j.get(rid)
            assert row.payload == {"n": int(n)} and row.status == "accepted"
            assert j.accept({}, source="bench", idempotency_key=f"burst-{n}").duplicate
        stored = j.recent(500)
    # at most the one accept in flight at the kill committed without being printed
    assert len(acked) <= len(stored) <= len(acked) + 1


def test_reader_process_while_another_writes(db_path: Path) -> None:
    Journal(db_path).close()  # create the schema first
    child = spawn(BURST, db_path, pause=0.002)
    counts = []
    with Journal(db_path) as reader:
        while child.poll() is None:
            counts.append(len(reader.recent(1000)))
            reader.stats()
        assert child.wait(timeout=60) == 0
        counts.append(len(reader.recent(1000)))
    assert child.stdout is not None
    child.stdout.close()
    assert counts == sorted(counts) and counts[-1] == 200
    assert len(set(counts)) > 2  # the reader saw the writes as they happened


def test_threads_share_one_journal(journal: Journal) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(50):
                rid = journal.accept({"k": k, "i": i}, source="api").id
                journal.start(rid)
                journal.record_attempt(rid, AttemptRecord("initial", "local", "m", "x", True))
                journal.finish(rid, {})
                ids.append(rid)
                journal.stats()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 200
    stats = journal.stats()
    assert stats.by_status == {"done": 200} and stats.attempts == 200


# ---------------------------------------------------------------- files


def test_file_and_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "deep" / "state" / "journal.db"
        with Journal(path) as j:
            j.accept(PAYLOAD, source="cli")
            wal = Path(f"{path}-wal")
            assert wal.exists()
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_an_existing_world_readable_journal_is_tightened(db_path: Path) -> None:
    Journal(db_path).close()
    db_path.chmod(0o644)
    Journal(db_path).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_AGENT_STATE_DIR", str(tmp_path / "s"))
    assert default_path() == tmp_path / "s" / "journal.db"
    monkeypatch.delenv("EDGE_AGENT_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_path() == tmp_path / "x" / "edge-agent" / "journal.db"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_path() == tmp_path / "h" / ".local" / "state" / "edge-agent" / "journal.db"
    with Journal() as j:
        assert j.path == default_path() and j.path.exists()


def assert_clear(exc: EdgeAgentError, *needles: str) -> None:
    line = exc.one_line()
    assert "\n" not in line
    for needle in needles:
        assert needle in line, line


def test_a_text_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(JournalError) as info:
        Journal(path)
    assert_clear(info.value, str(path), "not a usable journal", "move the file aside")
    assert path.read_text().startswith("these are my notes")  # left untouched


def test_a_garbled_header_is_refused_clearly(db_path: Path) -> None:
    with Journal(db_path) as j:
        j.accept(PAYLOAD, source="cli")
    data = bytearray(db_path.read_bytes())
    data[:16] = b"\x00" * 16
    db_path.write_bytes(bytes(data))
    with pytest.raises(JournalError) as info:
        Journal(db_path)
    assert_clear(info.value, "not a usable journal")


def test_damaged_pages_are_reported_not_raised(db_path: Path) -> None:
    with Journal(db_path) as j:
        for i in range(300):
            j.accept({"text": "x" * 200, "i": i}, source="bench")
    data = bytearray(db_path.read_bytes())
    page = 4096
    rng = random.Random(7)
    for offset in range(2 * page, len(data) - page, page):
        data[offset + 100 : offset + 600] = bytes(rng.randrange(256) for _ in range(500))
    db_path.write_bytes(bytes(data))
    try:
        with Journal(db_path) as j:
            assert j.check() != "ok"
            with pytest.raises(JournalError) as info:
                j.stats()
                j.recent(1000)
                j.accept(PAYLOAD, source="cli")
            assert_clear(info.value, "journal")
    except JournalError as exc:  # or already refused on opening
        assert_clear(exc, "journal")


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = raw(path)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="not an edge-agent journal"):
        Journal(path)


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    Journal(db_path).close()
    db = raw(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="schema version"):
        Journal(db_path)


def test_missing_journal_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        Journal(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a directory"):
        Journal(tmp_path)


# ---------------------------------------------------------------- stats


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([3.0], 95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(1, 21)], 99, 20.0),
    ],
)
def test_percentile_nearest_rank(values, q, expected) -> None:
    assert percentile(values, q) == expected


def test_stats_on_known_data(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        old = j.accept(PAYLOAD, source="cli").id  # before `since`: excluded
        j.start(old)
        j.record_attempt(old, _rec("initial", "local", True, tokens=(1000, 1000), joules=99.0))
        j.finish(old, {}, latency_s=500.0)
        clock.now += 100
        since = clock.now
        latencies = [float(v) for v in range(1, 101)]
        random.Random(3).shuffle(latencies)
        for n, latency in enumerate(latencies):
            rid = j.accept(PAYLOAD, source="bench").id
            j.start(rid)
            if n % 4 == 0:  # a local repair that worked
                j.record_attempt(rid, _rec("initial", "local", False, outcome="invalid"))
                j.record_attempt(rid, _rec("repair", "local", True))
            elif n % 4 == 1:  # escalated to the cloud
                j.record_attempt(rid, _rec("initial", "local", False, outcome="invalid"))
                j.record_attempt(rid, _rec("offload", "offload:https", True, cloud=0.002))
            else:
                j.record_attempt(rid, _rec("initial", "local", True))
            j.finish(rid, {}, latency_s=latency)
        failed = j.accept(PAYLOAD, source="bench").id
        j.start(failed)
        j.record_attempt(failed, _rec("initial", "local", False, outcome="invalid"))
        j.fail(failed, "no valid call", latency_s=1000.0)  # not in the latency figures
        j.decline(j.accept(PAYLOAD, source="api").id, "tool needs confirmation")
        stats = j.stats(since)
        everything = j.stats()
    assert stats.requests == 102 and everything.requests == 103
    assert stats.by_status == {"done": 100, "failed": 1, "declined": 1}
    assert stats.by_route == {"local": 76, "offload:https": 25}
    assert stats.by_outcome == {"call": 100, "invalid": 1}
    assert (stats.attempts, stats.repairs) == (151, 25)
    assert stats.valid_at_1 == pytest.approx(50 / 101)
    assert (stats.latency_p50, stats.latency_p95, stats.latency_p99) == (50.0, 95.0, 99.0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (151 * 100, 151 * 10)
    assert stats.energy_j == pytest.approx(151 * 2.0)
    assert stats.energy_sources == ("cpu_model",)
    assert stats.cost_cloud == pytest.approx(25 * 0.002)
    assert stats.cost_local == pytest.approx(151 * 0.0001)
    assert everything.latency_p99 == 100.0 and everything.energy_j == pytest.approx(302 + 99)


def test_stats_of_an_empty_journal(journal: Journal) -> None:
    stats = journal.stats()
    assert stats.requests == 0 and stats.by_status == {} and stats.valid_at_1 is None
    assert stats.latency_p50 is None and stats.energy_j == 0.0


def _rec(
    kind: str,
    route: str,
    valid: bool,
    *,
    outcome: str = "call",
    tokens: tuple[int, int] = (100, 10),
    joules: float = 2.0,
    cloud: float | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        kind=kind,
        route=route,
        model="qwen",
        raw_output="x",
        valid=valid,
        outcome=outcome,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        energy_j=joules,
        energy_source="cpu_model",
        cost_local=0.0001,
        cost_cloud=cloud,
    )


# ---------------------------------------------------------------- prune and audit


def test_prune_keeps_unfinished_and_audit(db_path: Path) -> None:
    clock = Clock()
    with Journal(db_path, clock=clock) as j:
        done = j.accept(PAYLOAD, source="cli").id
        j.start(done)
        j.record_attempt(done, _rec("initial", "local", True))
        j.finish(done, {})
        j.audit("confirmation", {"tool": "unlock_door", "granted": False}, request_id=done)
        waiting = j.accept(PAYLOAD, source="cli").id
        clock.now += 10
        assert j.prune(before=clock.now) == 1
        assert [r.id for r in j.recent()] == [waiting]
        [event] = j.audit_events()
    assert event.detail == {"tool": "unlock_door", "granted": False}
    assert query(db_path, "SELECT COUNT(*) FROM attempts") == [(0,)]


# ---------------------------------------------------------------- Result → rows


def gen(text: str, logprobs: list[float], prefill: float, decode: float) -> Generation:
    tokens = tuple(
        TokenScore(i, "t", lp, max(lp, -0.01), 0.5 * (i + 1)) for i, lp in enumerate(logprobs)
    )
    return Generation(text, tokens, 40, "stop", Timings(0.0, prefill, decode))


def test_attempt_records_from_a_result() -> None:
    bad_text = '<tool_call>\n{"name": "set_light", "arguments": {"room": "attic"}}\n</tool_call>'
    good_text = '<tool_call>\n{"name": "set_light", "arguments": {"room": "kitchen"}}\n</tool_call>'
    bad_call = ToolCall("set_light", {"room": "attic"})
    good_call = ToolCall("set_light", {"room": "kitchen"})
    first = Attempt(
        "initial",
        gen(bad_text, [-0.1, -2.5, -0.4], 0.2, 0.4),
        parse_output(bad_text),
        (Verdict(False, "schema", "set_light: argument 'room': 'attic' is not one of", bad_call),),
        True,
    )
    second = Attempt(
        "repair", gen(good_text, [-0.2, -0.2], 0.1, 0.2), parse_output(good_text),
        (Verdict.passed(good_call),), True,
    )  # fmt: skip
    result = Result((first, second), latency_s=1.0)
    rows = attempt_records(result, model="qwen", energy=Energy(9.0, "rapl"))
    assert [r.kind for r in rows] == ["initial", "repair"]
    assert [r.valid for r in rows] == [False, True]
    assert [r.outcome for r in rows] == ["invalid", "call"]
    assert [r.stage for r in rows] == ["schema", "ok"]
    assert rows[0].problem.startswith("set_light: argument 'room'")
    assert rows[0].raw_output == bad_text and rows[0].route == "local" and rows[0].model == "qwen"
    assert rows[0].min_logprob == -2.5 and rows[0].mean_logprob == pytest.approx(-1.0)
    assert rows[0].mean_entropy == pytest.approx(1.0)
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (40, 3)
    assert rows[0].latency_s == pytest.approx(0.6) and rows[1].prefill_s == 0.1
    assert rows[0].energy_j == pytest.approx(6.0) and rows[1].energy_j == pytest.approx(3.0)
    assert {r.energy_source for r in rows} == {"rapl"}
    assert attempt_records(result, model="q", route="offload:mqtt")[0].route == "offload:mqtt"
    assert attempt_records(result, model="q")[0].energy_j is None
