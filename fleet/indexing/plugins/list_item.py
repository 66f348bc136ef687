"""``app.bsky.graph.listitem`` -> ``list_item``, as the official plugin.

A list item whose list belongs to another account is refused (the official insert throws and
its transaction rolls back, so not even the ``record`` row stays): ``insert`` raises
:class:`InvalidRecord`, which the processor treats like a lexicon rejection.
Duplicates: one item per (listUri, subjectDid).
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import InvalidRecord, Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, uri_host, validator

COLLECTION = "app.bsky.graph.listitem"

async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    list_uri = op.record.get("list")
    if uri_host(list_uri) != op.did:
        raise InvalidRecord("Creator of listitem does not match creator of list")
    return await insert_row(
        tx,
        "list_item",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "subjectDid": op.record.get("subject"),
            "listUri": list_uri,
            "createdAt": normalize_datetime_always(op.record.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "list_item", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return await find_uri(tx, "list_item", {"listUri": op.record.get("list"), "subjectDid": op.record.get("subject")})


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
)
