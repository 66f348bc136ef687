"""Aggregates: summed deltas, one upsert per key, exact after concurrent shards on hot rows."""

from __future__ import annotations

import asyncio

import psycopg

from fleet.db.migrate import migrate
from fleet.indexing import Indexer, IndexingContext
from fleet.indexing.aggregates import recount_mismatches

CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
HOT = [f"at://did:plc:hot{i:021d}/app.bsky.feed.post/3jzfcijpj2z2a" for i in range(5)]


def likes(did: str, n: int, subjects: list[str], seq0: int) -> list[dict]:
    out = []
    for i in range(n):
        # one liker per like: a second like of the same subject by one account is a duplicate
        out.append({"type": "create", "seq": seq0 + i, "time": "2025-01-01T00:00:00.000Z", "did": f"{did}{i:04d}", "commit": CID,
                    "rev": f"3k{i:011d}", "collection": "app.bsky.feed.like", "rkey": f"3l{i:011d}", "cid": CID,
                    "record": {"$type": "app.bsky.feed.like", "subject": {"uri": subjects[i % len(subjects)], "cid": CID},
                               "createdAt": "2025-01-01T00:00:00.000Z"}})  # fmt: skip
    return out


async def _shard(url: str, events: list[dict], batch: int, started: asyncio.Event, hold: float) -> None:
    ix = Indexer(IndexingContext())
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SET search_path TO bsky, public")
        await conn.commit()
        for i in range(0, len(events), batch):
            async with conn.transaction():
                assert await ix.apply_batch(conn, events[i : i + batch]) == []
                started.set()
                await asyncio.sleep(hold)  # keep the hot rows locked while the other shard writes


async def _recount(url: str) -> list:
    async with await psycopg.AsyncConnection.connect(url) as c:
        await c.execute("SET search_path TO bsky, public")
        return await recount_mismatches(c)


def test_concurrent_shards_on_hot_subjects_neither_deadlock_nor_miscount(database_url):
    migrate(database_url, "bsky")
    a = likes("did:plc:shardaaaaaaaaaaaaaaaaaaa", 300, HOT, 1)
    b = likes("did:plc:shardbbbbbbbbbbbbbbbbbbb", 300, list(reversed(HOT)), 1000)

    async def both() -> None:
        s1, s2 = asyncio.Event(), asyncio.Event()
        await asyncio.wait_for(asyncio.gather(_shard(database_url, a, 50, s1, 0.01), _shard(database_url, b, 50, s2, 0.01)), 60)

    asyncio.run(both())
    with psycopg.connect(database_url) as c:
        rows = dict(c.execute('SELECT uri, "likeCount" FROM bsky.post_agg').fetchall())
    assert rows == {u: 120 for u in HOT}
    assert asyncio.run(_recount(database_url)) == []


def test_a_batch_upserts_each_aggregate_key_once(database_url):
    migrate(database_url, "bsky")
    from fleet.indexing.aggregates import AGG_KEYS

    before = AGG_KEYS.labels("post_agg")._value.get()
    asyncio.run(_shard(database_url, likes("did:plc:onebatchaaaaaaaaaaaaaaaa", 200, HOT, 1), 200, asyncio.Event(), 0))
    assert AGG_KEYS.labels("post_agg")._value.get() - before == len(HOT)
