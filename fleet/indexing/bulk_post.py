"""Post creates in the bulk fast path: many posts with a fixed number of statements.

Mirrors ``plugins/post.insert`` + ``processor.insert_record`` + ``order.after_insert`` for the
posts that need nothing the per-event path alone can do. A post create is written here when
(``single_reason`` says why not, checked against the database once per chunk by ``state``):

* nothing already indexed replies to it (no current post nor history version with it as
  ``replyParent``): no descendants to notify, nothing to re-evaluate (``order`` rules 2-3);
* if it is a reply: its root is a post, and no thread gate of the root is visible at its seq
  (no ``violatesThreadGate``, no hidden replies, no follow/list reads);
* it refers (parent, root, quoted post) to no post created later in the same chunk.

Everything else is evaluated as the per-event path does, as of the post's own seq, batched:
reply refs (root, parent) and post gates of quoted posts with ``order.refs_as_of`` semantics
in one query; ``invalidReplyRoot`` in event order (a parent created earlier in the chunk
passes its flag in memory); quotes skipped when their subject was purged after the post
(``bulk.purged_after_many``); the ancestor walk of ``order.ancestors_as_of`` for every reply
in one recursive query after the posts are written (an earlier post of the chunk is visible,
as it would be). Notifications come from the plugin's own ``notifs_for_insert`` and
aggregates from its ``aggregates`` on rows shaped as its ``insert`` returns them.

A post the chunk could not insert (its ``post`` row already there without its record) raises
``Anomaly``: the facade then re-applies the batch one event per savepoint.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from psycopg.rows import dict_row

from . import order
from ..codec.atjson import loads
from .dates import normalize_datetime
from .plugin import AggDelta, RecordOp
from .plugins import post as postmod
from .plugins._db import collection_of, did_of

POST = postmod.NSID
THREADGATE, POSTGATE = "app.bsky.feed.threadgate", "app.bsky.feed.postgate"


class Anomaly(Exception):
    """The database is in a state the bulk post path does not mirror; apply one by one."""


def _reply(rec: Any) -> Optional[dict[str, Any]]:
    r = rec.get("reply") if isinstance(rec, dict) else None
    return r if isinstance(r, dict) else None


def _ref_uri(reply: dict[str, Any], key: str) -> Any:
    ref = reply.get(key) or {}
    return ref.get("uri") if isinstance(ref, dict) else None


def _quoted(rec: Any) -> list[tuple[Any, Any]]:
    """(uri, cid) of the record embeds of a post record (``separate_embeds`` order)."""
    return [(e["embedUri"], e["embedCid"]) for e in postmod.record_embeds(rec)] if isinstance(rec, dict) else []


def refers_to(ev: dict[str, Any]) -> set[str]:
    """The post uris a post create reads: its reply's root and parent, its quoted post."""
    rec = ev.get("record")
    out: set[str] = set()
    reply = _reply(rec)
    if reply is not None:
        out |= {u for u in (_ref_uri(reply, "root"), _ref_uri(reply, "parent")) if isinstance(u, str)}
    out |= {u for u, _ in _quoted(rec) if isinstance(u, str)}
    return out


async def state(tx: Any, posts: list[dict[str, Any]]) -> dict[str, str]:
    """{uri: reason} for the post creates that must go through the per-event path."""
    if not posts:
        return {}
    out: dict[str, str] = {}
    uris = [f"at://{e['did']}/{POST}/{e['rkey']}" for e in posts]
    cur = await tx.execute(
        "SELECT u FROM unnest(%s::varchar[]) AS k(u) WHERE EXISTS (SELECT 1 FROM post p WHERE p.\"replyParent\" = k.u) "
        'OR EXISTS (SELECT 1 FROM fleet_record_history h WHERE h."replyParent" = k.u)',
        (uris,),
    )
    for (u,) in await cur.fetchall():
        out[u] = "has replies"
    gates: list[tuple[int, str, Optional[int]]] = []
    for i, (e, u) in enumerate(zip(posts, uris)):
        reply = _reply(e.get("record"))
        if reply is None:
            continue
        root = _ref_uri(reply, "root")
        if not isinstance(root, str) or collection_of(root) != POST or not isinstance(_ref_uri(reply, "parent"), str):
            out.setdefault(u, "unusual reply")
            continue
        gates.append((i, postmod.gate_uri(root, THREADGATE), _seq(e)))
    for i in await _visible(tx, gates):
        out.setdefault(uris[i], "thread gate")
    return out


