"""Cross-shard locks (fleet/indexing/locks.py) under real concurrency: two connections, two open
batch transactions, as two shard processes have them.

Each race test holds one batch's transaction open, starts the other batch on a second
connection, waits until PostgreSQL reports that second backend waiting on an advisory lock
(pg_locks, polled with a deadline), then commits the first: the second must then see it. Without
the locks the second batch would not wait, would miss the uncommitted rows, and the first would
have missed the second's: each test fails then.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from fleet.db.migrate import migrate
from fleet.indexing import Indexer, IndexingContext
from fleet.indexing import locks, order
from fleet.indexing.processor import Effects

A, B, C, D = (f"did:plc:{c * 24}" for c in "abcd")
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
POST = "app.bsky.feed.post"


def uri(did: str, rkey: str, coll: str = POST) -> str:
    return f"at://{did}/{coll}/{rkey}"


def ev(did: str, coll: str, rkey: str, seq: int, record: dict | None, typ: str = "create") -> dict:
    e = {"type": typ, "seq": seq, "time": f"2025-01-01T00:00:{seq % 60:02d}.000Z", "did": did, "commit": CID,
         "rev": f"3lzzzzzz{seq:05d}", "collection": coll, "rkey": rkey}  # fmt: skip
    if record is not None:
        e["cid"], e["record"] = CID, record
    return e


def post(did: str, rkey: str, seq: int, parent: str | None = None, root: str | None = None) -> dict:
    rec: dict = {"$type": POST, "text": f"post {rkey}", "createdAt": "2025-01-01T00:00:00.000Z"}
    if parent:
        rec["reply"] = {"root": {"uri": root or parent, "cid": CID}, "parent": {"uri": parent, "cid": CID}}
    return ev(did, POST, rkey, seq, rec)


def like(did: str, rkey: str, seq: int, subject: str) -> dict:
    rec = {"$type": "app.bsky.feed.like", "subject": {"uri": subject, "cid": CID}, "createdAt": "2025-01-01T00:00:00.000Z"}
    return ev(did, "app.bsky.feed.like", rkey, seq, rec)


def deleted(did: str, seq: int) -> dict:
    return {"type": "account", "seq": seq, "time": "2025-01-01T00:01:00.000Z", "did": did, "active": False, "status": "deleted"}


async def _conn(url: str) -> psycopg.AsyncConnection:
    c = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await c.execute("SET search_path TO bsky, public")
    return c


async def _apply(url: str, *batches: list[dict]) -> None:
    ix = Indexer(IndexingContext())
    c = await _conn(url)
    async with c:
        for b in batches:
            async with c.transaction():
                assert await ix.apply_batch(c, b) == []


async def _waiting(watch: psycopg.AsyncConnection, pid: int) -> bool:
    cur = await watch.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (pid,))
    return (await cur.fetchone())[0] > 0


async def _waits(watch: psycopg.AsyncConnection, pid: int, task: asyncio.Task) -> bool:
    """Does backend ``pid`` wait on an advisory lock before ``task`` finishes (10 s at most)?"""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not task.done():
        if await _waiting(watch, pid):
            return True
        await asyncio.sleep(0.01)  # polling a condition with a deadline
    return False


async def race(url: str, first: list[dict], second: list[dict], expect_wait: bool = True) -> bool:
    """Apply ``first`` in an open transaction, then ``second`` on another connection; commit
    ``first`` once ``second`` waits (or at once when it finishes without waiting). Returns
    whether ``second`` waited."""
    ix1, ix2 = Indexer(IndexingContext()), Indexer(IndexingContext())
    c1, c2, watch = await _conn(url), await _conn(url), await _conn(url)
    async with c1, c2, watch:
        tx1 = c1.transaction()
        await tx1.__aenter__()
        assert await ix1.apply_batch(c1, first) == []

        async def run2() -> None:
            async with c2.transaction():
                assert await ix2.apply_batch(c2, second) == []

        task = asyncio.create_task(run2())
        waited = await _waits(watch, c2.info.backend_pid, task)
        await tx1.__aexit__(None, None, None)  # COMMIT
        await asyncio.wait_for(task, 10)
        return waited


def q(url: str, query: str, *params) -> list:
    with psycopg.connect(url) as c:
        c.execute("SET search_path TO bsky, public")
        return c.execute(query, params).fetchall()


@pytest.fixture
def db(database_url):
    migrate(database_url, "bsky")
    return database_url


def test_a_reply_waits_for_its_uncommitted_parent_and_then_sees_it(db):
    p, r = post(A, "3p", 10), post(B, "3r", 20, parent=uri(A, "3p"))
    assert asyncio.run(race(db, [p], [r]))
    assert q(db, 'SELECT "invalidReplyRoot" FROM post WHERE uri = %s', uri(B, "3r")) == [(None,)]
    assert q(db, "SELECT did, reason FROM notification WHERE \"recordUri\" = %s", uri(B, "3r")) == [(A, "reply")]
    assert q(db, 'SELECT "replyCount" FROM post_agg WHERE uri = %s', uri(A, "3p")) == [(1,)]


def test_a_parent_waits_for_an_uncommitted_reply_and_then_re_evaluates_it(db):
    p, r = post(A, "3p", 10), post(B, "3r", 20, parent=uri(A, "3p"))
    assert asyncio.run(race(db, [r], [p]))
    assert q(db, 'SELECT "invalidReplyRoot" FROM post WHERE uri = %s', uri(B, "3r")) == [(None,)]
    assert q(db, "SELECT did, reason FROM notification WHERE \"recordUri\" = %s", uri(B, "3r")) == [(A, "reply")]


def test_a_late_grandparent_and_a_reply_below_it_are_ordered_by_the_ancestor_chain(db):
    """T <- G <- P <- R: R names T (root) and P (parent) only; G arrives late, concurrently with
    R, and re-evaluates P (rewrites its flag) while R reads that flag: R's batch must wait for G's
    because it locks P's committed ancestors too."""
    t = post(A, "3t", 5)
    g = post(C, "3g", 10, parent=uri(A, "3t"))
    p = post(B, "3p", 20, parent=uri(C, "3g"), root=uri(A, "3t"))
    r = post(D, "3r", 30, parent=uri(B, "3p"), root=uri(A, "3t"))
    asyncio.run(_apply(db, [t], [p]))  # P arrived before its parent: flagged until G comes
    assert q(db, 'SELECT "invalidReplyRoot" FROM post WHERE uri = %s', uri(B, "3p")) == [(True,)]
    assert asyncio.run(race(db, [g], [r]))
    assert q(db, 'SELECT uri, "invalidReplyRoot" FROM post ORDER BY uri') == [
        (uri(A, "3t"), None), (uri(B, "3p"), None), (uri(C, "3g"), None), (uri(D, "3r"), None)]  # fmt: skip
    assert sorted(q(db, "SELECT did FROM notification WHERE \"recordUri\" = %s", uri(D, "3r"))) == [(A,), (B,), (C,)]


