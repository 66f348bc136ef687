"""``app.bsky.actor.profile`` -> ``profile`` (rkey ``self`` only), as the official plugin.

Notification: ``starterpack-joined`` to the starter pack's creator when the profile names the
pack it joined through. ``createdAt`` is stored as written (not normalised); a profile without
one gets the event time (the official uses its clock at indexing, which no replay can
reproduce).
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import Notif, Plugin, RecordOp, Row
from ._helpers import blob_cid, delete_row, insert_row, uri_host, validator

COLLECTION = "app.bsky.actor.profile"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    if op.rkey != "self":
        return None
    rec = op.record
    joined = rec.get("joinedViaStarterPack")
    created = rec.get("createdAt")
    return await insert_row(
        tx,
        "profile",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "displayName": rec.get("displayName"),
            "description": rec.get("description"),
            "avatarCid": blob_cid(rec.get("avatar")),
            "bannerCid": blob_cid(rec.get("banner")),
            "joinedViaStarterPackUri": joined.get("uri") if isinstance(joined, dict) else None,
            "createdAt": created if created is not None else op.indexed_at,
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "profile", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return None


def notifs_for_insert(row: Row) -> list[Notif]:
    sp = row.get("joinedViaStarterPackUri")
    if not sp:
        return []
    return [
        Notif(
            did=uri_host(sp),
            author=row["creator"],
            recordUri=row["uri"],
            recordCid=row["cid"],
            reason="starterpack-joined",
            reasonSubject=sp,
            sortAt=row["indexedAt"],
        )
    ]


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    notifs_for_insert=notifs_for_insert,
)
