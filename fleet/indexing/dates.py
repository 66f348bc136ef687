"""``normalizeDatetimeAlways`` of ``@atproto/syntax``: any datetime string -> UTC ISO with ms.

The official indexer stores ``createdAt`` normalised this way (``2025-03-02T12:20:21.000Z``),
and ``1970-01-01T00:00:00.000Z`` when the value cannot be parsed. Records reaching the
indexer passed lexicon validation, so their ``createdAt`` is an RFC 3339 datetime; the
lenient fallbacks cover the forms JavaScript's ``Date`` also accepts (no timezone: UTC).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

EPOCH = "1970-01-01T00:00:00.000Z"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}:?\d{2})?$"
)
_DATE_ONLY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def _fmt(dt: datetime) -> str:
    y = dt.year
    body = dt.strftime("-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return f"{y:04d}{body}"


def normalize_datetime(value: object) -> str:
    """Normalise like ``normalizeDatetimeAlways``; never raises."""
    if not isinstance(value, str):
        return EPOCH
    s = value.strip()
    m = _RFC3339.match(s)
    try:
        if m:
            y, mo, d, h, mi, sec, frac, tz = m.groups()
            ms = int((frac or "0")[:3].ljust(3, "0"))  # JS Date keeps milliseconds, truncated
            sec_i = int(sec or 0)
            extra = timedelta(0)
            if sec_i == 60:  # leap second: Date rolls over
                sec_i, extra = 59, timedelta(seconds=1)
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), sec_i, ms * 1000, tzinfo=timezone.utc) + extra
            if tz and tz[0] in "+-":
                off = tz[1:].replace(":", "")
                delta = timedelta(hours=int(off[:2]), minutes=int(off[2:]))
                dt = dt - delta if tz[0] == "+" else dt + delta
        else:
            m = _DATE_ONLY.match(s)
            if not m:
                return EPOCH
            dt = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=timezone.utc)
    except (ValueError, OverflowError):
        return EPOCH
    if dt.year < 0 or dt.year > 9999:
        return EPOCH
    return _fmt(dt)
