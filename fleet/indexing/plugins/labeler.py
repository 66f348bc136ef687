"""``app.bsky.labeler.service`` -> ``labeler`` (rkey ``self`` only), as the official plugin."""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import delete_row, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.labeler.service"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    if op.rkey != "self":
        return None
    return await insert_row(
        tx,
        "labeler",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "createdAt": normalize_datetime_always(op.record.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "labeler", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return None


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
