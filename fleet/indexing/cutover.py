"""Backfill/firehose cutover: a backfilled copy and the firehose's events of one record meet.

A backfill writes each record with the repo's rev at fetch time (newer than, or equal to, the
rev of the commit that wrote that version) and ``record.seq`` 0: it existed before every live
event (``order.event_seq``). The firehose carries the same record's history with real seqs and
older-or-equal revs. The end state must be the firehose-only one, whichever arrives first:

1. **Content never goes back** (``processor.decide``): an event older than the stored record
   does not change the record's content, and one older than its tombstone does not resurrect it.
2. **Anchor.** A firehose create/update with the *stored cid* and a rev not newer than the
   stored one is the write of the stored version: the record takes that event's seq
   (``record.seq``, only ever raised), so every seq-dependent rule reads it as the firehose
   does. The record and what depends on it are then evaluated again as of the new seq
   (``order.reevaluate_all``): a post's own flags and notifications (a reply backfilled before
   its firehose-written parent stops being ``invalidReplyRoot``), its replies and thread, a
   gate's governed posts, a repost's feed item (purge rule 4 of ``order.py``), a follow's or
   list item's gated replies (rule 6).
3. **Older versions.** A firehose create/update of a post or gate with *another* cid and an
   older rev, for a record still at seq 0, is a version the backfill skipped: it goes to
   ``fleet_record_history`` as ``[seq, 0)`` — "ended by the backfilled version, seq not known
   yet", visible to nothing — and the next older version or the anchor closes it at its own seq.
   A version the backfill replaced (``processor.update_record`` with seq 0) is kept the same way.
4. **Before the window.** An *update* that anchors a record whose earlier version never came
   through the firehose (its create predates the stream) keeps that earlier version's place
   with the only copy there is: ``[0, seq)`` with the backfilled content, so records written
   before the window keep reading a version there.

A replay of an already applied event takes the same path and changes nothing (one
conditional UPDATE that matches no row). On the bulk path, 'anchor' and 'older' verdicts are not
bulk actions, so those events (cutover events and replays) go through the per-event path.

5. **Duplicates.** Which member of a duplicate group (an account's same-subject likes, reposts,
   follows, blocks, list items, list blocks, verifications) is the original is decided as
   firehose order decides it (``duplicates.py``): a backfilled member counts as created after
   the events applied so far until its anchor gives it its place (rule 3 there), a firehose
   create made before a backfilled holder takes the row, and a delete promotes only a
   duplicate that existed at it.
6. **Notifications of an updated record** (other than posts and gates, whose versions rule 3
   keeps): the official update of a like, repost or follow keeps the notifications of the
   version that was first inserted and adds none. So when the firehose's create of an earlier
   version reaches a backfilled record still at seq 0, the record's notifications become those
   that create writes (``_first_version_notifs``); when that version would have been a
   duplicate, the later version's stay. When the stored version is then anchored by a
   *create* (the earlier version was deleted and the record created again under its rkey),
   its notifications become that create's, as the official delete and create leave them.
   (Not reproduced: notifications the official writes on the update itself, e.g. a
   verification's ``unverified``, and an intermediate version that was the first to get a row.)
"""

from __future__ import annotations

from typing import Any, Optional

import psycopg

from . import duplicates, order
from ..codec.atjson import dumps
from ..db.savepoint import savepoint
from .plugin import InvalidRecord, Plugin, RecordOp

FOLLOW = "app.bsky.graph.follow"
LIST_ITEM = "app.bsky.graph.listitem"
OPEN = 0  # seq_to of a history version ended by a backfilled version (seq not known yet)


def wants_anchor(ev: dict[str, Any], cid: Optional[str]) -> Optional[str]:
    """For a create/update the rev guard refuses (not newer than the stored record): 'anchor'
    when it carries the stored cid, 'older' for another version of a post or gate or the
    create of another version of any other record, else None (a plain skip). Only firehose
    events (a real seq) anchor."""
    if ev.get("type") not in ("create", "update") or (order.event_seq(ev.get("seq")) or 0) <= 0:
        return None
    if ev.get("cid") == cid:
        return "anchor"
    if ev.get("collection") in order.HISTORY_COLLECTIONS or ev.get("type") == "create":
        return "older"
    return None