def _seq(ev: dict[str, Any]) -> Optional[int]:
    return order.event_seq(ev.get("seq"))  # what processor.make_op writes (0: backfill)


async def _visible(tx: Any, keys: list[tuple[int, str, Optional[int]]]) -> set[int]:
    """Which (i, uri, seq) have a version of uri visible at seq (``order.refs_as_of``)."""
    return {i for i, _uri, _row in await _refs(tx, keys, with_json=False)}


async def _refs(tx: Any, keys: list[tuple[int, str, Optional[int]]], with_json: bool = True) -> list[tuple[int, str, Any]]:
    """``order.refs_as_of`` for many (i, uri, seq): (i, uri, {"json", "invalidReplyRoot"}) with
    the history version last (it wins, as in ``refs_as_of``'s dict)."""
    if not keys:
        return []
    cols = 'r.json, p."invalidReplyRoot"' if with_json else "NULL::text, NULL::boolean"
    hcols = 'h.json, h."invalidReplyRoot"' if with_json else "NULL::text, NULL::boolean"
    params = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    cur = await tx.execute(
        f"SELECT k.i, k.uri, {cols}, 0 FROM unnest(%s::int[], %s::varchar[], %s::bigint[]) AS k(i, uri, s) "  # noqa: S608 (constants)
        "JOIN record r ON r.uri = k.uri LEFT JOIN post p ON p.uri = r.uri "
        "WHERE k.s IS NULL OR r.seq IS NULL OR r.seq <= k.s "
        f"UNION ALL SELECT k.i, k.uri, {hcols}, 1 FROM unnest(%s::int[], %s::varchar[], %s::bigint[]) AS k(i, uri, s) "
        "JOIN fleet_record_history h ON h.uri = k.uri WHERE k.s IS NOT NULL AND coalesce(h.seq_from, 0) <= k.s AND h.seq_to > k.s",
        params + params,
    )
    rows = sorted(await cur.fetchall(), key=lambda r: r[4])
    return [(i, uri, {"json": j, "invalidReplyRoot": inv}) for i, uri, j, inv, _ in rows]


