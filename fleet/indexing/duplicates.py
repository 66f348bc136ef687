"""Duplicate arbitration at the backfill/firehose cutover: which member of a group is the original.

The official indexer keeps one row per *duplicate key* (an account's like or repost of one
subject, its follow or block of one account, a list's item for one account, a list block, a
verification) in the collection table: the first create. A later create of the same key goes to
``duplicate_record`` (``duplicateOf`` = the row's uri, no notification), and deleting the row
promotes the oldest duplicate (``processor.delete_record``). Firehose-only processing therefore
makes the member created first the original.

A backfilled record (``record.seq`` 0) has no place in that order until the firehose's create of
it anchors it (``cutover.anchor``): its create may still come (it is a later member, as in a
firehose *and* backfill run, where the backfill holds records the firehose creates later) or
predate the stream (an earlier one). Its rev tells which is possible: a backfill writes the
repo's rev at fetch time, so a *tentative* member (seq 0) whose rev is below an event's rev
existed before that event; with a rev at or above it (``may_come``), its create may be that
event's commit or a later one, and it counts as created after every event applied so far. A
*settled* member (a real seq, or none at all) is where the firehose put it.

Rules (each keeps the group as firehose-only processing of the events applied so far, followed
by the creates of the tentative members that may still come, would leave it):

1. A firehose create whose key is held by a tentative member that may still come takes the row
   (``install``): it was created first.
2. A backfilled create whose key is held by a settled member written after it existed (its rev
   below the holder's) takes the row: it predates the stream.
3. Anchor (``anchored``): a member anchored at seq ``s`` that is a duplicate of a tentative
   holder that may still come takes the row; otherwise it is a duplicate of the current holder,
   as its create at ``s`` would make it (``duplicateOf`` and ``indexedAt``, the event's time,
   written again: a promotion had perhaps moved the row since it was written).
4. Delete (firehose) of a row with duplicates (``promotion_candidate``): the official promotion
   chooses among the duplicates that existed at the delete (settled ones, and tentative ones
   whose rev is below the delete's; these first: they predate the stream), oldest ``indexedAt``
   first. When only tentative ones that may still come remain, the delete is one without
   duplicates (its notifications go) and the first of them takes the row as a create would.

Taking the row (``install``): the old holder leaves the collection table (aggregates -1, its
notifications deleted; a repost keeps its ``feed_item``, as a duplicate repost has one) and
becomes a duplicate of the new one, as do the old holder's duplicates; the new one is inserted
as its plugin inserts a create (aggregates +1, its notifications stamped with its seq, a
repost's purge rule, ``order.after_insert``). Counts are unchanged; notifications are neither
doubled nor lost.

In firehose-only processing no member is tentative, so none of this changes the official
behaviour; in a backfill-only run every member is tentative and no event has a seq, likewise.

Cost: only where a key is contested. A create that finds its key held costs one primary-key
read of the holder's record (the bulk path reads it in the duplicate query it already runs);
an anchor of a duplicate-capable record one ``find_duplicate``; taking the row a fixed number
of statements plus the holder's duplicates (``duplicate_record_duplicate_of_idx``).
"""

from __future__ import annotations

from typing import Any, Optional

from . import order
from ..codec.atjson import loads
from .plugin import InvalidRecord, Plugin, RecordOp
from .plugins._db import one

# the collections whose plugins keep one row per duplicate key and promote on delete
DUP_COLLECTIONS = frozenset((
    "app.bsky.feed.like", "app.bsky.feed.repost", "app.bsky.graph.follow", "app.bsky.graph.block",
    "app.bsky.graph.listitem", "app.bsky.graph.listblock", "app.bsky.graph.verification",
))  # fmt: skip


def arbitrated(plugin: Plugin) -> bool:
    return plugin.collection in DUP_COLLECTIONS and plugin.find_duplicate is not None and plugin.promote_duplicate_on_delete


def may_come(seq: Optional[int], rev: Optional[str], at_rev: Optional[str]) -> bool:
    """Is a member written at ``seq`` with ``rev`` perhaps created only by the event of rev
    ``at_rev`` or a later one? Only a tentative (backfilled, not anchored) member can be."""
    return seq == 0 and isinstance(rev, str) and isinstance(at_rev, str) and rev >= at_rev


def contested(seq: Optional[int], rev: Optional[str], h_seq: Optional[int], h_rev: Optional[str]) -> bool:
    """Rules 1 and 2: does a create written at (``seq``, ``rev``) that found its key held by a
    member at (``h_seq``, ``h_rev``) come before it?"""
    if seq is None or h_seq is None:
        return False
    if seq > 0:  # rule 1: a firehose create, the holder's create still to come
        return may_come(h_seq, h_rev, rev)
    # rule 2: a backfilled create that existed before the settled holder was written
    return h_seq > 0 and isinstance(rev, str) and isinstance(h_rev, str) and rev < h_rev


async def _record(tx: Any, uri: str) -> Optional[dict[str, Any]]:
    return await one(tx, 'SELECT uri, cid, did, json, "indexedAt", rev, seq FROM record WHERE uri = %s', (uri,))