async def anchor(tx: Any, plugin: Plugin, ev: dict[str, Any], fx: Any) -> bool:
    """Rule 2 (and 4): give the stored version of ``ev``'s uri the event's seq; False when it
    already had it or a later one (a replay)."""
    uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
    seq = ev["seq"]
    cur = await tx.execute(
        "WITH old AS (SELECT uri, seq FROM record WHERE uri = %s AND cid = %s AND seq < %s FOR UPDATE) "
        "UPDATE record r SET seq = %s FROM old WHERE r.uri = old.uri RETURNING old.seq",
        (uri, ev["cid"], seq, seq),
    )
    row = await cur.fetchone()
    if row is None:
        return False
    old_seq = row[0]
    versions: list[tuple[str, Optional[int]]] = []
    if ev["collection"] in order.HISTORY_COLLECTIONS:
        closed = await _close_open_versions(tx, uri, seq)
        if not closed and old_seq == 0 and ev["type"] == "update":
            await tx.execute(  # rule 4: the version before the window, as far as it is known
                'INSERT INTO fleet_record_history (uri, seq_from, seq_to, json, "invalidReplyRoot", "replyParent") '
                'SELECT r.uri, 0, %s, r.json, p."invalidReplyRoot", p."replyParent" FROM record r '
                "LEFT JOIN post p ON p.uri = r.uri WHERE r.uri = %s ON CONFLICT DO NOTHING",
                (seq, uri),
            )
        versions = [(uri, s) for s in closed]
    await duplicates.anchored(tx, plugin, uri, ev, fx)  # rule 5: which member is the original
    if old_seq == 0 and ev["type"] == "create" and ev["collection"] not in order.HISTORY_COLLECTIONS:
        if await _notified_as_other_version(tx, uri, ev["cid"], fx):
            await _first_version_notifs(tx, plugin, uri, ev, fx)  # rule 6: created again
    await reevaluate_anchored(tx, ev["collection"], uri, old_seq, seq, fx, versions)
    return True


async def _notified_as_other_version(tx: Any, uri: str, cid: str, fx: Any) -> bool:
    """Do the record's notifications (written, or queued by this batch) name another version?
    Rule 6 gave them to an earlier version's create; the create of the stored version anchoring
    it now means that version was deleted and the record created again."""
    queued = [n for n in fx.notifs.pending if n.recordUri == uri]
    if queued:
        return any(n.recordCid != cid for n in queued)
    if uri in fx.notifs.deleted:
        return False
    cur = await tx.execute('SELECT 1 FROM notification WHERE "recordUri" = %s AND "recordCid" IS DISTINCT FROM %s LIMIT 1', (uri, cid))
    return await cur.fetchone() is not None


async def older_version(tx: Any, plugin: Plugin, ev: dict[str, Any], fx: Any) -> bool:
    """Rule 3: keep a skipped older version of a backfilled post or gate as ``[seq, OPEN)``,
    closing the previous one at this seq (rule 6 for other records); False when the stored
    record is not backfilled (a replay of an old event: nothing to keep)."""
    uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
    seq = ev["seq"]
    cur = await tx.execute("SELECT seq FROM record WHERE uri = %s", (uri,))
    row = await cur.fetchone()
    if row is None or row[0] != 0:
        return False
    if ev["collection"] not in order.HISTORY_COLLECTIONS:
        return await _first_version_notifs(tx, plugin, uri, ev, fx)
    await _close_open_versions(tx, uri, seq)
    rec = ev.get("record")
    reply = rec.get("reply") if isinstance(rec, dict) and isinstance(rec.get("reply"), dict) else {}
    parent = (reply.get("parent") or {}).get("uri") if isinstance(reply.get("parent"), dict) else None
    await tx.execute(
        'INSERT INTO fleet_record_history (uri, seq_from, seq_to, json, "invalidReplyRoot", "replyParent") '
        "VALUES (%s, %s, %s, %s, false, %s) ON CONFLICT (uri, seq_to) DO NOTHING",
        (uri, seq, OPEN, dumps(rec), parent if isinstance(parent, str) else None),
    )
    return True


