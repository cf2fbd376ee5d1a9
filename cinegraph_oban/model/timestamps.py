"""Naive-UTC time, in one place.

Oban's timestamp columns are `timestamp without time zone` holding UTC wall-clock values. An
aware datetime bound to such a column is converted with the session `TimeZone`, so under any zone
but UTC it would be stored wrong. Every datetime that reaches the database passes through
`to_naive_utc` first; naive datetimes are taken to be UTC already.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["to_naive_utc", "utc_now"]


def to_naive_utc(value: datetime) -> datetime:
    """Aware datetimes are converted to UTC and made naive; naive ones are taken as UTC."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=None)
    return value.astimezone(UTC).replace(tzinfo=None)


def utc_now() -> datetime:
    """The current time as a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)
