"""Small helpers shared by the graph/actor plugins (not a plugin: the leading ``_`` says so).

They reproduce the few @atproto helpers the official plugins call:

- :func:`normalize_datetime_always` — ``normalizeDatetimeAlways`` (lives in
  ``fleet/indexing/dates.py``, shared with the feed plugins and the bulk path).
- :func:`blob_cid` — ``getBlobCidString``: the CID of a typed blob (``ref.$link``) or of a
  legacy blob (``cid``).
- :func:`uri_host` — ``new AtUri(uri).host`` for the URIs records carry.
- :func:`validator` — the lexicon check of a collection (C4's ``fleet.indexing.lexicon``);
  until that module exists every record passes.
"""

from __future__ import annotations

from typing import Any, Callable

from ..dates import EPOCH, format_iso, normalize_datetime_always, now_iso  # noqa: F401  (re-exported)
from ..plugin import InvalidRecord


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
    """The lexicon check for ``collection`` (``fleet.indexing.lexicon.validator_for``), raising
    InvalidRecord. The checker is bound at the first record: importing it on every call cost ~1 us."""

    check: list[Callable[[dict[str, Any]], None]] = []

    def validate(record: dict[str, Any]) -> None:
        if not check:
            try:
                from ..lexicon import validator_for  # C4's module; optional until it lands
            except ImportError:
                return
            check.append(validator_for(collection))
        check[0](record)

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
