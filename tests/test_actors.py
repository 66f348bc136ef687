"""actors.on_event against real Postgres, Redis and a real identity server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from fleet.identity.did import DidResolver
from fleet.identity.handles import HandleResolver
from fleet.identity.resolver import IdentityResolver
from fleet.indexing import actors
from fleet.indexing.aggregates import AggBuffer
from tests.actor_support import (
    IdentityServer,
    connect,
    corpus_events,
    expected_rows,
    migrated,
    set_doc_handle,
    table_rows,
)

ALICE = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
KEY = {"id": "#atproto", "type": "Multikey", "controller": "x", "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"}
PDS = {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "http://127.0.0.1:1"}


def doc(did: str, handle: str) -> dict:
    return {"id": did, "alsoKnownAs": [f"at://{handle}"], "verificationMethod": [KEY], "service": [PDS]}


async def _ctx(server: IdentityServer, redis_url: str) -> SimpleNamespace:
    r = aioredis.Redis.from_url(redis_url)
    resolver = IdentityResolver(
        DidResolver(plc_url=server.url, redis=r, cache_ttl_s=60),
        HandleResolver(redis=r, cache_ttl_s=60, override_url=server.url),
    )
    return SimpleNamespace(resolver=resolver, log=None, redis=r)


async def _close(ctx: SimpleNamespace) -> None:
    await ctx.resolver.close()
    await ctx.redis.aclose()


def _ev(t: str, did: str, time: str, **kw) -> dict:
    return {"type": t, "seq": 1, "time": time, "did": did, **kw}


@pytest.mark.parametrize("corpus", ["small", "edge"])
def test_corpus_actor_and_actor_sync_equal_the_official_rows(database_url, redis_url, corpus):
    migrated(database_url)
    events = corpus_events(corpus)

    async def go():
        async with IdentityServer(corpus) as server:
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            aggs = AggBuffer()
            for ev in events:
                async with conn.transaction():
                    await actors.on_event(conn, ev, ctx, aggs=aggs)
            got_actor = await table_rows(conn, "actor", "did")
            got_sync = await table_rows(conn, "actor_sync", "did")
            await conn.close()
            await _close(ctx)
        return got_actor, got_sync

    got_actor, got_sync = asyncio.run(go())
    exp_actor = sorted(expected_rows(corpus, "actor"), key=lambda r: r["did"])
    exp_sync = sorted(expected_rows(corpus, "actor_sync"), key=lambda r: r["did"])
    assert [dict(r) for r in got_sync] == exp_sync
    assert len(got_actor) == len(exp_actor)
    diffs = [(g["did"], g["handle"], e["handle"]) for g, e in zip(got_actor, exp_actor) if dict(g) != e]
    assert diffs == []


def test_identity_event_reresolves_and_a_taken_handle_moves_to_the_new_owner(database_url, redis_url):
    migrated(database_url)

    async def go():
        async with IdentityServer() as server:
            server.docs = {ALICE: doc(ALICE, "Alice.Test"), BOB: doc(BOB, "bob.test")}
            server.handles = {"alice.test": ALICE, "bob.test": BOB}
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            await actors.on_event(conn, _ev("identity", ALICE, "2025-01-01T00:00:00.000Z"), ctx)
            await actors.on_event(conn, _ev("identity", BOB, "2025-01-01T00:00:01.000Z"), ctx)
            first = {r["did"]: r["handle"] for r in await table_rows(conn, "actor", "did")}
            # alice renames to bob.test; bob's handle now points at alice
            server.docs[ALICE] = doc(ALICE, "bob.test")
            server.handles["bob.test"] = ALICE
            await actors.on_event(conn, _ev("identity", ALICE, "2025-01-01T00:00:02.000Z"), ctx)
            second = {r["did"]: (r["handle"], r["indexedAt"]) for r in await table_rows(conn, "actor", "did")}
            await conn.close()
            await _close(ctx)
        return first, second

    first, second = asyncio.run(go())
    assert first == {ALICE: "alice.test", BOB: "bob.test"}  # lowercased
    assert second == {ALICE: ("bob.test", "2025-01-01T00:00:02.000Z"), BOB: (None, "2025-01-01T00:00:01.000Z")}


def test_handle_that_does_not_resolve_back_to_the_did_is_stored_as_null(database_url, redis_url):
    migrated(database_url)

    async def go():
        async with IdentityServer() as server:
            server.docs = {ALICE: doc(ALICE, "alice.test")}
            server.handles = {"alice.test": BOB}  # points elsewhere
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            await actors.on_event(conn, _ev("create", ALICE, "2025-01-01T00:00:00.000Z", commit="bafyc1", rev="3aaa"), ctx)
            rows = await table_rows(conn, "actor", "did")
            await conn.close()
            await _close(ctx)
        return rows

    rows = asyncio.run(go())
    assert [(r["did"], r["handle"]) for r in rows] == [(ALICE, None)]


def test_commit_events_reresolve_only_after_a_day_or_an_hour_for_null_handles(database_url, redis_url):
    migrated(database_url)

    async def go():
        async with IdentityServer() as server:
            server.docs = {ALICE: doc(ALICE, "alice.test"), BOB: doc(BOB, "bob.test")}
            server.handles = {"alice.test": ALICE}  # bob's handle does not resolve yet
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            t0 = "2025-01-01T00:00:00.000Z"
            for did in (ALICE, BOB):
                await actors.on_event(conn, _ev("create", did, t0, commit="c", rev="3a"), ctx)
            server.handles["bob.test"] = BOB
            server.docs[ALICE] = doc(ALICE, "alice2.test")
            server.handles["alice2.test"] = ALICE
            await ctx.redis.flushdb()
            t1 = "2025-01-01T00:30:00.000Z"  # half an hour: nothing re-resolved
            for did in (ALICE, BOB):
                await actors.on_event(conn, _ev("create", did, t1, commit="c", rev="3b"), ctx)
            half = {r["did"]: r["handle"] for r in await table_rows(conn, "actor", "did")}
            t2 = "2025-01-01T01:00:01.000Z"  # > 1 h: the NULL handle is retried, alice is not
            for did in (ALICE, BOB):
                await actors.on_event(conn, _ev("create", did, t2, commit="c", rev="3c"), ctx)
            hour = {r["did"]: r["handle"] for r in await table_rows(conn, "actor", "did")}
            t3 = "2025-01-02T00:00:01.000Z"  # > 1 day: alice re-resolved
            await actors.on_event(conn, _ev("delete", ALICE, t3, commit="c", rev="3d"), ctx)
            day = {r["did"]: r["handle"] for r in await table_rows(conn, "actor", "did")}
            await conn.close()
            await _close(ctx)
        return half, hour, day

    half, hour, day = asyncio.run(go())
    assert half == {ALICE: "alice.test", BOB: None}
    assert hour == {ALICE: "alice.test", BOB: "bob.test"}
    assert day == {ALICE: "alice2.test", BOB: "bob.test"}


def test_replayed_old_events_change_neither_actor_nor_actor_sync(database_url, redis_url):
    migrated(database_url)

    async def go():
        async with IdentityServer() as server:
            server.docs = {ALICE: doc(ALICE, "alice.test")}
            server.handles = {"alice.test": ALICE}
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            old = _ev("identity", ALICE, "2025-01-01T00:00:00.000Z")
            await actors.on_event(conn, old, ctx)
            await actors.on_event(conn, _ev("create", ALICE, "2025-01-01T00:00:05.000Z", commit="new", rev="3bbb"), ctx)
            server.docs[ALICE] = doc(ALICE, "renamed.test")
            server.handles["renamed.test"] = ALICE
            await actors.on_event(conn, _ev("identity", ALICE, "2025-01-01T00:00:09.000Z"), ctx)
            before = (await table_rows(conn, "actor", "did"), await table_rows(conn, "actor_sync", "did"))
            # the whole history again
            await actors.on_event(conn, old, ctx)
            await actors.on_event(conn, _ev("create", ALICE, "2025-01-01T00:00:01.000Z", commit="old", rev="3aaa"), ctx)
            after = (await table_rows(conn, "actor", "did"), await table_rows(conn, "actor_sync", "did"))
            await conn.close()
            await _close(ctx)
        return before, after

    before, after = asyncio.run(go())
    assert before == after
    assert [(r["handle"], r["indexedAt"]) for r in after[0]] == [("renamed.test", "2025-01-01T00:00:09.000Z")]
    assert [(r["commitCid"], r["repoRev"]) for r in after[1]] == [("new", "3bbb")]


def test_unresolvable_did_document_writes_no_actor_row(database_url, redis_url):
    migrated(database_url)

    async def go():
        async with IdentityServer() as server:
            no_pds = doc(BOB, "bob.test")
            no_pds["service"] = []
            server.docs = {BOB: no_pds}
            server.handles = {"bob.test": BOB}
            ctx = await _ctx(server, redis_url)
            conn = await connect(database_url)
            await actors.on_event(conn, _ev("identity", ALICE, "2025-01-01T00:00:00.000Z"), ctx)  # 404
            await actors.on_event(conn, _ev("identity", BOB, "2025-01-01T00:00:00.000Z"), ctx)  # no PDS
            rows = await table_rows(conn, "actor", "did")
            await conn.close()
            await _close(ctx)
        return rows

    assert asyncio.run(go()) == []


@pytest.mark.parametrize(
    "active,status,expected",
    [(False, "deactivated", "deactivated"), (False, "takendown", "takendown"), (False, "suspended", "suspended"),
     (True, None, None), (False, None, "unchanged"), (False, "throttled", "unchanged")],
)
def test_account_event_sets_upstream_status(database_url, redis_url, active, status, expected):
    migrated(database_url)

    async def go():
        conn = await connect(database_url)
        await conn.execute('INSERT INTO actor (did, handle, "indexedAt", "upstreamStatus") VALUES (%s, %s, %s, %s)',
                           (ALICE, "alice.test", "2025-01-01T00:00:00.000Z", "unchanged"))
        ev = _ev("account", ALICE, "2025-01-01T00:00:01.000Z", active=active)
        if status:
            ev["status"] = status
        await actors.on_event(conn, ev, SimpleNamespace(resolver=None, log=None))
        await actors.on_event(conn, _ev("account", BOB, "2025-01-01T00:00:01.000Z", active=False, status="takendown"),
                              SimpleNamespace(resolver=None, log=None))
        rows = await table_rows(conn, "actor", "did")
        await conn.close()
        return rows

    rows = asyncio.run(go())
    assert [(r["did"], r["upstreamStatus"]) for r in rows] == [(ALICE, expected)]  # no row made for BOB


def test_account_deletion_unindexes_like_the_official_and_leaves_exact_counts(database_url, redis_url):
    migrated(database_url)

    async def go():
        conn = await connect(database_url)
        t = "2025-01-01T00:00:00.000Z"
        await conn.execute('INSERT INTO actor (did, handle, "indexedAt") VALUES (%s, %s, %s), (%s, %s, %s)',
                           (ALICE, "alice.test", t, BOB, "bob.test", t))
        p = f"at://{BOB}/app.bsky.feed.post/p1"
        a_post = f"at://{ALICE}/app.bsky.feed.post/a1"
        await conn.execute(
            'INSERT INTO post (uri, cid, creator, text, "createdAt", "indexedAt") VALUES (%s,%s,%s,%s,%s,%s)', (p, "c", BOB, "x", t, t))
        await conn.execute(
            'INSERT INTO post (uri, cid, creator, text, "replyRoot", "replyRootCid", "replyParent", "replyParentCid", "createdAt", "indexedAt") '
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", (a_post, "c", ALICE, "reply", p, "c", p, "c", t, t))
        await conn.execute('INSERT INTO "like" (uri, cid, creator, subject, "subjectCid", "createdAt", "indexedAt") VALUES (%s,%s,%s,%s,%s,%s,%s)',
                           (f"at://{ALICE}/app.bsky.feed.like/l1", "c", ALICE, p, "c", t, t))
        await conn.execute('INSERT INTO follow (uri, cid, creator, "subjectDid", "createdAt", "indexedAt") VALUES (%s,%s,%s,%s,%s,%s), (%s,%s,%s,%s,%s,%s)',
                           (f"at://{ALICE}/app.bsky.graph.follow/f1", "c", ALICE, BOB, t, t,
                            f"at://{BOB}/app.bsky.graph.follow/f2", "c", BOB, ALICE, t, t))
        await conn.execute('INSERT INTO feed_item (uri, cid, type, "postUri", "originatorDid", "sortAt") VALUES (%s,%s,%s,%s,%s,%s)',
                           (a_post, "c", "post", a_post, ALICE, t))
        await conn.execute('INSERT INTO record (uri, cid, did, json, "indexedAt") VALUES (%s,%s,%s,%s,%s)', (a_post, "c", ALICE, "{}", t))
        await conn.execute('INSERT INTO notification (did, "recordUri", "recordCid", author, reason, "sortAt") VALUES '
                           "(%s,%s,%s,%s,%s,%s), (%s,%s,%s,%s,%s,%s)",
                           (BOB, a_post, "c", ALICE, "reply", t, ALICE, f"at://{BOB}/app.bsky.graph.follow/f2", "c", BOB, "follow", t))
        await conn.execute('INSERT INTO post_agg (uri, "likeCount", "replyCount") VALUES (%s, 1, 1)', (p,))
        await conn.execute('INSERT INTO profile_agg (did, "followersCount", "followsCount", "postsCount") VALUES (%s,1,1,1), (%s,1,1,1)', (ALICE, BOB))
        async with conn.transaction():
            await actors.on_event(conn, _ev("account", ALICE, t, active=False, status="deleted"), SimpleNamespace(resolver=None, log=None))
        out = {}
        for table, key in [("actor", "did"), ("post", "uri"), ("like", "uri"), ("follow", "uri"), ("feed_item", "uri"),
                           ("record", "uri"), ("notification", "id"), ("post_agg", "uri"), ("profile_agg", "did")]:
            out[table] = await table_rows(conn, table, key)
        await conn.close()
        return out

    out = asyncio.run(go())
    assert [r["did"] for r in out["actor"]] == [BOB]
    assert [r["creator"] for r in out["post"]] == [BOB]
    assert out["like"] == []
    assert [r["creator"] for r in out["follow"]] == [BOB]  # bob's follow of alice stays, as official
    assert len(out["feed_item"]) == 1  # the official leaves feed_item rows
    assert out["record"] == [] and out["notification"] == []
    assert [(r["likeCount"], r["replyCount"]) for r in out["post_agg"]] == [(0, 0)]
    aggs = {r["did"]: (r["followersCount"], r["followsCount"], r["postsCount"]) for r in out["profile_agg"]}
    assert aggs == {ALICE: (1, 0, 0), BOB: (0, 1, 1)}
