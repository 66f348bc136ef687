"""The bulk fast path gives exactly the database that applying the events one by one gives.

Reference: every event in its own batch with ``Indexer(bulk=False)`` (the per-event processor).
Candidate: the same events in batches through ``Indexer`` with the bulk path on. Both go to
their own schema of one real PostgreSQL database and are compared table by table (every
column except the serial ``notification.id``).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
from psycopg import sql

from fleet.db.migrate import migrate
from fleet.indexing import FALLBACKS, Indexer, IndexingContext, bulk
from fleet.codec.firehose import SEQ_BACKFILL
from fleet.shard import shard
from tools.bench_indexing_path import CID1, CID2, _tid, _time, did_for, seed_actors, synthetic_events

LIKE, REPOST, FOLLOW, POST = "app.bsky.feed.like", "app.bsky.feed.repost", "app.bsky.graph.follow", "app.bsky.feed.post"
A, B, C = did_for(900), did_for(901), did_for(902)
_seq = [50_000]


def ev(did: str, typ: str, coll: str, rkey: str, record: dict | None = None, rev: str | None = None, **kw: Any) -> dict:
    _seq[0] += 1
    s = _seq[0]
    e = {"type": typ, "seq": s, "time": f"2025-01-01T12:00:{s % 60:02d}.{s % 1000:03d}Z", "did": did, "commit": CID1,
         "rev": rev or f"3m{s:011d}", "collection": coll, "rkey": rkey}  # fmt: skip
    if record is not None:
        e["cid"], e["record"] = CID2, record
    e.update(kw)
    return e


def like(did: str, rkey: str, subject: str, **kw: Any) -> dict:
    return ev(did, "create", LIKE, rkey, {"$type": LIKE, "subject": {"uri": subject, "cid": CID1}, "createdAt": "2025-01-01T00:00:00.000Z"}, **kw)


def follow(did: str, rkey: str, subject: str) -> dict:
    return ev(did, "create", FOLLOW, rkey, {"$type": FOLLOW, "subject": subject, "createdAt": "2025-01-01T00:00:00.000Z"})


def post(did: str, rkey: str, reply_to: str | None = None) -> dict:
    rec: dict[str, Any] = {"$type": POST, "text": rkey, "createdAt": "2025-01-01T00:00:00.000Z"}
    if reply_to:
        rec["reply"] = {"root": {"uri": reply_to, "cid": CID2}, "parent": {"uri": reply_to, "cid": CID2}}
    return ev(did, "create", POST, rkey, rec)


def delete(did: str, coll: str, rkey: str, **kw: Any) -> dict:
    return ev(did, "delete", coll, rkey, **kw)


def uri(did: str, coll: str, rkey: str) -> str:
    return f"at://{did}/{coll}/{rkey}"


def special_cases() -> list[list[dict]]:
    """Batches with the cases where order matters; see each comment."""
    p_a, p_b = uri(A, POST, "3pa"), uri(B, POST, "3pb")
    gate = {"$type": "app.bsky.feed.threadgate", "post": p_a, "createdAt": "2025-01-01T00:00:00.000Z",
            "allow": [{"$type": "app.bsky.feed.threadgate#followingRule"}]}  # fmt: skip
    first = [
        post(A, "3pa"), post(B, "3pb"), ev(A, "create", "app.bsky.feed.threadgate", "3pa", gate),
        like(C, "l1", p_a), like(C, "l2", p_a),  # two likes with one duplicate key in one run
        like(B, "l3", p_a), delete(B, LIKE, "l3"),  # create + delete of one uri in one batch
        like(C, "l4", p_b), like(C, "l4b", p_b),  # a primary and its duplicate (promoted below)
        like(B, "l5", p_b), delete(B, LIKE, "l5", rev="3m00000000001"),  # a delete older than the record: skipped
        follow(A, "f1", C), post(C, "3pc", reply_to=p_a),  # the follow must precede the gated reply
        post(B, "3pd", reply_to=p_a),  # B is not followed: violates the gate
        like(A, "m1", p_b),
    ]  # fmt: skip
    second = [
        like(A, "m2", p_b), delete(A, LIKE, "m1"),  # a create with the key of a primary deleted after it: promoted
        like(C, "l6", p_b), delete(C, LIKE, "l4"),  # the same with a primary that already had a duplicate
        delete(C, LIKE, "l4b"),  # then the promoted duplicate goes too
        ev(B, "create", REPOST, "r1", {"$type": REPOST, "subject": {"uri": p_b, "cid": CID2}, "createdAt": "2025-01-01T00:00:00.000Z"}),
        delete(B, POST, "3pb"),  # removes the repost's feed_item: the repost must come first
        like(B, "l7", p_a), follow(B, "f2", A), delete(B, FOLLOW, "f2"),
        like(B, "l3", p_a, rev="3m00000000002"),  # an older create of a deleted uri: stays deleted
    ]  # fmt: skip
    return [first, second]


async def _apply(url: str, schema: str, batches: list[list[dict]], bulk_on: bool, seed: list[str]) -> list:
    ix = Indexer(IndexingContext(), bulk=bulk_on)
    failed: list = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        await seed_actors(conn, seed)
        await conn.commit()
        for b in batches:
            async with conn.transaction():
                failed.append([(i, type(e).__name__) for i, e in await ix.apply_batch(conn, b)])
    return failed


def _dump(url: str, schema: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    with psycopg.connect(url) as c:
        tables = [r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'", (schema,)
        )]  # fmt: skip
        for t in sorted(x for x in tables if not x.endswith("migration") and not x.endswith("migration_lock")):
            cols = [r[0] for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position", (schema, t))]  # fmt: skip
            if t == "notification":
                cols.remove("id")
            q = sql.SQL("SELECT {} FROM {}.{}").format(sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(schema), sql.Identifier(t))
            rows = sorted(c.execute(q).fetchall(), key=repr)
            if rows:
                out[t] = rows
    return out


def _one_by_one(batches: list[list[dict]]) -> list[list[dict]]:
    return [[e] for b in batches for e in b]


def _fallbacks() -> float:
    return FALLBACKS._value.get()


def _compare(url: str, batches: list[list[dict]], seed: list[str], fallbacks: int = 0) -> tuple[dict, list]:
    """Both databases, compared; ``fallbacks``: batches expected to leave the fast path."""
    migrate(url, "single")
    migrate(url, "bulk")
    asyncio.run(_apply(url, "single", _one_by_one(batches), False, seed))
    before = _fallbacks()
    failed = asyncio.run(_apply(url, "bulk", batches, True, seed))
    assert _fallbacks() - before == fallbacks
    single, fast = _dump(url, "single"), _dump(url, "bulk")
    assert sorted(single) == sorted(fast)
    for t in single:
        assert fast[t] == single[t], f"table {t} differs"
    return fast, failed


def test_special_cases_give_the_one_by_one_database(database_url):
    batches = special_cases()
    fast, failed = _compare(database_url, batches, [A, B, C])
    assert failed == [[], []]
    likes = {r[0].rsplit("/", 1)[1] for r in fast["like"]}
    assert likes == {"l1", "l5", "l7", "m2"}  # l2 duplicate of l1; l5's older delete skipped; l4, l4b deleted
    # promoted m2 keeps its duplicate_record row (as the official); l6 became a duplicate of l4 before
    # l4 went, l4b (older) was promoted instead and deleted: l6 stays a duplicate
    assert {r[0].rsplit("/", 1)[1] for r in fast["duplicate_record"]} == {"l2", "l6", "m2"}
    assert {r[0].rsplit("/", 1)[1] for r in fast["post"]} == {"3pa", "3pc", "3pd"}  # 3pb deleted


def test_a_synthetic_mix_gives_the_one_by_one_database_also_when_replayed(database_url):
    evs = synthetic_events(1200, seed=7, accounts=40)  # few accounts: duplicates, same-batch deletes
    batches = [evs[i : i + 200] for i in range(0, len(evs), 200)]
    seed = sorted({e["did"] for e in evs})[::2]  # half the accounts without an actor row (handle check due)
    first, _ = _compare(database_url, batches, seed)
    assert len(first["like"]) > 300 and "duplicate_record" in first
    # replays: every batch again, through both paths, changes nothing and stays equal
    asyncio.run(_apply(database_url, "single", _one_by_one(batches), False, []))
    failed = asyncio.run(_apply(database_url, "bulk", batches, True, []))
    assert all(f == [] for f in failed)
    assert _dump(database_url, "bulk") == _dump(database_url, "single") == first


def test_a_poison_event_in_a_bulk_run_fails_alone(database_url):
    p = uri(A, POST, "3pa")
    nul = like(B, "n1", p + "\x00")  # PostgreSQL refuses NUL: skipped as the per-event path does
    bad = dict(like(B, "n2", p), time=None)  # indexedAt NOT NULL: a real failure
    batch = [like(B, "g1", p), like(C, "g2", p), nul, bad, like(C, "g3", p + "x"), follow(B, "g4", C)]
    fast, failed = _compare(database_url, [[post(A, "3pa")], batch], [A, B, C], fallbacks=1)
    assert failed == [[], [(3, "NotNullViolation")]]
    assert {r[0].rsplit("/", 1)[1] for r in fast["like"]} == {"g1", "g2", "g3"}
    assert {r[0].rsplit("/", 1)[1] for r in fast["follow"]} == {"g4"}


def test_a_batch_applied_one_by_one_after_a_failure_drops_an_unindexed_accounts_earlier_notifications(database_url):
    """A like and a follow by B, then B's account deleted, in one batch that a poison event sends
    to the one-by-one path: the deletion removes B's notifications queued by the earlier events of
    the batch too (each event's effects are merged into the batch's before the flush), as the
    fast path and separate batches do."""
    p = uri(A, POST, "3pa")
    bad = dict(like(C, "z2", p), time=None)  # a real failure: the batch is applied again one by one
    _seq[0] += 1
    gone = {"type": "account", "seq": _seq[0], "time": "2025-01-01T12:30:00.000Z", "did": B, "active": False, "status": "deleted"}
    batch = [like(B, "z1", p), follow(B, "z3", A), like(C, "z4", p), bad, gone]
    fast, failed = _compare(database_url, [[post(A, "3pa")], batch], [A, B, C], fallbacks=1)
    assert failed == [[], [(3, "NotNullViolation")]]
    authors = {r[3] for r in fast.get("notification", [])}
    assert B not in authors and C in authors


def test_likes_and_post_creates_form_one_bulk_run(database_url):
    migrate(database_url, "bulk")
    p = uri(A, POST, "3pa")
    events = [like(B, "k1", p), post(C, "3p1"), like(C, "k2", p), post(B, "3p2"), follow(B, "k3", A), like(A, "k4", p)]

    async def steps() -> list[tuple[bool, list[str]]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET search_path TO bulk, public")
            await seed_actors(conn, [A, B, C])
            ix = Indexer(IndexingContext())
            out = await bulk.plan(conn, events, {}, ix.plugins, True)
            return [(s.bulk, [e.get("rkey", "") for e in s.events]) for s in out]

    assert asyncio.run(steps()) == [(True, ["k1", "3p1", "k2", "3p2", "k3", "k4"])]


def test_a_follow_is_not_moved_past_a_reply_in_a_gated_thread(database_url):
    migrate(database_url, "bulk")
    p = uri(A, POST, "3pa")
    gate_ev = ev(A, "create", "app.bsky.feed.threadgate", "3pa", {"$type": "app.bsky.feed.threadgate", "post": p, "createdAt": "2025-01-01T00:00:00.000Z"})
    events = [like(B, "k1", p), follow(A, "k2", C), post(C, "3p1", reply_to=p), like(B, "k3", p)]

    async def steps(with_gate: bool) -> list[tuple[bool, list[str]]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET search_path TO bulk, public")
            await seed_actors(conn, [A, B, C])
            ix = Indexer(IndexingContext())
            out = await bulk.plan(conn, ([gate_ev] if with_gate else []) + events, {}, ix.plugins, True)
            return [(s.bulk, [e.get("rkey", "") for e in s.events]) for s in out]

    # a reply is a post create of the run; whether its thread has a gate is checked when the run
    # is applied (bulk_post.state), which then applies it on the per-event path after k1, k2
    assert asyncio.run(steps(False)) == [(True, ["k1", "k2", "3p1", "k3"])]
    assert asyncio.run(steps(True)) == [(False, ["3pa"]), (True, ["k1", "k2", "3p1", "k3"])]


def test_an_account_event_is_a_barrier(database_url):
    migrate(database_url, "bulk")
    p = uri(A, POST, "3pa")
    events = [like(B, "k1", p), {"type": "account", "seq": 1, "time": "2025-01-01T12:00:00.000Z", "did": B, "active": False, "status": "deleted"}, like(C, "k2", p)]

    async def steps() -> list[bool]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET search_path TO bulk, public")
            await seed_actors(conn, [A, B, C])
            out = await bulk.plan(conn, events, {}, Indexer(IndexingContext()).plugins, True)
            return [s.bulk for s in out]

    assert asyncio.run(steps()) == [True, False, True]


# ---------------------------------------------------------------- sharded interleavings (order.py)

SHARDS = 4


def account_deleted(did: str) -> dict:
    return {"type": "account", "seq": 0, "time": "", "did": did, "active": False, "status": "deleted"}


def renumber(events: list[dict]) -> list[dict]:
    """Firehose order: seq, time and rev increase with the position."""
    out = []
    for i, e in enumerate(events):
        s = 10_000 + i
        e = dict(e, seq=s, time=_time(s))
        if "rev" in e:
            e["rev"] = _tid(10**9 + s)
        out.append(e)
    return out


def sharded_firehose(seed: int) -> list[dict]:
    """The synthetic mix plus what crosses shards: reposts and likes of posts deleted later,
    and accounts deleted after others liked, reposted and followed them."""
    rnd = random.Random(seed)
    evs = synthetic_events(900, seed=seed, accounts=24)
    posts = [e for e in evs if e["collection"] == POST and e["type"] == "create"]
    for p in rnd.sample(posts, 12):  # some posts deleted at a random later point
        at = evs.index(p) + rnd.randrange(1, 400)
        evs.insert(at, dict(delete(p["did"], POST, p["rkey"]), rev="x"))
    doomed = [did_for(i) for i in (3, 11)]
    for did in doomed:  # deleted accounts: their later events are gone
        at = rnd.randrange(500, 800)
        evs = evs[:at] + [account_deleted(did)] + [e for e in evs[at:] if e["did"] != did]
    return renumber(evs)


def random_merge(events: list[dict], seed: int, max_batch: int = 40) -> list[list[dict]]:
    """Each shard's events in order, the shards interleaved at random (seeded), random batch sizes."""
    rnd = random.Random(seed)
    per: list[list[dict]] = [[] for _ in range(SHARDS)]
    for e in events:
        per[shard(e["did"], SHARDS)].append(e)
    pos, out = [0] * SHARDS, []
    while live := [k for k in range(SHARDS) if pos[k] < len(per[k])]:
        k = rnd.choice(live)
        n = rnd.randint(1, max_batch)
        out.append(per[k][pos[k] : pos[k] + n])
        pos[k] += n
    return out


