"""``normalizeDatetimeAlways`` and ``Date.toISOString`` of the official indexer, in one place.

The official indexer stores ``createdAt`` normalised by ``normalizeDatetimeAlways``
(@atproto/syntax): a sortable UTC datetime with millisecond precision
(``2025-03-02T12:20:21.000Z``), sub-millisecond digits truncated as JavaScript's ``Date`` does,
no timezone meaning UTC, and ``1970-01-01T00:00:00.000Z`` for anything ``Date`` cannot parse.
Checked against node on the edge cases (Feb 30 rolls into March, 24:00 is the next midnight,
no leap second).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = "1970-01-01T00:00:00.000Z"

_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$"
)


# Already in the output's form (``2025-03-02T12:20:21.000Z``, as nearly every record has it):
# returned as it is when the fields are in range, which is what the full path below gives.
_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _canonical(v: str) -> bool:
    if len(v) != 24 or not _CANONICAL.fullmatch(v):
        return False
    y, mo, d = int(v[0:4]), int(v[5:7]), int(v[8:10])
    if y < 1000 or not 1 <= mo <= 12 or not 1 <= d <= _MONTH_DAYS[mo]:
        return False
    if mo == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        return False
    return int(v[11:13]) <= 23 and int(v[14:16]) <= 59 and int(v[17:19]) <= 59


def normalize_datetime_always(value: Any) -> str:
    """``normalizeDatetimeAlways``: a sortable UTC datetime with millisecond precision.

    >>> normalize_datetime_always("2024-05-01T12:00:00.123456+02:00")
    '2024-05-01T10:00:00.123Z'
    >>> normalize_datetime_always("not a date")
    '1970-01-01T00:00:00.000Z'
    """
    if not isinstance(value, str) or len(value) > 64:
        return EPOCH
    if _canonical(value):
        return value
    m = _DT.match(value)
    if not m:
        return EPOCH
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    month, day, hour, minute, sec = int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0)
    ms = int((frac or "0")[:3].ljust(3, "0"))
    # JavaScript's Date: day 1-31 in any month (Feb 31 rolls into March), 24:00:00 is the
    # next midnight, no leap second.
    if not (1 <= month <= 12 and 1 <= day <= 31 and minute <= 59 and sec <= 59):
        return EPOCH
    if hour > 24 or (hour == 24 and (minute or sec or ms)):
        return EPOCH
    try:
        dt = datetime(int(y), month, 1, tzinfo=timezone.utc) + timedelta(
            days=day - 1, hours=hour, minutes=minute, seconds=sec, milliseconds=ms
        )
    except (ValueError, OverflowError):
        return EPOCH
    if tz and tz[0] in "+-":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:4] or 0)
        if oh > 23 or om > 59:
            return EPOCH
        try:
            dt = dt - sign * timedelta(hours=oh, minutes=om)
        except OverflowError:
            return EPOCH
    return format_iso(dt)


def format_iso(dt: datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString``."""
    dt = dt.astimezone(timezone.utc)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"


def now_iso() -> str:
    """``new Date().toISOString()``."""
    return format_iso(datetime.now(timezone.utc))


# the name the feed plugins and the bulk path use
normalize_datetime = normalize_datetime_always
