"""Thresholds from an error budget (pure: recorded P(success) and outcomes)."""

from __future__ import annotations

from edge_agent.ladder import threshold_for


def test_the_lowest_threshold_within_the_budget() -> None:
    # 100 items: sure answers are right, a wrong one at 0.8, a second at 0.5.
    scored = [(0.99 - i * 0.001, True) for i in range(60)]
    scored += [(0.80, False)] + [(0.79 - i * 0.001, True) for i in range(38)] + [(0.5, False)]
    cal = threshold_for(scored, 0.02)  # (wrong + 1) / 101 <= 2%: one wrong answer allowed
    assert cal.threshold == scored[-2][0] and cal.kept == 99 and cal.wrong == 1
    assert cal.bound == 2 / 101 and cal.error_rate == 0.01
    strict = threshold_for(scored, 0.015)  # no wrong answer allowed: stop above 0.8
    assert strict.threshold == scored[59][0] and strict.kept == 60 and strict.wrong == 0


def test_no_threshold_passes_on_too_little_evidence() -> None:
    # 20 items bound the error only at 1/21 > 2%: the tier keeps nothing.
    cal = threshold_for([(0.9, True)] * 20, 0.02)
    assert cal.threshold == 1.0 and cal.kept == 0 and cal.keep_rate == 0.0


def test_ties_are_kept_or_climb_together() -> None:
    scored = [(0.95, True)] * 98 + [(0.95, False)] * 2 + [(0.5, True)] * 100
    assert threshold_for(scored, 0.02).threshold == 0.5  # 3/201 within 2%
    cal = threshold_for(scored, 0.01)  # 3/201 > 1%: none of the 0.95s alone can pass
    assert cal.kept == 0