async def write(tx: Any, ops: list[RecordOp], fx: Any) -> None:
    """Insert the post creates ``ops`` (in event order) with their effects into ``fx``."""
    from .bulk import purged_after_many

    n = len(ops)
    recs = [op.record for op in ops]
    replies = [_reply(r) for r in recs]
    pos = {op.uri: i for i, op in enumerate(ops)}
    # reply refs (root, parent) and post gates of quoted posts, as of each post's seq
    keys: list[tuple[int, str, Optional[int]]] = []
    quotes: list[Optional[tuple[str, Any]]] = [None] * n  # the quoted post of each op
    for i, (op, reply) in enumerate(zip(ops, replies)):
        parent_uri = _ref_uri(reply, "parent") if reply is not None else None
        if parent_uri is not None and parent_uri not in pos:  # the root is read only by gate rules (none: see state)
            keys.append((i, parent_uri, op.seq))
        for e_uri, e_cid in _quoted(recs[i]):
            if collection_of(e_uri) == POST:
                quotes[i] = (e_uri, e_cid)
                if did_of(op.uri) != did_of(e_uri):
                    keys.append((i, postmod.gate_uri(e_uri, POSTGATE), op.seq))
    refs: list[dict[str, Any]] = [{} for _ in range(n)]
    for i, uri, row in await _refs(tx, keys):
        refs[i][uri] = row
    flags: list[tuple[Optional[bool], Optional[bool]]] = []
    for i, (op, reply) in enumerate(zip(ops, replies)):
        if reply is None:
            flags.append((None, None))
            continue
        parent_uri = _ref_uri(reply, "parent")
        if pos.get(parent_uri, n) < i:  # created earlier in this chunk: its record and flag from memory
            parent: Optional[dict[str, Any]] = {"record": recs[pos[parent_uri]], "invalidReplyRoot": flags[pos[parent_uri]][0]}
        else:
            row = refs[i].get(parent_uri)
            parent = {"record": loads(row["json"]), "invalidReplyRoot": row["invalidReplyRoot"]} if row else None
        invalid = parent is None or postmod.invalid_reply_root(reply, parent)
        flags.append((True, False) if invalid else (None, None))  # no visible gate: never violates
    embed_violations = []
    for i, (op, q) in enumerate(zip(ops, quotes)):
        v = False
        if q is not None and did_of(op.uri) != did_of(q[0]):
            row = refs[i].get(postmod.gate_uri(q[0], POSTGATE))
            v = row is not None and postmod.gate_disables_embedding(loads(row["json"]))
        embed_violations.append(v)
    posts = await _insert_posts(tx, ops, flags, embed_violations)
    if len(posts) != n:
        raise Anomaly(f"{n - len(posts)} post rows already present without their record")
    embeds = await _insert_embeds(tx, ops)
    quoted = [i for i, q in enumerate(quotes) if q is not None]
    purged = await purged_after_many(tx, [(quotes[i][0], ops[i].seq) for i in quoted])  # type: ignore[index]
    new_quotes = await _insert_quotes(tx, [ops[i] for i, p in zip(quoted, purged) if not p])
    await _insert_op_replies(tx, ops, replies)
    ancestors = await _ancestors(tx, [(i, op.uri, posts[op.uri]["replyParent"], op.seq) for i, op in enumerate(ops) if replies[i] is not None])
    for i, op in enumerate(ops):
        row = posts[op.uri]
        row["invalidReplyRoot"], row["violatesThreadGate"] = flags[i]
        if quotes[i] is not None:
            row["violatesEmbeddingRules"] = embed_violations[i]
        aggs: list[AggDelta] = []
        if quotes[i] is not None:
            aggs.append(AggDelta("post_agg", quotes[i][0], "quoteCount", 1 if op.uri in new_quotes else 0))  # type: ignore[index]
        idx = {
            "post": row,
            "facets": postmod.facets_of(op.record),
            "embeds": embeds[i],
            "ancestors": ancestors.get(i, [{"uri": op.uri, "ancestorUri": row["replyParent"], "height": 0}]),
            "descendents": [],
            "threadgate": None,
            "aggs": aggs,
        }
        fx.aggs.extend(postmod.aggregates(idx, 1))
        fx.notifs.add(order.stamp(postmod.notifs_for_insert(idx), op.seq))


def _sort_at(op: RecordOp, created: Any) -> Any:
    return op.indexed_at if op.indexed_at < created else created