def test_a_late_parent_and_a_concurrent_delete_of_its_reply_are_ordered(db):
    """Q <- V <- P: P arrives before its parent V (flagged), then V's batch (re-evaluating P)
    and P's delete run concurrently. Unordered, the delete moved P's flagged version to history
    after V had looked there, and R, a reply to P written between (seq 746) but indexed last,
    read that stale flag (found by the killed-indexer conformance run)."""
    Q, V, P = uri(A, "3q"), uri(C, "3v"), uri(A, "3p")
    asyncio.run(_apply(db, [post(A, "3q", 437), post(A, "3p", 551, parent=V, root=Q)]))
    assert q(db, 'SELECT "invalidReplyRoot" FROM post WHERE uri = %s', P) == [(True,)]
    assert asyncio.run(race(db, [post(C, "3v", 490, parent=Q)], [ev(A, POST, "3p", 1218, None, "delete")]))
    assert q(db, 'SELECT "invalidReplyRoot" FROM fleet_record_history WHERE uri = %s', P) == [(None,)]
    asyncio.run(_apply(db, [post(B, "3r", 746, parent=P, root=Q)]))
    assert q(db, 'SELECT "invalidReplyRoot" FROM post WHERE uri = %s', uri(B, "3r")) == [(None,)]


def test_the_ancestor_chain_is_locked_even_when_the_root_is_not_named():
    """R names only its parent P as parent and root; the key set still reaches P's parent."""
    p = locks.plan([post(C, "3r", 30, parent=uri(B, "3p"))])
    assert p.starts == {uri(B, "3p")}
    assert p.keys[uri(C, "3r")] is True and p.keys[uri(B, "3p")] is False


