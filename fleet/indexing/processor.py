"""The generic record processor: one create/update/delete event through its plugin.

Mirrors the official ``RecordProcessor`` (``indexing/processor.js``) statement for statement,
with three additions:

* **Rev guard.** Every write carries the commit ``rev``. A create or update is applied only if
  it is newer than the stored ``record.rev`` and than the uri's tombstone; a delete only if the
  stored record is not newer, and it leaves a tombstone (``fleet_record_tombstone``). So a
  replayed event changes nothing and an older event (a late backfill) never overwrites or
  resurrects a newer state. A create for a stored uri with another cid and a newer rev is an
  update (a backfill seeing a newer version).
* **Deferred effects.** Aggregate deltas and notifications go to an ``Effects`` and are written
  once per batch (``aggregates.AggBuffer``, ``notifications.NotifBuffer``).
* **Order hooks.** Before a post or gate version is replaced or deleted it is kept in history
  (``order.save_version``); after a post, gate or repost is written or deleted, ``order``
  re-evaluates the dependents indexed out of firehose order; notifications carry the seq of
  their write so those to an account deleted later are dropped (see ``order.py``).

``record.indexedAt`` is the event's ``time``; ``record.seq`` its firehose seq, 0 for a backfilled
record (``order.event_seq``: it existed before every live event), NULL when the event has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import cutover, duplicates, order
from .aggregates import AggBuffer
from ..codec.atjson import dumps, loads
from .notifications import NotifBuffer
from .plugin import AggDelta, InvalidRecord, Plugin, RecordOp, Row


class WriteRejected(Exception):
    """A plugin refused a record (``InvalidRecord``) after the processor had started writing:
    the event's writes must be rolled back to its savepoint, then it counts as skipped."""

    def __init__(self, cause: InvalidRecord) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class Effects:
    """What one event (or one batch) defers to the end of the batch."""

    aggs: list[AggDelta] = field(default_factory=list)
    notifs: NotifBuffer = field(default_factory=NotifBuffer)
    graph_anchors: list[tuple[str, str, Optional[str], int]] = field(default_factory=list)  # cutover.py

    def merge(self, other: "Effects") -> None:
        self.aggs.extend(other.aggs)
        self.notifs.extend_from(other.notifs)
        self.graph_anchors.extend(other.graph_anchors)

    async def flush(self, tx: Any) -> None:
        await order.graph_changed(tx, self)  # late follows/list items re-evaluate gated replies
        buf = AggBuffer()
        buf.extend(self.aggs)
        self.aggs = []
        if self.notifs.pending:
            self.notifs.pending = await order.drop_notifs_to_deleted(tx, self.notifs.pending)
        await self.notifs.flush(tx)
        await buf.flush(tx)


@dataclass
class Guard:
    """What the database holds for one uri, kept current while a batch is applied."""

    exists: bool = False
    rev: Optional[str] = None
    cid: Optional[str] = None
    tomb_rev: Optional[str] = None


async def load_guards(tx: Any, uris: list[str]) -> dict[str, Guard]:
    """One query for the rev-guard state of every uri of a batch."""
    out = {u: Guard() for u in uris}
    if not uris:
        return out
    cur = await tx.execute(
        "SELECT u.uri, r.uri IS NOT NULL, r.rev, r.cid, t.rev FROM unnest(%s::varchar[]) AS u(uri) "
        "LEFT JOIN record r ON r.uri = u.uri LEFT JOIN fleet_record_tombstone t ON t.uri = u.uri",
        (uris,),
    )
    for uri, exists, rev, cid, trev in await cur.fetchall():
        out[uri] = Guard(exists, rev, cid, trev)
    return out


def _newer(a: Optional[str], b: Optional[str]) -> bool:
    """Is rev ``a`` strictly newer than ``b``? (None = unknown/oldest; TIDs sort as strings.)"""
    if a is None:
        return b is None
    return b is None or a > b


