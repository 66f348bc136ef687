"""app.bsky.feed.post (official ``plugins/post.js``): post, feed_item, embeds, quotes, replies.

Insert writes the post and its feed item, evaluates the reply (``invalidReplyRoot``,
``violatesThreadGate``) and a quote's post gate (``violatesEmbeddingRules``) as of the post's
own firehose seq (``order.visible``), records OP thread replies, the embed rows and the quote,
and collects what the notifications need (facets, embeds, ancestors, descendants, the thread
gate). Delete removes the post, every feed item of it, soft-deletes its OP-reply row, removes
the quotes *of* it (as the official does) and its embeds.
"""

from __future__ import annotations

from typing import Any, Optional

from psycopg.types.json import Jsonb

from .. import order
from ...codec.atjson import loads
from ..dates import normalize_datetime
from ..plugin import AggDelta, InvalidRecord, Notif, Plugin, RecordOp, Row
from . import validator
from ._db import all_rows, collection_of, did_of, one
from ._helpers import blob_cid

NSID = "app.bsky.feed.post"
REPLY_NOTIF_DEPTH = 5


def gate_uri(post_uri: str, collection: str) -> str:
    """``postUriToThreadgateUri`` / ``postUriToPostgateUri``: same did and rkey, gate collection."""
    if collection_of(post_uri) != NSID:
        return post_uri
    rest = post_uri[5:]
    did, _, rkey = rest.split("/", 2)
    return f"at://{did}/{collection}/{rkey}"


def _type(v: Any) -> Any:
    return v.get("$type") if isinstance(v, dict) else None


def separate_embeds(embed: Any) -> list[Any]:
    if not isinstance(embed, dict):
        return []
    if _type(embed) == "app.bsky.embed.recordWithMedia":
        rec = embed.get("record") if isinstance(embed.get("record"), dict) else {}
        return [{**rec, "$type": "app.bsky.embed.record"}, embed.get("media")]
    return [embed]


