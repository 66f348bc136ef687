"""Small helpers shared by the graph/actor plugins (not a plugin: the leading ``_`` says so).

They reproduce the few @atproto helpers the official plugins call:

- :func:`normalize_datetime_always` — ``normalizeDatetimeAlways`` of @atproto/syntax:
  a datetime string -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds, sub-ms digits
  truncated as JavaScript's ``Date`` does); no timezone means UTC; anything unparseable
  (or outside years 0001-9999) -> ``1970-01-01T00:00:00.000Z``.
- :func:`blob_cid` — ``getBlobCidString``: the CID of a typed blob (``ref.$link``) or of a
  legacy blob (``cid``).
- :func:`uri_host` — ``new AtUri(uri).host`` for the URIs records carry.
- :func:`validator` — the lexicon check of a collection (C4's ``fleet.indexing.lexicon``);
  until that module exists every record passes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..plugin import InvalidRecord

EPOCH = "1970-01-01T00:00:00.000Z"

_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$"
)


def normalize_datetime_always(value: Any) -> str:
    """``normalizeDatetimeAlways``: a sortable UTC datetime with millisecond precision.

    >>> normalize_datetime_always("2024-05-01T12:00:00.123456+02:00")
    '2024-05-01T10:00:00.123Z'
    >>> normalize_datetime_always("not a date")
    '1970-01-01T00:00:00.000Z'
    """
    if not isinstance(value, str) or len(value) > 64:
        return EPOCH
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


def blob_cid(blob: Any) -> str | None:
    """``getBlobCidString``: ``ref.$link`` of a typed blob, ``cid`` of a legacy one, else None."""
    if not isinstance(blob, dict):
        return None
    if "$type" in blob:
        ref = blob.get("ref")
        if isinstance(ref, dict):
            link = ref.get("$link")
            return link if isinstance(link, str) else None
        return ref if isinstance(ref, str) else None
    cid = blob.get("cid")
    return cid if isinstance(cid, str) else None


def uri_host(uri: Any) -> str:
    """The authority of an ``at://`` URI (``new AtUri(uri).host``); raises InvalidRecord."""
    if not isinstance(uri, str):
        raise InvalidRecord("expected an at-uri string")
    rest = uri[5:] if uri.startswith("at://") else uri
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not host:
        raise InvalidRecord(f"at-uri without authority: {uri[:200]!r}")
    return host


def validator(collection: str) -> Callable[[dict[str, Any]], None]:
    """The lexicon check for ``collection``: ``fleet.indexing.lexicon.validate`` once it exists."""

    def validate(record: dict[str, Any]) -> None:
        try:
            from ..lexicon import validate as lex_validate  # C4's module; optional until it lands
        except ImportError:
            return
        lex_validate(collection, record)

    return validate


def no_validation(record: dict[str, Any]) -> None:
    """For collections the official indexer does not validate (``chat.bsky.actor.declaration``)."""


async def insert_row(tx: Any, table: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING *``: the new row, or None if it existed.

    ``table`` and the column names come from the plugin code, never from input.
    """
    from psycopg import sql
    from psycopg.rows import dict_row

    q = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in values),
        sql.SQL(", ").join(sql.Placeholder() for _ in values),
    )
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, list(values.values()))
        return await cur.fetchone()


async def delete_row(tx: Any, table: str, uri: str) -> dict[str, Any] | None:
    """``DELETE FROM table WHERE uri = $1 RETURNING *``: the deleted row, or None."""
    from psycopg import sql
    from psycopg.rows import dict_row

    q = sql.SQL("DELETE FROM {} WHERE uri = %s RETURNING *").format(sql.Identifier(table))
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(q, (uri,))
        return await cur.fetchone()


async def find_uri(tx: Any, table: str, where: dict[str, Any]) -> str | None:
    """The ``uri`` of one row of ``table`` matching every ``column = value`` of ``where``."""
    from psycopg import sql

    q = sql.SQL("SELECT uri FROM {} WHERE {} LIMIT 1").format(
        sql.Identifier(table),
        sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in where),
    )
    async with tx.cursor() as cur:
        await cur.execute(q, list(where.values()))
        row = await cur.fetchone()
    return row[0] if row else None
