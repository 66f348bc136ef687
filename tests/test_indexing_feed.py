"""Feed indexing behaviours through Indexer.apply_batch on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg

from fleet.db.migrate import migrate
from fleet.indexing import Indexer, IndexingContext

A, B = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
CID1 = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
CID2 = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
POST_B = f"at://{B}/app.bsky.feed.post/3jzfcijpj2z2b"


def like(rkey: str, rev: str, seq: int, subject: str = POST_B, typ: str = "create", cid: str = CID1) -> dict:
    ev = {"type": typ, "seq": seq, "time": f"2025-01-01T00:00:{seq % 60:02d}.000Z", "did": A, "commit": CID1, "rev": rev,
          "collection": "app.bsky.feed.like", "rkey": rkey}  # fmt: skip
    if typ != "delete":
        ev["cid"] = cid
        ev["record"] = {"$type": "app.bsky.feed.like", "subject": {"uri": subject, "cid": CID2}, "createdAt": "2025-01-01T00:00:00.000Z"}
    return ev


async def _apply(url: str, *batches: list[dict]) -> list:
    ix = Indexer(IndexingContext())
    out = []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SET search_path TO bsky, public")
        for b in batches:
            async with conn.transaction():
                out.append(await ix.apply_batch(conn, b))
    return out


def _q(url: str, query: str) -> list:
    with psycopg.connect(url) as c:
        c.execute("SET search_path TO bsky, public")
        return c.execute(query).fetchall()


def test_a_like_writes_record_row_notification_and_count(database_url):
    migrate(database_url, "bsky")
    asyncio.run(_apply(database_url, [like("3l1", "3k000000000a2", 10)]))
    assert _q(database_url, 'SELECT creator, subject FROM "like"') == [(A, POST_B)]
    assert _q(database_url, "SELECT did, reason, \"reasonSubject\" FROM notification") == [(B, "like", POST_B)]
    assert _q(database_url, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    assert _q(database_url, "SELECT rev, seq FROM record") == [("3k000000000a2", 10)]


def test_applying_an_event_twice_changes_nothing(database_url):
    migrate(database_url, "bsky")
    ev = like("3l1", "3k000000000a2", 10)
    asyncio.run(_apply(database_url, [ev], [ev, ev]))
    assert _q(database_url, 'SELECT "likeCount" FROM post_agg') == [(1,)]
    assert _q(database_url, "SELECT count(*) FROM notification") == [(1,)]


def test_an_older_create_does_not_resurrect_a_deleted_record(database_url):
    migrate(database_url, "bsky")
    create = like("3l1", "3k000000000a2", 10)
    delete = like("3l1", "3k000000000b2", 11, typ="delete")
    asyncio.run(_apply(database_url, [create], [delete], [create]))  # a late replay/backfill of the create
    assert _q(database_url, 'SELECT count(*) FROM "like"') == [(0,)]
    assert _q(database_url, 'SELECT "likeCount" FROM post_agg') == [(0,)]
    assert _q(database_url, "SELECT rev FROM fleet_record_tombstone") == [("3k000000000b2",)]


def test_an_older_update_does_not_overwrite_a_newer_one(database_url):
    migrate(database_url, "bsky")
    other = f"at://{B}/app.bsky.feed.post/3jzfcijpj2z2c"
    new = like("3l1", "3k000000000c2", 12, subject=other, typ="update", cid=CID2)
    old = like("3l1", "3k000000000b2", 11, typ="update")
    asyncio.run(_apply(database_url, [like("3l1", "3k000000000a2", 10)], [new], [old]))
    assert _q(database_url, 'SELECT subject FROM "like"') == [(other,)]
    assert sorted(_q(database_url, 'SELECT uri, "likeCount" FROM post_agg')) == [(POST_B, 0), (other, 1)]


def test_a_poison_event_fails_alone_and_its_neighbours_are_applied(database_url):
    migrate(database_url, "bsky")
    poison = like("3l2", "3k000000000a3", 11)
    poison["record"]["subject"]["uri"] = "at://" + B + "/app.bsky.feed.post/x\x00"  # NUL: PostgreSQL refuses it
    bad = dict(like("3l3", "3k000000000a4", 12), time=None)  # indexedAt NOT NULL: a real failure
    good = [like("3l1", "3k000000000a2", 10), like("3l4", "3k000000000a5", 13, subject=POST_B + "z")]
    (failed,) = asyncio.run(_apply(database_url, [good[0], poison, bad, good[1]]))
    assert [i for i, _ in failed] == [2]
    assert sorted(r[0] for r in _q(database_url, 'SELECT uri FROM "like"')) == sorted(
        f"at://{A}/app.bsky.feed.like/{k}" for k in ("3l1", "3l4")
    )
    assert _q(database_url, 'SELECT sum("likeCount") FROM post_agg') == [(2,)]


def test_deleting_a_like_promotes_its_duplicate_and_keeps_the_count(database_url):
    migrate(database_url, "bsky")
    first, dupe = like("3l1", "3k000000000a2", 10), like("3l2", "3k000000000a3", 11)
    asyncio.run(_apply(database_url, [first, dupe]))
    assert _q(database_url, 'SELECT uri, "duplicateOf" FROM duplicate_record') == [(f"at://{A}/app.bsky.feed.like/3l2", f"at://{A}/app.bsky.feed.like/3l1")]
    asyncio.run(_apply(database_url, [like("3l1", "3k000000000b2", 12, typ="delete")]))
    assert _q(database_url, 'SELECT uri FROM "like"') == [(f"at://{A}/app.bsky.feed.like/3l2",)]
    assert _q(database_url, 'SELECT "likeCount" FROM post_agg') == [(1,)]
