"""Plugins the official indexer registers only so their records reach the generic ``record``
table (status, notification/chat/germ declarations): no table of their own.

``insert``/``delete`` answer "indexed" for rkey ``self`` and "not indexed" for any other rkey,
exactly as the official placeholders (which return ``true``/``null``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..plugin import Plugin, RecordOp, Row


def _rkey(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    if op.rkey != "self":
        return None
    return {"uri": op.uri, "cid": op.cid, "creator": op.did}


async def delete(tx: Any, uri: str) -> Optional[Row]:
    if _rkey(uri) != "self":
        return None
    return {"uri": uri}


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return None


def placeholder(collection: str, validate: Callable[[dict[str, Any]], None]) -> Plugin:
    return Plugin(collection=collection, validate=validate, insert=insert, delete=delete, find_duplicate=find_duplicate)
