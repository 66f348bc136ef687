"""``app.bsky.graph.referencelistoptout`` -> ``reference_list_opt_out``, as the official plugin.

The subject must be exactly ``at://<did>/app.bsky.graph.list/<rkey>`` (no query, fragment or
trailing slash); otherwise only the generic ``record`` row is kept. Duplicates: one opt-out
per (creator, subjectUri); a deleted opt-out does not promote its duplicate.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ..plugin import Plugin, RecordOp, Row
from ._helpers import delete_row, find_uri, insert_row, normalize_datetime_always, validator

COLLECTION = "app.bsky.graph.referencelistoptout"

_SUBJECT = re.compile(r"^at://did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]/app\.bsky\.graph\.list/([A-Za-z0-9._:~-]{1,512})$")


def parse_subject(subject: Any) -> Optional[str]:
    """The subject list URI if it is a canonical list URI, else None."""
    if not isinstance(subject, str):
        return None
    m = _SUBJECT.match(subject)
    if not m or m.group(1) in (".", ".."):
        return None
    return subject


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    subject = parse_subject(op.record.get("subject"))
    if subject is None:
        return None
    return await insert_row(
        tx,
        "reference_list_opt_out",
        {
            "uri": op.uri,
            "cid": op.cid,
            "creator": op.did,
            "subjectUri": subject,
            "createdAt": normalize_datetime_always(op.record.get("createdAt")),
            "indexedAt": op.indexed_at,
        },
    )


async def delete(tx: Any, uri: str) -> Optional[Row]:
    return await delete_row(tx, "reference_list_opt_out", uri)


async def find_duplicate(tx: Any, op: RecordOp) -> Optional[str]:
    subject = parse_subject(op.record.get("subject"))
    if subject is None:
        return None
    return await find_uri(tx, "reference_list_opt_out", {"creator": op.did, "subjectUri": subject})


PLUGIN = Plugin(
    collection=COLLECTION,
    validate=validator(COLLECTION),
    insert=insert,
    delete=delete,
    find_duplicate=find_duplicate,
    promote_duplicate_on_delete=False,
)
