"""Profile creates and updates in the bulk fast path (``plugins/profile.py`` through the processor).

A profile is one row per account (rkey ``self``) read by no other indexing rule, so a run's
profile writes are independent of every other event of the run; only their own uri orders
them, and a uri occurs once per run (``bulk.simple``). Per action, as ``processor`` does it:

* create: the record row (written by the caller with the run's other records), then the
  ``profile`` row; its ``starterpack-joined`` notification when inserted;
* update: ``UPDATE record``, drop its ``duplicate_record`` row, delete the ``profile`` row and
  insert the new one; when there was no old row, the processor's ``insert_record`` fallback:
  ``INSERT record ... ON CONFLICT DO NOTHING`` and notifications (none otherwise: the plugin
  has no ``notifs_for_delete``).

A profile has no aggregates and no history (``order.HISTORY_COLLECTIONS``).
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from . import order
from .plugin import RecordOp
from .plugins import profile as profilemod
from .plugins._helpers import blob_cid

NSID = profilemod.COLLECTION
COLUMNS = ("uri", "cid", "creator", '"displayName"', "description", '"avatarCid"', '"bannerCid"',
           '"joinedViaStarterPackUri"', '"createdAt"', '"indexedAt"')  # fmt: skip


def _row(op: RecordOp) -> tuple[Any, ...]:
    rec = op.record
    joined = rec.get("joinedViaStarterPack")
    created = rec.get("createdAt")
    return (
        op.uri, op.cid, op.did, rec.get("displayName"), rec.get("description"), blob_cid(rec.get("avatar")),
        blob_cid(rec.get("banner")), joined.get("uri") if isinstance(joined, dict) else None,
        created if created is not None else op.indexed_at, op.indexed_at,
    )  # fmt: skip


async def write(tx: Any, creates: list[RecordOp], updates: list[RecordOp], fx: Any) -> None:
    """``creates`` have their record rows already; ``updates`` replace stored versions."""
    replaced: set[str] = set()
    if updates:
        await tx.execute(
            'UPDATE record r SET cid = u.cid, json = u.json, "indexedAt" = u.indexed, rev = u.rev, seq = u.seq '
            "FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::bigint[]) "
            "AS u(uri, cid, json, indexed, rev, seq) WHERE r.uri = u.uri",
            (
                [o.uri for o in updates], [o.cid for o in updates], [o.json for o in updates],
                [o.indexed_at for o in updates], [o.rev for o in updates], [o.seq for o in updates],
            ),
        )  # fmt: skip
        uris = [o.uri for o in updates]
        cur = await tx.execute(
            "WITH d AS (DELETE FROM duplicate_record WHERE uri = ANY(%s)) DELETE FROM profile WHERE uri = ANY(%s) RETURNING uri",
            (uris, uris),
        )
        replaced = {r[0] for r in await cur.fetchall()}
        fresh = [o for o in updates if o.uri not in replaced]  # the processor's insert_record fallback
        if fresh:
            await tx.execute(
                'INSERT INTO record (uri, cid, did, json, "indexedAt", rev, seq) SELECT * FROM unnest('
                "%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::bigint[]) "
                "ON CONFLICT DO NOTHING",
                (
                    [o.uri for o in fresh], [o.cid for o in fresh], [o.did for o in fresh], [o.json for o in fresh],
                    [o.indexed_at for o in fresh], [o.rev for o in fresh], [o.seq for o in fresh],
                ),
            )  # fmt: skip
    ops = [o for o in creates + updates if o.rkey == "self"]  # the plugin indexes no other rkey
    if not ops:
        return
    values = [list(c) for c in zip(*[_row(o) for o in ops])]
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"INSERT INTO profile ({', '.join(COLUMNS)}) SELECT * FROM unnest({', '.join(['%s::varchar[]'] * len(COLUMNS))}) "  # noqa: S608 (constants)
            "ON CONFLICT DO NOTHING RETURNING *",
            values,
        )
        rows = {r["uri"]: r for r in await cur.fetchall()}
    for o in ops:
        row = rows.get(o.uri)
        if o.uri in replaced:
            if row is None:
                raise RuntimeError(f"record update failed: {o.uri} removed from index but could not be replaced")
            continue  # an update of an indexed profile notifies nothing
        if row is not None:
            fx.notifs.add(order.stamp(profilemod.notifs_for_insert(row), o.seq))