def decide(ev: dict[str, Any], g: Guard) -> str:
    """'create' | 'update' | 'delete' | 'skip' | 'bump' (same content, newer rev) | 'anchor'
    (a firehose event of the stored version, not newer: ``cutover.anchor``) | 'older' (a
    firehose event of an older version of a post or gate, or the create of an older version
    of another record: ``cutover.older_version``).

    'anchor' and 'older' may turn out to be replays (then nothing is written, 'skip' is
    returned by ``apply_record_event``); the bulk path sends them to the per-event path."""
    t = ev["type"]
    rev = ev.get("rev")
    if rev is None:  # no rev to compare: behave as the official indexer
        return t
    if t == "delete":
        if g.exists and g.rev is not None and g.rev > rev:
            return "skip"
        if not g.exists and g.tomb_rev is not None and g.tomb_rev >= rev:
            return "skip"
        return "delete"
    if g.tomb_rev is not None and g.tomb_rev >= rev:
        return "skip"
    if g.exists:
        if g.rev is not None and g.rev >= rev:
            return cutover.wants_anchor(ev, g.cid) or "skip"
        if t == "create":
            return "update" if g.cid != ev.get("cid") else "bump"
    return t


def make_op(ev: dict[str, Any]) -> RecordOp:
    did, coll, rkey = ev["did"], ev["collection"], ev["rkey"]
    rec = ev["record"]
    seq = ev.get("seq")
    return RecordOp(
        uri=f"at://{did}/{coll}/{rkey}",
        did=did,
        collection=coll,
        rkey=rkey,
        cid=ev["cid"],
        record=rec,
        json=dumps(rec),
        indexed_at=ev["time"],
        rev=ev.get("rev"),
        seq=order.event_seq(seq),
    )


async def apply_record_event(tx: Any, plugin: Plugin, ev: dict[str, Any], g: Guard, fx: Effects) -> str:
    """Apply one create/update/delete; returns what was done. Updates ``g`` in place.

    Raises InvalidRecord (before any write) for a record its lexicon rejects, WriteRejected
    when a plugin rejects it after writes began (the caller rolls back to a savepoint).
    """
    action = decide(ev, g)
    if action == "skip":
        return action
    if action == "anchor":
        return action if await cutover.anchor(tx, plugin, ev, fx) else "skip"
    if action == "older":
        return action if await cutover.older_version(tx, plugin, ev, fx) else "skip"
    uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
    if action == "delete":
        await delete_record(tx, plugin, uri, ev, fx)
        g.exists, g.cid = False, None
        if ev.get("rev") is not None:
            g.tomb_rev = ev["rev"] if g.tomb_rev is None else max(g.tomb_rev, ev["rev"])
        return action
    plugin.validate(ev["record"])
    op = make_op(ev)
    try:
        if action == "bump":
            await tx.execute("UPDATE record SET rev = %s WHERE uri = %s", (op.rev, op.uri))
        elif action == "create":
            await insert_record(tx, plugin, op, fx)
        else:
            await update_record(tx, plugin, op, fx)
    except InvalidRecord as e:  # e.g. a gate whose rkey does not match its post
        raise WriteRejected(e) from e
    g.exists, g.rev, g.cid = True, op.rev, op.cid
    return action


async def insert_record(tx: Any, plugin: Plugin, op: RecordOp, fx: Effects) -> None:
    await tx.execute(
        'INSERT INTO record (uri, cid, did, json, "indexedAt", rev, seq) VALUES (%s, %s, %s, %s, %s, %s, %s) '
        "ON CONFLICT DO NOTHING",
        (op.uri, op.cid, op.did, op.json, op.indexed_at, op.rev, op.seq),
    )
    inserted = await plugin.insert(tx, op)
    if inserted is not None:
        fx.aggs.extend(plugin.aggregates(inserted, 1))
        fx.notifs.add(order.stamp(plugin.notifs_for_insert(inserted), op.seq))
        await order.after_insert(tx, plugin.collection, inserted, op, fx)
        return
    if plugin.find_duplicate is None:
        return
    found = await plugin.find_duplicate(tx, op)
    if found and found != op.uri:
        await tx.execute(
            'INSERT INTO duplicate_record (uri, cid, "duplicateOf", "indexedAt") VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING',
            (op.uri, op.cid, found, op.indexed_at),
        )
        await duplicates.after_duplicate(tx, plugin, op, fx, found)  # the cutover: created before its holder?