def test_likes_of_one_post_from_two_shards_do_not_wait_for_each_other(db):
    hot = uri(A, "3hot")
    asyncio.run(_apply(db, [post(A, "3hot", 1)]))
    waited = asyncio.run(race(db, [like(f"did:plc:b{i:023d}", "3l", 10 + i, hot) for i in range(50)],
                         [like(f"did:plc:c{i:023d}", "3l", 100 + i, hot) for i in range(50)]))
    assert not waited
    assert q(db, 'SELECT "likeCount" FROM post_agg WHERE uri = %s', hot) == [(100,)]


def follow(did: str, rkey: str, seq: int, subject: str) -> dict:
    return ev(did, "app.bsky.graph.follow", rkey, seq, {"$type": "app.bsky.graph.follow", "subject": subject, "createdAt": "2025-01-01T00:00:00.000Z"})


def following_gate(did: str, rkey: str, seq: int) -> dict:
    rec = {"$type": "app.bsky.feed.threadgate", "post": uri(did, rkey), "allow": [{"$type": "app.bsky.feed.threadgate#followingRule"}],
           "createdAt": "2025-01-01T00:00:00.000Z"}  # fmt: skip
    return ev(did, "app.bsky.feed.threadgate", rkey, seq, rec)


def test_a_follow_by_a_thread_owner_and_a_reply_in_its_ungated_thread_do_not_wait(db):
    asyncio.run(_apply(db, [post(A, "3p", 1)]))
    assert not asyncio.run(race(db, [follow(A, "3f", 10, B)], [post(B, "3r", 11, parent=uri(A, "3p"))]))
    assert q(db, 'SELECT "violatesThreadGate" FROM post WHERE uri = %s', uri(B, "3r")) == [(None,)]


def test_a_follow_by_a_thread_owner_and_a_reply_in_its_gated_thread_are_ordered(db):
    asyncio.run(_apply(db, [post(A, "3p", 1), following_gate(A, "3p", 2)]))
    assert asyncio.run(race(db, [follow(A, "3f", 10, B)], [post(B, "3r", 11, parent=uri(A, "3p"))]))
    # firehose order: A followed B (10) before B replied (11): the following rule lets the reply in
    # (NULL, as the official stores a reply that does not violate; unordered it would be true)
    assert q(db, 'SELECT "violatesThreadGate" FROM post WHERE uri = %s', uri(B, "3r")) == [(None,)]


def test_an_account_deletion_and_an_earlier_like_notifying_it_are_ordered(db):
    asyncio.run(_apply(db, [post(D, "3d", 1)]))
    assert asyncio.run(race(db, [deleted(D, 20)], [like(B, "3l", 10, uri(D, "3d"))]))
    # firehose order: the like (10) notified D, the deletion (20) removed it
    assert q(db, "SELECT count(*) FROM notification WHERE did = %s", D) == [(0,)]


def test_batch_keys_name_writes_exclusive_and_cross_account_reads_shared():
    gate = ev(A, "app.bsky.feed.threadgate", "3p", 5, {"$type": "app.bsky.feed.threadgate", "post": uri(A, "3p"),
                                                       "allow": [], "createdAt": "2025-01-01T00:00:00.000Z"})  # fmt: skip
    follow = ev(A, "app.bsky.graph.follow", "3f", 6, {"$type": "app.bsky.graph.follow", "subject": B, "createdAt": "2025-01-01T00:00:00.000Z"})
    p = locks.plan([post(B, "3r", 7, parent=uri(A, "3p")), gate, follow, like(C, "3l", 8, uri(A, "3p")), deleted(D, 9)])
    assert p.keys == {
        uri(B, "3r"): True,  # the reply's own uri
        uri(A, "3p"): True,  # parent and root, read (S) by the reply, written (X) by the gate of the same batch
        f"acct:{A}": False, f"graph:{A}": True,  # the follow's writer; the reply's thread owner
        f"acct:{B}": False,  # the follow's subject
        f"acct:{D}": True,  # the deletion
    }  # fmt: skip
    assert locks.plan([like(C, "3l", 8, uri(A, "3p"))]).keys == {f"acct:{A}": False}  # likes: no uri key