def test_a_sharded_interleaving_gives_the_one_by_one_database(database_url):
    events = sharded_firehose(seed=5)
    assert sum(e["type"] == "account" for e in events) == 2
    for merge_seed in (1, 2):
        batches = random_merge(events, merge_seed)
        fast, failed = _compare(database_url, batches, sorted({e["did"] for e in events}))
        assert all(f == [] for f in failed)
        assert len(fast["repost"]) > 20 and len(fast["notification"]) > 100 and "fleet_record_tombstone" in fast
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute("DROP SCHEMA single CASCADE")
            c.execute("DROP SCHEMA bulk CASCADE")


def test_a_repost_of_a_post_deleted_after_it_gets_no_feed_item_when_indexed_late(database_url):
    p = uri(A, POST, "3pa")
    repost = {"$type": REPOST, "subject": {"uri": p, "cid": CID2}, "createdAt": "2025-01-01T00:00:00.000Z"}
    made, reposted, deleted, later = renumber([
        post(A, "3pa"), ev(B, "create", REPOST, "r1", repost), delete(A, POST, "3pa"), ev(C, "create", REPOST, "r2", repost)
    ])  # fmt: skip
    # A's shard runs ahead: the post is created and deleted before B's and C's reposts are indexed
    fast, _ = _compare(database_url, [[made, deleted], [reposted, like(B, "k1", p), later]], [A, B, C])
    assert {r[0].rsplit("/", 1)[1] for r in fast["repost"]} == {"r1", "r2"}
    # r1 was written before the delete (purged in firehose order); r2 after it (kept)
    assert [r[0].rsplit("/", 1)[1] for r in fast["feed_item"]] == ["r2"]