async def _insert_posts(tx: Any, ops: list[RecordOp], flags: list[tuple[Any, Any]], violations: list[bool]) -> dict[str, dict[str, Any]]:
    cols: list[list[Any]] = [[] for _ in range(17)]
    for op, (inv, vio), emb in zip(ops, flags, violations):
        rec = op.record
        reply = _reply(rec)
        root = (reply or {}).get("root") or {}
        parent = (reply or {}).get("parent") or {}
        created = normalize_datetime(rec.get("createdAt"))
        langs, tags = rec.get("langs"), rec.get("tags")
        row = (
            op.uri, op.cid, op.did, rec.get("text"), created,
            root.get("uri") or None, root.get("cid") or None, parent.get("uri") or None, parent.get("cid") or None,
            json.dumps(langs) if langs else None, json.dumps(tags) if tags else None, op.indexed_at,
            inv, vio, True if emb else None, _sort_at(op, created), op.did,
        )  # fmt: skip
        for c, v in zip(cols, row):
            c.append(v)
    text = ", ".join(["%s::varchar[]"] * 12)
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "WITH k AS (SELECT * FROM unnest(" + text + ", %s::bool[], %s::bool[], %s::bool[], %s::varchar[], %s::varchar[]) "
            "WITH ORDINALITY AS k(uri, cid, creator, text, created, root, rootcid, parent, parentcid, langs, tags, indexed, "
            "inv, vio, emb, sort_at, did, ord)), "
            "fi AS (INSERT INTO feed_item (type, uri, cid, \"postUri\", \"originatorDid\", \"sortAt\") "
            "SELECT 'post', uri, cid, uri, did, sort_at FROM k ORDER BY ord ON CONFLICT DO NOTHING) "
            'INSERT INTO post (uri, cid, creator, text, "createdAt", "replyRoot", "replyRootCid", "replyParent", '
            '"replyParentCid", langs, tags, "indexedAt", "invalidReplyRoot", "violatesThreadGate", "violatesEmbeddingRules") '
            "SELECT uri, cid, creator, text, created, root, rootcid, parent, parentcid, langs::jsonb, tags::jsonb, indexed, "
            "inv, vio, emb FROM k ORDER BY ord RETURNING *",  # no row holds these uris (bulk.py, Plain inserts)
            cols,
        )
        return {r["uri"]: r for r in await cur.fetchall()}