def _op(rec: dict[str, Any]) -> RecordOp:
    parts = rec["uri"][5:].split("/", 2)
    return RecordOp(
        rec["uri"], rec["did"], parts[1], parts[2], rec["cid"], loads(rec["json"]), rec["json"], rec["indexedAt"],
        rec["rev"], rec["seq"],
    )


async def after_duplicate(tx: Any, plugin: Plugin, op: RecordOp, fx: Any, holder: Optional[str] = None) -> bool:
    """Rules 1 and 2, after ``op`` was written as a duplicate of ``holder``: True when it took
    the row. Without ``holder`` it is looked up (the bulk path calls this after a chunk's
    creates, when an earlier create of the chunk may have taken the row already)."""
    if not arbitrated(plugin) or op.seq is None:
        return False
    if holder is None:
        holder = await plugin.find_duplicate(tx, op)
    if holder is None or holder == op.uri:
        return False
    h = await _record(tx, holder)
    if h is None or not contested(op.seq, op.rev, h["seq"], h["rev"]):
        return False
    return await install(tx, plugin, op.uri, fx, holder=holder)


async def anchored(tx: Any, plugin: Plugin, uri: str, ev: dict[str, Any], fx: Any) -> None:
    """Rule 3: ``uri`` was just anchored at ``ev``'s seq."""
    if not arbitrated(plugin):
        return
    rec = await _record(tx, uri)
    if rec is None:
        return
    op = _op(rec)
    holder = await plugin.find_duplicate(tx, op)
    if holder is None or holder == uri:
        return
    h = await _record(tx, holder)
    if h is not None and may_come(h["seq"], h["rev"], ev.get("rev")):
        await install(tx, plugin, uri, fx, holder=holder)
        return
    at = ev.get("time") if isinstance(ev.get("time"), str) else rec["indexedAt"]
    await tx.execute(
        'INSERT INTO duplicate_record (uri, cid, "duplicateOf", "indexedAt") VALUES (%s, %s, %s, %s) '
        'ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, "duplicateOf" = excluded."duplicateOf", '
        '"indexedAt" = excluded."indexedAt"',
        (uri, rec["cid"], holder, at),
    )


# Rule 4: the duplicate a delete at (seq, rev) promotes, best first. ``later``: a tentative one
# whose create may still come (not promotable: it takes the row as a create instead).
PROMOTION_SQL = (
    'SELECT r.uri, r.cid, r.did, r.json, r."indexedAt", r.rev, r.seq, '
    "coalesce(%(seq)s::bigint > 0 AND r.seq = 0 AND r.rev >= %(rev)s::varchar, false) AS later "
    'FROM duplicate_record d JOIN record r ON r.uri = d.uri WHERE d."duplicateOf" = %(uri)s '
    'ORDER BY later, coalesce(r.seq = 0, false) DESC, d."indexedAt" ASC, d.uri LIMIT 1'
)


async def promotion_candidate(tx: Any, uri: str, seq: Optional[int], rev: Optional[str]) -> Optional[dict[str, Any]]:
    """The duplicate of ``uri`` that its delete at (``seq``, ``rev``) promotes (``later`` False),
    or the first one whose create may still come (``later`` True), or None."""
    return await one(tx, PROMOTION_SQL, {"uri": uri, "seq": seq, "rev": rev})


async def install(tx: Any, plugin: Plugin, uri: str, fx: Any, holder: Optional[str] = None, dups_of: Optional[str] = None) -> bool:
    """``uri`` (a member of its key's group, in ``duplicate_record`` or nowhere) takes the key's
    row as a create would, from ``holder`` (None: the row is free). The duplicates of
    ``holder`` (or of ``dups_of``) become its duplicates. False when it cannot (no record, a
    record its lexicon rejects, a holder without a row)."""
    rec = await _record(tx, uri)
    if rec is None:
        return False
    op = _op(rec)
    try:
        plugin.validate(op.record)
    except InvalidRecord:
        return False
    if holder is not None:
        demoted = await (plugin.demote or plugin.delete)(tx, holder)
        if demoted is None:
            return False
        fx.aggs.extend(plugin.aggregates(demoted, -1))
        fx.notifs.delete_for([holder])
    await tx.execute("DELETE FROM duplicate_record WHERE uri = %s", (uri,))
    inserted = await plugin.insert(tx, op)
    if inserted is None:
        raise RuntimeError(f"duplicate arbitration: {uri} could not take its key's row")
    fx.aggs.extend(plugin.aggregates(inserted, 1))
    fx.notifs.add(order.stamp(plugin.notifs_for_insert(inserted), op.seq))
    await order.after_insert(tx, plugin.collection, inserted, op, fx)
    source = holder or dups_of
    if source is not None:
        await tx.execute('UPDATE duplicate_record SET "duplicateOf" = %s WHERE "duplicateOf" = %s', (uri, source))
    if holder is not None:
        h = await _record(tx, holder)
        if h is not None:
            await tx.execute(
                'INSERT INTO duplicate_record (uri, cid, "duplicateOf", "indexedAt") VALUES (%s, %s, %s, %s) '
                'ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, "duplicateOf" = excluded."duplicateOf", '
                '"indexedAt" = excluded."indexedAt"',
                (holder, h["cid"], uri, h["indexedAt"]),
            )
    return True