async def _first_version_notifs(tx: Any, plugin: Plugin, uri: str, ev: dict[str, Any], fx: Any) -> bool:
    """Rule 6: the firehose's create of an earlier version of a backfilled record. The official
    update keeps a like's, repost's or follow's notifications (``notifs_for_delete`` with a
    replacement deletes and adds none), so the record's notifications are those of the first
    version that got a row: this one, when its insert would have written one. Its row is
    computed by the plugin's own insert inside a savepoint that is rolled back (the stored
    version's row removed first: same uri); its aggregate rows are written with a delta of 0
    (the official recounts created them); nothing else changes."""
    rec = ev.get("record")
    if not isinstance(rec, dict):
        return False
    try:
        plugin.validate(rec)
    except InvalidRecord:
        return False  # never indexed: the version that got a row is a later one
    did, coll, rkey = ev["did"], ev["collection"], ev["rkey"]
    if not isinstance(ev.get("time"), str):
        return False
    op = RecordOp(uri, did, coll, rkey, ev["cid"], rec, dumps(rec), ev["time"], ev.get("rev"), ev["seq"])
    inserted = None
    try:
        async with savepoint(tx, "fleet_cutover"):  # always rolled back
            await plugin.delete(tx, uri)
            inserted = await plugin.insert(tx, op)
            raise psycopg.Rollback()
    except InvalidRecord:
        return False
    if inserted is None:  # it would have been a duplicate: a later version got the row
        return False
    fx.notifs.delete_for([uri])
    fx.notifs.add(order.stamp(plugin.notifs_for_insert(inserted), op.seq))
    # its counts came and went (its update moved them): the official recount left their rows
    fx.aggs.extend(plugin.aggregates(inserted, 1) + plugin.aggregates(inserted, -1))
    return True


async def _close_open_versions(tx: Any, uri: str, seq: int) -> list[Optional[int]]:
    """End the version of ``uri`` left open by a backfill at ``seq``; returns its seq_from."""
    cur = await tx.execute(
        "UPDATE fleet_record_history SET seq_to = %s WHERE uri = %s AND seq_to = %s AND coalesce(seq_from, 0) <= %s "
        "RETURNING seq_from",
        (seq, uri, OPEN, seq),
    )
    return [r[0] for r in await cur.fetchall()]


async def reevaluate_anchored(
    tx: Any, collection: str, uri: str, old_seq: int, seq: int, fx: Any, versions: list[tuple[str, Optional[int]]]
) -> None:
    """Everything whose evaluation read ``uri`` as written at ``old_seq`` is evaluated again."""
    if collection == order.POST:
        deps = [uri] + await order.later_descendants(tx, uri, old_seq) + await order._later_thread(tx, uri, old_seq)
        versions = versions + await order.history_children(tx, uri, old_seq)
        await order.reevaluate_all(tx, deps, fx, versions)
    elif collection in (order.THREADGATE, order.POSTGATE):
        did, rkey = uri[5:].split("/")[0], uri.rsplit("/", 1)[1]
        post_uri = f"at://{did}/{order.POST}/{rkey}"
        await order.reevaluate_all(tx, await order._gate_dependents(tx, collection, post_uri, old_seq), fx)
    elif collection == order.REPOST:
        await _repost_feed_item(tx, uri, seq)
    elif collection == FOLLOW:
        cur = await tx.execute('SELECT creator, "subjectDid" FROM follow WHERE uri = %s', (uri,))
        row = await cur.fetchone()
        if row is not None:
            fx.graph_anchors.append((row[0], row[1], None, order.later_than(old_seq)))
    elif collection == LIST_ITEM:
        cur = await tx.execute('SELECT creator, "subjectDid", "listUri" FROM list_item WHERE uri = %s', (uri,))
        row = await cur.fetchone()
        if row is not None:
            fx.graph_anchors.append((row[0], row[1], row[2], order.later_than(old_seq)))


async def _repost_feed_item(tx: Any, uri: str, seq: int) -> None:
    """Purge rule 4 as of the repost's real seq: its feed item exists unless its subject was
    deleted or updated after it."""
    cur = await tx.execute('SELECT subject, "createdAt", "indexedAt", cid, creator FROM repost WHERE uri = %s', (uri,))
    row = await cur.fetchone()
    if row is None:
        return
    subject, created, indexed, cid, creator = row
    if await order.purged_after(tx, subject, seq):
        await tx.execute("DELETE FROM feed_item WHERE uri = %s", (uri,))
        return
    await tx.execute(
        'INSERT INTO feed_item (type, uri, cid, "postUri", "originatorDid", "sortAt") '
        "VALUES ('repost', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (uri, cid, subject, creator, indexed if indexed < created else created),
    )
