"""The indexer runtime against real Redis and PostgreSQL: batches, acks, retries, dead letters,
priorities, stranded groups, draining. The apply function here is a small real one (it writes a
table in the batch's transaction, with savepoints, as the contract says); the real indexer is
exercised end to end by test_conformance.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import redis as syncredis

from fleet import streams
from fleet.config import load
from fleet.indexer import main as indexer_main
from fleet.log import get_logger
from fleet.runtime import RoleContext

from conftest import ROOT

LIVE = streams.FIREHOSE_LIVE
BACKFILL = streams.FIREHOSE_BACKFILL


class TableIndexer:
    """apply_batch writes each event's seq into ``applied`` (idempotent: counts re-applies).

    An event with ``"fail": k`` fails inside its savepoint its first k attempts (k < 0: always);
    ``"explode": true`` raises outside any savepoint (a bug the runtime must isolate).
    """

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.attempts: dict[int, int] = {}
        self.batches: list[list[dict]] = []
        self.gate = gate  # when set, apply_batch waits for it (to test draining)
        self.entered = asyncio.Event()
        self.transient_failures = 0

    async def apply_batch(self, conn, events):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.transient_failures > 0:
            self.transient_failures -= 1
            raise psycopg.OperationalError("connection to server lost")
        self.batches.append(events)
        failed = []
        for i, ev in enumerate(events):
            seq = ev["seq"]
            if ev.get("explode"):
                raise RuntimeError(f"bug on {seq}")
            n = self.attempts[seq] = self.attempts.get(seq, 0) + 1
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO applied (seq, stream, n) VALUES (%s, %s, 1) "
                        "ON CONFLICT (seq) DO UPDATE SET n = applied.n + 1",
                        (seq, ev.get("stream", "")),
                    )
                    k = ev.get("fail", 0)
                    if k < 0 or n <= k:
                        raise ValueError(f"cannot apply {seq}")
            except ValueError as e:
                failed.append((i, e))
        return failed


def _cfg(redis_url, database_url, **env):
    base = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DATABASE_SCHEMA": "t",
        "INDEXER_BATCH_SIZE": "50",
        "INDEXER_BATCH_WAIT_MS": "20",
        "INDEXER_MAX_DELIVERIES": "3",
        "SUMMARY_INTERVAL_S": "60",
        "INDEXER_RESOLVE_HANDLES": "false",
    }
    base.update({k: str(v) for k, v in env.items()})
    return load(base)


def _schema(database_url):
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS t")
        c.execute("CREATE TABLE IF NOT EXISTS t.applied (seq bigint PRIMARY KEY, stream text, n int NOT NULL)")


def _applied(database_url) -> dict[int, int]:
    with psycopg.connect(database_url) as c:
        return dict(c.execute("SELECT seq, n FROM t.applied").fetchall())


def _add(r, stream, seqs, **extra):
    p = r.pipeline(transaction=False)
    for s in seqs:
        p.xadd(stream, {"event": json.dumps({"type": "create", "seq": s, "time": "2026-01-01T00:00:00.000Z", "stream": stream, **extra})})
    p.execute()


def _pending(r, stream) -> int:
    try:
        return r.xpending(stream, streams.INDEXER_GROUP)["pending"]
    except syncredis.ResponseError:
        return 0


async def _run_until(cfg, indexer, done, shards=(0,), timeout=20.0):
    """Run the role until ``done()`` holds (polled), then stop it and wait for it to return."""
    ctx = RoleContext("indexer", "shard-0", list(shards), cfg.SHARD_COUNT, get_logger("indexer"))
    task = asyncio.create_task(indexer_main.run(cfg, ctx, indexer=indexer))
    deadline = time.monotonic() + timeout
    try:
        while not await asyncio.to_thread(done):
            if task.done():
                task.result()
                raise AssertionError("indexer returned before the condition held")
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.02)
    finally:
        ctx.stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 20)
        except asyncio.TimeoutError:
            task.cancel()
            raise AssertionError("indexer did not return within 20 s of stopping") from None


def test_batches_are_applied_committed_then_acked_and_deleted(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 201))
    _add(r, BACKFILL, range(1001, 1031))
    cfg = _cfg(redis_url, database_url)
    ix = TableIndexer()

    asyncio.run(_run_until(cfg, ix, lambda: len(_applied(database_url)) == 230 and r.xlen(LIVE) == 0 and r.xlen(BACKFILL) == 0))

    assert set(_applied(database_url)) == set(range(1, 201)) | set(range(1001, 1031))
    assert all(len(b) <= 50 for b in ix.batches)
    assert _pending(r, LIVE) == 0 and _pending(r, BACKFILL) == 0
    groups = {g["name"].decode(): g for g in r.xinfo_groups(LIVE)}
    assert list(groups) == [streams.INDEXER_GROUP]
    assert [c["name"].decode() for c in r.xinfo_consumers(LIVE, streams.INDEXER_GROUP)] == ["shard-0"]


def test_own_pending_entries_are_reprocessed_first_after_a_crash(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    r.xgroup_create(LIVE, streams.INDEXER_GROUP, id="0", mkstream=True)
    _add(r, LIVE, range(1, 11))
    # a previous life of shard 0 read these and died before acking
    r.xreadgroup(streams.INDEXER_GROUP, "shard-0", {LIVE: ">"}, count=10)
    _add(r, LIVE, range(11, 21))
    ix = TableIndexer()

    asyncio.run(_run_until(_cfg(redis_url, database_url), ix, lambda: r.xlen(LIVE) == 0))

    order = [ev["seq"] for b in ix.batches for ev in b]
    assert order[:10] == list(range(1, 11))
    assert sorted(order) == list(range(1, 21))
    assert _pending(r, LIVE) == 0


def test_entries_pending_on_another_consumer_name_are_processed_not_acked_blind(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    r.xgroup_create(LIVE, streams.INDEXER_GROUP, id="0", mkstream=True)
    _add(r, LIVE, range(1, 6))
    r.xreadgroup(streams.INDEXER_GROUP, "old-indexer-7", {LIVE: ">"}, count=5)

    asyncio.run(_run_until(_cfg(redis_url, database_url), TableIndexer(), lambda: r.xlen(LIVE) == 0))

    assert set(_applied(database_url)) == set(range(1, 6))


def test_failing_event_is_retried_then_dead_lettered_while_neighbours_are_applied(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 6))
    _add(r, LIVE, [6], fail=-1)  # never applies
    _add(r, LIVE, [7], fail=1)  # applies on its second delivery
    _add(r, LIVE, range(8, 11))
    dlq = streams.dead_letter(LIVE)
    ix = TableIndexer()

    asyncio.run(_run_until(_cfg(redis_url, database_url), ix, lambda: r.xlen(LIVE) == 0 and r.xlen(dlq) == 1))

    applied = _applied(database_url)
    assert set(applied) == set(range(1, 11)) - {6}, "the failing event's savepoint rollback must not touch others"
    assert ix.attempts[6] == 3 and ix.attempts[7] == 2
    [(_, fields)] = r.xrange(dlq)
    fields = {k.decode(): v.decode() for k, v in fields.items()}
    assert json.loads(fields["event"])["seq"] == 6
    assert fields["stream"] == LIVE and fields["deliveries"] == "3"
    assert "ValueError: cannot apply 6" in fields["error"]
    assert _pending(r, LIVE) == 0


def test_unparseable_entry_is_dead_lettered_at_once(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, [1])
    r.xadd(LIVE, {"event": "{not json"})
    r.xadd(LIVE, {"repo": "{}"})
    _add(r, LIVE, [2])
    dlq = streams.dead_letter(LIVE)

    asyncio.run(_run_until(_cfg(redis_url, database_url), TableIndexer(), lambda: r.xlen(LIVE) == 0 and r.xlen(dlq) == 2))

    assert set(_applied(database_url)) == {1, 2}
    errors = [f[b"error"].decode() for _, f in r.xrange(dlq)]
    assert errors[0].startswith("bad entry") and "no 'event' field" in errors[1]
    assert all(f[b"deliveries"] == b"1" for _, f in r.xrange(dlq))


def test_a_batch_that_raises_is_bisected_so_one_poison_event_fails_alone(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 21))
    _add(r, LIVE, [21], explode=True)
    _add(r, LIVE, range(22, 41))
    dlq = streams.dead_letter(LIVE)

    asyncio.run(_run_until(_cfg(redis_url, database_url), TableIndexer(), lambda: r.xlen(LIVE) == 0 and r.xlen(dlq) == 1))

    applied = _applied(database_url)
    assert set(applied) == set(range(1, 41)) - {21}
    assert all(n == 1 for n in applied.values()), "a committed event was applied twice"
    assert b"RuntimeError: bug on 21" in r.xrange(dlq)[0][1][b"error"]


def test_lost_database_connection_retries_the_batch_in_hand_without_counting_deliveries(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 11))
    ix = TableIndexer()
    ix.transient_failures = 4  # more than INDEXER_MAX_DELIVERIES: must not dead-letter

    asyncio.run(_run_until(_cfg(redis_url, database_url), ix, lambda: r.xlen(LIVE) == 0))

    assert set(_applied(database_url)) == set(range(1, 11))
    assert r.xlen(streams.dead_letter(LIVE)) == 0


class PidIndexer(TableIndexer):
    """Records each batch's backend pid; at its third batch's first attempt the backend is
    terminated from outside (as a PostgreSQL restart or an operator would)."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self.pids: list[int] = []
        self.killed = False

    async def apply_batch(self, conn, events):
        if len(self.pids) == 2 and not self.killed:
            self.killed = True
            with psycopg.connect(self.database_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            await conn.execute("SELECT 1")  # raises: the connection is gone
        self.pids.append(conn.info.backend_pid)
        return await super().apply_batch(conn, events)


def test_a_shard_keeps_its_connection_between_batches_and_replaces_a_broken_one(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 251))  # five batches of 50
    ix = PidIndexer(database_url)

    asyncio.run(_run_until(_cfg(redis_url, database_url, DB_POOL_SIZE=3), ix, lambda: r.xlen(LIVE) == 0))

    assert _applied(database_url) == {s: 1 for s in range(1, 251)}
    assert ix.killed and len(ix.pids) == 5
    before, after = ix.pids[:2], ix.pids[2:]
    assert len(set(before)) == 1, f"batches went round the pool: {before}"
    assert len(set(after)) == 1 and after[0] != before[0], f"the broken connection was not replaced: {ix.pids}"
    assert r.xlen(streams.dead_letter(LIVE)) == 0


