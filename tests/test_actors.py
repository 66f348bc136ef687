"""actors.on_event against real Postgres, Redis and a real identity server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from fleet.identity.did import DidResolver
from fleet.identity.handles import HandleResolver
from fleet.identity.resolver import IdentityResolver
from fleet.indexing import actors
from tests.actor_support import (
    IdentityServer,
    connect,
    corpus_events,
    expected_rows,
    migrated,
    table_rows,
)
from tests.conftest import CORPUS

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


GRAPH_TABLES = ["actor", "actor_sync", "follow", "actor_block", "list", "list_item", "list_block", "feed_generator",
                "starter_pack", "labeler", "verification", "reference_list_opt_out", "label"]


@pytest.mark.parametrize("corpus", ["small", "edge"])
def test_corpus_through_the_facade_gives_the_official_actor_and_graph_tables(database_url, redis_url, corpus):
    """The whole firehose through Indexer.apply_batch (batches of 100) with real identity
    resolution: actor, actor_sync and the graph tables equal db-normalized/; profile differs
    only in the createdAt of the records that have none (the official stores its clock)."""
    from fleet.indexing import IndexingContext
    from tools.parity import chunks, compare, index_events

    migrated(database_url)
    events = corpus_events(corpus)

    async def go():
        async with IdentityServer(corpus) as server:
            ctx = await _ctx(server, redis_url)
            failures = await index_events(database_url, "bsky", chunks(events, 100), IndexingContext(resolver=ctx.resolver))
            await _close(ctx)
        return failures

    assert asyncio.run(go()) == []
    diffs = compare(database_url, "bsky", os.path.join(CORPUS, corpus))
    assert {t: (len(diffs[t].missing), len(diffs[t].extra)) for t in GRAPH_TABLES if not diffs[t].ok} == {}
    # compare() masks profile.createdAt where the record has none (the official stores its
    # clock there); those are exactly the two rows whose createdAt is later than indexedAt
    clock = {r["uri"] for r in expected_rows(corpus, "profile") if r["createdAt"] > r["indexedAt"]}
    assert len(clock) == 2
    from fleet.db import dump

    masked = dump.mask_clock_values(dump.read_dir(os.path.join(CORPUS, corpus, "db")))["profile"]
    assert {json.loads(x)["uri"] for x in masked if json.loads(x)["createdAt"] == dump.CLOCK_VALUE} == clock
    assert diffs["profile"].ok


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
