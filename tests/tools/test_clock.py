"""Current time in IANA time zones, and days between dates."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from . import load_tool_module

clock = load_tool_module("clock")

SUMMER = datetime(2024, 7, 1, 12, 30, 15, tzinfo=timezone.utc)
WINTER = datetime(2024, 1, 15, 23, 5, 0, tzinfo=timezone.utc)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "utc_now", lambda: SUMMER)


def test_utc_is_the_default(frozen: None) -> None:
    out = clock.current_time()
    assert out == {
        "timezone": "UTC",
        "iso": "2024-07-01T12:30:15+00:00",
        "date": "2024-07-01",
        "time": "12:30:15",
        "weekday": "Monday",
        "utc_offset": "+00:00",
    }
    json.dumps(out)


@pytest.mark.parametrize(
    ("zone", "now", "iso", "weekday"),
    [
        ("Europe/Berlin", SUMMER, "2024-07-01T14:30:15+02:00", "Monday"),
        ("Europe/Berlin", WINTER, "2024-01-16T00:05:00+01:00", "Tuesday"),
        ("America/New_York", SUMMER, "2024-07-01T08:30:15-04:00", "Monday"),
        ("America/New_York", WINTER, "2024-01-15T18:05:00-05:00", "Monday"),
        ("Asia/Kolkata", SUMMER, "2024-07-01T18:00:15+05:30", "Monday"),
        ("Australia/Adelaide", WINTER, "2024-01-16T09:35:00+10:30", "Tuesday"),
        ("Pacific/Kiritimati", WINTER, "2024-01-16T13:05:00+14:00", "Tuesday"),
    ],
)
def test_zones_and_daylight_saving(
    monkeypatch: pytest.MonkeyPatch, zone: str, now: datetime, iso: str, weekday: str
) -> None:
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    out = clock.current_time(zone)
    assert out["iso"] == iso
    assert out["date"] == iso[:10]
    assert out["time"] == iso[11:19]
    assert out["weekday"] == weekday
    assert out["utc_offset"] == iso[19:]


def test_real_clock_is_now() -> None:
    out = clock.current_time("Europe/London")
    stamp = datetime.fromisoformat(out["iso"])
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Europe/Nowhere", "", "../../etc/passwd", "/etc/localtime", "PST"]
)
def test_unknown_zones(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as info:
        clock.current_time(zone)
    assert "IANA" in str(info.value)


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        ("2024-01-01", "2024-03-01", 60),  # leap year
        ("2023-01-01", "2023-03-01", 59),
        ("2024-03-01", "2024-01-01", -60),
        ("2024-12-25", "2024-12-25", 0),
        ("2000-01-01", "2100-01-01", 36525),
        ("2024-01-01T23:59:00", "2024-01-02T00:01:00+02:00", 1),
    ],
)
def test_date_diff(start: str, end: str, days: int) -> None:
    out = clock.date_diff(start, end)
    assert out["days"] == days
    assert out["weeks"] == round(days / 7, 2)
    json.dumps(out)


def test_date_diff_result() -> None:
    assert clock.date_diff("2024-12-01", "2024-12-25") == {
        "start": "2024-12-01",
        "end": "2024-12-25",
        "days": 24,
        "weeks": 3.43,
        "end_weekday": "Wednesday",
    }


def test_date_diff_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "utc_now", lambda: SUMMER)
    today = SUMMER.astimezone().date()
    out = clock.date_diff("today", "2024-12-25")
    assert out["start"] == today.isoformat()
    assert out["days"] == (date(2024, 12, 25) - today).days
    assert clock.date_diff(" Today ", "today")["days"] == 0


@pytest.mark.parametrize("bad", ["tomorrow", "2024-02-30", "01/02/2024", "", "2024-13-01"])
def test_date_diff_rejects_non_iso(bad: str) -> None:
    with pytest.raises(ValueError, match="not an ISO date"):
        clock.date_diff(bad, "2024-01-01")
