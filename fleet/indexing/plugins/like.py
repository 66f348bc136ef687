"""app.bsky.feed.like (official ``plugins/like.js``)."""

from __future__ import annotations

from typing import Any, Optional

from ..dates import normalize_datetime
from ..plugin import AggDelta, Notif, Plugin, RecordOp, Row
from . import validator
from ._db import did_of, one

NSID = "app.bsky.feed.like"


def subject_fields(rec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    subject = rec.get("subject") or {}
    via = rec.get("via") if isinstance(rec.get("via"), dict) else {}
    return subject.get("uri"), subject.get("cid"), via.get("uri"), via.get("cid")


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    s_uri, s_cid, v_uri, v_cid = subject_fields(op.record)
    return await one(
        tx,
        'INSERT INTO "like" (uri, cid, creator, subject, "subjectCid", via, "viaCid", "createdAt", "indexedAt") '
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING *",
        (op.uri, op.cid, op.did, s_uri, s_cid, v_uri, v_cid, normalize_datetime(op.record.get("createdAt")), op.indexed_at),
    )


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    s_uri = subject_fields(op.record)[0]
    row = await one(tx, 'SELECT uri FROM "like" WHERE creator = %s AND subject = %s LIMIT 1', (op.did, s_uri))
    return row["uri"] if row else None


def interaction_notifs(row: Row, reason: str) -> list[Notif]:
    """Like and repost: the subject's author, and the reposter it came via (never oneself)."""
    author = did_of(row["subject"])
    if author == row["creator"]:
        return []
    out = [Notif(author, row["creator"], row["uri"], row["cid"], reason, row["subject"], row["sortAt"])]
    if row.get("via"):
        via_author = did_of(row["via"])
        if via_author != row["creator"]:
            out.append(Notif(via_author, row["creator"], row["uri"], row["cid"], f"{reason}-via-repost", row["via"], row["sortAt"]))
    return out


def notifs_for_insert(row: Row) -> list[Notif]:
    return interaction_notifs(row, "like")


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await one(tx, 'DELETE FROM "like" WHERE uri = %s RETURNING *', (uri,))


def notifs_for_delete(deleted: Row, replaced_by: Optional[Row]) -> tuple[list[Notif], list[str]]:
    return [], ([] if replaced_by else [deleted["uri"]])


def aggregates(row: Row, sign: int) -> list[AggDelta]:
    return [AggDelta("post_agg", row["subject"], "likeCount", sign)]


PLUGIN = Plugin(
    collection=NSID,
    validate=validator(NSID),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    notifs_for_insert=notifs_for_insert,
    notifs_for_delete=notifs_for_delete,
    aggregates=aggregates,
)
