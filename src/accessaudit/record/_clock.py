"""Timestamps as the record stores and hashes them: integer microseconds since 1970, UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MICROS: Final = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - EPOCH) // timedelta(
    microseconds=1
)


def to_micros(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime for integer microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def now_utc() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_iso(moment: datetime) -> str:
    """The record's text form of a time: UTC, microseconds, ``Z`` (sorts as it compares)."""
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def from_iso(text: str) -> datetime:
    """The aware UTC datetime ``to_iso`` wrote; ValueError for anything else."""
    return datetime.strptime(text, ISO_FORMAT).replace(tzinfo=UTC)


_DURATION = re.compile(r"(?P<amount>[1-9][0-9]{0,5})(?P<unit>[mhdw])")
_UNITS: Final = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """A length of time from user input: ``90m``, ``12h``, ``7d``, ``2w``; ValueError if not."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        msg = f"{text!r} is not a duration (a whole number and m, h, d or w: 90m, 12h, 7d, 2w)"
        raise ValueError(msg)
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


def parse_when(text: str, now: datetime, *, ago: bool = False) -> datetime:
    """A moment from user input: ISO 8601 with a timezone, or a duration from ``now``.

    Durations are a whole number and a unit: ``90m``, ``12h``, ``7d``, ``2w``; they point
    forward from ``now``, or back with ``ago``. A timestamp without a timezone is refused
    rather than guessed. Raises ValueError saying what to write.
    """
    cleaned = text.strip()
    match = _DURATION.fullmatch(cleaned)
    try:
        if match:
            delta = timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})
            return now - delta if ago else now + delta
        try:
            moment = datetime.fromisoformat(cleaned)
        except ValueError:
            msg = (
                f"{text!r} is neither a duration (e.g. 90m, 12h, 7d, 2w) nor an ISO 8601 time "
                "(e.g. 2026-12-01T17:00:00Z)"
            )
            raise ValueError(msg) from None
        if moment.tzinfo is None or moment.utcoffset() is None:
            msg = f"{text!r} has no timezone; add one, e.g. {cleaned}Z or {cleaned}+01:00"
            raise ValueError(msg)
        return moment.astimezone(UTC)
    except OverflowError:
        # A duration reaching past year 9999 (``999999w``), or a time at the very edge of
        # the calendar whose zone moves it over: no moment a log could hold.
        msg = (
            f"{text!r} is out of range: a time must fall within the years 1 to 9999 (UTC); "
            "give a nearer one"
        )
        raise ValueError(msg) from None