def test_notifications_to_an_account_deleted_after_the_write_are_dropped_when_indexed_late(database_url):
    p = uri(A, POST, "3pa")
    made, liked, gone, followed = renumber([post(A, "3pa"), like(B, "k1", p), account_deleted(A), follow(C, "f1", A)])
    fast, _ = _compare(database_url, [[made, gone], [liked, followed]], [A, B, C])
    # B's like was written before A's deletion (its notification went with the account);
    # C's follow after it (kept, as in firehose order)
    assert [(r[0], r[4]) for r in fast["notification"]] == [(A, "follow")]


# ---------------------------------------------------------------- post creates (bulk_post)

D = did_for(903)
POSTGATE = "app.bsky.feed.postgate"
RAW_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # a blob ref: raw CIDv1


def _blob(mime: str) -> dict:
    return {"$type": "blob", "ref": {"$link": RAW_CID}, "mimeType": mime, "size": 1000}


def _mention(did: str) -> dict:
    return {"$type": "app.bsky.richtext.facet", "index": {"byteStart": 0, "byteEnd": 1},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]}  # fmt: skip


def rich_post(did: str, rkey: str, *, parent: str | None = None, root: str | None = None, quote: str | None = None,
              embed: dict | None = None, mentions: tuple[str, ...] = (), **kw: Any) -> dict:  # fmt: skip
    rec: dict[str, Any] = {"$type": POST, "text": f"post {rkey}", "createdAt": "2025-01-01T00:00:00.000Z", "langs": ["en"]}
    if parent:
        rec["reply"] = {"root": {"uri": root or parent, "cid": CID2}, "parent": {"uri": parent, "cid": CID2}}
    if mentions:
        rec["facets"] = [_mention(m) for m in mentions]
    if quote and embed:
        rec["embed"] = {"$type": "app.bsky.embed.recordWithMedia", "record": {"record": {"uri": quote, "cid": CID2}}, "media": embed}
    elif quote:
        rec["embed"] = {"$type": "app.bsky.embed.record", "record": {"uri": quote, "cid": CID2}}
    elif embed:
        rec["embed"] = embed
    return ev(did, "create", POST, rkey, rec, **kw)


