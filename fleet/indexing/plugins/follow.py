"""``app.bsky.graph.follow`` -> ``follow``, as the official plugin.

Duplicates: one follow per (creator, subjectDid); later ones go to ``duplicate_record``.
Notification: ``follow`` to the subject (sortAt = the row's ``sortAt``); deleting the follow
deletes it unless a duplicate replaces it.
Aggregates (official recount definitions as deltas): ``profile_agg.followersCount`` of the
subject = follows with that ``subjectDid``; ``profile_agg.followsCount`` of the creator =
follows by that ``creator``.
"""

from __future__ import annotations

from typing import Any, Optional

from ..plugin import AggDelta, Notif, Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.graph.follow"


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    return await insert_row(
        tx,
        "follow",
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
    return await delete_row(tx, "follow", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    return await find_uri(tx, "follow", {"creator": op.did, "subjectDid": op.record.get("subject")})


def notifs_for_insert(row: Row) -> list[Notif]:
    return [
        Notif(
            did=row["subjectDid"],
            author=row["creator"],
            recordUri=row["uri"],
            recordCid=row["cid"],
            reason="follow",
            reasonSubject=None,
            sortAt=row["sortAt"],
        )
    ]


def notifs_for_delete(deleted: Row, replaced_by: Optional[Row]) -> tuple[list[Notif], list[str]]:
    return [], ([] if replaced_by else [deleted["uri"]])


def aggregates(row: Row, sign: int) -> list[AggDelta]:
    return [
        AggDelta("profile_agg", row["subjectDid"], "followersCount", sign),
        AggDelta("profile_agg", row["creator"], "followsCount", sign),
    ]


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    notifs_for_insert=notifs_for_insert,
    notifs_for_delete=notifs_for_delete,
    aggregates=aggregates,
)
