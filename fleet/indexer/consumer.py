"""One shard's loop: read a batch, apply it in one transaction, commit, then acknowledge.

Shard k is the only consumer (``shard-<k>``) of group ``indexer`` on its live and backfill
streams (DESIGN.md "Delivery"). The loop:

1. On start: create the groups at id 0 (MKSTREAM), take over entries pending on any other
   consumer name of the group, check the group (``groupcheck``), then re-read its own pending
   entries (id ``0``) before new ones (``>``).
2. Read up to ``batch_size`` entries. Live has priority, but backfill is always offered a
   quarter of each batch when it has entries, so a busy firehose cannot starve it.
3. Parse each entry's ``event`` JSON; an entry that does not parse is dead-lettered at once
   (retrying cannot fix it).
4. Apply the events in ONE transaction with ``indexer.apply_some(conn, events, must)``, which
   returns the events it deferred and those it rolled back to a savepoint. It defers the events
   (each with the later ones of its account) that need a cross-shard lock another shard's batch
   in flight holds (``fleet.indexing.locks.lock_some``): they stay in hand (read, pending, not
   counted as a new delivery) and start the next batch, where they are among the ``must``
   events that wait rather than be deferred again; the shard keeps working instead of waiting
   for the other batch's commit. If the whole transaction raises:
   transient database trouble (connection lost, pool timeout, deadlock) keeps the batch in hand
   and retries it after a backoff (it is not re-read, so it is not counted as a delivery); any
   other error bisects the batch so one poison event cannot fail its neighbours.
   A shard keeps its database connection from batch to batch (``connection``).
5. After COMMIT, XACK+XDEL the applied entries. Failed ones stay pending and are re-read
   later; once XPENDING counts ``max_deliveries`` deliveries they go to the dead-letter stream.

A crash anywhere replays at most the batch in hand; the indexing is idempotent, so a replay
changes nothing. On ``stopping`` the batch in hand (and what it deferred) is finished and
acknowledged, then the loop returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, AsyncIterator

import psycopg
import redis.exceptions
from psycopg_pool import PoolTimeout

from .. import streams
from ..codec.atjson import loads_stream_entry
from ..db.pool import record_stats
from ..log import Logger
from . import metrics as m
from .deadletter import ack, dead_letter
from .groupcheck import check_group, heal

GROUP_CHECK_INTERVAL_S = 10.0
RETRY_BASE_S = 0.2
RETRY_MAX_S = 5.0
DB_BACKOFF_MAX_S = 10.0
MAX_TX_RETRIES = 5  # deadlock / serialization retries of a whole batch before bisecting
HOLD_CONNECTION_S = 60.0  # a shard keeps its connection between batches this long (``connection``)


@dataclass
class Entry:
    stream: str
    id: str
    fields: dict[bytes, bytes] | None
    event: dict[str, Any] | None = None


class Abandoned(Exception):
    """The batch in hand could not be applied before stopping; it stays pending."""


def is_transient(exc: BaseException) -> bool:
    """Errors that say nothing about the events: retry the same batch later, whole."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        # no sqlstate: the connection failed; 08: connection exception; 57P0x: server shutting down
        return state is None or state.startswith("08") or state.startswith("57P0")
    return False


