"""Cross-shard order: cross-account rules give the firehose-``seq``-order answer.

Shard k applies only its accounts' events, in order; between shards there is no order. The
corpora's expected databases are the answer of applying every event in ``seq`` order, so every
cross-account rule is evaluated *as of the event's own seq*, and whatever was evaluated too
early is evaluated again when the record it depends on is indexed late.

History (what "as of seq s" reads):

* ``record.seq`` — the seq of the write of the current version: 0 for a backfilled record
  (``event_seq``: it existed before every live event), NULL only for rows written without a
  seq (visible to everything).
* ``fleet_record_history`` (migration 0004) — every version of a post, thread gate or post gate
  that stopped being current at a known seq (deleted, updated, or its account deleted): its
  json, ``invalidReplyRoot`` and ``replyParent`` and the range ``seq_from <= s < seq_to``.
  Written by ``save_version`` before the processor replaces or deletes such a record; likes,
  follows and reposts (the bulk of the firehose) write no history.
* ``fleet_account_deletion`` — an account deletion's seq.

Rules:

1. **Visibility.** A record version is visible at seq ``s`` when ``seq_from <= s < seq_to``
   (``refs_as_of``); equal seq = an earlier op of the same commit. A post evaluating its reply
   (parent, root, thread gate), its quote (the quoted post's post gate), its reply
   notifications (the ancestor chain, ``ancestors_as_of``; the gate's hidden replies) sees
   exactly what existed at its own seq: a parent deleted before a late reply is indexed is still
   seen, one created after it in the firehose is not.
2. **Re-evaluation.** When a post, thread gate or post gate is created, updated or deleted at
   seq ``s``, the posts already indexed with a later seq (``later_than``: for a backfilled write,
   seq 0, the other backfilled records count as later too, since a backfill takes repos in
   listRepos order, not seq order) that depend on it are evaluated again
   as of their own seq (``reevaluate``): flags (``invalidReplyRoot``, ``violatesThreadGate``,
   ``violatesEmbeddingRules``, written as the official insert writes them), the parent's
   ``replyCount`` when ``violatesThreadGate`` flips, and the post's own notifications (mention,
   quote, reply: deleted and written again). Dependents: a post's descendants up to the
   notification depth (5) and, on update/delete, the replies of its thread; a thread gate's
   thread; a post gate's embedding posts. A post whose ``invalidReplyRoot`` changes
   re-evaluates its own later replies in turn (transitively).
3. **Descendants.** The official insert notifies ancestors of replies found *below* a post
   (out-of-order arrival). Only descendants that existed at the post's seq count here; later
   ones are re-evaluated (rule 2), so nothing is notified twice.
4. **Purges.** Deleting (or updating) a post deletes the quotes *of* it and the feed items of
   reposts of it — only those written before the purge's seq; a quote or repost written after
   it keeps its row even when indexed first, and one written before it but indexed after the
   purge does not get one (``purged_after``).
5. **Account deletion** (``account_deleted``, called by ``unindex`` with the event's seq): the
   account's posts and gates go to history (ending at its seq) before they are removed, and
   their later dependents are re-evaluated. Notifications to the account are deleted only for
   records written before its deletion; one written before it but indexed after it is dropped
   at flush (``drop_notifs_to_deleted``).
6. **Graph rules of thread gates** (follower / following / list): a follow or list item counts
   when a version of it was current at the reply's seq (``graph_rules_allow``): the current
   row written at or before it, or a deleted one (``fleet_graph_history``, migration 0005,
   kept by a trigger on ``record`` whichever path deletes it) written at or before it and
   deleted after it (its tombstone's seq, or its account deletion's).
7. **Counts** are order-free: deltas of real row changes commute.
8. **Late graph writes** (``graph_changed``): a follow or list item created or removed at seq
   ``s`` (noted per transaction in ``fleet_graph_change`` by triggers on ``follow`` and
   ``list_item``, so the bulk path is covered too) re-evaluates, at the end of its batch, the
   replies written after ``s`` that a gate rule may judge by it: for a follow A -> B, replies
   by B in A's gated threads (following) and by A in B's (follower), gates current or
   deleted; for a list item of list L, replies by its subject whose thread gate (current or
   deleted) names L.

A deleted reply's history version is re-evaluated too (``reevaluate_version``: its
``invalidReplyRoot``, which later replies to it read) when its parent arrives late or changes.

Known limits (not handled): the search for later dependents of a late post walks current
posts, and deleted versions only one level below it; notifications of a post that the
official writes from a *later* ancestor's insert (a reply written before its parent in the
firehose) are rewritten from the post's own seq if the post is re-evaluated; a thread mute
read at flush time is the current one.

Cost on the common path: likes, follows and reposts run no extra query except one primary-key
lookup per repost or quote (``purged_after``) and one per batch with notifications
(``drop_notifs_to_deleted``); a follow or list item also costs a trigger row in
``fleet_graph_change`` and, per batch that has any, one query for the changes' seqs and one
per kind for the gated replies (a follow: the gated threads of its two accounts; a list item:
its subject's replies, the one search that grows with an account's posts); a post runs its history-aware lookups (as many queries as before)
plus one query for its later descendants.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from .plugin import AggDelta, RecordOp, Row

THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"
POST = "app.bsky.feed.post"
REPOST = "app.bsky.feed.repost"
HISTORY_COLLECTIONS = frozenset((POST, THREADGATE, POSTGATE))
NOTIF_DEPTH = 5

# Seq of the delete or update being applied: ``Plugin.delete(tx, uri)`` has no seq parameter.
EVENT_SEQ: ContextVar[Optional[int]] = ContextVar("rsky_order_event_seq", default=None)


def event_seq(seq: Any) -> Optional[int]:
    """The seq a write is ordered by: the firehose seq; 0 for a backfilled record (``seq`` =
    ``SEQ_BACKFILL``): it existed before every live event; None when the event carries none."""
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return seq if seq > 0 else 0


def later_than(seq: int) -> int:
    """Dependents of a write at ``seq`` that may have been evaluated too early are those with a
    record seq above this bound: later live writes, and for a backfilled write (seq 0) also the
    other backfilled records (backfill has no order of its own: a reply may come first)."""
    return -1 if seq == 0 else seq


def visible(ref_seq: Optional[int], seq: Optional[int]) -> bool:
    """Did a record written at ``ref_seq`` exist when the event at ``seq`` happened?

    Equal seqs are ops of one commit, applied in op order: the earlier op is visible.
    """
    return ref_seq is None or seq is None or ref_seq <= seq


def now_iso() -> str:
    dt = datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def collection_of(uri: str) -> str:
    parts = uri[5:].split("/") if uri.startswith("at://") else []
    return parts[1] if len(parts) > 1 else ""


async def _rows(tx: Any, query: str, params: Any) -> list[dict[str, Any]]:
    from .plugins._db import all_rows

    return await all_rows(tx, query, params)


# ---------------------------------------------------------------- history


async def save_version(tx: Any, uri: str, seq_to: Optional[int]) -> None:
    """Keep the current version of ``uri`` (a post or gate) before it is replaced or deleted."""
    if seq_to is None or collection_of(uri) not in HISTORY_COLLECTIONS:
        return
    await tx.execute(
        'INSERT INTO fleet_record_history (uri, seq_from, seq_to, json, "invalidReplyRoot", "replyParent") '
        'SELECT r.uri, r.seq, %s, r.json, p."invalidReplyRoot", p."replyParent" FROM record r '
        "LEFT JOIN post p ON p.uri = r.uri WHERE r.uri = %s ON CONFLICT DO NOTHING",
        (seq_to, uri),
    )


async def refs_as_of(tx: Any, uris: list[str], seq: Optional[int]) -> dict[str, dict[str, Any]]:
    """The version of each uri current at ``seq``: ``{uri: {"json", "invalidReplyRoot"}}``."""
    if not uris:
        return {}
    rows = await _rows(
        tx,
        'SELECT r.uri, r.json, p."invalidReplyRoot" FROM record r LEFT JOIN post p ON p.uri = r.uri '
        "WHERE r.uri = ANY(%(u)s) AND (%(s)s::bigint IS NULL OR r.seq IS NULL OR r.seq <= %(s)s) "
        'UNION ALL SELECT h.uri, h.json, h."invalidReplyRoot" FROM fleet_record_history h '
        "WHERE h.uri = ANY(%(u)s) AND %(s)s::bigint IS NOT NULL AND coalesce(h.seq_from, 0) <= %(s)s AND h.seq_to > %(s)s",
        {"u": uris, "s": seq},
    )
    return {r["uri"]: r for r in rows}


async def ancestors_as_of(tx: Any, uri: str, parent: Optional[str], seq: Optional[int]) -> list[dict[str, Any]]:
    """The official ancestor walk (self at height 0, up to ``NOTIF_DEPTH``) over the versions
    current at ``seq``."""
    return await _rows(
        tx,
        'WITH RECURSIVE anc(uri, "ancestorUri", height) AS ('
        " SELECT %(uri)s::varchar, %(parent)s::varchar, 0"
        ' UNION ALL SELECT a."ancestorUri", x.parent, a.height + 1 FROM anc a CROSS JOIN LATERAL ('
        '  (SELECT p."replyParent" AS parent FROM post p JOIN record r ON r.uri = p.uri WHERE p.uri = a."ancestorUri"'
        "   AND (%(s)s::bigint IS NULL OR r.seq IS NULL OR r.seq <= %(s)s)"
        '   UNION ALL SELECT h."replyParent" FROM fleet_record_history h WHERE h.uri = a."ancestorUri"'
        "   AND %(s)s::bigint IS NOT NULL AND coalesce(h.seq_from, 0) <= %(s)s AND h.seq_to > %(s)s) LIMIT 1) x"
        ' WHERE a."ancestorUri" IS NOT NULL AND a.height < %(depth)s) SELECT * FROM anc',
        {"uri": uri, "parent": parent, "s": seq, "depth": NOTIF_DEPTH},
    )


async def purged_after(tx: Any, uri: str, seq: Optional[int]) -> bool:
    """Was post ``uri`` deleted or updated after ``seq``? (Its quotes and reposts' feed items
    written at ``seq`` were then purged in firehose order.)"""
    if seq is None or not isinstance(uri, str):
        return False
    cur = await tx.execute(
        "SELECT EXISTS (SELECT 1 FROM fleet_record_history h WHERE h.uri = %s AND h.seq_to > %s AND NOT EXISTS "
        "(SELECT 1 FROM fleet_account_deletion a WHERE a.did = %s AND a.seq = h.seq_to)) "  # an account deletion purges nothing
        "OR EXISTS (SELECT 1 FROM fleet_record_tombstone WHERE uri = %s AND seq > %s)",
        (uri, seq, uri[5:].split("/", 1)[0], uri, seq),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


# ---------------------------------------------------------------- re-evaluation


async def after_insert(tx: Any, collection: str, row: Row, op: RecordOp, fx: Any, updated: bool = False) -> None:
    """Re-evaluate what depends on a record just written at ``op.seq`` (rules 2 and 4)."""
    if op.seq is None:
        return
    if collection == REPOST:
        if await purged_after(tx, row.get("subject"), op.seq):
            await tx.execute("DELETE FROM feed_item WHERE uri = %s", (op.uri,))
        return
    if collection not in HISTORY_COLLECTIONS:
        return
    versions: list[tuple[str, Optional[int]]] = []
    if collection == POST:
        uris = [d["uri"] for d in row.get("late_descendents") or []]
        versions = await history_children(tx, op.uri, op.seq)
        if updated:
            uris += await _later_thread(tx, op.uri, op.seq)
    else:
        uris = await _gate_dependents(tx, collection, row["postUri"], op.seq)
    await reevaluate_all(tx, uris, fx, versions)


async def after_delete(tx: Any, collection: str, uri: str, deleted: Optional[Row], seq: Optional[int], fx: Any) -> None:
    """Re-evaluate what depends on a record deleted at ``seq`` (rule 2)."""
    if seq is None or collection not in HISTORY_COLLECTIONS:
        return
    if collection == POST:
        uris = await later_descendants(tx, uri, seq) + await _later_thread(tx, uri, seq)
    else:
        post_uri = (deleted or {}).get("postUri")
        if not post_uri:
            return
        uris = await _gate_dependents(tx, collection, post_uri, seq)
    await reevaluate_all(tx, uris, fx)


async def later_descendants(tx: Any, uri: str, seq: int) -> list[str]:
    """Replies below ``uri`` (depth < ``NOTIF_DEPTH``) written after ``seq``."""
    rows = await _rows(
        tx,
        "WITH RECURSIVE d(uri, depth) AS ("
        ' SELECT uri, 1 FROM post WHERE "replyParent" = %(u)s'
        ' UNION ALL SELECT p.uri, d.depth + 1 FROM post p JOIN d ON p."replyParent" = d.uri WHERE d.depth < %(depth)s)'
        " SELECT d.uri FROM d JOIN record r ON r.uri = d.uri WHERE r.seq > %(s)s",
        {"u": uri, "s": later_than(seq), "depth": NOTIF_DEPTH - 1},
    )
    return [r["uri"] for r in rows]


async def _later_thread(tx: Any, root: str, seq: int) -> list[str]:
    rows = await _rows(
        tx,
        'SELECT p.uri FROM post p JOIN record r ON r.uri = p.uri WHERE p."replyRoot" = %s AND r.seq > %s',
        (root, later_than(seq)),
    )
    return [r["uri"] for r in rows]


async def _gate_dependents(tx: Any, collection: str, post_uri: str, seq: int) -> list[str]:
    if collection == THREADGATE:
        return await _later_thread(tx, post_uri, seq)
    rows = await _rows(
        tx,
        'SELECT e."postUri" AS uri FROM post_embed_record e JOIN record r ON r.uri = e."postUri" '
        'WHERE e."embedUri" = %s AND r.seq > %s',
        (post_uri, later_than(seq)),
    )
    return [r["uri"] for r in rows]


async def reevaluate_all(tx: Any, uris: Iterable[str], fx: Any, versions: Iterable[tuple[str, Optional[int]]] = ()) -> None:
    """``reevaluate`` each post (and ``reevaluate_version`` each history version); one whose
    ``invalidReplyRoot`` changed brings its later replies, current or deleted (again if already
    done: they read the parent's flag). Terminates: replies have later seqs."""
    queue: list[tuple[str, Any]] = [("post", u) for u in dict.fromkeys(uris)] + [("version", v) for v in versions]
    seen: set[tuple[str, Any]] = set()
    while queue:
        item = queue.pop(0)
        if item in seen:
            continue
        seen.add(item)
        if item[0] == "post":
            uri = item[1]
            changed, seq = await reevaluate(tx, uri, fx)
        else:
            uri, seq = item[1]
            changed = await reevaluate_version(tx, uri, seq)
        if changed and seq is not None:
            for child in await _children(tx, uri, seq):
                seen.discard(child)
                queue.append(child)


async def _children(tx: Any, uri: str, seq: int) -> list[tuple[str, Any]]:
    """Replies to ``uri`` written after ``seq``: current posts and deleted versions."""
    rows = await _rows(
        tx,
        'SELECT p.uri, NULL::bigint AS seq_from, false AS version FROM post p JOIN record r ON r.uri = p.uri '
        'WHERE p."replyParent" = %(u)s AND r.seq > %(s)s '
        'UNION ALL SELECT h.uri, h.seq_from, true FROM fleet_record_history h WHERE h."replyParent" = %(u)s AND h.seq_from > %(s)s',
        {"u": uri, "s": later_than(seq)},
    )
    return [("version", (r["uri"], r["seq_from"])) if r["version"] else ("post", r["uri"]) for r in rows]


async def history_children(tx: Any, uri: str, seq: int) -> list[tuple[str, Optional[int]]]:
    """Deleted versions of replies to ``uri`` written after ``seq`` (their flag was evaluated early)."""
    rows = await _rows(
        tx,
        'SELECT uri, seq_from FROM fleet_record_history WHERE "replyParent" = %s AND seq_from > %s',
        (uri, later_than(seq)),
    )
    return [(r["uri"], r["seq_from"]) for r in rows]


async def reevaluate_version(tx: Any, uri: str, seq_from: Optional[int]) -> bool:
    """Evaluate a deleted version's ``invalidReplyRoot`` again as of its own seq (what a reply
    to it reads); returns whether it changed."""
    from ..codec.atjson import loads
    from .plugins import post as postmod
    from .plugins._db import one

    if seq_from is None:
        return False
    row = await one(tx, 'SELECT json, "invalidReplyRoot" FROM fleet_record_history WHERE uri = %s AND seq_from = %s', (uri, seq_from))
    rec = loads(row["json"]) if row else None
    reply = rec.get("reply") if isinstance(rec, dict) else None
    if not isinstance(reply, dict):
        return False
    root_uri, parent_uri = (reply.get("root") or {}).get("uri"), (reply.get("parent") or {}).get("uri")
    refs = await postmod.reply_refs(tx, root_uri, parent_uri, seq_from)
    parent = refs.get(parent_uri)
    invalid = parent is None or postmod.invalid_reply_root(reply, parent)
    if bool(row["invalidReplyRoot"]) == invalid:
        return False
    await tx.execute(
        'UPDATE fleet_record_history SET "invalidReplyRoot" = %s WHERE uri = %s AND seq_from = %s', (invalid, uri, seq_from)
    )
    return True


async def reevaluate(tx: Any, uri: str, fx: Any) -> tuple[bool, Optional[int]]:
    """Evaluate an indexed post again as of its own seq; returns (invalidReplyRoot changed, seq).

    The post's row and its ancestors' rows are read ``FOR SHARE``: another account's post is
    re-evaluated here by a batch that holds no lock on that account, so an account deletion
    in another shard (``unindex``: the account's posts, then the notifications by and to it)
    is ordered with this batch by those rows. Either it committed first (the post is gone:
    nothing is written; a deleted ancestor's account is then seen by
    ``drop_notifs_to_deleted``), or it waits on the rows for this batch's commit and its
    notification deletes, later statements, see what this batch wrote. Without them a
    re-evaluation's notifications by or to a deleted account survived the deletion (the
    4-shard firehose-and-backfill conformance run, about one run in ten)."""
    from ..codec.atjson import loads
    from .plugins import post as postmod
    from .plugins._db import one

    row = await one(
        tx, "SELECT p.*, r.json AS record_json, r.seq AS record_seq, r.rev AS record_rev FROM post p "
        "JOIN record r ON r.uri = p.uri WHERE p.uri = %s FOR SHARE OF p",
        (uri,),
    )
    if row is None:
        return False, None
    rec = loads(row.pop("record_json"))
    seq, rev = row.pop("record_seq"), row.pop("record_rev")
    if not isinstance(rec, dict):
        return False, seq
    parts = uri[5:].split("/", 2)
    op = RecordOp(uri, row["creator"], parts[1], parts[2], row["cid"], rec, "", row["indexedAt"], rev, seq)
    invalid, violates = None, None
    reply = rec.get("reply") if isinstance(rec.get("reply"), dict) else None
    if reply is not None:
        inv, vio = await postmod.validate_reply(tx, op, reply)
        if inv or vio:
            invalid, violates = inv, vio
    embeds = postmod.record_embeds(rec)
    violates_embed = None
    for e in embeds:
        if collection_of(e["embedUri"] or "") == POST and await postmod.violates_embedding_rules(tx, e["embedUri"], op):
            violates_embed = True
    old = (row["invalidReplyRoot"], row["violatesThreadGate"], row["violatesEmbeddingRules"] or None)
    new = (invalid, violates, violates_embed)
    if old != new:
        await tx.execute(
            'UPDATE post SET "invalidReplyRoot" = %s, "violatesThreadGate" = %s, "violatesEmbeddingRules" = %s WHERE uri = %s',
            (invalid, violates, violates_embed, uri),
        )
        if row["replyParent"] and bool(old[1]) != bool(violates):
            fx.aggs.append(AggDelta("post_agg", row["replyParent"], "replyCount", -1 if violates else 1))
    row["invalidReplyRoot"], row["violatesThreadGate"], row["violatesEmbeddingRules"] = new
    ancestors = await ancestors_as_of(tx, uri, row["replyParent"], seq)
    above = sorted({a["ancestorUri"] for a in ancestors if a["ancestorUri"]})
    if above:  # the recipients' posts (see above); sorted: one order for every batch
        await tx.execute("SELECT 1 FROM post WHERE uri = ANY(%s) ORDER BY uri FOR SHARE", (above,))
    idx = {
        "post": row,
        "facets": postmod.facets_of(rec),
        "embeds": embeds,
        "ancestors": ancestors,
        "descendents": [],
        "threadgate": await postmod.thread_gate_record(tx, row["replyRoot"] or uri, seq),
    }
    fx.notifs.delete_for([uri])
    fx.notifs.add(stamp(postmod.notifs_for_insert(idx), seq))
    return bool(old[0]) != bool(invalid), seq


# ---------------------------------------------------------------- thread-gate graph rules (rules 6 and 8)

# A follow (creator %(a)s -> subject %(b)s) or a list item (list %(l)s, subject %(b)s) counts for
# a reply at seq %(s)s when a version of it was current then: the current row written at or
# before %(s)s, or a deleted version (fleet_graph_history, migration 0005) with
# seq_from <= %(s)s < its deletion's seq (the uri's tombstone, or its account's deletion).
_DELETED_AT = (
    "coalesce((SELECT t.seq FROM fleet_record_tombstone t WHERE t.uri = h.uri), "
    "(SELECT a.seq FROM fleet_account_deletion a WHERE a.did = h.did))"
)
FOLLOW_AS_OF_SQL = (
    'EXISTS (SELECT 1 FROM follow f JOIN record r ON r.uri = f.uri WHERE f.creator = %(a)s AND f."subjectDid" = %(b)s '
    "AND (r.seq IS NULL OR %(s)s::bigint IS NULL OR r.seq <= %(s)s)) "
    "OR (%(s)s::bigint IS NOT NULL AND EXISTS (SELECT 1 FROM fleet_graph_history h WHERE h.did = %(a)s AND h.subject = %(b)s "
    f"AND h.list_uri IS NULL AND h.seq_from <= %(s)s AND {_DELETED_AT} > %(s)s))"
)
LIST_ITEM_AS_OF_SQL = (
    'EXISTS (SELECT 1 FROM list_item l JOIN record r ON r.uri = l.uri WHERE l."listUri" = ANY(%(l)s) AND l."subjectDid" = %(b)s '
    "AND (r.seq IS NULL OR %(s)s::bigint IS NULL OR r.seq <= %(s)s)) "
    "OR (%(s)s::bigint IS NOT NULL AND EXISTS (SELECT 1 FROM fleet_graph_history h WHERE h.list_uri = ANY(%(l)s) "
    f"AND h.subject = %(b)s AND h.seq_from <= %(s)s AND {_DELETED_AT} > %(s)s))"
)


async def graph_rules_allow(
    tx: Any, replier: str, owner: str, follower: bool, following: bool, lists: list[str], seq: Optional[int]
) -> bool:
    """Does a follower/following/list rule of ``owner``'s thread gate let ``replier`` reply at
    ``seq``? (One query, as the official ``violatesThreadGate``, over the versions current then.)"""
    parts = []
    if follower:
        parts.append("(" + FOLLOW_AS_OF_SQL.replace("%(a)s", "%(replier)s").replace("%(b)s", "%(owner)s") + ")")
    if following:
        parts.append("(" + FOLLOW_AS_OF_SQL.replace("%(a)s", "%(owner)s").replace("%(b)s", "%(replier)s") + ")")
    if lists:
        parts.append("(" + LIST_ITEM_AS_OF_SQL.replace("%(b)s", "%(replier)s") + ")")
    if not parts:
        return False
    cur = await tx.execute("SELECT " + " OR ".join(parts), {"replier": replier, "owner": owner, "l": lists, "s": seq})
    row = await cur.fetchone()
    return bool(row and row[0])


async def graph_changed(tx: Any, fx: Any) -> None:
    """Rule 8: the follows and list items this transaction wrote or removed (noted by the
    triggers of migration 0005, whichever path wrote them) re-evaluate the replies written
    after them that a thread-gate rule may judge by them. Called at the end of a batch
    (``Effects.flush``), before its notifications and counts are written."""
    cur = await tx.execute(
        "DELETE FROM fleet_graph_change WHERE xid = txid_current() RETURNING uri, did, subject, list_uri, created"
    )
    changes = await cur.fetchall()
    anchors = list(getattr(fx, "graph_anchors", None) or [])  # cutover.py: (did, subject, list_uri, bound)
    if anchors:
        fx.graph_anchors.clear()
    if not changes and not anchors:
        return
    uris = sorted({c[0] for c in changes})
    rows = await _rows(
        tx,
        "SELECT u.uri, r.seq AS rseq, t.seq AS tseq, a.seq AS aseq FROM unnest(%s::varchar[]) AS u(uri) "
        "LEFT JOIN record r ON r.uri = u.uri LEFT JOIN fleet_record_tombstone t ON t.uri = u.uri "
        "LEFT JOIN fleet_account_deletion a ON a.did = split_part(u.uri, '/', 3)",
        (uris,),
    )
    seqs = {r["uri"]: r for r in rows}
    follows: dict[tuple[str, str], int] = {}
    items: dict[tuple[str, str], int] = {}
    for uri, did, subject, list_uri, created in changes:
        s = seqs.get(uri) or {}
        # a new row: its record's seq; a removed one: its delete's (or its account deletion's)
        seq = s.get("rseq") if created else (s.get("tseq") if s.get("tseq") is not None else s.get("aseq"))
        if seq is None or not isinstance(subject, str):
            continue
        bound = later_than(seq)
        if list_uri is None:
            key = (did, subject)
            follows[key] = min(bound, follows.get(key, bound))
        else:
            key = (list_uri, subject)
            items[key] = min(bound, items.get(key, bound))
    for did, subject, list_uri, bound in anchors:
        key, into = ((did, subject), follows) if list_uri is None else ((list_uri, subject), items)
        into[key] = min(bound, into.get(key, bound))
    dependents: list[str] = []
    if follows:
        a, b, q = [k[0] for k in follows], [k[1] for k in follows], list(follows.values())
        # following rule: replies by the subject in the creator's gated threads; follower rule:
        # replies by the creator in the subject's gated threads
        found = await _rows(
            tx,
            "WITH c(owner, replier, q) AS (SELECT * FROM unnest(%(a)s::varchar[], %(b)s::varchar[], %(q)s::bigint[]) "
            " UNION ALL SELECT * FROM unnest(%(b)s::varchar[], %(a)s::varchar[], %(q)s::bigint[])), "
            'roots AS (SELECT c.replier, c.q, g."postUri" AS root FROM c JOIN thread_gate g ON g.creator = c.owner '
            " UNION SELECT c.replier, c.q, 'at://' || c.owner || '/app.bsky.feed.post/' || split_part(h.uri, '/', 5) "
            "  FROM c JOIN fleet_record_history h ON split_part(h.uri, '/', 3) = c.owner AND h.uri LIKE '%%/app.bsky.feed.threadgate/%%') "
            'SELECT DISTINCT p.uri FROM roots JOIN post p ON p."replyRoot" = roots.root AND p.creator = roots.replier '
            "JOIN record r ON r.uri = p.uri WHERE r.seq > roots.q",
            {"a": a, "b": b, "q": q},
        )
        dependents += [r["uri"] for r in found]
    if items:
        # replies by the subject whose thread gate (current or deleted) names the list
        found = await _rows(
            tx,
            "WITH c(list, replier, q) AS (SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::bigint[])) "
            'SELECT DISTINCT p.uri FROM c JOIN post p ON p.creator = c.replier AND p."replyRoot" IS NOT NULL '
            "JOIN record r ON r.uri = p.uri AND r.seq > c.q "
            "CROSS JOIN LATERAL (SELECT replace(p.\"replyRoot\", '/app.bsky.feed.post/', '/app.bsky.feed.threadgate/') AS gate) g "
            "WHERE EXISTS (SELECT 1 FROM record x WHERE x.uri = g.gate AND strpos(x.json, c.list) > 0) "
            "OR EXISTS (SELECT 1 FROM fleet_record_history h WHERE h.uri = g.gate AND strpos(h.json, c.list) > 0)",
            ([k[0] for k in items], [k[1] for k in items], list(items.values())),
        )
        dependents += [r["uri"] for r in found]
    if dependents:
        await reevaluate_all(tx, sorted(set(dependents)), fx)


# ---------------------------------------------------------------- accounts and notifications


async def account_deleted(tx: Any, did: str, seq: Optional[int], fx: Any) -> None:
    """Before ``unindex`` removes account ``did`` deleted at ``seq`` (rule 5): record the
    deletion, move its posts and gates to history, remove their records and re-evaluate their
    later dependents; the caller then removes the rest."""
    if seq is None:
        return
    await tx.execute(
        "INSERT INTO fleet_account_deletion (did, seq) VALUES (%s, %s) "
        "ON CONFLICT (did) DO UPDATE SET seq = greatest(fleet_account_deletion.seq, excluded.seq)",
        (did, seq),
    )
    gone = await _rows(
        tx,
        "SELECT uri FROM record WHERE did = %s AND (uri LIKE %s OR uri LIKE %s OR uri LIKE %s)",
        (did, f"at://{did}/{POST}/%", f"at://{did}/{THREADGATE}/%", f"at://{did}/{POSTGATE}/%"),
    )
    uris = [r["uri"] for r in gone]
    if not uris:
        return
    await tx.execute(
        'INSERT INTO fleet_record_history (uri, seq_from, seq_to, json, "invalidReplyRoot", "replyParent") '
        'SELECT r.uri, r.seq, %s, r.json, p."invalidReplyRoot", p."replyParent" FROM record r '
        "LEFT JOIN post p ON p.uri = r.uri WHERE r.uri = ANY(%s) ON CONFLICT DO NOTHING",
        (seq, uris),
    )
    await tx.execute("DELETE FROM record WHERE uri = ANY(%s)", (uris,))
    dependents: list[str] = []
    for uri in uris:
        coll = collection_of(uri)
        if coll == POST:
            dependents += await later_descendants(tx, uri, seq) + await _later_thread(tx, uri, seq)
        else:
            post_uri = f"at://{did}/{POST}/{uri.rsplit('/', 1)[1]}"
            dependents += await _gate_dependents(tx, coll, post_uri, seq)
    # the account's own posts are removed by the caller; only other accounts' dependents remain
    await reevaluate_all(tx, [u for u in dependents if not u.startswith(f"at://{did}/")], fx)


def stamp(notifs: list[Any], seq: Optional[int]) -> list[Any]:
    """Mark notifications with the seq of the write that makes them (for ``drop_notifs_to_deleted``)."""
    for n in notifs:
        n.seq = seq
    return notifs


def notifs_delete_sql() -> str:
    """Notifications to a deleted account: only those of records written before its deletion."""
    return (
        "DELETE FROM notification n WHERE n.did = %s AND NOT EXISTS "
        '(SELECT 1 FROM record r WHERE r.uri = n."recordUri" AND r.seq > %s)'
    )


async def drop_notifs_to_deleted(tx: Any, notifs: list[Any]) -> list[Any]:
    """Drop notifications to accounts deleted after the notifying write (rule 5)."""
    dids = sorted({n.did for n in notifs if getattr(n, "seq", None) is not None})
    if not dids:
        return notifs
    cur = await tx.execute("SELECT did, seq FROM fleet_account_deletion WHERE did = ANY(%s)", (dids,))
    deleted = {d: s for d, s in await cur.fetchall()}
    if not deleted:
        return notifs
    return [n for n in notifs if not (n.did in deleted and getattr(n, "seq", None) is not None and n.seq < deleted[n.did])]
