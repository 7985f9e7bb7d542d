"""Budget arithmetic, limits and the ledgers (in memory and SQLite in the
journal file). Pure parts with a settable clock; SQLite for real."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.errors import BudgetExceededError, ConfigError, JournalError
from edge_agent.records.journal import Journal
from edge_agent.routing.budget import (
    Budget,
    BudgetSettings,
    MemoryLedger,
    ModelPrice,
    Spent,
    Windows,
    cost_per_success,
    cps_ratio,
    day_start,
    estimate_tokens,
    left,
    month_start,
    refusal,
    token_cost,
)
from edge_agent.routing.ledger import SqliteLedger

PRICE = ModelPrice(input_per_mtok=2.0, output_per_mtok=10.0)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_settings(**overrides: object) -> BudgetSettings:
    values: dict[str, object] = {
        "currency": "EUR",
        "daily_limit": 1.0,
        "monthly_limit": 5.0,
        "per_request_cap": 0.5,
        "prices": {"cloud": PRICE},
    }
    return BudgetSettings.model_validate({**values, **overrides})


# ---------------------------------------------------------------- arithmetic


def test_token_cost_is_per_million_tokens() -> None:
    assert token_cost(PRICE, 1_000_000, 0) == pytest.approx(2.0)
    assert token_cost(PRICE, 0, 1_000_000) == pytest.approx(10.0)
    assert token_cost(PRICE, 500, 200) == pytest.approx((500 * 2 + 200 * 10) / 1e6)
    assert token_cost(PRICE, 0, 0) == 0.0
    with pytest.raises(ValueError):
        token_cost(PRICE, -1, 0)


@pytest.mark.parametrize(
    ("chars", "per_token", "tokens"),
    [(0, 4.0, 0), (1, 4.0, 1), (4, 4.0, 1), (5, 4.0, 2), (9, 3.0, 3)],
)
def test_estimate_tokens_rounds_up(chars: int, per_token: float, tokens: int) -> None:
    assert estimate_tokens("x" * chars, per_token) == tokens


@pytest.mark.parametrize(
    ("when", "day", "month"),
    [
        ("2026-03-15T13:45:00", "2026-03-15T00:00:00", "2026-03-01T00:00:00"),
        ("2026-03-01T00:00:00", "2026-03-01T00:00:00", "2026-03-01T00:00:00"),
        ("2026-01-31T23:59:59", "2026-01-31T00:00:00", "2026-01-01T00:00:00"),
        ("2028-02-29T12:00:00", "2028-02-29T00:00:00", "2028-02-01T00:00:00"),
        ("2026-12-31T23:59:59", "2026-12-31T00:00:00", "2026-12-01T00:00:00"),
    ],
)
def test_periods_are_utc_calendar_days_and_months(when: str, day: str, month: str) -> None:
    assert day_start(ts(when)) == ts(day)
    assert month_start(ts(when)) == ts(month)
    assert Windows.at(ts(when)) == Windows(ts(day), ts(month))


def test_refusal_names_the_first_limit_broken() -> None:
    s = make_settings()
    assert refusal(s, Spent(0.0, 0.0), 0.5) is None  # exactly the cap is allowed
    assert "per-request cap" in (refusal(s, Spent(0.0, 0.0), 0.51) or "")
    assert refusal(s, Spent(0.5, 0.5), 0.5) is None  # exactly the daily limit
    assert refusal(s, Spent(0.6, 0.6), 0.5) == "budget 0.40 EUR left today, estimate 0.5000 EUR"
    assert refusal(s, Spent(0.0, 4.8), 0.3) == (
        "budget 0.20 EUR left this month, estimate 0.3000 EUR"
    )


def test_left_never_goes_negative() -> None:
    s = make_settings()
    assert left(s, Spent(2.0, 7.0)).now == 0.0
    assert left(s, Spent(0.25, 4.9)).day == pytest.approx(0.75)
    assert left(s, Spent(0.25, 4.9)).now == pytest.approx(0.1)


def test_cost_per_success_counts_every_attempt() -> None:
    assert cost_per_success([0.1, 0.2, 0.3], 3) == pytest.approx(0.2)
    assert cost_per_success([0.1, 0.2, 0.3], 1) == pytest.approx(0.6)  # failures still cost
    assert cost_per_success([0.1], 0) is None
    assert cost_per_success([], 4) == 0.0
    with pytest.raises(ValueError):
        cost_per_success([1.0], -1)


def test_cps_ratio_against_the_baseline() -> None:
    assert cps_ratio(0.02, 0.2) == pytest.approx(0.1)
    assert cps_ratio(None, 0.2) is None
    assert cps_ratio(0.02, None) is None
    assert cps_ratio(0.02, 0.0) is None


# ---------------------------------------------------------------- settings


def test_settings_are_typed_and_bounded() -> None:
    with pytest.raises(ValidationError):
        make_settings(daily_limit=10.0, monthly_limit=5.0)
    with pytest.raises(ValidationError):
        make_settings(currency="euro")
    with pytest.raises(ValidationError):
        make_settings(daily_limit=-1)
    with pytest.raises(ValidationError):
        BudgetSettings.model_validate({"dailylimit": 1.0})  # a typo is an error
    with pytest.raises(ValidationError):
        ModelPrice.model_validate({"input_per_mtok": 1.0, "output_per_mtok": 1.0, "x": 1})
    for name, field in BudgetSettings.model_fields.items():
        assert field.description, name


def test_price_lookup_falls_back_to_star_or_refuses() -> None:
    star = ModelPrice(input_per_mtok=1.0, output_per_mtok=1.0)
    s = make_settings(prices={"cloud": PRICE, "*": star})
    assert s.price("cloud") == PRICE
    assert s.price("other") == star
    with pytest.raises(ConfigError, match="no price for cloud model 'other'"):
        make_settings().price("other")
    assert "*" in BudgetSettings().prices  # the default has a placeholder for any model


# ---------------------------------------------------------------- the budget


def test_reserve_then_settle_with_actual_usage() -> None:
    clock = Clock(ts("2026-03-15T10:00:00"))
    budget = Budget(make_settings(), clock=clock)
    r = budget.reserve("cloud", prompt_tokens=1000, max_tokens=500, key="k1")
    assert r.estimate == pytest.approx((1000 * 2 + 500 * 10) / 1e6)
    assert budget.left().day == pytest.approx(1.0 - r.estimate)
    cost = budget.settle(r, prompt_tokens=1000, completion_tokens=20)
    assert cost == pytest.approx((1000 * 2 + 20 * 10) / 1e6)
    assert budget.left().day == pytest.approx(1.0 - cost)


def test_settle_without_usage_keeps_the_estimate_and_release_frees_it() -> None:
    budget = Budget(make_settings(), clock=Clock(ts("2026-03-15T10:00:00")))
    r = budget.reserve("cloud", 1000, 500, "k")
    assert budget.settle(r, 0, 0) == pytest.approx(r.estimate)
    r2 = budget.reserve("cloud", 1000, 500, "k2")
    budget.release(r2)
    assert budget.left().day == pytest.approx(1.0 - r.estimate)


def test_exhausted_budget_refuses_and_the_next_day_allows_again() -> None:
    clock = Clock(ts("2026-03-15T23:00:00"))
    s = make_settings(daily_limit=0.01, monthly_limit=0.015, per_request_cap=0.01)
    budget = Budget(s, clock=clock)
    r = budget.reserve("cloud", 0, 1000, "a")  # 0.01
    budget.settle(r, 0, 1000)
    with pytest.raises(BudgetExceededError, match="left today") as info:
        budget.reserve("cloud", 0, 1, "b")
    assert info.value.retryable is False
    assert budget.check(0.000001) is not None
    clock.t = ts("2026-03-16T00:00:01")  # a new UTC day
    assert budget.check(0.005) is None
    budget.reserve("cloud", 0, 500, "c")  # 0.005: the month is now used up
    with pytest.raises(BudgetExceededError, match="left this month"):
        budget.reserve("cloud", 0, 1, "d")
    clock.t = ts("2026-04-01T00:00:00")
    assert budget.left().now == pytest.approx(0.01)


def test_zero_limits_never_call_out() -> None:
    budget = Budget(make_settings(daily_limit=0, monthly_limit=0), clock=Clock(0.0))
    with pytest.raises(BudgetExceededError, match=r"budget 0\.00 EUR left today"):
        budget.reserve("cloud", 1, 0, "k")


def test_per_request_cap_applies_to_the_worst_case() -> None:
    budget = Budget(make_settings(per_request_cap=0.001), clock=Clock(0.0))
    with pytest.raises(BudgetExceededError, match="per-request cap"):
        budget.reserve("cloud", 0, 200, "k")  # 200 out tokens = 0.002
    budget.reserve("cloud", 0, 100, "k")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(0, 4000), st.integers(0, 4000)),
        max_size=40,
    )
)
def test_spending_never_exceeds_the_limits(calls: list[tuple[int, int, int]]) -> None:
    s = make_settings(daily_limit=0.05, monthly_limit=0.08, per_request_cap=0.03)
    clock = Clock(ts("2026-03-31T00:00:00"))
    budget = Budget(s, clock=clock)
    for i, (prompt, max_out, used_out) in enumerate(calls):
        clock.t += 3600 * 7  # days and a month boundary go by
        try:
            r = budget.reserve("cloud", prompt, max_out, str(i))
        except BudgetExceededError:
            continue
        budget.settle(r, prompt, min(used_out, max_out))
        spent = budget.ledger.spent(budget.windows())
        assert spent.day <= s.daily_limit + 1e-9
        assert spent.month <= s.monthly_limit + 1e-9


# ---------------------------------------------------------------- the SQLite ledger


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def test_sqlite_ledger_persists_in_the_journal_file(journal: Journal) -> None:
    clock = Clock(ts("2026-03-15T10:00:00"))
    ledger = SqliteLedger(journal.path, clock=clock)
    budget = Budget(make_settings(), ledger, clock=clock)
    r = budget.reserve("cloud", 1000, 500, "key-1")
    budget.settle(r, 1000, 100)
    budget.reserve("cloud", 1000, 500, "key-2")  # a crash before settling
    ledger.close()
    again = SqliteLedger(journal.path, clock=clock)
    rows = again.entries()
    assert [(e["idempotency_key"], e["state"]) for e in rows] == [
        ("key-1", "settled"),
        ("key-2", "reserved"),
    ]
    expected = (1000 * 2 + 100 * 10) / 1e6 + (1000 * 2 + 500 * 10) / 1e6
    assert again.spent(Windows.at(clock.t)).day == pytest.approx(expected)
    assert journal.check() == "ok"  # the journal still opens and checks
    (sync,) = again._db.execute("PRAGMA synchronous").fetchone()
    assert sync == 2  # FULL
    again.close()


def test_sqlite_ledger_refuses_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(JournalError, match="not an edge-agent journal"):
        SqliteLedger(other)
    with pytest.raises(JournalError, match="no journal"):
        SqliteLedger(tmp_path / "missing.db")


def test_sqlite_ledger_admits_atomically_across_connections(journal: Journal) -> None:
    s = make_settings(daily_limit=0.1, monthly_limit=0.1, per_request_cap=0.01)
    ledgers = [SqliteLedger(journal.path) for _ in range(4)]
    admitted: list[int] = []

    def spend(ledger: SqliteLedger) -> None:
        budget = Budget(s, ledger)
        for i in range(10):
            try:
                budget.reserve("cloud", 0, 1000, f"k{i}")  # 0.01 each
            except BudgetExceededError:
                continue
            admitted.append(1)

    threads = [threading.Thread(target=spend, args=(led,)) for led in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 10  # 40 tries, room for exactly 10
    for ledger in ledgers:
        ledger.close()


def test_memory_ledger_matches_the_protocol() -> None:
    from edge_agent.routing.budget import Ledger

    ledgers: list[Ledger] = [MemoryLedger()]
    assert ledgers