def test_key_ids_are_stable_64_bit_values():
    assert locks.key_id("at://did:plc:x/app.bsky.feed.post/1") == locks.key_id("at://did:plc:x/app.bsky.feed.post/1")
    assert locks.key_id("acct:did:plc:x") == 4868910691581544752  # pinned: all processes of a fleet must agree
    assert -(2**63) <= locks.key_id("graph:did:plc:x") < 2**63


def test_no_locks_are_taken_outside_a_transaction(db):
    async def go() -> dict:
        c = await _conn(db)
        async with c:
            return await locks.lock_batch(c, [post(A, "3p", 1)])

    assert asyncio.run(go()) == {}


def test_events_needing_a_key_another_batch_holds_are_deferred_with_their_accounts_later_events(db):
    """Shard 1's batch creating A's post is in flight; shard 2's batch holds a reply to it by B.
    ``apply_some`` must not wait: it applies the other accounts' events, defers B's reply and B's
    later post (an account's events keep their order), and applying those next (``must``), once
    the post is committed, gives the firehose-order answer."""

    async def go() -> list[int]:
        ix1, ix2 = Indexer(IndexingContext()), Indexer(IndexingContext())
        c1, c2 = await _conn(db), await _conn(db)
        async with c1, c2:
            tx1 = c1.transaction()
            await tx1.__aenter__()
            assert await ix1.apply_batch(c1, [post(A, "3p", 10)]) == []
            second = [like(C, "3l", 20, uri(D, "3d")), post(B, "3r", 21, parent=uri(A, "3p")), post(B, "3s", 22), like(D, "3m", 23, uri(C, "3c"))]
            async with c2.transaction():
                deferred, failed = await asyncio.wait_for(ix2.apply_some(c2, second), 10)  # would hang if it waited
            assert failed == []
            await tx1.__aexit__(None, None, None)  # COMMIT the post
            async with c2.transaction():
                rest = [second[i] for i in deferred]
                assert await ix2.apply_some(c2, rest, must=len(rest)) == ([], [])
            return deferred

    deferred = asyncio.run(go())
    assert deferred == [1, 2]
    assert q(db, 'SELECT uri, "invalidReplyRoot" FROM post ORDER BY uri') == [(uri(A, "3p"), None), (uri(B, "3r"), None), (uri(B, "3s"), None)]
    assert q(db, "SELECT did, reason FROM notification WHERE \"recordUri\" = %s", uri(B, "3r")) == [(A, "reply")]
    assert q(db, "SELECT count(*) FROM \"like\"") == [(2,)]


def test_deferred_events_wait_the_second_time_and_nothing_is_deferred_when_all_would_be(db):
    """A carried event (among the first ``must``) waits for the key rather than be deferred
    again; a batch all of whose events would be deferred waits too (progress is always made)."""

    async def go() -> list[bool]:
        ix1 = Indexer(IndexingContext())
        c1, c2, watch = await _conn(db), await _conn(db), await _conn(db)
        waits = []
        async with c1, c2, watch:
            for rkey, must, batch in (("3p", 1, [post(B, "3r", 21, parent=uri(A, "3p")), like(C, "3l", 22, uri(D, "3d"))]),
                                      ("3q", 0, [post(B, "3t", 23, parent=uri(A, "3q"))])):  # fmt: skip
                tx1 = c1.transaction()
                await tx1.__aenter__()
                assert await ix1.apply_batch(c1, [post(A, rkey, 10)]) == []
                ix2 = Indexer(IndexingContext())

                async def second(batch: list[dict] = batch, must: int = must) -> tuple:
                    async with c2.transaction():
                        return await ix2.apply_some(c2, batch, must=must)

                task = asyncio.create_task(second())
                waited = await _waits(watch, c2.info.backend_pid, task)
                await tx1.__aexit__(None, None, None)
                assert await asyncio.wait_for(task, 10) == ([], [])
                waits.append(waited)
        return waits

    assert asyncio.run(go()) == [True, True]
    assert q(db, 'SELECT uri, "invalidReplyRoot" FROM post WHERE uri LIKE %s ORDER BY uri', f"at://{B}/%") == [
        (uri(B, "3r"), None), (uri(B, "3t"), None)]  # fmt: skip


