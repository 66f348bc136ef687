"""``app.bsky.graph.block`` -> ``actor_block``, as the official plugin.

Duplicates: one block per (creator, subjectDid). No notifications, no aggregates.
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.graph.block"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    return await insert_row(
        tx,
        "actor_block",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "subjectDid": op.record.get("subject"),
            "createdAt": normalize_datetime_always(op.record.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "actor_block", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return await find_uri(tx, "actor_block", {"creator": op.did, "subjectDid": op.record.get("subject")})


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
