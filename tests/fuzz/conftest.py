"""Shared settings for the fuzz tests: how many inputs per door, and a record
of what each door did with them.

``EDGE_AGENT_FUZZ_EXAMPLES`` sets the inputs per door (default 500, the
short CI run; ``benchmarks/fuzz_report.py`` runs 10,000). Generation is
derandomized, so a CI failure reproduces byte for byte on any machine, and no
example database is kept, so a run never depends on an earlier one.

Every input must end as an accepted value, a typed error the door documents
(an :class:`~edge_agent.errors.EdgeAgentError` subclass, a protocol
``Rejection``) or a drop that is counted. Anything else, a raw ``KeyError``
or ``RecursionError`` say, propagates and fails the test: a crash. An input
that takes longer than ``EDGE_AGENT_FUZZ_DEADLINE_MS`` fails as a hang.

With ``EDGE_AGENT_FUZZ_REPORT`` set to a file, each door appends one JSON
line there: its outcomes by kind, the slowest input, and for the doors that
run through a live process, that process's RSS before and after.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.offload.conftest import pki as pki  # the session CA, for the broker door

EXAMPLES = int(os.environ.get("EDGE_AGENT_FUZZ_EXAMPLES", "500"))
DEADLINE_MS = int(os.environ.get("EDGE_AGENT_FUZZ_DEADLINE_MS", "5000"))

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(milliseconds=DEADLINE_MS),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
)


@dataclass
class Door:
    """What one door did with its inputs (plain data for the report)."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    detail: Counter[str] = field(default_factory=Counter)  # breakdowns, not inputs
    rss_kib: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def run(self, call: Callable[[], Any], *typed: type[BaseException]) -> Any:
        """``call()``; its result is counted ``ok``, a ``typed`` error by its
        class name, and anything else propagates as a crash."""
        start = time.perf_counter()
        try:
            result = call()
        except typed as exc:
            self.outcomes[type(exc).__name__] += 1
            return exc
        finally:
            self.slowest_s = max(self.slowest_s, time.perf_counter() - start)
        self.outcomes["ok"] += 1
        return result

    def count(self, outcome: str, n: int = 1) -> None:
        """An input the door dropped (and counted) rather than answered."""
        self.outcomes[outcome] += n

    def tally(self, key: str, n: int = 1) -> None:
        """A breakdown of inputs already counted (which reason, which kind)."""
        self.detail[key] += n

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "door": self.name,
            "inputs": self.inputs,
            "outcomes": dict(sorted(self.outcomes.items())),
            "detail": dict(sorted(self.detail.items())),
            "slowest_s": round(self.slowest_s, 4),
            "rss_kib": self.rss_kib,
            "notes": self.notes,
            "examples_setting": EXAMPLES,
            "deadline_ms": DEADLINE_MS,
        }


@pytest.fixture
def door(request: pytest.FixtureRequest) -> Iterator[Door]:
    """A :class:`Door` named after the test; appended to the report when it passes."""
    record = Door(request.node.name.removeprefix("test_"))
    yield record
    report = os.environ.get("EDGE_AGENT_FUZZ_REPORT")
    if report:
        record.notes["passed"] = bool(getattr(request.node, "fuzz_passed", False))
        with Path(report).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_json()) + "\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test body passed, for the door's record."""
    report = yield
    if report.when == "call":
        item.fuzz_passed = report.passed  # type: ignore[attr-defined]
    return report


def rss_kib(pid: int) -> int:
    """VmRSS of a live process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