async def update_record(tx: Any, plugin: Plugin, op: RecordOp, fx: Effects) -> None:
    """Purge the uri's index and re-insert it (the official strategy)."""
    await order.save_version(tx, op.uri, op.seq)
    await tx.execute(
        'UPDATE record SET cid = %s, json = %s, "indexedAt" = %s, rev = %s, seq = %s WHERE uri = %s',
        (op.cid, op.json, op.indexed_at, op.rev, op.seq, op.uri),
    )
    dupe = await plugin.find_duplicate(tx, op) if plugin.find_duplicate is not None else None
    if dupe:
        await tx.execute(
            'UPDATE duplicate_record SET cid = %s, "duplicateOf" = %s, "indexedAt" = %s WHERE uri = %s',
            (op.cid, dupe, op.indexed_at, op.uri),
        )
    else:
        await tx.execute("DELETE FROM duplicate_record WHERE uri = %s", (op.uri,))
    token = order.EVENT_SEQ.set(op.seq)
    try:
        deleted = await plugin.delete(tx, op.uri)
    finally:
        order.EVENT_SEQ.reset(token)
    if deleted is None:
        await insert_record(tx, plugin, op, fx)
        return
    fx.aggs.extend(plugin.aggregates(deleted, -1))
    inserted = await plugin.insert(tx, op)
    if inserted is None:
        raise RuntimeError(f"record update failed: {op.uri} removed from index but could not be replaced")
    fx.aggs.extend(plugin.aggregates(inserted, 1))
    _notifs(plugin, fx, deleted, inserted, op.seq)
    await order.after_insert(tx, plugin.collection, inserted, op, fx, updated=True)


async def delete_record(tx: Any, plugin: Plugin, uri: str, ev: dict[str, Any] | None, fx: Effects) -> None:
    rev = ev.get("rev") if ev else None
    seq = order.event_seq(ev.get("seq") if ev else None)
    await order.save_version(tx, uri, seq)
    if rev is not None:
        await tx.execute(
            "WITH a AS (DELETE FROM record WHERE uri = %s), b AS (DELETE FROM duplicate_record WHERE uri = %s) "
            'INSERT INTO fleet_record_tombstone (uri, did, rev, seq, "deletedAt") VALUES (%s, %s, %s, %s, %s) '
            "ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, seq = excluded.seq, \"deletedAt\" = excluded.\"deletedAt\" "
            "WHERE fleet_record_tombstone.rev < excluded.rev",
            (uri, uri, uri, ev["did"], rev, seq, ev.get("time") or ""),
        )
    else:
        await tx.execute(
            "WITH a AS (DELETE FROM record WHERE uri = %s) DELETE FROM duplicate_record WHERE uri = %s", (uri, uri)
        )
    token = order.EVENT_SEQ.set(seq)
    try:
        deleted = await plugin.delete(tx, uri)
    finally:
        order.EVENT_SEQ.reset(token)
    await order.after_delete(tx, plugin.collection, uri, deleted, seq, fx)
    if deleted is None:
        return
    fx.aggs.extend(plugin.aggregates(deleted, -1))
    if not plugin.promote_duplicate_on_delete:
        _notifs(plugin, fx, deleted, None)
        return
    # the oldest duplicate by indexedAt (the official order); at the cutover, of those that
    # existed at this delete (``duplicates`` rule 4)
    found = await duplicates.promotion_candidate(tx, uri, seq, rev)
    if found is None:
        _notifs(plugin, fx, deleted, None)
        return
    if found["later"] and duplicates.arbitrated(plugin):  # only backfilled ones whose creates are still to come
        _notifs(plugin, fx, deleted, None)
        await duplicates.install(tx, plugin, found["uri"], fx, dups_of=uri)
        return
    f_uri, f_cid, f_did, f_json, f_indexed, f_rev, f_seq = (
        found["uri"], found["cid"], found["did"], found["json"], found["indexedAt"], found["rev"], found["seq"]
    )
    record = loads(f_json)
    try:
        plugin.validate(record)
    except InvalidRecord:
        _notifs(plugin, fx, deleted, None)
        return
    _, _, rest = f_uri.partition("at://")
    parts = rest.split("/", 2)
    op = RecordOp(f_uri, f_did, parts[1], parts[2], f_cid, record, f_json, f_indexed, f_rev, f_seq)
    inserted = await plugin.insert(tx, op)
    if inserted is not None:
        fx.aggs.extend(plugin.aggregates(inserted, 1))
    _notifs(plugin, fx, deleted, inserted, f_seq)


def _notifs(plugin: Plugin, fx: Effects, deleted: Optional[Row], inserted: Optional[Row], seq: Optional[int] = None) -> None:
    if deleted is not None:
        notifs, to_delete = plugin.notifs_for_delete(deleted, inserted)
        fx.notifs.delete_for(to_delete)
        fx.notifs.add(order.stamp(notifs, seq))
    elif inserted is not None:
        fx.notifs.add(order.stamp(plugin.notifs_for_insert(inserted), seq))
