"""Batches of stream entries written with their cursor in one Redis transaction; backpressure.

One :class:`StreamWriter` per subscription (relay or labeler). The reader hands it entries
(``add``) and, after each frame, the frame's ``seq`` (``advance``). A batch is written when it
holds ``batch_size`` entries or its first entry is ``batch_ms`` old, as

    XADD <stream> <id> event <json> ...; SET <cursor key> <seq>; [XLEN <stream> ...]

in one Lua script call (``batchscript.py``; atomic like MULTI/EXEC, one reply), so the cursor is never ahead of what the streams hold, and never behind a written window: a
crash before EXEC writes nothing, after it writes both. Entry ids are ``<seq>-<n>`` (n = the
event's index in its frame) when the writer is the only one feeding its streams: Redis then
refuses an id it has passed, a second guard against replays (and the one that still holds on
Redis Cluster, where MULTI cannot span the shard streams). A refused id for a seq above the
cursor the writer started from means someone else wrote to the stream; such entries are
rewritten with an automatic id and counted (``rsky_ingester_id_conflicts``), never dropped.

Writing overlaps reading: one batch is in flight while the next fills; a full batch waits
for the one in flight. A failed write is retried with backoff until it succeeds (reading
stops meanwhile); nothing is dropped.

Backpressure: every ``check_interval``, and at once when the known lengths plus what this
writer added since would cross the mark, the same transaction reads ``XLEN`` of the watched
streams; above ``high_water`` the writer is paused (``wait_ready`` blocks the reader) until
every stream is below ``low_water`` (polled while paused).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..log import Logger
from . import metrics as m
from .backoff import Backoff
from .batchscript import write_batch


class StreamWriter:
    def __init__(
        self,
        redis: Any,
        *,
        source: str,
        cursor_key: str,
        watch: list[str],
        batch_size: int,
        batch_ms: int,
        high_water: int,
        low_water: int,
        log: Logger,
        check_interval: float = 0.25,
    ) -> None:
        self.redis = redis
        self.source = source
        self.cursor_key = cursor_key
        self.watch = watch
        self.batch_size = batch_size
        self.batch_s = batch_ms / 1000.0
        self.high_water = high_water
        self.low_water = low_water
        self.log = log
        self.check_interval = check_interval
        self.entries: list[tuple[str, str, str]] = []  # (stream, id or "*", event json)
        self.seq: int | None = None  # seq of the last frame whose entries are in self.entries
        self.first_at = 0.0  # when the pending batch got its first frame
        self.durable: int | None = None  # cursor value known to be in Redis
        self.started_from: int | None = None  # cursor at start: refused ids above it are conflicts
        self.paused = False
        self.lengths: dict[str, int] = {}
        self._last_check = 0.0
        self._grown: m.Tally = m.Tally()  # entries added per stream since the last length check
        self._inflight: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._ready.set()
        self._lock = asyncio.Lock()  # batches go to Redis one after the other, in order
        self.tally: m.Tally = m.Tally()  # hot-path counters, flushed to prometheus per batch
        self.events_tally: m.Tally = m.Tally()
        self.written_entries = 0

    async def load_cursor(self) -> int | None:
        v = await self.redis.get(self.cursor_key)
        self.durable = int(v) if v is not None else None
        self.started_from = self.durable
        return self.durable

    # ---- the reader's side (no await on the hot path) -----------------------------------
    def add(self, stream: str, entry_id: str, text: str) -> None:
        if not self.entries and self.seq is None:
            self.first_at = time.monotonic()
        self.entries.append((stream, entry_id, text))

    def advance(self, seq: int) -> None:
        if self.seq is None and not self.entries:
            self.first_at = time.monotonic()
        self.seq = seq

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.batch_size

    def due(self, now: float) -> bool:
        return (bool(self.entries) or self.seq is not None) and now - self.first_at >= self.batch_s

    async def wait_ready(self) -> None:
        """Return when reading may go on (not paused by backpressure)."""
        if not self._ready.is_set():
            await self._ready.wait()

    async def flush(self) -> None:
        """Hand the pending batch to the writer task; waits for the batch in flight first."""
        async with self._lock:
            if not self.entries and self.seq is None:
                return
            entries, seq = self.entries, self.seq
            self.entries, self.seq = [], None
            if self._inflight is not None:
                await self._inflight
            self._inflight = asyncio.ensure_future(self._write(entries, seq))

    async def drain(self) -> None:
        """Write everything pending and wait until it is in Redis."""
        await self.flush()
        async with self._lock:
            if self._inflight is not None:
                await self._inflight
                self._inflight = None

    # ---- the writing side ---------------------------------------------------------------
    async def _write(self, entries: list[tuple[str, str, str]], seq: int | None) -> None:
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                await self._write_once(entries, seq)
                return
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                self._error(e, backoff)
            except Exception as e:  # redis-py wraps connection errors in its own classes
                if type(e).__module__.startswith("redis"):
                    self._error(e, backoff)
                else:
                    raise
            await asyncio.sleep(backoff.next())

    def _error(self, e: BaseException, backoff: Backoff) -> None:
        m.WRITE_ERRORS.labels(self.source).inc()
        self.log.error("stream_write_failed", source=self.source, error=str(e) or type(e).__name__, attempt=backoff.attempt + 1)
        self._ready.clear()  # hold the reader until Redis takes writes again

    async def _write_once(self, entries: list[tuple[str, str, str]], seq: int | None) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        grown = self._grown
        for stream, _id, _text in entries:
            grown[stream] += 1
        # lengths only grow through us between checks: check at once when our estimate crosses the mark
        check = self.paused or now - self._last_check >= self.check_interval or any(
            self.lengths.get(s, 0) + n > self.high_water for s, n in grown.items())
        watch = self.watch if check else []
        refused, lengths = await write_batch(self.redis, self.cursor_key, watch, entries, seq)
        retry = []
        for i in refused:
            stream, entry_id, text = entries[i]
            entry_seq = int(entry_id.split("-", 1)[0]) if entry_id != "*" else None
            if self.started_from is not None and entry_seq is not None and entry_seq <= self.started_from:
                m.DUPLICATES.labels(self.source).inc()
            else:
                retry.append((stream, text))
        if retry:
            m.ID_CONFLICTS.labels(self.source).inc(len(retry))
            self.log.error("stream_id_conflict", source=self.source, entries=len(retry), cursor=self.started_from,
                           hint="the stream holds ids above this relay's seq: another writer or a relay reset")
            await write_batch(self.redis, self.cursor_key, [], [(s_, "*", t_) for s_, t_ in retry], seq)
        if seq is not None:
            self.durable = seq
            m.CURSOR.labels(self.source).set(seq)
        n = len(entries)
        self.written_entries += n
        if n:
            m.BATCH_SIZE.observe(n)
            m.BATCH_SECONDS.observe(time.perf_counter() - t0)
        if check:
            self._last_check = now
            self._set_lengths(dict(zip(self.watch, lengths)))
        elif not self._ready.is_set() and not self.paused:
            self._ready.set()  # a write succeeded after errors
        self._publish_tallies()

    def _set_lengths(self, lengths: dict[str, int]) -> None:
        self.lengths = lengths
        self._grown.clear()
        for s, n in lengths.items():
            m.STREAM_LENGTH.labels(s).set(n)
        top = max(lengths.values(), default=0)
        if not self.paused and top > self.high_water:
            self.paused = True
            m.PAUSES.labels(self.source).inc()
            m.BACKPRESSURE.labels(self.source).set(1)
            self.log.warning("backpressure_pause", source=self.source, longest=top, high_water=self.high_water)
        elif self.paused and top < self.low_water:
            self.paused = False
            m.BACKPRESSURE.labels(self.source).set(0)
            self.log.info("backpressure_resume", source=self.source, longest=top, low_water=self.low_water)
        if self.paused:
            self._ready.clear()
        else:
            self._ready.set()

    async def poll_lengths(self) -> None:
        """Re-read the stream lengths (while paused, or from the timer)."""
        pipe = self.redis.pipeline(transaction=False)
        for s in self.watch:
            pipe.xlen(s)
        self._last_check = time.monotonic()
        self._set_lengths(dict(zip(self.watch, (int(x) for x in await pipe.execute()))))

    def _publish_tallies(self) -> None:
        if self.tally:
            for (name, *labels), n in self.tally.items():
                getattr(m, name).labels(self.source, *labels).inc(n)
            self.tally.clear()
        if self.events_tally:
            for (t, c), n in self.events_tally.items():
                m.EVENTS.labels(t, c).inc(n)
            self.events_tally.clear()

    async def run_timer(self, stopping: asyncio.Event) -> None:
        """Flush partial batches when they are ``batch_ms`` old; poll lengths while paused."""
        tick = max(0.005, self.batch_s / 2)
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), tick)
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            try:
                if self.due(now):
                    await self.flush()
                if self.paused and now - self._last_check >= self.check_interval:
                    await self.poll_lengths()
            except Exception as e:  # noqa: BLE001 - a failing poll must not end the timer
                self.log.error("writer_timer_error", source=self.source, error=str(e) or type(e).__name__)
