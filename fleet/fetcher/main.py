"""The fetcher role: ``repo_backfill`` entries -> create events on the backfill shard streams.

Several fetcher processes share the consumer group ``fetcher`` on ``repo_backfill``, each with
its own consumer name (``ctx.instance``). For one entry (``repo={did, host, rev, ...}``):

1. resolve the DID (``fleet.identity``, cached in Redis) -> the PDS endpoint;
2. ``getRepo`` from that PDS (``getrepo.py``: size and time limits, per-PDS and global
   concurrency, 429/``Retry-After`` honoured for the whole PDS);
3. read the CAR, check every block against its CID, optionally verify the commit signature
   (``verify.py``), walk the MST (``repo.py``) in chunks;
4. write each kept record as a ``create`` event (``seq = -2``, the commit's ``rev`` and CID,
   ``time`` = now) to ``firehose_backfill[:<shard(did)>]``, one MULTI/EXEC of 500 XADDs per
   chunk (built while Redis appends the previous one), then a final ``{"type": "repo"}`` event;
   only then XACK+XDEL the entry.

Outcomes: *done*; *gone* (PDS says deactivated/taken down/suspended/not found, PLC 404, no PDS
in the DID document) -> recorded in the hash ``backfill:gone`` (did -> status) and acked;
*failed* -> ``repo_backfill:dlq`` with the reason and attempts, acked. Retryable failures
(timeouts, 5xx, network, truncated or corrupt CAR, PLC errors) back off exponentially up to
``FETCHER_MAX_ATTEMPTS``; attempts are counted in Redis (``repo_backfill:attempts``), so they
survive restarts.

Crash safety: an entry is acked only after all its events are written. Entries of a dead
fetcher stay pending; any fetcher XAUTOCLAIMs them after ``FETCHER_RECLAIM_IDLE_S`` and
processes them (a restarted fetcher with the same name first re-reads its own pending ones).
A live fetcher keeps its in-hand entries fresh (XCLAIM JUSTID) so they are not stolen.
Re-emitted events are harmless: indexing is idempotent and rev-guarded.

Backpressure: above ``FETCHER_HIGH_WATER_MARK`` entries in an output stream the fetcher stops
taking repos and pauses mid-repo before the next chunk, until the stream is below 3/4 of it.
Lengths are as of this process's last look: every chunk write returns its stream's length, and
all output streams are re-read before taking repos (at most every 0.25 s while far below the
mark), so other writers can push a stream past the mark by about a chunk per repo in hand.

Progress: hash ``backfill:stats`` (done, failed, gone, records) and a periodic log line.

Metrics (per process):

| name | type | meaning |
|---|---|---|
| ``rsky_fetcher_repos_total{outcome}`` | counter | repos finished: done, gone, failed |
| ``rsky_fetcher_retries_total{reason}`` | counter | failed attempts that will be retried |
| ``rsky_fetcher_records_total`` | counter | create events written |
| ``rsky_fetcher_invalid_records_total`` | counter | records skipped (undecodable or missing block) |
| ``rsky_fetcher_bytes_total`` | counter | CAR bytes downloaded |
| ``rsky_fetcher_reclaimed_total`` | counter | entries taken over from another (dead) consumer |
| ``rsky_fetcher_inflight`` | gauge | repos in hand |
| ``rsky_fetcher_paused`` | gauge | 1 while an output stream is above its high-water mark |
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import ujson
from prometheus_client import Counter, Gauge
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:
    _NOT_ENOUGH_DATA = None

from fleet import streams
from fleet.codec.firehose import collection_filter
from fleet.identity import DidError, DidResolver, pds_endpoint, signing_key
from fleet.identity.did import CACHE_PREFIX as DID_CACHE_PREFIX
from fleet.identity.did import NOT_READ
from fleet.shard import shard

from .events import CHUNK, create_event_chunks, event_head, repo_event_text

PIECE = CHUNK // 5  # records built between two turns of the event loop
OUTPUTS_RECHECK_S = 0.25  # the output streams' lengths are re-read at most this often while far below the mark
INLINE_PARSE_BYTES = 64 * 1024  # smaller CARs are parsed on the loop (~1 ms at most), larger ones in a thread
from .getrepo import FetchFailed, RateLimited, RepoGone, get_repo
from .repo import RepoError, open_repo
from .verify import KeyError_, SignatureError, public_key, verify_commit

GONE_KEY = "backfill:gone"  # hash: did -> JSON {status, detail, time}
ATTEMPTS_KEY = streams.REPO_BACKFILL + ":attempts"  # hash: entry id -> attempts so far
BACKOFF_CAP_S = 300.0
RATE_LIMIT_FREE_WAITS = 5  # 429s per repo that do not count as an attempt

REPOS = Counter("rsky_fetcher_repos_total", "repos finished by outcome", ["outcome"])
RETRIES = Counter("rsky_fetcher_retries_total", "failed attempts that will be retried", ["reason"])
RECORDS = Counter("rsky_fetcher_records_total", "create events written by the fetcher")
INVALID = Counter("rsky_fetcher_invalid_records_total", "records skipped: undecodable or missing block")
BYTES = Counter("rsky_fetcher_bytes_total", "CAR bytes downloaded")
RECLAIMED = Counter("rsky_fetcher_reclaimed_total", "repo_backfill entries reclaimed from another consumer")
INFLIGHT = Gauge("rsky_fetcher_inflight", "repos in hand")
PAUSED = Gauge("rsky_fetcher_paused", "1 while an output stream is above its high-water mark")


# Appends each ARGV as one entry ``event=<text>`` to KEYS[1]; returns the stream's length.
# One call per chunk: one round trip and one reply instead of one per entry (4x a pipeline of
# XADDs measured here), and a chunk is written whole or not at all. One key: Cluster-safe.
XADD_EVENTS = """
for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'event', ARGV[i]) end
return redis.call('XLEN', KEYS[1])
"""


def pack_xadd_events(stream: str, texts: list[bytes]) -> bytes:
    """The RESP bytes of ``EVAL XADD_EVENTS 1 <stream> <text>...``: what redis-py's packer
    writes for that command, built in one join (its per-argument packing cost ~0.6 us/entry and
    handed the socket dozens of pieces). EVAL, not EVALSHA: Redis caches the compiled script by
    its SHA1 all the same, and there is no NOSCRIPT to handle after a restart or SCRIPT FLUSH."""
    key = stream.encode()
    parts = [b"*%d\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n" % (len(texts) + 4, len(_XADD_EVENTS_B), _XADD_EVENTS_B, len(key), key)]
    extend = parts.extend
    for t in texts:
        extend((b"$%d\r\n" % len(t), t, b"\r\n"))
    return b"".join(parts)


_XADD_EVENTS_B = XADD_EVENTS.encode()


def pack_xadd_multi(stream: str, texts: list[bytes]) -> bytes:
    """The RESP bytes of ``MULTI``, ``XADD <stream> * event <text>`` per text, ``XLEN <stream>``,
    ``EXEC``: the same entries as XADD_EVENTS, applied as one transaction (no other client's
    command in between; refused whole on OOM, like the script), for about half the Redis CPU per
    entry (the script's 500 arguments are copied into Lua strings and each ``redis.call`` copies
    them back: 2.0-2.4 against 0.8-1.2 us measured here)."""
    key = stream.encode()
    xadd = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$5\r\nevent\r\n" % (len(key), key)
    parts = [b"*1\r\n$5\r\nMULTI\r\n"]
    extend = parts.extend
    for t in texts:
        extend((xadd, b"$%d\r\n" % len(t), t, b"\r\n"))
    parts.append(b"*2\r\n$4\r\nXLEN\r\n$%d\r\n%s\r\n*1\r\n$4\r\nEXEC\r\n" % (len(key), key))
    return b"".join(parts)


class Retry(Exception):
    def __init__(self, reason: str, detail: str = "", delay_s: float | None = None, counts: bool = True) -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.delay_s = delay_s
        self.counts = counts


class Fatal(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


class Gone(Exception):
    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}{': ' + detail if detail else ''}")
        self.status = status
        self.detail = detail


def now_iso() -> str:
    """Current time in the official format: ``2026-11-22T05:23:23.423Z``."""
    t = dt.datetime.now(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _opt(cfg: Any, name: str, default: Any) -> Any:
    return getattr(cfg, name, default)


class Fetcher:
    """State of one fetcher process (created inside the process, after the fork)."""

    def __init__(self, cfg: Any, ctx: Any, r: aioredis.Redis, resolver: DidResolver, session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.r = r
        self.resolver = resolver
        self.session = session
        self.log = ctx.log
        self.consumer = ctx.instance
        self.keep = collection_filter(cfg.INGESTER_COLLECTIONS)
        self.hwm = cfg.FETCHER_HIGH_WATER_MARK
        self.reclaim_idle_ms = int(_opt(cfg, "FETCHER_RECLAIM_IDLE_S", 60.0) * 1000)
        self.backoff_s = float(_opt(cfg, "FETCHER_RETRY_BACKOFF_S", 1.0))
        self.pds_sems: dict[str, asyncio.Semaphore] = {}
        self.pds_cool_until: dict[str, float] = {}
        self.inflight: dict[str, asyncio.Task] = {}
        self.out_streams = [streams.shard_stream(streams.FIREHOSE_BACKFILL, k, ctx.shard_count) for k in range(max(1, ctx.shard_count))]
        self.counts = {"done": 0, "gone": 0, "failed": 0, "records": 0, "retries": 0}
        self._paused_until_below = False
        self.lengths: dict[str, int] = {}  # output stream -> its length when last seen
        self._outputs_seen = -1e9  # monotonic time of the last XLEN of every output stream

    # ---- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        await ensure_group(self.r)
        conc = self.cfg.FETCHER_CONCURRENCY
        backlog = True  # first re-read our own pending entries (a restart after a crash)
        backlog_from = "0"
        last_reclaim = 0.0
        last_refresh = time.monotonic()
        last_log = time.monotonic()
        stop = self.ctx.stopping
        redis_delay = 0.5  # back-off while Redis does not answer
        while not stop.is_set():
            try:
                now = time.monotonic()
                if now - last_log >= self.cfg.SUMMARY_INTERVAL_S:
                    last_log = now
                    self.log.info("summary", inflight=len(self.inflight), **self.counts)  # the periodic one-liner every role logs
                if self.inflight and now - last_refresh >= self.reclaim_idle_ms / 3000:
                    last_refresh = now
                    await self._keep_fresh()
                free = conc - len(self.inflight)
                if free <= 0 or await self._outputs_full():
                    waiters = list(self.inflight.values())
                    if waiters:
                        await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                    else:
                        await _wait(stop, 0.5)
                    continue
                entries: list[tuple[str, dict]] = []
                if backlog:
                    res = await self.r.xreadgroup(streams.FETCHER_GROUP, self.consumer, {streams.REPO_BACKFILL: backlog_from}, count=free)
                    ids = [_s(i) for _st, items in res or [] for i, _f in items]
                    backlog_from = ids[-1] if ids else backlog_from
                    gone_ids = [_s(i) for _st, items in res or [] for i, f in items if not f]
                    if gone_ids:  # pending ids whose entries were deleted: nothing left to process
                        await self.r.xack(streams.REPO_BACKFILL, streams.FETCHER_GROUP, *gone_ids)
                    entries = [e for e in _entries(res) if e[0] not in self.inflight]
                    backlog = bool(ids)
                if not entries and now - last_reclaim >= min(5.0, self.reclaim_idle_ms / 2000):
                    last_reclaim = now
                    entries = await self._reclaim(free)
                if not entries:
                    res = await self.r.xreadgroup(
                        streams.FETCHER_GROUP, self.consumer, {streams.REPO_BACKFILL: ">"}, count=free, block=500
                    )
                    entries = _entries(res)
                for eid, fields in entries:
                    if eid in self.inflight:
                        continue
                    task = asyncio.create_task(self._handle(eid, fields))
                    self.inflight[eid] = task
                    task.add_done_callback(lambda _t, eid=eid: self.inflight.pop(eid, None))
                INFLIGHT.set(len(self.inflight))
            except (RedisConnectionError, RedisTimeoutError) as e:  # Redis away or stalled: wait, never exit
                self.log.warning("redis_unavailable", error=f"{type(e).__name__}: {e}", retry_in=round(redis_delay, 2))
                await _wait(stop, redis_delay)
                redis_delay = min(redis_delay * 2, 5.0)
            else:
                redis_delay = 0.5
        if self.inflight:
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        self.log.info("backfill_progress", inflight=0, **self.counts)

    async def _outputs_full(self) -> bool:
        now = time.monotonic()
        if (not self._paused_until_below and now - self._outputs_seen < OUTPUTS_RECHECK_S
                and max(self.lengths.values(), default=0) <= self.hwm // 2):
            return False  # looked just now, far below the mark (chunk replies keep self.lengths current)
        self._outputs_seen = now
        lengths = await _xlens(self.r, self.out_streams)
        self.lengths.update(zip(self.out_streams, lengths))
        limit = self.hwm * 3 // 4 if self._paused_until_below else self.hwm
        full = max(lengths, default=0) > limit
        if full != self._paused_until_below:
            self.log.info("backfill_paused" if full else "backfill_resumed", stream_len=max(lengths, default=0), high_water=self.hwm)
        self._paused_until_below = full
        PAUSED.set(1 if full else 0)
        return full

    async def _wait_stream_below(self, stream: str) -> None:
        if await self.r.xlen(stream) <= self.hwm:
            return
        PAUSED.set(1)
        self.log.info("backfill_paused", stream=stream, high_water=self.hwm)
        while await self.r.xlen(stream) > self.hwm * 3 // 4:
            await asyncio.sleep(0.2)  # polling the stream length: nothing to await on
        PAUSED.set(0)

    async def _reclaim(self, count: int) -> list[tuple[str, dict]]:
        try:
            res = await self.r.xautoclaim(
                streams.REPO_BACKFILL, streams.FETCHER_GROUP, self.consumer, self.reclaim_idle_ms, "0-0", count=count
            )
        except ResponseError:
            return []
        claimed = [(_s(i), f) for i, f in (res[1] or []) if f]
        # ids whose entry was deleted meanwhile come back in res[2] (Redis 7): nothing to do
        if claimed:
            RECLAIMED.inc(len(claimed))
            self.log.warning("reclaimed", count=len(claimed), ids=",".join(i for i, _ in claimed[:10]))
        return [(i, _decode_fields(f)) for i, f in claimed]

    async def _keep_fresh(self) -> None:
        ids = list(self.inflight)
        if ids:
            await self.r.xclaim(streams.REPO_BACKFILL, streams.FETCHER_GROUP, self.consumer, 0, ids, justid=True)

    # ---- one entry -----------------------------------------------------------------------
    async def _handle(self, eid: str, fields: dict) -> None:
        raw = fields.get("repo")
        try:
            repo = ujson.loads(raw) if raw is not None else None
            did = repo["did"] if isinstance(repo, dict) else None
            if not isinstance(did, str):
                raise ValueError("no did")
        except (ValueError, KeyError, TypeError) as e:
            await self._dead_letter(eid, {"raw": str(raw)[:1000]}, "bad_entry", str(e), 0)
            return
        free_waits = 0
        while True:
            # the attempt is counted before the work; the DID cache is read in the same round trip
            pipe = self.r.pipeline(transaction=False)
            pipe.hincrby(ATTEMPTS_KEY, eid, 1)
            if self.resolver.caches:
                pipe.get(DID_CACHE_PREFIX + did)
            res = await pipe.execute()
            attempts = int(res[0])
            try:
                records = await self._fetch_and_emit(did, res[1] if len(res) > 1 else NOT_READ)
            except Gone as g:
                await self._gone(eid, did, g.status, g.detail)
                return
            except Fatal as f:
                await self._dead_letter(eid, repo, f.reason, str(f), attempts)
                return
            except Retry as rt:
                if not rt.counts and free_waits < RATE_LIMIT_FREE_WAITS:
                    free_waits += 1
                    await self.r.hincrby(ATTEMPTS_KEY, eid, -1)
                elif attempts >= self.cfg.FETCHER_MAX_ATTEMPTS:
                    await self._dead_letter(eid, repo, rt.reason, str(rt), attempts)
                    return
                RETRIES.labels(rt.reason).inc()
                self.counts["retries"] += 1
                delay = rt.delay_s if rt.delay_s is not None else _backoff(self.backoff_s, attempts)
                self.log.info("repo_retry", did=did, reason=str(rt), attempt=attempts, delay_s=round(delay, 2))
                if await _wait(self.ctx.stopping, delay):
                    return  # stopping: the entry stays pending and is picked up again later
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not kill the loop nor ack the entry
                self.log.error("repo_error", did=did, error=f"{type(e).__name__}: {e}")
                if attempts >= self.cfg.FETCHER_MAX_ATTEMPTS:
                    await self._dead_letter(eid, repo, "internal", f"{type(e).__name__}: {e}", attempts)
                    return
                if await _wait(self.ctx.stopping, _backoff(self.backoff_s, attempts)):
                    return
                continue
            await self._done(eid, records)
            return

    async def _fetch_and_emit(self, did: str, cached: Any = NOT_READ) -> int:
        try:
            doc = await self.resolver.resolve_did(did, cached=cached)
        except DidError as e:
            if e.reason in ("bad_did", "id_mismatch"):
                raise Fatal("did_" + e.reason, str(e)) from None
            raise Retry("did_" + e.reason, str(e)) from None
        if doc is None:
            raise Gone("did_not_found", "PLC/did:web says the DID does not exist")
        pds = pds_endpoint(doc)
        if pds is None:
            raise Gone("no_pds", "DID document has no #atproto_pds")
        t0 = time.perf_counter()
        car = await self._download(pds, did)
        t1 = time.perf_counter()
        try:
            if len(car) <= INLINE_PARSE_BYTES:  # a thread hand-off costs more than parsing it here
                commit, blocks = open_repo(car, did)
            else:
                commit, blocks = await asyncio.to_thread(open_repo, car, did)
        except RepoError as e:
            if e.reason in ("bad_car", "bad_block", "missing_block"):
                raise Retry("car_" + e.reason, str(e)) from None  # may be a damaged transfer
            raise Fatal("car_" + e.reason, str(e)) from None
        del car
        if self.cfg.FETCHER_VERIFY_SIGNATURES:
            await self._verify(did, doc, commit.fields)
        t2 = time.perf_counter()
        records = await self._emit(did, commit, blocks)
        self.log.debug("repo_fetched", did=did, records=records, download_s=round(t1 - t0, 4), parse_s=round(t2 - t1, 4),
                       emit_s=round(time.perf_counter() - t2, 4))
        return records

    async def _download(self, pds: str, did: str) -> bytes:
        sem = self.pds_sems.setdefault(pds, asyncio.Semaphore(self.cfg.FETCHER_PER_PDS_CONCURRENCY))
        async with sem:
            wait = self.pds_cool_until.get(pds, 0.0) - time.monotonic()
            if wait > 0:
                await _wait(self.ctx.stopping, wait)
                if self.ctx.stopping.is_set():
                    raise Retry("stopping", counts=False)
            try:
                car = await get_repo(self.session, pds, did, self.cfg.FETCHER_MAX_CAR_BYTES, self.cfg.FETCHER_TIMEOUT_S)
            except RepoGone as g:
                raise Gone(g.status, g.detail) from None
            except RateLimited as rl:
                self.pds_cool_until[pds] = time.monotonic() + rl.delay_s
                raise Retry("rate_limited", f"{pds} for {rl.delay_s:.1f}s", delay_s=rl.delay_s, counts=False) from None
            except FetchFailed as f:
                if f.retry:
                    raise Retry("getrepo_" + f.reason, str(f)) from None
                raise Fatal("getrepo_" + f.reason, str(f)) from None
        BYTES.inc(len(car))
        return car

    async def _verify(self, did: str, doc: dict, fields: dict) -> None:
        for fresh in (False, True):  # a failure may be a rotated key: re-resolve once
            if fresh:
                doc = await self.resolver.resolve_did(did, fresh=True) or {}
            sk = signing_key(doc)
            try:
                if sk is None:
                    raise KeyError_("no #atproto key")
                verify_commit(fields, public_key(*sk))
                return
            except (KeyError_, SignatureError) as e:
                err = e
        raise Fatal("bad_signature", str(err))

    async def _emit(self, did: str, commit: Any, blocks: dict[bytes, bytes]) -> int:
        """Write the repo's create events then its repo event, CHUNK entries per Redis call.

        The next chunk is built while Redis appends the previous one (one call in flight, so
        chunks land in order); the repo event rides in the last call, after every record.
        """
        n = self.ctx.shard_count
        stream = streams.shard_stream(streams.FIREHOSE_BACKFILL, shard(did, n), n)
        head = event_head(did, commit.cid_str, commit.rev, now_iso())
        # Built in pieces of PIECE items with the loop let run between them: the previous call's
        # bytes reach Redis meanwhile (a 200 kB call does not fit the socket buffer at once, and
        # Redis cannot start a command it has not received whole), and other repos' downloads
        # and calls are served. A call still carries CHUNK items.
        pieces = create_event_chunks(blocks, commit.data, head, self.keep, PIECE)
        written = invalid = 0
        length = self.lengths.get(stream)  # as of this process's last look (an XLEN round trip per repo saved)
        if length is None:
            length = await self.r.xlen(stream)
        in_flight: asyncio.Future | None = None
        try:
            while True:
                chunk: list = []
                try:
                    while True:
                        piece = next(pieces)
                        chunk += piece
                        if len(piece) < PIECE or len(chunk) >= CHUNK:
                            break
                        await asyncio.sleep(0)
                except RepoError as e:  # the MST itself is broken: nothing is acked, retry later
                    raise Retry("car_" + e.reason, str(e)) from None
                texts = [t for t in chunk if t.__class__ is bytes]
                if len(texts) != len(chunk):
                    for err in chunk:
                        if isinstance(err, RepoError):
                            invalid += 1
                            if invalid <= 3:
                                self.log.warning("record_skipped", did=did, error=str(err))
                last = len(chunk) < CHUNK
                if last:
                    texts.append(repo_event_text(head))
                if in_flight is not None:
                    length = self.lengths[stream] = int(await in_flight)
                    in_flight = None
                if texts:
                    if length > self.hwm:
                        await self._wait_stream_below(stream)
                    in_flight = asyncio.ensure_future(self._xadd_chunk(stream, texts))
                    written += len(texts) - last
                if last:
                    break
            if in_flight is not None:
                self.lengths[stream] = int(await in_flight)
                in_flight = None
        finally:
            if in_flight is not None:  # failed while a chunk was in flight: the repo is retried whole
                in_flight.cancel()
        if invalid:
            INVALID.inc(invalid)
        RECORDS.inc(written)
        return written

    async def _xadd_chunk(self, stream: str, texts: list[bytes]) -> int:
        """Append ``texts`` to ``stream`` as ``event=<text>`` entries, all or none; return the
        stream's length.

        ``MULTI``/``XADD``.../``EXEC`` (:func:`pack_xadd_multi`), its n + 3 replies (OK, n + 1
        QUEUED, the EXEC array) taken straight from the connection's hiredis reader, one C call
        each: redis-py's ``read_response`` costs ~1 us a reply, which is why a pipeline of XADDs
        was 4x slower than the script. That reader is redis-py's internals (``_parser._reader``,
        ``read_from_socket``); a connection without them gets the XADD_EVENTS script instead.
        Any error reply raises, like a failing script call.
        """
        pool = self.r.connection_pool
        conn = await pool.get_connection()
        try:
            parser = getattr(conn, "_parser", None)
            gets = getattr(getattr(parser, "_reader", None), "gets", None)
            if gets is None or _NOT_ENOUGH_DATA is None or not hasattr(parser, "read_from_socket"):
                await conn.send_packed_command(pack_xadd_events(stream, texts))
                return int(await conn.read_response())
            n = len(texts)
            await conn.send_packed_command(pack_xadd_multi(stream, texts))
            first_error = None
            need = n + 3
            res: Any = None
            while need:
                res = gets()
                if res is _NOT_ENOUGH_DATA:
                    await parser.read_from_socket()
                    continue
                need -= 1
                if first_error is None and isinstance(res, Exception):
                    first_error = res
        except BaseException:
            await conn.disconnect()  # a half-read reply must not stay on a pooled connection
            raise
        finally:
            await pool.release(conn)
        if first_error is None and isinstance(res, list) and len(res) == n + 1:
            first_error = next((x for x in res if isinstance(x, Exception)), None)
            if first_error is None:
                return int(res[-1])
        raise first_error if first_error is not None else ResponseError(f"unexpected EXEC reply {str(res)[:200]}")

    # ---- outcomes ------------------------------------------------------------------------
    async def _done(self, eid: str, records: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.xack(streams.REPO_BACKFILL, streams.FETCHER_GROUP, eid)
        pipe.xdel(streams.REPO_BACKFILL, eid)
        pipe.hincrby(streams.BACKFILL_STATS, "done", 1)
        pipe.hincrby(streams.BACKFILL_STATS, "records", records)
        pipe.hdel(ATTEMPTS_KEY, eid)
        await pipe.execute()
        REPOS.labels("done").inc()
        self.counts["done"] += 1
        self.counts["records"] += records

    async def _gone(self, eid: str, did: str, status: str, detail: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(GONE_KEY, did, ujson.dumps({"status": status, "detail": detail, "time": now_iso()}))
        pipe.hincrby(streams.BACKFILL_STATS, "gone", 1)
        pipe.xack(streams.REPO_BACKFILL, streams.FETCHER_GROUP, eid)
        pipe.xdel(streams.REPO_BACKFILL, eid)
        pipe.hdel(ATTEMPTS_KEY, eid)
        await pipe.execute()
        REPOS.labels("gone").inc()
        self.counts["gone"] += 1
        self.log.info("repo_gone", did=did, status=status, detail=detail)

    async def _dead_letter(self, eid: str, repo: Any, reason: str, detail: str, attempts: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(
            streams.dead_letter(streams.REPO_BACKFILL),
            {"repo": ujson.dumps(repo), "id": eid, "reason": reason, "error": detail[:2000], "attempts": attempts, "time": now_iso()},
        )
        pipe.hincrby(streams.BACKFILL_STATS, "failed", 1)
        pipe.xack(streams.REPO_BACKFILL, streams.FETCHER_GROUP, eid)
        pipe.xdel(streams.REPO_BACKFILL, eid)
        pipe.hdel(ATTEMPTS_KEY, eid)
        await pipe.execute()
        REPOS.labels("failed").inc()
        self.counts["failed"] += 1
        did = repo.get("did") if isinstance(repo, dict) else None
        self.log.error("repo_dead_lettered", did=did, reason=reason, error=detail[:300], attempts=attempts)


# ---- helpers -------------------------------------------------------------------------------
async def ensure_group(r: aioredis.Redis) -> None:
    try:
        await r.xgroup_create(streams.REPO_BACKFILL, streams.FETCHER_GROUP, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


async def _xlens(r: aioredis.Redis, names: list[str]) -> list[int]:
    pipe = r.pipeline(transaction=False)
    for s in names:
        pipe.xlen(s)
    return [int(x) for x in await pipe.execute()]


async def _wait(ev: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``ev``; True if it is set."""
    if ev.is_set():
        return True
    try:
        await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
        return True
    except asyncio.TimeoutError:
        return False


def _backoff(base: float, attempt: int) -> float:
    d = min(BACKOFF_CAP_S, base * (2 ** max(0, attempt - 1)))
    return d * (0.5 + random.random() / 2)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _decode_fields(f: dict) -> dict:
    return {_s(k): _s(v) for k, v in f.items()}


def _entries(res: Any) -> list[tuple[str, dict]]:
    out = []
    for _stream, items in res or []:
        for eid, fields in items:
            if fields:  # a pending id whose entry was deleted comes back with no fields
                out.append((_s(eid), _decode_fields(fields)))
    return out


async def run(cfg: Any, ctx: Any) -> None:
    """Fetcher role entry point (``fleet.runtime`` contract)."""
    r = aioredis.from_url(cfg.REDIS_URL)
    connector = aiohttp.TCPConnector(limit=cfg.FETCHER_CONCURRENCY * 2 + 4)
    session = aiohttp.ClientSession(connector=connector)
    resolver = DidResolver(cfg.PLC_URL, redis=r, cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S, session=session)
    try:
        await Fetcher(cfg, ctx, r, resolver, session).run()
    finally:
        await session.close()
        await r.aclose()
