"""app.bsky.feed.repost (official ``plugins/repost.js``): repost row + feed_item."""

from __future__ import annotations

from typing import Any, Optional

from ..dates import normalize_datetime
from ..plugin import AggDelta, Notif, Plugin, RecordOp, Row
from . import validator
from ._db import one
from .like import interaction_notifs, subject_fields

NSID = "app.bsky.feed.repost"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    s_uri, s_cid, v_uri, v_cid = subject_fields(op.record)
    created = normalize_datetime(op.record.get("createdAt"))
    sort_at = op.indexed_at if op.indexed_at < created else created
    return await one(
        tx,
        "WITH fi AS (INSERT INTO feed_item (type, uri, cid, \"postUri\", \"originatorDid\", \"sortAt\") "
        "VALUES ('repost', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING) "
        'INSERT INTO repost (uri, cid, creator, subject, "subjectCid", via, "viaCid", "createdAt", "indexedAt") '
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
        (op.uri, op.cid, s_uri, op.did, sort_at, op.uri, op.cid, op.did, s_uri, s_cid, v_uri, v_cid, created, op.indexed_at),
    )


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    s_uri = subject_fields(op.record)[0]
    row = await one(tx, "SELECT uri FROM repost WHERE creator = %s AND subject = %s LIMIT 1", (op.did, s_uri))
    return row["uri"] if row else None


def notifs_for_insert(row: Row) -> list[Notif]:
    return interaction_notifs(row, "repost")


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await one(
        tx, "WITH fi AS (DELETE FROM feed_item WHERE uri = %s) DELETE FROM repost WHERE uri = %s RETURNING *", (uri, uri)
    )


async def demote(tx: Any, uri: str) -> Optional[Row]:
    """The repost row only: a duplicate repost keeps its feed item (``insert`` writes one for any create)."""
    return await one(tx, "DELETE FROM repost WHERE uri = %s RETURNING *", (uri,))


def notifs_for_delete(deleted: Row, replaced_by: Optional[Row]) -> tuple[list[Notif], list[str]]:
    return [], ([] if replaced_by else [deleted["uri"]])


def aggregates(row: Row, sign: int) -> list[AggDelta]:
    return [AggDelta("post_agg", row["subject"], "repostCount", sign)]


PLUGIN = Plugin(
    collection=NSID,
    validate=validator(NSID),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    notifs_for_insert=notifs_for_insert,
    notifs_for_delete=notifs_for_delete,
    aggregates=aggregates,
    demote=demote,
)