@pytest.mark.parametrize("take", ["lock_batch", "lock_some"])
def test_two_batches_whose_chains_grow_into_each_others_keys_do_not_deadlock(db, monkeypatch, take):
    """Each batch holds its keys, then its chain, read again (it may have grown before the locks
    were held), names a post the other batch writes. Waiting for that key while holding the
    first ones deadlocked (PostgreSQL aborts one batch after ``deadlock_timeout``); the keys
    found later are only tried, and a busy one releases everything (``locks._rounds``)."""
    p1, p2 = uri(A, "3a"), uri(B, "3b")
    barrier = asyncio.Barrier(2)
    calls: dict[int, int] = {}
    real = locks.read_keys

    async def read_keys(conn, plan):
        pid = conn.info.backend_pid
        n = calls[pid] = calls.get(pid, 0) + 1
        found = await real(conn, plan)
        if n == 1:  # before the locks (``_wanted``)
            return found
        if n == 2:  # both batches hold their first keys now
            await asyncio.wait_for(barrier.wait(), 10)
        return {**found, (p2 if plan.keys.get(p1) else p1): False}

    monkeypatch.setattr(locks, "read_keys", read_keys)

    async def go() -> list:
        c1, c2 = await _conn(db), await _conn(db)
        async with c1, c2:

            async def batch(c: psycopg.AsyncConnection, events: list[dict]) -> dict:
                async with c.transaction():
                    return await getattr(locks, take)(c, events)

            return await asyncio.wait_for(asyncio.gather(
                batch(c1, [post(A, "3a", 10, parent=uri(C, "3c"))]),
                batch(c2, [post(B, "3b", 11, parent=uri(D, "3d"))]),
                return_exceptions=True), 20)  # fmt: skip

    held1, held2 = asyncio.run(go())
    assert not isinstance(held1, BaseException), held1
    assert not isinstance(held2, BaseException), held2
    if take == "lock_batch":  # the keys held
        assert held1[p1] is True and held1[p2] is False
        assert held2[p2] is True and held2[p1] is False
    else:  # nothing deferred: a one-event batch waits rather than defer all
        assert held1 == [] and held2 == []


def test_an_account_deletion_is_ordered_with_another_batch_re_evaluating_its_post(db):
    """A batch in another shard re-evaluates D's reply (its parent arrived late) and rewrites
    its notification; it holds no lock on D. D's deletion, concurrent, must wait for that
    batch (the reply's row, read FOR SHARE) so that its notification deletes see what the
    batch wrote: no notification by D may survive its deletion."""

    async def go() -> bool:
        await _apply(db, [post(A, "3r", 10)], [post(D, "3d", 11, parent=uri(A, "3r"))])
        ca, cb, watch = await _conn(db), await _conn(db), await _conn(db)
        async with ca, cb, watch:
            txa = ca.transaction()
            await txa.__aenter__()
            fx = Effects()
            await order.reevaluate(ca, uri(D, "3d"), fx)
            await fx.flush(ca)  # the reply's notification to A, written again
            ix = Indexer(IndexingContext())

            async def deletion() -> None:
                async with cb.transaction():
                    assert await ix.apply_batch(cb, [deleted(D, 20)]) == []

            task = asyncio.create_task(deletion())
            deadline, waited = time.monotonic() + 10, False
            while time.monotonic() < deadline and not task.done() and not waited:
                cur = await watch.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (cb.info.backend_pid,))
                waited = (await cur.fetchone())[0] > 0
                await asyncio.sleep(0.01)  # polling a condition with a deadline
            await txa.__aexit__(None, None, None)  # COMMIT the re-evaluation
            await asyncio.wait_for(task, 10)
            return waited

    assert asyncio.run(go()), "the deletion did not wait for the batch re-evaluating its post"
    assert q(db, "SELECT count(*) FROM notification WHERE author = %s OR did = %s", D, D) == [(0,)]