def post_cases() -> list[list[dict]]:
    p1, p2, p3 = uri(A, POST, "p1"), uri(A, POST, "p2"), uri(A, POST, "p3")
    images = {"$type": "app.bsky.embed.images", "images": [{"image": _blob("image/jpeg"), "alt": "one"}, {"image": _blob("image/png"), "alt": "two"}]}
    external = {"$type": "app.bsky.embed.external", "external": {"uri": "https://example.com", "title": "t", "description": "d", "thumb": _blob("image/jpeg")}}
    video = {"$type": "app.bsky.embed.video", "video": _blob("video/mp4"), "alt": "v"}
    gallery = {"$type": "app.bsky.embed.gallery", "items": [{"$type": "app.bsky.embed.gallery#image", "image": _blob("image/jpeg"), "alt": "g", "aspectRatio": {"width": 1, "height": 1}}]}
    no_quotes = {"$type": POSTGATE, "post": uri(B, POST, "b1"), "createdAt": "2025-01-01T00:00:00.000Z",
                 "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}]}  # fmt: skip
    late_child = rich_post(C, "c0", parent=uri(D, POST, "d1"))  # a reply indexed before its parent
    first = [
        rich_post(B, "b1"), ev(B, "create", POSTGATE, "b1", no_quotes), late_child,
        rich_post(A, "p1", mentions=(B, C, A), embed=images),  # a self-thread in one run
        rich_post(A, "p2", parent=p1, mentions=(B,)), rich_post(A, "p3", parent=p2, root=p1, embed=external),
        rich_post(B, "b2", parent=p3, root=p1, embed=video),  # notifies A once (parent, root: one account)
        rich_post(C, "c1", parent=p2, root=p2),  # wrong root: invalidReplyRoot
        rich_post(C, "c2", parent=uri(C, POST, "c1"), root=p2),  # reply to an invalid reply: invalid too
        rich_post(C, "c3", parent=uri(D, POST, "gone"), root=uri(D, POST, "gone")),  # missing parent: invalid
        rich_post(D, "d2", quote=p1), rich_post(D, "d3", quote=uri(B, POST, "b1"), embed=gallery),  # quote; gated quote
        rich_post(B, "b3", quote=uri(B, POST, "b1")),  # own post: no gate check
        like(C, "k1", p1), rich_post(D, "d1", mentions=(A,)),  # the late parent: its child is already indexed
        rich_post(D, "d4", parent=uri(D, POST, "d5")), rich_post(D, "d5"),  # a reply to a post created after it
        rich_post(C, "c4", parent=uri(C, POST, "c4")),  # a reply to itself
    ]  # fmt: skip
    same_commit = [rich_post(A, "s1"), rich_post(A, "s2", parent=uri(A, POST, "s1"))]
    same_commit[1].update(seq=same_commit[0]["seq"], rev=same_commit[0]["rev"])  # one commit, two posts
    second = same_commit + [rich_post(B, "b4", parent=uri(A, POST, "s2"), root=uri(A, POST, "s1"), quote=p3)]
    return [first, second]


def test_post_creates_give_the_one_by_one_database(database_url):
    before = bulk.BULK_EVENTS.labels("create")._value.get()
    fast, failed = _compare(database_url, post_cases(), [A, B, C, D])
    assert failed == [[], []]
    assert bulk.BULK_EVENTS.labels("create")._value.get() - before >= 14  # most posts went through bulk_post
    posts = {r[0].rsplit("/", 1)[1]: r for r in fast["post"]}
    assert len(posts) == 19
    notifs = {(r[4], r[1].rsplit("/", 1)[1]) for r in fast["notification"]}  # (reason, record rkey)
    assert {("like", "k1"), ("quote", "d2"), ("mention", "p1"), ("reply", "b2")} <= notifs
    assert ("quote", "d3") not in notifs and posts["d3"][-3] is True  # the post gate forbids quoting b1
    assert posts["c1"][-6] is True and posts["c2"][-6] is True and posts["c3"][-6] is True  # invalidReplyRoot
    assert "post_embed_image" in fast and "post_embed_gallery_image" in fast and "op_thread_reply" in fast


def test_post_creates_give_the_one_by_one_database_in_a_sharded_interleaving(database_url):
    events = renumber([e for b in post_cases() for e in b])
    for merge_seed in (3, 4):
        _compare(database_url, random_merge(events, merge_seed, max_batch=8), [A, B, C, D])
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute("DROP SCHEMA single CASCADE")
            c.execute("DROP SCHEMA bulk CASCADE")


def test_a_per_event_like_lets_other_accounts_pass_but_not_its_own(database_url):
    p = uri(A, POST, "3pa")
    # k2's update goes the per-event path. C's like and the post may pass it; B's k1 may not
    # (same creator and subject: which one becomes the duplicate depends on the order)
    barrier = {"type": "identity", "did": A, "time": "2025-01-01T12:00:00.000Z"}
    events = [like(B, "k1", p), like(C, "k0", p), like(B, "k2", p), post(C, "3p9"), barrier, delete(B, LIKE, "k2")]
    events[2]["type"] = "update"

    async def steps() -> list[tuple[bool, list[str]]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET search_path TO bulk, public")
            await seed_actors(conn, [A, B, C])
            out = await bulk.plan(conn, events, {}, Indexer(IndexingContext()).plugins, True)
            return [(s.bulk, [e.get("rkey", "") for e in s.events]) for s in out]

    fast, failed = _compare(database_url, [[post(A, "3pa")], events], [A, B, C])
    assert failed == [[], []]
    assert {r[0].rsplit("/", 1)[1] for r in fast["like"]} == {"k0", "k1"} and "duplicate_record" not in fast
    assert asyncio.run(steps()) == [(True, ["k1", "k0"]), (False, ["k2"]), (True, ["3p9"]), (False, [""]), (True, ["k2"])]
    del events[0]  # without B's k1, C's like is held past k2 too
    assert asyncio.run(steps()) == [(False, ["k2"]), (True, ["k0", "3p9"]), (False, [""]), (True, ["k2"])]


PROFILE = "app.bsky.actor.profile"


def profile(did: str, typ: str, name: str, rkey: str = "self", joined: str | None = None) -> dict:
    rec: dict[str, Any] = {"$type": PROFILE, "displayName": name, "avatar": _blob("image/png")}
    if joined:
        rec["joinedViaStarterPack"] = {"uri": joined, "cid": CID2}
    return ev(did, typ, PROFILE, rkey, rec)


def test_profile_creates_and_updates_give_the_one_by_one_database(database_url):
    pack = f"at://{D}/app.bsky.graph.starterpack/sp1"
    first = [
        profile(A, "create", "a1", joined=pack),  # starterpack-joined notification to D
        profile(B, "update", "b1", joined=pack),  # an update of nothing: inserted, notifies
        profile(C, "create", "c1", rkey="other"),  # not self: a record, no profile row
        like(C, "k1", uri(A, POST, "3pa")),
    ]
    second = [
        profile(A, "update", "a2", joined=pack),  # replaces a1: no second notification
        profile(C, "update", "c2", rkey="other"),
        dict(profile(B, "create", "b1", joined=pack), rev="3m00000000001"),  # older than the stored one: skipped
        profile(D, "create", "d1"),
    ]
    before = bulk.BULK_EVENTS.labels("update")._value.get()
    fast, failed = _compare(database_url, [first, second], [A, B, C, D])
    assert failed == [[], []]
    assert bulk.BULK_EVENTS.labels("update")._value.get() - before == 3
    assert sorted(r[3] for r in fast["profile"]) == ["a2", "b1", "d1"]
    assert sorted((r[0], r[3], r[4]) for r in fast["notification"]) == sorted(
        [(A, C, "like"), (D, A, "starterpack-joined"), (D, B, "starterpack-joined")]
    )


def test_backfilled_events_give_the_one_by_one_database(database_url):
    # backfill events carry SEQ_BACKFILL: written with seq 0, "before every live event"
    batches = [[dict(e, seq=SEQ_BACKFILL) for e in b] for b in post_cases() + special_cases()]
    fast, failed = _compare(database_url, batches, [A, B, C, D])
    assert all(f == [] for f in failed)
    assert {r[-1] for r in fast["record"]} == {0} and {r[3] for r in fast["fleet_record_tombstone"]} == {0}


def _chunks() -> float:
    return bulk.BULK_CHUNKS._value.get()


def test_records_created_and_deleted_in_one_batch_give_the_one_by_one_database_in_one_chunk(database_url):
    p_a, p_b, p_c = uri(A, POST, "3pa"), uri(B, POST, "3pb"), uri(C, POST, "3pc")
    rp = {"$type": REPOST, "subject": {"uri": p_a, "cid": CID2}, "createdAt": "2025-01-01T00:00:00.000Z"}
    first = [post(A, "3pa"), post(B, "3pb"), post(C, "3pc"), like(C, "q0", p_b)]
    pairs = [
        like(B, "p1", p_c), delete(B, LIKE, "p1"),  # nobody else likes 3pc: its post_agg row is still written
        like(C, "q1", p_b), delete(C, LIKE, "q1"),  # a duplicate of q0, deleted
        like(B, "e1", p_b), like(B, "e2", p_b), delete(B, LIKE, "e2"),  # an earlier create holds the key: e2 was its duplicate
        ev(B, "create", REPOST, "r1", rp), delete(B, REPOST, "r1"),  # feed_item written and removed
        follow(A, "f1", C), delete(A, FOLLOW, "f1"),  # profile_agg of both
    ]  # fmt: skip
    before = _chunks()
    fast, failed = _compare(database_url, [first, pairs], [A, B, C])
    assert failed == [[], []]
    assert _chunks() - before == 2  # one chunk per batch
    assert {r[0].rsplit("/", 1)[1] for r in fast["like"]} == {"q0", "e1"}
    assert "follow" not in fast and "repost" not in fast and len(fast["fleet_record_tombstone"]) == 5
    assert {r[0] for r in fast["post_agg"]} >= {p_a, p_b, p_c}


def test_a_created_and_deleted_record_ends_the_chunk_where_sequence_would_differ(database_url):
    p_a, p_b = uri(A, POST, "3pa"), uri(B, POST, "3pb")
    batch = [
        like(A, "x1", p_a), delete(A, LIKE, "x1"), like(A, "x2", p_a),  # x2 after the pair, same key: inserted, not a duplicate
        like(B, "y1", p_b), like(B, "y2", p_b), delete(B, LIKE, "y1"),  # y2 became y1's duplicate: the delete promotes it
        like(C, "o1", p_a, rev="3m99999999999"), delete(C, LIKE, "o1", rev="3m00000000003"),  # a delete older than its create
        like(C, "z1", p_b), delete(C, LIKE, "z1"), like(C, "z1", p_b, rev="3m99999999998"),  # the uri a third time
    ]  # fmt: skip
    fast, failed = _compare(database_url, [[post(A, "3pa"), post(B, "3pb")], batch], [A, B, C])
    assert failed == [[], []]
    assert {r[0].rsplit("/", 1)[1] for r in fast["like"]} == {"x2", "y2", "o1", "z1"}  # z1 again, newer than its delete


def test_a_promoting_like_delete_waits_for_the_chunk_and_ends_it_only_at_its_accounts_next_event(database_url):
    p_a, p_b = uri(A, POST, "3pa"), uri(B, POST, "3pb")
    rp = {"$type": REPOST, "subject": {"uri": p_b, "cid": CID2}, "createdAt": "2025-01-01T00:00:00.000Z"}
    first = [post(A, "3pa"), post(B, "3pb"), like(C, "d1", p_b), like(C, "d2", p_b), like(C, "d3", p_a), like(C, "d4", p_a)]
    middle = [
        like(A, "x0", p_b), delete(C, LIKE, "d1"),  # promotes d2: after the chunk, which goes on
        like(A, "x1", p_a), like(B, "x2", p_b), ev(A, "create", REPOST, "r1", rp),  # other accounts, same subjects
        delete(A, LIKE, "x0"),  # a pair of another account: still one chunk
    ]  # fmt: skip
    cut = [
        like(B, "y0", p_a), delete(C, LIKE, "d3"),  # promotes d4
        like(B, "y1", p_b), like(C, "y2", p_b),  # C's next event: ends the chunk (a duplicate of d2 after the promotion)
        delete(C, LIKE, "d4"), like(A, "y3", p_a),  # the promoted duplicate goes too
    ]  # fmt: skip
    before = _chunks()
    fast, failed = _compare(database_url, [first, middle, cut], [A, B, C])
    assert failed == [[], [], []]
    assert _chunks() - before == 1 + 1 + 2  # the middle batch in one chunk
    assert {r[0].rsplit("/", 1)[1] for r in fast["like"]} == {"d2", "x1", "x2", "y0"}
    assert {r[0].rsplit("/", 1)[1] for r in fast["duplicate_record"]} == {"d2", "y1", "y2", "y3"}  # d2 keeps its row, as the official
