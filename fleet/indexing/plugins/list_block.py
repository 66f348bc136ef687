"""``app.bsky.graph.listblock`` -> ``list_block``, as the official plugin.

Duplicates: one list block per (creator, subjectUri). No notifications, no aggregates.
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.graph.listblock"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    return await insert_row(
        tx,
        "list_block",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "subjectUri": op.record.get("subject"),
            "createdAt": normalize_datetime_always(op.record.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "list_block", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return await find_uri(tx, "list_block", {"creator": op.did, "subjectUri": op.record.get("subject")})


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
