"""``app.bsky.graph.list`` -> ``list``, as the official plugin (no duplicates, no notifications).

``descriptionFacets`` is stored as ``JSON.stringify`` of the facets (compact JSON, key order
as in the record).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import blob_cid, delete_row, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.graph.list"


def js_json(value: Any) -> str:
    """``JSON.stringify``: compact, non-ASCII kept, key order kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    rec = op.record
    facets = rec.get("descriptionFacets")
    return await insert_row(
        tx,
        "list",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "name": rec.get("name"),
            "purpose": rec.get("purpose"),
            "description": rec.get("description"),
            "descriptionFacets": js_json(facets) if facets else None,
            "avatarCid": blob_cid(rec.get("avatar")),
            "createdAt": normalize_datetime_always(rec.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "list", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return None


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