def is_retryable_tx(exc: BaseException) -> bool:
    """Deadlock or serialization failure (class 40): the same transaction may well succeed."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(exc, psycopg.Error) and state is not None and state.startswith("40")


def _time_of(ev: dict[str, Any]) -> float | None:
    t = ev.get("time")
    if not isinstance(t, str):
        return None
    try:
        return dt.datetime.fromisoformat(t).timestamp()
    except ValueError:
        return None


class ShardConsumer:
    """The consume/apply/ack loop of one shard (see the module doc)."""

    def __init__(
        self,
        redis: Any,
        pool: Any,
        indexer: Any,
        shard: int,
        shard_count: int,
        *,
        batch_size: int,
        wait_ms: int,
        max_deliveries: int,
        stopping: asyncio.Event,
        log: Logger,
        self_heal: bool = True,
        summary_interval_s: float = 60.0,
        hold_connection: bool = True,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.indexer = indexer
        self.shard = shard
        self.label = str(shard)
        self.streams = streams.indexer_streams(shard, shard_count)
        self.live, self.backfill = self.streams
        self.group = streams.INDEXER_GROUP
        self.consumer = f"shard-{shard}"
        self.batch_size = batch_size
        self.wait_ms = wait_ms
        self.max_deliveries = max_deliveries
        self.stopping = stopping
        self.log = log.bind(shard=shard)
        self.self_heal = self_heal
        self.summary_interval_s = summary_interval_s
        self.retry_at: float | None = None  # when failed entries are due to be re-read
        self.carry: list[Entry] = []  # read, deferred by the last batch (``apply``): the next batch's start
        self.hold_connection = hold_connection
        self._conn: Any = None  # the connection kept between batches (``connection``)
        self._conn_until = 0.0
        self.next_check = 0.0
        self.stats = {"batches": 0, "events": 0, "failed": 0, "dead_lettered": 0}
        self._summary_at = time.monotonic() + summary_interval_s
        self._summary_base = dict(self.stats)

    # -- setup -------------------------------------------------------------------------------

    async def setup(self) -> None:
        for s in self.streams:
            try:
                await self.redis.xgroup_create(s, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            await self._take_over_foreign_pending(s)

    async def _take_over_foreign_pending(self, stream: str) -> None:
        """Entries pending on another consumer name (a renamed or older consumer) become ours,
        so the pending re-read processes them; they are never acknowledged unread."""
        summary = await self.redis.xpending(stream, self.group)
        for c in summary.get("consumers") or []:
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name == self.consumer:
                continue
            start = "0-0"
            while True:
                res = await self.redis.xautoclaim(stream, self.group, self.consumer, 0, start, count=1000)
                start = res[0].decode() if isinstance(res[0], bytes) else res[0]
                if start == "0-0":
                    break
            self.log.warning("pending_taken_over", stream=stream, from_consumer=name, entries=c["pending"])

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        await self.setup()
        await self.check_groups()
        await self.scan_pending()
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if now >= self.next_check:
                    await self.check_groups()
                if self.retry_at is not None and now >= self.retry_at:
                    self.retry_at = None
                    await self.scan_pending()
                    continue
                entries = self.carry + await self.read_new(self.batch_size - len(self.carry), block=not self.carry)
                self.carry = []
                if entries:
                    await self.process(entries)
                self._maybe_summary()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                self.log.error("redis_unavailable", error=str(e))
                # what was read and not acknowledged is pending: re-read it in order before
                # anything new (a deferred entry first of all, before its account's later ones)
                self.carry = []
                self.retry_at = time.monotonic()
                await self._pause(1.0)
            except Abandoned:
                break
        try:
            await self._drain_carry(stopping_too=True)  # finish the batch in hand
        except (Abandoned, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            self.log.warning("batch_left_pending", events=len(self.carry), reason=type(e).__name__)
        finally:
            await self._release_connection()
        self.log.info("stopped", **self.stats)

    # -- the database connection ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """The connection for one batch: the one the last batch used, while it is idle and
        younger than ``HOLD_CONNECTION_S`` here.

        Going back to the pool after every batch, a shard's batches went round the pool's
        connections in turn (psycopg_pool lends the longest idle one first), so each batch met a
        backend whose caches the other batches had cooled and whose statements it had to
        prepare again. Keeping one backend: 98 - 100 us of PostgreSQL CPU per event instead of
        106 - 134 us, 8,967 - 9,151 events/s instead of 7,117 - 8,746 (``tools/bench_index.py``,
        2 shards, 100,000 events, pool of two, runs alternated, 2026-12-07); at 200,000 events
        the difference was within the machine's noise (README, Benchmarks).

        After ``HOLD_CONNECTION_S`` it goes back and the pool lends one (``max_lifetime`` and
        the pool's checks apply); after a failure it goes back at once, and the pool discards
        it if it is broken. ``hold_connection=False`` (a process with more shards than
        connections, ``fleet.indexer.main``) borrows per batch."""
        conn, self._conn = self._conn, None
        if conn is not None and (time.monotonic() >= self._conn_until or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            await self.pool.putconn(conn)
            conn = None
        if conn is None:
            conn = await self.pool.getconn()
            self._conn_until = time.monotonic() + HOLD_CONNECTION_S
        try:
            yield conn
        except BaseException:
            await self.pool.putconn(conn)
            raise
        if self.hold_connection and not self.stopping.is_set():
            self._conn = conn
        else:
            await self.pool.putconn(conn)

    async def _release_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.putconn(conn)

    async def _pause(self, seconds: float) -> None:
        """Back off, but wake at once when the process is asked to stop."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- reading -----------------------------------------------------------------------------

    async def _xread(self, ids: dict[str, str], count: int, block: int | None = None) -> list[Entry]:
        if count <= 0:
            return []
        res = await self.redis.xreadgroup(self.group, self.consumer, ids, count=count, block=block)
        out = []
        for stream, items in res or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for eid, fields in items:
                out.append(Entry(name, eid.decode() if isinstance(eid, bytes) else eid, fields or None))
        return out

    async def read_new(self, n: int | None = None, block: bool = True) -> list[Entry]:
        """Up to ``n`` (``batch_size``) new entries, live first, backfill offered a quarter;
        when both are empty, waits up to ``wait_ms`` for either if ``block``."""
        n = self.batch_size if n is None else n
        if n <= 0:
            return []
        quota = max(1, n // 4)
        bf = await self._xread({self.backfill: ">"}, quota)
        live = await self._xread({self.live: ">"}, n - len(bf))
        if len(bf) == quota and len(bf) + len(live) < n:
            bf += await self._xread({self.backfill: ">"}, n - len(bf) - len(live))
        if bf or live or not block:
            return live + bf
        # Both empty: wait for either (COUNT applies per stream).
        return await self._xread({self.live: ">", self.backfill: ">"}, max(1, n // 2), block=max(self.wait_ms, 1))  # BLOCK 0 would never return

    async def scan_pending(self) -> None:
        """Re-read this consumer's pending entries (id 0 onwards) and process them."""
        await self._drain_carry()  # pending too: applied first, not read again
        for stream in self.streams:
            cursor = "0"
            while not self.stopping.is_set():
                carry, self.carry = self.carry, []
                entries = await self._xread({stream: cursor}, self.batch_size - len(carry))
                if entries:
                    cursor = entries[-1].id
                elif not carry:
                    break
                await self.process(carry + entries)
            await self._drain_carry()

    async def _drain_carry(self, stopping_too: bool = False) -> None:
        """Apply the entries the last batch deferred (carried entries are never deferred twice)."""
        while self.carry and (stopping_too or not self.stopping.is_set()):
            carry, self.carry = self.carry, []
            await self.process(carry)

    # -- one batch ---------------------------------------------------------------------------

    async def process(self, entries: list[Entry]) -> None:
        t0 = time.monotonic()
        good: list[Entry] = []
        must = 0  # carried over from the last batch (``apply``): applied now, whatever they wait for
        for e in entries:
            if e.fields is None:
                # Pending but deleted from the stream: nothing left to apply.
                self.log.warning("pending_entry_vanished", stream=e.stream, id=e.id)
                await ack(self.redis, self.group, e.stream, [e.id])
                continue
            if e.event is not None:  # carried over (deferred by the last batch): parsed already
                good.append(e)
                must += 1
                continue
            raw = e.fields.get(b"event", e.fields.get("event"))  # type: ignore[call-overload]
            try:
                if raw is None:
                    raise ValueError("entry has no 'event' field")
                ev = loads_stream_entry(raw)
                if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
                    raise ValueError("event is not an object with a 'type'")
            except ValueError as exc:
                await self._dead_letter(e, f"bad entry: {exc}", 1, "bad_entry")
                continue
            e.event = ev
            good.append(e)
        if good:
            deferred, failures = await self.apply([e.event for e in good], must)  # type: ignore[misc]
            self.carry = [good[i] for i in deferred]  # the shard's next batch starts with them
            skip = set(deferred).union(failures)
            applied = [e for i, e in enumerate(good) if i not in skip]
            now = time.time()
            for s in self.streams:
                await ack(self.redis, self.group, s, [e.id for e in applied if e.stream == s])
            for typ, n in Counter(e.event["type"] for e in applied).items():  # type: ignore[index]
                m.EVENTS.labels(self.label, typ).inc(n)  # once per type and batch (labels() costs ~1 us)
            times = [_time_of(e.event) for e in applied if e.stream == self.live]  # type: ignore[arg-type]
            m.COMMIT_LAG.observe_many((self.label,), [max(0.0, now - t) for t in times if t is not None])
            if failures:
                await self._handle_failures([(good[i], exc) for i, exc in sorted(failures.items())])
            self.stats["events"] += len(applied)
        self.stats["batches"] += 1
        m.BATCHES.labels(self.label).inc()
        m.BATCH_SECONDS.labels(self.label).observe(time.monotonic() - t0)
        record_stats(self.pool)

    async def apply(self, events: list[dict[str, Any]], must: int = 0) -> tuple[list[int], dict[int, BaseException]]:
        """Apply ``events``; returns the indexes of those deferred (``Indexer.apply_some``:
        another shard's batch in flight holds a lock they need; never one of the first
        ``must``) and {index: error} of those that failed."""
        delay = 0.2
        tx_retries = 0
        while True:
            try:
                if tx_retries == 0 and hasattr(self.indexer, "apply_some"):
                    return await self._apply_some(events, must)
                return [], await self._apply_chunk(events, 0, bisect=tx_retries >= MAX_TX_RETRIES)
            except Exception as exc:
                if is_transient(exc):
                    m.BATCH_FAILURES.labels(self.label, "database").inc()
                    self.log.error("database_unavailable", error=str(exc).strip(), retry_in=round(delay, 2))
                elif is_retryable_tx(exc):
                    tx_retries += 1
                    m.BATCH_FAILURES.labels(self.label, "conflict").inc()
                    self.log.warning("transaction_conflict", error=str(exc).strip(), attempt=tx_retries)
                else:
                    raise
            if self.stopping.is_set():
                self.log.warning("batch_abandoned", events=len(events), reason="stopping while the database fails")
                raise Abandoned()
            await self._pause(delay)
            delay = min(delay * 2, DB_BACKOFF_MAX_S)

    async def _apply_some(self, events: list[dict[str, Any]], must: int) -> tuple[list[int], dict[int, BaseException]]:
        try:
            async with self.connection() as conn:
                async with conn.transaction():
                    deferred, failed = await self.indexer.apply_some(conn, events, must)
            return deferred, dict(failed)
        except Exception as exc:
            if is_transient(exc) or is_retryable_tx(exc):
                raise
            return [], await self._bisect(events, 0, False, exc)

    async def _apply_chunk(self, events: list[dict[str, Any]], base: int, bisect: bool) -> dict[int, BaseException]:
        try:
            async with self.connection() as conn:
                async with conn.transaction():
                    failed = await self.indexer.apply_batch(conn, events)
            return {base + i: exc for i, exc in failed}
        except Exception as exc:
            if is_transient(exc) or (is_retryable_tx(exc) and not bisect):
                raise
            return await self._bisect(events, base, bisect, exc)

    async def _bisect(self, events: list[dict[str, Any]], base: int, bisect: bool, exc: BaseException) -> dict[int, BaseException]:
        """The whole transaction failed: apply the halves apart, so one poison event fails alone."""
        m.BATCH_FAILURES.labels(self.label, "error").inc()
        if len(events) == 1:
            return {base: exc}
        mid = len(events) // 2
        self.log.warning("batch_bisected", events=len(events), error=repr(exc)[:300])
        left = await self._apply_chunk(events[:mid], base, bisect)
        right = await self._apply_chunk(events[mid:], base + mid, bisect)
        return {**left, **right}

    async def _handle_failures(self, failed: list[tuple[Entry, BaseException]]) -> None:
        """Failed entries stay pending; those delivered ``max_deliveries`` times are dead-lettered."""
        m.EVENT_FAILURES.labels(self.label).inc(len(failed))
        self.stats["failed"] += len(failed)
        async with self.redis.pipeline(transaction=False) as p:
            for e, _ in failed:
                p.xpending_range(e.stream, self.group, e.id, e.id, 1)
            info = await p.execute()
        most = 0
        for (e, exc), rows in zip(failed, info):
            deliveries = int(rows[0]["times_delivered"]) if rows else self.max_deliveries
            error = f"{type(exc).__name__}: {exc}"
            if deliveries >= self.max_deliveries:
                await self._dead_letter(e, error, deliveries, "max_deliveries")
            else:
                most = max(most, deliveries)
                self.log.warning("event_failed", stream=e.stream, id=e.id, deliveries=deliveries, error=error[:500])
        if most:
            due = time.monotonic() + min(RETRY_BASE_S * 2 ** (most - 1), RETRY_MAX_S)
            self.retry_at = due if self.retry_at is None else min(self.retry_at, due)

    async def _dead_letter(self, e: Entry, error: str, deliveries: int, reason: str) -> None:
        await dead_letter(self.redis, self.group, e.stream, e.id, e.fields, error, deliveries)
        m.DEAD_LETTERED.labels(self.label, reason).inc()
        self.stats["dead_lettered"] += 1
        self.log.error(
            "dead_lettered", stream=e.stream, id=e.id, to=streams.dead_letter(e.stream), deliveries=deliveries, error=error[:500]
        )

    # -- watching ----------------------------------------------------------------------------

    async def check_groups(self) -> None:
        """Log loudly (and heal) a group that cannot deliver waiting entries; refresh gauges."""
        self.next_check = time.monotonic() + GROUP_CHECK_INTERVAL_S
        for s in self.streams:
            st = await check_group(self.redis, s, self.group)
            if st is None:
                continue
            m.PENDING.labels(self.label, s).set(st.pending)
            m.GROUP_STUCK.labels(self.label, s).set(1 if st.stuck else 0)
            if not st.stuck:
                continue
            self.log.error(
                "group_stranded",
                stream=s,
                stranded=st.stranded,
                length=st.length,
                pending=st.pending,
                last_delivered=st.last_delivered,
                first_entry=st.first_id,
                last_generated=st.last_generated,
                hint="entries at or before last-delivered-id are not pending: XREADGROUP > will never deliver them",
            )
            if self.self_heal:
                await heal(self.redis, s, self.group)
                m.GROUP_HEALS.labels(self.label, s).inc()
                self.log.warning("group_rewound", stream=s, to="0", reason="re-deliver stranded entries; indexing is idempotent")

    def _maybe_summary(self) -> None:
        now = time.monotonic()
        if now < self._summary_at:
            return
        delta = {k: v - self._summary_base[k] for k, v in self.stats.items()}
        self.log.info("summary", interval_s=self.summary_interval_s, **delta)
        self._summary_base = dict(self.stats)
        self._summary_at = now + self.summary_interval_s