def facets_of(record: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for facet in record.get("facets") or []:
        for f in (facet.get("features") or []) if isinstance(facet, dict) else []:
            t = _type(f)
            if t == "app.bsky.richtext.facet#mention" and isinstance(f.get("did"), str):
                out.append({"type": "mention", "value": f["did"]})
            elif t == "app.bsky.richtext.facet#link" and isinstance(f.get("uri"), str):
                out.append({"type": "link", "value": f["uri"]})
    return out


async def insert(tx: Any, op: RecordOp) -> Optional[Row]:
    rec = op.record
    reply = rec.get("reply") if isinstance(rec.get("reply"), dict) else None
    root = (reply or {}).get("root") or {}
    parent = (reply or {}).get("parent") or {}
    created = normalize_datetime(rec.get("createdAt"))
    langs, tags = rec.get("langs"), rec.get("tags")
    post = await one(
        tx,
        "WITH fi AS (INSERT INTO feed_item (type, uri, cid, \"postUri\", \"originatorDid\", \"sortAt\") "
        "VALUES ('post', %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING) "
        'INSERT INTO post (uri, cid, creator, text, "createdAt", "replyRoot", "replyRootCid", "replyParent", '
        '"replyParentCid", langs, tags, "indexedAt") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) '
        "ON CONFLICT DO NOTHING RETURNING *",
        (
            op.uri, op.cid, op.uri, op.did, op.indexed_at if op.indexed_at < created else created,
            op.uri, op.cid, op.did, rec.get("text"), created,
            root.get("uri") or None, root.get("cid") or None, parent.get("uri") or None, parent.get("cid") or None,
            Jsonb(langs) if langs else None, Jsonb(tags) if tags else None, op.indexed_at,
        ),
    )  # fmt: skip
    if post is None:
        return None
    aggs: list[AggDelta] = []
    if reply is not None:
        invalid, violates = await validate_reply(tx, op, reply)
        if invalid or violates:
            post["invalidReplyRoot"], post["violatesThreadGate"] = invalid, violates
            await tx.execute(
                'UPDATE post SET "invalidReplyRoot" = %s, "violatesThreadGate" = %s WHERE uri = %s', (invalid, violates, op.uri)
            )
        if parent.get("uri") and op.did == did_of(root.get("uri")):
            await tx.execute(
                'INSERT INTO op_thread_reply ("rootUri", "parentUri", uri, "deletedAt") VALUES (%s, %s, %s, NULL) ON CONFLICT DO NOTHING',
                (root.get("uri"), parent.get("uri"), op.uri),
            )
    embeds: list[Any] = []
    for emb in separate_embeds(rec.get("embed")):
        t = _type(emb)
        if t == "app.bsky.embed.images":
            rows = [(op.uri, i, blob_cid(img.get("image")), img.get("alt")) for i, img in enumerate(emb.get("images") or [])]
            embeds.append(rows)
            await _many(tx, 'INSERT INTO post_embed_image ("postUri", position, "imageCid", alt) VALUES ', rows)
        elif t == "app.bsky.embed.external":
            ext = emb.get("external") or {}
            embeds.append({"external": ext.get("uri")})
            await tx.execute(
                'INSERT INTO post_embed_external ("postUri", uri, title, description, "thumbCid") VALUES (%s, %s, %s, %s, %s)',
                (op.uri, ext.get("uri"), ext.get("title"), ext.get("description"), blob_cid(ext.get("thumb"))),
            )
        elif t == "app.bsky.embed.record":
            ref = emb.get("record") or {}
            e_uri, e_cid = ref.get("uri"), ref.get("cid")
            embeds.append({"embedUri": e_uri, "embedCid": e_cid})
            await tx.execute(
                'INSERT INTO post_embed_record ("postUri", "embedUri", "embedCid") VALUES (%s, %s, %s)', (op.uri, e_uri, e_cid)
            )
            if collection_of(e_uri) == NSID:
                inserted_quote = 0
                if not await order.purged_after(tx, e_uri, op.seq):  # else purged in firehose order
                    cur = await tx.execute(
                        'INSERT INTO quote (uri, cid, subject, "subjectCid", "createdAt", "indexedAt") VALUES (%s, %s, %s, %s, %s, %s) '
                        "ON CONFLICT DO NOTHING",
                        (op.uri, op.cid, e_uri, e_cid, created, op.indexed_at),
                    )
                    inserted_quote = 1 if cur.rowcount > 0 else 0
                aggs.append(AggDelta("post_agg", e_uri, "quoteCount", inserted_quote))
                violates_embed = await violates_embedding_rules(tx, e_uri, op)
                post["violatesEmbeddingRules"] = violates_embed
                if violates_embed:
                    await tx.execute('UPDATE post SET "violatesEmbeddingRules" = true WHERE uri = %s', (op.uri,))
        elif t == "app.bsky.embed.video":
            embeds.append({"video": True})
            await tx.execute(
                'INSERT INTO post_embed_video ("postUri", "videoCid", alt) VALUES (%s, %s, %s)',
                (op.uri, blob_cid(emb.get("video")), emb.get("alt")),
            )
        elif t == "app.bsky.embed.gallery":
            rows = [
                (op.uri, i, blob_cid(item.get("image")), item.get("alt"))
                for i, item in enumerate(emb.get("items") or [])
                if _type(item) == "app.bsky.embed.gallery#image"
            ]
            if rows:
                embeds.append(rows)
                await _many(tx, 'INSERT INTO post_embed_gallery_image ("postUri", position, "imageCid", alt) VALUES ', rows)
    threadgate = await thread_gate_record(tx, post["replyRoot"] or op.uri, op.seq)
    ancestors = await order.ancestors_as_of(tx, op.uri, post["replyParent"], op.seq)
    # Descendants written before this post (the official out-of-order notifications); those
    # written after it were indexed early by another shard and are re-evaluated (order.py). For a
    # backfilled post (seq 0) the other backfilled ones count as later (``order.later_than``).
    found = await all_rows(
        tx,
        "WITH RECURSIVE descendent(uri, depth, early) AS ("
        " SELECT p.uri, 1, (r.seq IS NULL OR %(s)s::bigint IS NULL OR r.seq <= %(s)s) FROM post p"
        ' LEFT JOIN record r ON r.uri = p.uri WHERE 1 <= %(depth)s AND p."replyParent" = %(u)s'
        " UNION ALL SELECT p.uri, d.depth + 1, d.early AND (r.seq IS NULL OR %(s)s::bigint IS NULL OR r.seq <= %(s)s)"
        ' FROM post p JOIN descendent d ON d.uri = p."replyParent" LEFT JOIN record r ON r.uri = p.uri WHERE d.depth < %(depth)s)'
        ' SELECT d.uri, d.depth, d.early, p.cid, p.creator, p."sortAt" FROM descendent d JOIN post p ON p.uri = d.uri',
        {"u": op.uri, "s": None if op.seq is None else order.later_than(op.seq), "depth": REPLY_NOTIF_DEPTH},
    )
    descendents = [d for d in found if d["early"]]
    late = [d for d in found if not d["early"] and d["depth"] < REPLY_NOTIF_DEPTH]
    return {
        "post": post,
        "facets": facets_of(rec),
        "embeds": embeds,
        "ancestors": ancestors,
        "descendents": descendents,
        "threadgate": threadgate,
        "aggs": aggs,
        "late_descendents": late,
    }


async def _many(tx: Any, head: str, rows: list[tuple[Any, ...]]) -> None:
    ph = ", ".join(["(" + ", ".join(["%s"] * len(rows[0])) + ")"] * len(rows))
    await tx.execute(head + ph, [v for r in rows for v in r])


async def validate_reply(tx: Any, op: RecordOp, reply: dict[str, Any]) -> tuple[bool, bool]:
    """(invalidReplyRoot, violatesThreadGate) as of the reply's seq (official ``validateReply``)."""
    root_uri = (reply.get("root") or {}).get("uri")
    parent_uri = (reply.get("parent") or {}).get("uri")
    refs = await reply_refs(tx, root_uri, parent_uri, op.seq)
    parent = refs.get(parent_uri)
    invalid = parent is None or invalid_reply_root(reply, parent)
    gate = refs.get(gate_uri(root_uri, "app.bsky.feed.threadgate")) if isinstance(root_uri, str) else None
    root = refs.get(root_uri)
    violates = await violates_thread_gate(
        tx, op.did, did_of(root_uri), root["record"] if root else None, gate["record"] if gate else None, op.seq
    )
    return invalid, violates


async def reply_refs(tx: Any, root_uri: Any, parent_uri: Any, seq: Optional[int]) -> dict[str, dict[str, Any]]:
    """The root, parent and thread gate records visible at ``seq`` (official ``getReplyRefs``)."""
    uris = [u for u in (root_uri, parent_uri) if isinstance(u, str)]
    if isinstance(root_uri, str):
        uris.append(gate_uri(root_uri, "app.bsky.feed.threadgate"))
    rows = await order.refs_as_of(tx, uris, seq)
    return {u: {"record": loads(r["json"]), "invalidReplyRoot": r["invalidReplyRoot"]} for u, r in rows.items()}


def invalid_reply_root(reply: dict[str, Any], parent: dict[str, Any]) -> bool:
    root_uri = (reply.get("root") or {}).get("uri")
    if parent.get("invalidReplyRoot"):
        return True
    prec = parent["record"] if isinstance(parent["record"], dict) else {}
    preply = prec.get("reply")
    if (reply.get("parent") or {}).get("uri") == root_uri:
        return bool(preply)
    return not isinstance(preply, dict) or (preply.get("root") or {}).get("uri") != root_uri


async def violates_thread_gate(tx: Any, replier: str, owner: str, root_rec: Any, gate: Any, seq: Optional[int] = None) -> bool:
    """Official ``violatesThreadGate`` (``parseThreadGate`` + one graph query); a follow or list
    item counts when a version of it was current at ``seq``, deleted since or not (order.py
    rule 6)."""
    if replier == owner:
        return False
    allow = gate.get("allow") if isinstance(gate, dict) else None
    if allow is None:
        return False
    rules = [r for r in allow if isinstance(r, dict)]
    types = {_type(r) for r in rules}
    allow_mention = "app.bsky.feed.threadgate#mentionRule" in types
    allow_follower = "app.bsky.feed.threadgate#followerRule" in types
    allow_following = "app.bsky.feed.threadgate#followingRule" in types
    lists = [r.get("list") for r in rules if _type(r) == "app.bsky.feed.threadgate#listRule"]
    if allow_mention and isinstance(root_rec, dict):
        for facet in root_rec.get("facets") or []:
            for f in (facet.get("features") or []) if isinstance(facet, dict) else []:
                if _type(f) == "app.bsky.richtext.facet#mention" and f.get("did") == replier:
                    return False
    if not allow_follower and not allow_following and not lists:
        return True
    return not await order.graph_rules_allow(tx, replier, owner, allow_follower, allow_following, lists, seq)


async def thread_gate_record(tx: Any, post_uri: str, seq: Optional[int]) -> Optional[dict[str, Any]]:
    """The thread gate of ``post_uri`` as of ``seq`` (official ``getThreadgateRecord``)."""
    uri = gate_uri(post_uri, "app.bsky.feed.threadgate")
    row = (await order.refs_as_of(tx, [uri], seq)).get(uri)
    return loads(row["json"]) if row else None


async def violates_embedding_rules(tx: Any, embed_uri: str, op: RecordOp) -> bool:
    """Official ``validatePostEmbed``: a visible post gate with a ``disableRule`` forbids quotes."""
    if did_of(op.uri) == did_of(embed_uri):
        return False
    uri = gate_uri(embed_uri, "app.bsky.feed.postgate")
    row = (await order.refs_as_of(tx, [uri], op.seq)).get(uri)
    return row is not None and gate_disables_embedding(loads(row["json"]))


def gate_disables_embedding(gate: Any) -> bool:
    rules = gate.get("embeddingRules") if isinstance(gate, dict) else None
    if not rules:
        return False
    return any(_type(r) == "app.bsky.feed.postgate#disableRule" for r in rules)


def record_embeds(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The record embeds of a post record, as ``insert`` lists them for the notifications."""
    out = []
    for emb in separate_embeds(rec.get("embed")):
        if _type(emb) == "app.bsky.embed.record":
            ref = emb.get("record") or {}
            out.append({"embedUri": ref.get("uri"), "embedCid": ref.get("cid")})
    return out


def notifs_for_insert(idx: Row) -> list[Notif]:
    post = idx["post"]
    notifs: list[Notif] = []
    notified = {post["creator"]}

    def maybe(n: Notif) -> None:
        if n.did not in notified:
            notified.add(n.did)
            notifs.append(n)

    for f in idx.get("facets") or []:
        if f["type"] == "mention":
            maybe(Notif(f["value"], post["creator"], post["uri"], post["cid"], "mention", None, post["sortAt"]))
    if not post.get("violatesEmbeddingRules"):
        for e in idx.get("embeds") or []:
            if isinstance(e, dict) and "embedUri" in e and collection_of(e["embedUri"]) == NSID:
                maybe(Notif(did_of(e["embedUri"]), post["creator"], post["uri"], post["cid"], "quote", e["embedUri"], post["sortAt"]))
    if post.get("violatesThreadGate"):
        return notifs
    hidden = (idx.get("threadgate") or {}).get("hiddenReplies") or []
    ancestors = idx.get("ancestors") or []
    for a in ancestors:
        if a["uri"] == post["uri"]:
            continue
        if a["height"] < REPLY_NOTIF_DEPTH:
            maybe(Notif(did_of(a["uri"]), post["creator"], post["uri"], post["cid"], "reply", a["uri"], post["sortAt"]))
            if a["uri"] in hidden:
                break
    for d in idx.get("descendents") or []:
        for a in ancestors:
            if d["depth"] + a["height"] < REPLY_NOTIF_DEPTH:
                maybe(Notif(did_of(a["uri"]), d["creator"], d["uri"], d["cid"], "reply", a["uri"], d["sortAt"]))
    return notifs


async def delete(tx: Any, uri: str) -> Optional[Row]:
    deleted = await one(
        tx,
        'WITH fi AS (DELETE FROM feed_item WHERE "postUri" = %s AND (%s::bigint IS NULL OR uri = %s)), '
        'otr AS (UPDATE op_thread_reply SET "deletedAt" = %s WHERE uri = %s) '
        "DELETE FROM post WHERE uri = %s RETURNING *",
        (uri, order.EVENT_SEQ.get(), uri, order.now_iso(), uri, uri),
    )
    aggs: list[AggDelta] = []
    seq = order.EVENT_SEQ.get()
    if seq is not None:  # reposts' feed items and quotes written after this purge stay (order.py rule 4)
        await tx.execute(
            'DELETE FROM feed_item f WHERE f."postUri" = %s AND f.uri <> %s '
            "AND NOT EXISTS (SELECT 1 FROM record r WHERE r.uri = f.uri AND r.seq > %s)",
            (uri, uri, seq),
        )
    cur = await tx.execute(
        "DELETE FROM quote q WHERE q.subject = %s AND NOT EXISTS "
        "(SELECT 1 FROM record r WHERE r.uri = q.uri AND %s::bigint IS NOT NULL AND r.seq > %s)",
        (uri, seq, seq),
    )
    if cur.rowcount > 0:
        aggs.append(AggDelta("post_agg", uri, "quoteCount", -cur.rowcount))
    embeds: list[Any] = []
    for table in ("post_embed_image", "post_embed_external", "post_embed_video", "post_embed_gallery_image"):
        cur = await tx.execute(f'DELETE FROM {table} WHERE "postUri" = %s', (uri,))  # noqa: S608 (constant names)
        if cur.rowcount > 0:
            embeds.append({"table": table})
    rec = await one(tx, 'DELETE FROM post_embed_record WHERE "postUri" = %s RETURNING *', (uri,))
    if rec is not None:
        embeds.append(rec)
        if collection_of(rec["embedUri"]) == NSID:
            cur = await tx.execute("DELETE FROM quote WHERE uri = %s", (uri,))
            aggs.append(AggDelta("post_agg", rec["embedUri"], "quoteCount", -cur.rowcount))
    if deleted is None:
        return None
    return {"post": deleted, "facets": [], "embeds": embeds, "aggs": aggs}


def notifs_for_delete(deleted: Row, replaced_by: Optional[Row]) -> tuple[list[Notif], list[str]]:
    return (notifs_for_insert(replaced_by) if replaced_by else []), [deleted["post"]["uri"]]


def aggregates(idx: Row, sign: int) -> list[AggDelta]:
    post = idx["post"]
    out = list(idx.get("aggs") or [])  # quote counts: real quote-row changes of this write
    if post.get("replyParent"):
        out.append(AggDelta("post_agg", post["replyParent"], "replyCount", 0 if post.get("violatesThreadGate") else sign))
    out.append(AggDelta("profile_agg", post["creator"], "postsCount", sign))
    return out


_lexicon = validator(NSID)


def validate(record: dict[str, Any]) -> None:
    """The lexicon, plus: an images embed with no image is never indexed by the official
    indexer (its insert of zero embed rows fails and rolls the whole write back)."""
    _lexicon(record)
    for emb in separate_embeds(record.get("embed")):
        if _type(emb) == "app.bsky.embed.images" and not (emb.get("images") or []):
            raise InvalidRecord("images embed without images")


PLUGIN = Plugin(
    collection=NSID,
    validate=validate,
    insert=insert,
    delete=delete,
    find_duplicate=None,  # type: ignore[arg-type]  # posts have no duplicates
    notifs_for_insert=notifs_for_insert,
    notifs_for_delete=notifs_for_delete,
    aggregates=aggregates,
)
