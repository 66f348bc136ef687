"""Small SQL helpers shared by the plugins: rows as dicts (``RETURNING *``)."""

from __future__ import annotations

from typing import Any, Optional

from psycopg.rows import dict_row


async def one(tx: Any, query: str, params: Any = None) -> Optional[dict[str, Any]]:
    """First row as a dict, or None."""
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def all_rows(tx: Any, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def did_of(uri: Any) -> str:
    """The authority of an at:// uri (``AtUri.host``); '' when it has none."""
    if not isinstance(uri, str):
        return ""
    rest = uri[5:] if uri.startswith("at://") else uri
    return rest.split("/", 1)[0]


def collection_of(uri: Any) -> str:
    if not isinstance(uri, str):
        return ""
    rest = uri[5:] if uri.startswith("at://") else uri
    parts = rest.split("/")
    return parts[1] if len(parts) > 1 else ""
