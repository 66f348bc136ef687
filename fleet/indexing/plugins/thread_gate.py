"""app.bsky.feed.threadgate (official ``plugins/thread-gate.js``): thread_gate + post.hasThreadGate.

A gate whose rkey or author does not match its post is refused by the official insert
(``InvalidRequestError``: the write is rolled back, nothing indexed); here that is an
``InvalidRecord`` raised by ``validate`` before any write.
"""

from __future__ import annotations

from typing import Any, Optional

from ..dates import normalize_datetime
from ..plugin import InvalidRecord, Plugin, RecordOp, Row
from . import validator
from ._db import one

NSID = "app.bsky.feed.threadgate"
GATE_TABLE, GATE_FLAG = "thread_gate", "hasThreadGate"


def make(nsid: str, table: str, flag: str) -> Plugin:
    lexicon = validator(nsid)

    def validate(record: dict[str, Any]) -> None:
        lexicon(record)

    async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
        post_uri = op.record.get("post")
        rest = post_uri[5:] if isinstance(post_uri, str) and post_uri.startswith("at://") else ""
        parts = rest.split("/")
        if len(parts) < 3 or parts[0] != op.did or parts[2] != op.rkey:
            raise InvalidRecord(f"creator and rkey of {table} do not match its post")
        row = await one(
            tx,
            f'INSERT INTO {table} (uri, cid, creator, "postUri", "createdAt", "indexedAt") VALUES (%s, %s, %s, %s, %s, %s) '  # noqa: S608
            "ON CONFLICT DO NOTHING RETURNING *",
            (op.uri, op.cid, op.did, post_uri, normalize_datetime(op.record.get("createdAt")), op.indexed_at),
        )
        await tx.execute(f'UPDATE post SET "{flag}" = true WHERE uri = %s', (post_uri,))  # noqa: S608
        return row

    async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
        row = await one(tx, f'SELECT uri FROM {table} WHERE "postUri" = %s LIMIT 1', (op.record.get("post"),))  # noqa: S608
        return row["uri"] if row else None

    async def delete(tx: Any, uri: str) -> Optional[Row]:
        row = await one(tx, f"DELETE FROM {table} WHERE uri = %s RETURNING *", (uri,))  # noqa: S608
        if row is not None:
            await tx.execute(f'UPDATE post SET "{flag}" = false WHERE uri = %s', (row["postUri"],))  # noqa: S608
        return row

    return Plugin(
        collection=nsid,
        validate=validate,
        insert=insert,
        delete=delete,
        find_duplicate=find_duplicate,
        notifs_for_insert=lambda row: [],
        notifs_for_delete=lambda d, r: ([], []),
        aggregates=lambda row, sign: [],
    )


PLUGIN = make(NSID, GATE_TABLE, GATE_FLAG)