async def _insert_embeds(tx: Any, ops: list[RecordOp]) -> list[list[Any]]:
    """The embed rows of every post (one statement per table used); returns each post's
    ``embeds`` list as ``plugins/post.insert`` builds it."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    out: list[list[Any]] = []
    for op in ops:
        embeds: list[Any] = []
        for emb in postmod.separate_embeds(op.record.get("embed")):
            t = emb.get("$type") if isinstance(emb, dict) else None
            if t == "app.bsky.embed.images":
                rows = [(op.uri, str(i), postmod.blob_cid(img.get("image")), img.get("alt")) for i, img in enumerate(emb.get("images") or [])]
                embeds.append(rows)
                tables.setdefault("post_embed_image", []).extend(rows)
            elif t == "app.bsky.embed.external":
                ext = emb.get("external") or {}
                embeds.append({"external": ext.get("uri")})
                tables.setdefault("post_embed_external", []).append(
                    (op.uri, ext.get("uri"), ext.get("title"), ext.get("description"), postmod.blob_cid(ext.get("thumb")))
                )
            elif t == "app.bsky.embed.record":
                ref = emb.get("record") or {}
                embeds.append({"embedUri": ref.get("uri"), "embedCid": ref.get("cid")})
                tables.setdefault("post_embed_record", []).append((op.uri, ref.get("uri"), ref.get("cid")))
            elif t == "app.bsky.embed.video":
                embeds.append({"video": True})
                tables.setdefault("post_embed_video", []).append((op.uri, postmod.blob_cid(emb.get("video")), emb.get("alt")))
            elif t == "app.bsky.embed.gallery":
                rows = [
                    (op.uri, str(i), postmod.blob_cid(item.get("image")), item.get("alt"))
                    for i, item in enumerate(emb.get("items") or [])
                    if isinstance(item, dict) and item.get("$type") == "app.bsky.embed.gallery#image"
                ]
                if rows:
                    embeds.append(rows)
                    tables.setdefault("post_embed_gallery_image", []).extend(rows)
        out.append(embeds)
    for table, rows in tables.items():
        cols = EMBED_COLUMNS[table]
        await tx.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({', '.join(['%s::varchar[]'] * len(cols))})",  # noqa: S608 (constants)
            [list(c) for c in zip(*rows)],
        )
    return out


EMBED_COLUMNS = {
    "post_embed_image": ('"postUri"', "position", '"imageCid"', "alt"),
    "post_embed_external": ('"postUri"', "uri", "title", "description", '"thumbCid"'),
    "post_embed_record": ('"postUri"', '"embedUri"', '"embedCid"'),
    "post_embed_video": ('"postUri"', '"videoCid"', "alt"),
    "post_embed_gallery_image": ('"postUri"', "position", '"imageCid"', "alt"),
}


async def _insert_quotes(tx: Any, ops: list[RecordOp]) -> set[str]:
    """Quote rows (``ON CONFLICT DO NOTHING``) of posts quoting a post; returns the uris inserted."""
    if not ops:
        return set()
    subjects = [next((q for q in _quoted(op.record) if collection_of(q[0]) == POST)) for op in ops]
    cur = await tx.execute(
        'INSERT INTO quote (uri, cid, subject, "subjectCid", "createdAt", "indexedAt") '
        "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[]) "
        "ON CONFLICT DO NOTHING RETURNING uri",
        (
            [op.uri for op in ops], [op.cid for op in ops], [q[0] for q in subjects], [q[1] for q in subjects],
            [normalize_datetime(op.record.get("createdAt")) for op in ops], [op.indexed_at for op in ops],
        ),
    )  # fmt: skip
    return {r[0] for r in await cur.fetchall()}


async def _insert_op_replies(tx: Any, ops: list[RecordOp], replies: list[Optional[dict[str, Any]]]) -> None:
    rows = [
        (_ref_uri(r, "root"), _ref_uri(r, "parent"), op.uri)
        for op, r in zip(ops, replies)
        if r is not None and ((r.get("parent") or {}).get("uri")) and op.did == did_of(_ref_uri(r, "root"))
    ]
    if rows:
        await tx.execute(
            'INSERT INTO op_thread_reply ("rootUri", "parentUri", uri, "deletedAt") '
            "SELECT r, p, u, NULL FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) AS k(r, p, u) ON CONFLICT DO NOTHING",
            [list(c) for c in zip(*rows)],
        )


async def _ancestors(tx: Any, starts: list[tuple[int, str, Any, Optional[int]]]) -> dict[int, list[dict[str, Any]]]:
    """``order.ancestors_as_of`` for many (i, uri, parent, seq): {i: rows by height}."""
    if not starts:
        return {}
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            'WITH RECURSIVE anc(i, s, uri, "ancestorUri", height) AS ('
            " SELECT k.i, k.s, k.uri, k.parent, 0 FROM unnest(%s::int[], %s::varchar[], %s::varchar[], %s::bigint[]) AS k(i, uri, parent, s)"
            ' UNION ALL SELECT a.i, a.s, a."ancestorUri", x.parent, a.height + 1 FROM anc a CROSS JOIN LATERAL ('
            '  (SELECT p."replyParent" AS parent FROM post p JOIN record r ON r.uri = p.uri WHERE p.uri = a."ancestorUri"'
            "   AND (a.s IS NULL OR r.seq IS NULL OR r.seq <= a.s)"
            '   UNION ALL SELECT h."replyParent" FROM fleet_record_history h WHERE h.uri = a."ancestorUri"'
            "   AND a.s IS NOT NULL AND coalesce(h.seq_from, 0) <= a.s AND h.seq_to > a.s) LIMIT 1) x"
            ' WHERE a."ancestorUri" IS NOT NULL AND a.height < %s::int) SELECT i, uri, "ancestorUri", height FROM anc',
            ([s[0] for s in starts], [s[1] for s in starts], [s[2] for s in starts], [s[3] for s in starts], order.NOTIF_DEPTH),
        )
        rows = await cur.fetchall()
    out: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["i"], r["height"])):
        out.setdefault(r.pop("i"), []).append(r)
    return out