class SettingIndexer(TableIndexer):
    """Records the session's ``plan_cache_mode`` in each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[str] = []

    async def apply_batch(self, conn, events):
        self.modes.append((await (await conn.execute("SHOW plan_cache_mode")).fetchone())[0])
        return await super().apply_batch(conn, events)


def test_indexer_sessions_plan_prepared_statements_once_unless_configured(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 101))
    ix = SettingIndexer()
    asyncio.run(_run_until(_cfg(redis_url, database_url, DB_POOL_SIZE=2), ix, lambda: r.xlen(LIVE) == 0))
    assert ix.modes and set(ix.modes) == {"force_generic_plan"}

    _add(r, LIVE, range(101, 201))
    ix = SettingIndexer()
    asyncio.run(_run_until(_cfg(redis_url, database_url, INDEXER_PLAN_CACHE_MODE="auto"), ix, lambda: r.xlen(LIVE) == 0))
    assert ix.modes and set(ix.modes) == {"auto"}
    assert _applied(database_url) == {s: 1 for s in range(1, 201)}


class DeferringIndexer(TableIndexer):
    """``apply_some`` as ``Indexer.apply_some`` behaves when another shard holds a key: an event
    with ``"defer": true`` (not among the first ``must``) is deferred with every later event of
    its ``did``; the rest of the batch is applied."""

    def __init__(self) -> None:
        super().__init__()
        self.musts: list[int] = []

    async def apply_some(self, conn, events, must=0):
        self.musts.append(must)
        since: dict[str, int] = {}
        for i, ev in enumerate(events):
            if ev.get("defer") and i >= must and ev["did"] not in since:
                since[ev["did"]] = i
        deferred = [i for i, ev in enumerate(events) if i >= since.get(ev["did"], len(events))]
        keep = [i for i in range(len(events)) if i not in set(deferred)]
        failed = await self.apply_batch(conn, [events[i] for i in keep])
        return deferred, [(keep[i], e) for i, e in failed]


def test_deferred_events_start_the_next_batch_in_order_and_are_acked_once(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 11), did="did:plc:x")
    _add(r, LIVE, [11], did="did:plc:y", defer=True)  # its key is held by another shard's batch
    _add(r, LIVE, range(12, 31), did="did:plc:x")
    _add(r, LIVE, range(31, 41), did="did:plc:y")  # later events of the deferred account
    _add(r, LIVE, range(41, 121), did="did:plc:z")
    ix = DeferringIndexer()

    asyncio.run(_run_until(_cfg(redis_url, database_url), ix, lambda: r.xlen(LIVE) == 0))

    assert _applied(database_url) == {s: 1 for s in range(1, 121)}, "every event applied exactly once"
    first, second = [ev["seq"] for ev in ix.batches[0]], [ev["seq"] for ev in ix.batches[1]]
    assert first == list(range(1, 11)) + list(range(12, 31)) + list(range(41, 51))  # y's events held back
    assert second == [11, *range(31, 41), *range(51, 90)], "the deferred events start the next batch, in order"
    assert ix.musts[:2] == [0, 11]
    y = [ev["seq"] for b in ix.batches for ev in b if ev["did"] == "did:plc:y"]
    assert y == [11, *range(31, 41)]
    assert _pending(r, LIVE) == 0


def test_live_has_priority_but_backfill_is_never_starved(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 601))
    _add(r, BACKFILL, range(10001, 10101))
    ix = TableIndexer()

    asyncio.run(_run_until(_cfg(redis_url, database_url, INDEXER_BATCH_SIZE=40), ix, lambda: r.xlen(LIVE) == 0 and r.xlen(BACKFILL) == 0))

    first = ix.batches[:10]  # 400 events: live alone would fill them all
    live_n = sum(1 for b in first for ev in b if ev["seq"] < 10000)
    bf_n = sum(1 for b in first for ev in b if ev["seq"] >= 10000)
    assert bf_n == 100, "backfill waited behind live"
    assert live_n == 300, "live did not get the rest of every batch"


def test_stranded_group_is_detected_and_rewound(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 31))
    # the old pipeline's state: group cursor past entries that were never delivered
    r.xgroup_create(LIVE, streams.INDEXER_GROUP, id="$", mkstream=True)
    from prometheus_client import REGISTRY

    asyncio.run(_run_until(_cfg(redis_url, database_url), TableIndexer(), lambda: r.xlen(LIVE) == 0))

    assert set(_applied(database_url)) == set(range(1, 31))
    assert REGISTRY.get_sample_value("rsky_indexer_group_heals_total", {"shard": "0", "stream": LIVE}) >= 1


def test_stranded_group_without_self_heal_is_reported_and_left_alone(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 31))
    r.xgroup_create(LIVE, streams.INDEXER_GROUP, id="$", mkstream=True)
    from prometheus_client import REGISTRY

    def stuck_reported():
        return REGISTRY.get_sample_value("rsky_indexer_group_stuck", {"shard": "0", "stream": LIVE}) == 1

    asyncio.run(_run_until(_cfg(redis_url, database_url, INDEXER_SELF_HEAL="false"), TableIndexer(), stuck_reported))

    assert _applied(database_url) == {}
    assert r.xlen(LIVE) == 30


def test_stopping_finishes_and_acks_the_batch_in_hand(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    _add(r, LIVE, range(1, 101))
    cfg = _cfg(redis_url, database_url, INDEXER_BATCH_SIZE=10)

    async def scenario():
        gate = asyncio.Event()
        ix = TableIndexer(gate)
        ctx = RoleContext("indexer", "shard-0", [0], 1, get_logger("indexer"))
        task = asyncio.create_task(indexer_main.run(cfg, ctx, indexer=ix))
        await asyncio.wait_for(ix.entered.wait(), 10)
        ctx.stopping.set()  # while the first batch is inside apply_batch
        gate.set()
        await asyncio.wait_for(task, 10)
        return ix

    ix = asyncio.run(scenario())
    assert len(ix.batches) == 1
    assert set(_applied(database_url)) == set(range(1, 11))
    assert r.xlen(LIVE) == 90 and _pending(r, LIVE) == 0


def test_shard_streams_are_consumed_only_by_their_shard(redis_url, database_url):
    _schema(database_url)
    r = syncredis.Redis.from_url(redis_url)
    for k in range(4):
        _add(r, streams.shard_stream(LIVE, k, 4), range(k * 100, k * 100 + 5))
    cfg = _cfg(redis_url, database_url, SHARD_COUNT=4, SHARDS="1,3")

    asyncio.run(
        _run_until(cfg, TableIndexer(), lambda: r.xlen(streams.shard_stream(LIVE, 1, 4)) == 0 and r.xlen(streams.shard_stream(LIVE, 3, 4)) == 0, shards=(1, 3))
    )

    assert set(_applied(database_url)) == set(range(100, 105)) | set(range(300, 305))
    assert r.xlen(streams.shard_stream(LIVE, 0, 4)) == 5 and r.xlen(streams.shard_stream(LIVE, 2, 4)) == 5


def test_indexer_process_drains_on_sigterm_and_exits_zero(redis_url, database_url):
    """The standalone process (python -m fleet.indexer) with the real indexer: an event that
    belongs to no collection we index is still consumed; SIGTERM ends it with exit 0."""
    from fleet.db.migrate import migrate

    migrate(database_url, "bsky")
    r = syncredis.Redis.from_url(redis_url)
    r.xadd(LIVE, {"event": json.dumps({"type": "sync", "seq": 1, "time": "2026-01-01T00:00:00.000Z", "did": "did:plc:abc", "rev": "3k", "commit": None})})
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url, "DATABASE_SCHEMA": "bsky",
           "INDEXER_RESOLVE_HANDLES": "false", "PYTHONPATH": ROOT}
    p = subprocess.Popen([sys.executable, "-m", "fleet.indexer"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while r.xlen(LIVE) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert r.xlen(LIVE) == 0, "event not consumed"
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert "event=stopped" in out


def test_indexer_process_with_bad_config_exits_78():
    env = {**os.environ, "INDEXER_BATCH_SIZE": "zero", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "fleet.indexer"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 78 and "INDEXER_BATCH_SIZE" in p.stderr
