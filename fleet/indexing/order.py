"""Cross-shard order: cross-account rules give the firehose-``seq``-order answer.

Shard k applies only its accounts' events, in order; between shards there is no order. The
corpora's expected databases are the answer of applying every event in ``seq`` order, so each
cross-account rule is evaluated *as of the event's own seq* and corrected when a record it
depends on is indexed late. Every record row stores the seq of its write (``record.seq``;
NULL for backfill, which counts as "before every live event").

Rules:

1. **Visibility.** A post evaluating its reply (parent, root, thread gate) or its quote (the
   quoted post's post gate) sees a record only if that record's seq <= its own (``visible``;
   equal seq = an earlier op of the same commit). A record indexed early by a faster shard
   but written later in the firehose is ignored, exactly as if it were not there yet.
2. **Late thread gate.** When a thread gate is indexed, the replies of its thread already in
   the index with a later seq are re-evaluated against it; a reply that now violates it gets
   ``violatesThreadGate`` (and ``invalidReplyRoot`` false if it was NULL, as the official
   update writes both), its parent's ``replyCount`` drops by one, and its ``reply``
   notifications are deleted (the official writes none for a violating reply).
3. **Late post gate.** When a post gate that disables embedding is indexed, the quotes of its
   post with a later seq by other authors get ``violatesEmbeddingRules`` and lose their
   ``quote`` notification.
4. **Late parent.** When a post is indexed, direct replies to it with a later seq (which were
   evaluated with the parent missing, hence ``invalidReplyRoot``) are re-evaluated.
   Reply notifications need no rule: the official insert already notifies ancestors of
   descendants found below a late post, so they come out the same in any order.
5. **Counts** are order-free: deltas of real row changes commute.

Known limits (documented, not handled): a gate *updated* between two replies is known only
in its latest version; follow/list-based thread-gate rules read the graph as it is when the
reply is evaluated; re-evaluation is one level deep (a late parent does not re-walk the
whole subtree); reply notifications already written to ancestors of a reply that turns out to
violate a late gate are removed only for that reply itself.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .plugin import AggDelta, RecordOp, Row

THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"
POST = "app.bsky.feed.post"


def visible(ref_seq: Optional[int], seq: Optional[int]) -> bool:
    """Did a record written at ``ref_seq`` exist when the event at ``seq`` happened?

    Equal seqs are ops of one commit, applied in op order: the earlier op is visible.
    """
    return ref_seq is None or seq is None or ref_seq <= seq


def now_iso() -> str:
    dt = datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


async def after_insert(tx: Any, collection: str, row: Row, op: RecordOp, fx: Any) -> None:
    """Re-evaluate dependents of a just-indexed post, thread gate or post gate (rules 2-4)."""
    if op.seq is None:
        return
    if collection == THREADGATE:
        await _late_thread_gate(tx, row, op, fx)
    elif collection == POSTGATE:
        await _late_post_gate(tx, row, op, fx)
    elif collection == POST:
        await _late_parent(tx, row, op)


async def _later_rows(tx: Any, query: str, params: tuple) -> list[dict[str, Any]]:
    from .plugins._db import all_rows

    return await all_rows(tx, query, params)


async def _late_thread_gate(tx: Any, gate_row: Row, op: RecordOp, fx: Any) -> None:
    from ..codec.atjson import loads
    from .plugins.post import violates_thread_gate

    root_uri = gate_row["postUri"]
    replies = await _later_rows(
        tx,
        'SELECT p.uri, p.creator, p."replyParent", p."invalidReplyRoot", p."violatesThreadGate" FROM post p '
        'JOIN record r ON r.uri = p.uri WHERE p."replyRoot" = %s AND r.seq > %s '
        'AND (p."violatesThreadGate" IS NULL OR p."violatesThreadGate" = false)',
        (root_uri, op.seq),
    )
    if not replies:
        return
    root = await _later_rows(tx, "SELECT json FROM record WHERE uri = %s", (root_uri,))
    root_rec = loads(root[0]["json"]) if root else None
    owner = root_uri[5:].split("/", 1)[0]
    for r in replies:
        if not await violates_thread_gate(tx, r["creator"], owner, root_rec, op.record):
            continue
        await tx.execute(
            'UPDATE post SET "violatesThreadGate" = true, "invalidReplyRoot" = coalesce("invalidReplyRoot", false) WHERE uri = %s',
            (r["uri"],),
        )
        if r["replyParent"]:
            fx.aggs.append(AggDelta("post_agg", r["replyParent"], "replyCount", -1))
        await tx.execute("DELETE FROM notification WHERE \"recordUri\" = %s AND reason = 'reply'", (r["uri"],))
        fx.notifs.pending = [n for n in fx.notifs.pending if not (n.recordUri == r["uri"] and n.reason == "reply")]


async def _late_post_gate(tx: Any, gate_row: Row, op: RecordOp, fx: Any) -> None:
    from .plugins.post import gate_disables_embedding

    if not gate_disables_embedding(op.record):
        return
    post_uri = gate_row["postUri"]
    quotes = await _later_rows(
        tx,
        "SELECT q.uri FROM quote q JOIN record r ON r.uri = q.uri JOIN post p ON p.uri = q.uri "
        'WHERE q.subject = %s AND r.seq > %s AND p.creator <> %s AND p."violatesEmbeddingRules" IS NOT TRUE',
        (post_uri, op.seq, op.did),
    )
    for q in quotes:
        await tx.execute('UPDATE post SET "violatesEmbeddingRules" = true WHERE uri = %s', (q["uri"],))
        await tx.execute("DELETE FROM notification WHERE \"recordUri\" = %s AND reason = 'quote'", (q["uri"],))
        fx.notifs.pending = [n for n in fx.notifs.pending if not (n.recordUri == q["uri"] and n.reason == "quote")]


async def _late_parent(tx: Any, idx: Row, op: RecordOp) -> None:
    from ..codec.atjson import loads
    from .plugins.post import invalid_reply_root

    replies = await _later_rows(
        tx,
        'SELECT p.uri, p."violatesThreadGate", r.json FROM post p JOIN record r ON r.uri = p.uri '
        'WHERE p."replyParent" = %s AND r.seq > %s AND p."invalidReplyRoot" = true',
        (op.uri, op.seq),
    )
    post = idx["post"]
    parent = {"record": op.record, "invalidReplyRoot": post.get("invalidReplyRoot")}
    for r in replies:
        reply = (loads(r["json"]) or {}).get("reply") or {}
        if invalid_reply_root(reply, parent):
            continue
        if r["violatesThreadGate"]:
            await tx.execute('UPDATE post SET "invalidReplyRoot" = false WHERE uri = %s', (r["uri"],))
        else:
            await tx.execute('UPDATE post SET "invalidReplyRoot" = NULL, "violatesThreadGate" = NULL WHERE uri = %s', (r["uri"],))
