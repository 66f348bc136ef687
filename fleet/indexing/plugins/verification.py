"""``app.bsky.graph.verification`` -> ``verification``, as the official plugin.

Duplicates: one verification per (creator, subject).
Notifications: ``verified`` to the subject on insert (sortAt = the row's ``sortedAt``);
``unverified`` on delete, stamped with the clock as the official does (it is not an event's
time in the official either).
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Notif, Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, now_iso, validator

COLLECTION = "app.bsky.graph.verification"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    rec = op.record
    return await insert_row(
        tx,
        "verification",
        {
            "uri": op.uri,
            "cid": op.cid,
            "rkey": op.rkey,
            "creator": op.did,
            "subject": rec.get("subject"),
            "handle": rec.get("handle"),
            "displayName": rec.get("displayName"),
            "createdAt": normalize_datetime_always(rec.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "verification", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return await find_uri(tx, "verification", {"subject": op.record.get("subject"), "creator": op.did})


def notifs_for_insert(row: Row) -> list[Notif]:
    return [
        Notif(
            did=row["subject"],
            author=row["creator"],
            recordUri=row["uri"],
            recordCid=row["cid"],
            reason="verified",
            reasonSubject=None,
            sortAt=row["sortedAt"],
        )
    ]


def notifs_for_delete(deleted: Row, replaced_by: Optional[Row]) -> tuple[list[Notif], list[str]]:
    notif = Notif(
        did=deleted["subject"],
        author=deleted["creator"],
        recordUri=deleted["uri"],
        recordCid=deleted["cid"],
        reason="unverified",
        reasonSubject=None,
        sortAt=now_iso(),
    )
    return [notif], []


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    notifs_for_insert=notifs_for_insert,
    notifs_for_delete=notifs_for_delete,
)
