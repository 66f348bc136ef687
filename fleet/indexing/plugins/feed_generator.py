"""``app.bsky.feed.generator`` -> ``feed_generator``, as the official plugin (no duplicates,
no notifications, no aggregates)."""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import blob_cid, delete_row, insert_row, normalize_datetime_always, validator
from .list import js_json

COLLECTION = "app.bsky.feed.generator"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    rec = op.record
    facets = rec.get("descriptionFacets")
    return await insert_row(
        tx,
        "feed_generator",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "feedDid": rec.get("did"),
            "displayName": rec.get("displayName"),
            "description": rec.get("description"),
            "descriptionFacets": js_json(facets) if facets else None,
            "avatarCid": blob_cid(rec.get("avatar")),
            "createdAt": normalize_datetime_always(rec.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "feed_generator", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return None


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
