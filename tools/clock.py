"""Date and time: the current time in a time zone, and days between dates.

Named ``clock.py`` so it cannot shadow the standard library's ``time``.
Time zones are IANA names resolved by :mod:`zoneinfo` (the system tz database,
or the ``tzdata`` package where the system has none).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from edge_agent import tool

DateText = Annotated[str, Field(description="YYYY-MM-DD or 'today'")]


@tool(
    "Get the current date and time in a time zone.",
    tags=("time",),
    say="It is {time} on {weekday} {date} in {timezone}.",
)
def current_time(
    timezone: Annotated[str, Field(description="IANA name, e.g. Europe/Berlin")] = "UTC",
) -> dict[str, Any]:
    zone = zone_named(timezone)
    now = utc_now().astimezone(zone)
    return {
        "timezone": timezone,
        "iso": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
    }


@tool(
    "Count the days from one date to another.",
    tags=("time",),
    say="{days} days from {start} to {end}.",
)
def date_diff(start: DateText, end: DateText) -> dict[str, Any]:
    first, last = parse_date(start), parse_date(end)
    days = (last - first).days
    return {
        "start": first.isoformat(),
        "end": last.isoformat(),
        "days": days,
        "weeks": round(days / 7, 2),
        "end_weekday": last.strftime("%A"),
    }


def utc_now() -> datetime:
    """The current time (aware, UTC); tests replace this."""
    return datetime.now(timezone.utc)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` that says so if there is none."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like 'Europe/Berlin' or 'UTC'"
        ) from None


def parse_date(text: str) -> date:
    """An ISO date (or date-time, whose date part is used), or ``today``."""
    cleaned = text.strip()
    if cleaned.lower() == "today":
        return utc_now().astimezone().date()
    try:
        return date.fromisoformat(cleaned)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(cleaned).date()
    except ValueError:
        raise ValueError(f"not an ISO date: {text!r}; use YYYY-MM-DD") from None
