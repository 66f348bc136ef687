"""A deleted account leaves the index (official ``IndexingService.deleteActor``/``unindexActor``).

Same tables as the official, in the same order, plus what the official leaves stale: every
row removed here that an aggregate counts (likes, reposts, follows, posts) becomes a delta, so
the subjects' and the account's counts stay exact (DESIGN.md "Aggregates", the one deviation).
Like the official, ``feed_item``, ``quote`` and ``op_thread_reply`` rows are kept.

Deviation: the official first asks the account's PDS (``getLatestCommit``) whether the repo is
really gone; we trust the relay's ``#account`` event (no network call inside a transaction).
"""

from __future__ import annotations

from typing import Any, Optional

from . import order
from .plugin import AggDelta


async def unindex_actor(tx: Any, did: str, fx: Any, seq: Optional[int] = None) -> None:
    """``seq``: the deletion's firehose seq (cross-shard order, ``order.account_deleted``)."""
    seq = seq if isinstance(seq, int) and seq > 0 else None
    await order.account_deleted(tx, did, seq, fx)
    await tx.execute("DELETE FROM actor WHERE did = %s", (did,))
    await tx.execute("DELETE FROM profile WHERE creator = %s", (did,))
    cur = await tx.execute('DELETE FROM follow WHERE creator = %s RETURNING "subjectDid"', (did,))
    rows = await cur.fetchall()
    for (subject,) in rows:
        fx.aggs.append(AggDelta("profile_agg", subject, "followersCount", -1))
    if rows:
        fx.aggs.append(AggDelta("profile_agg", did, "followsCount", -len(rows)))
    cur = await tx.execute("DELETE FROM repost WHERE creator = %s RETURNING subject", (did,))
    for (subject,) in await cur.fetchall():
        fx.aggs.append(AggDelta("post_agg", subject, "repostCount", -1))
    cur = await tx.execute('DELETE FROM "like" WHERE creator = %s RETURNING subject', (did,))
    for (subject,) in await cur.fetchall():
        fx.aggs.append(AggDelta("post_agg", subject, "likeCount", -1))
    for table in ("feed_generator", "labeler", "list_item", "reference_list_opt_out", "list", "actor_block", "list_block"):
        await tx.execute(f"DELETE FROM {table} WHERE creator = %s", (did,))  # noqa: S608 (constant names)
    for table in ("post_embed_image", "post_embed_external", "post_embed_record", "post_embed_video", "post_embed_gallery_image"):
        await tx.execute(
            f'DELETE FROM {table} WHERE "postUri" IN (SELECT uri FROM post WHERE creator = %s)',  # noqa: S608
            (did,),
        )
    cur = await tx.execute('DELETE FROM post WHERE creator = %s RETURNING "replyParent", "violatesThreadGate"', (did,))
    rows = await cur.fetchall()
    for parent, violates in rows:
        if parent and not violates:
            fx.aggs.append(AggDelta("post_agg", parent, "replyCount", -1))
    if rows:
        fx.aggs.append(AggDelta("profile_agg", did, "postsCount", -len(rows)))
    await tx.execute("DELETE FROM thread_gate WHERE creator = %s", (did,))
    await tx.execute("DELETE FROM post_gate WHERE creator = %s", (did,))
    await tx.execute("DELETE FROM notification WHERE author = %s", (did,))
    await tx.execute(
        'DELETE FROM duplicate_record WHERE "duplicateOf" IN (SELECT uri FROM record WHERE did = %s)', (did,)
    )
    await tx.execute("DELETE FROM record WHERE did = %s", (did,))
    if seq is None:
        await tx.execute("DELETE FROM notification WHERE did = %s", (did,))
    else:  # those of records written after the deletion stay, as in firehose order
        await tx.execute(order.notifs_delete_sql(), (did, seq))
    fx.notifs.drop_actor(did)
