"""One WebSocket subscription kept alive: connect from the cursor, read, reconnect.

Used for ``com.atproto.sync.subscribeRepos`` (firehose.py) and
``com.atproto.label.subscribeLabels`` (labels.py); the frame handler decides what a frame
means, the :class:`~fleet.ingester.writer.StreamWriter` where it goes.

- cursor: the last seq handed to the writer in this process, else the one stored in Redis,
  else the configured start (``INGESTER_START_CURSOR``: ``live`` = no cursor, the lexicon's live tail)
- reconnects: capped exponential backoff with jitter, reset once a connection delivered a frame
- idle: a connection that delivers no frame for ``INGESTER_IDLE_TIMEOUT_S`` (while not paused
  by backpressure) is aborted and reopened
- size: messages above ``INGESTER_MAX_FRAME_BYTES`` make the library fail the connection
  (close 1009); the next connection is opened with an 8x limit and a one-message queue, so
  the oversized frame is read once, counted and skipped by its seq. If even that fails, the
  subscription resumes after the next seq, counted as ``frame_too_large_unread``.
- memory: at most ``max_queue`` messages of ``max_size`` bytes are buffered by the library;
  backpressure stops reading, so the relay (TCP window, then its own buffer) holds the rest.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..codec.firehose import ErrorFrame
from ..log import Logger
from . import metrics as m
from .backoff import Backoff
from .writer import StreamWriter

OVERSIZE_FACTOR = 8


def ws_base(host: str) -> str:
    """``bsky.network`` / ``https://x`` / ``ws://127.0.0.1:1`` -> a ws(s):// base URL."""
    host = host.rstrip("/")
    for a, b in (("https://", "wss://"), ("http://", "ws://")):
        if host.startswith(a):
            return b + host[len(a):]
    if host.startswith(("ws://", "wss://")):
        return host
    return "wss://" + host


class Subscription:
    def __init__(
        self,
        *,
        host: str,
        nsid: str,
        source: str,
        writer: StreamWriter,
        handler: Any,  # has .last_seq, .max_frame and __call__(msg)
        start_cursor: int | None,
        max_frame: int,
        idle_timeout: float,
        reconnect_max: float,
        stopping: asyncio.Event,
        log: Logger,
    ) -> None:
        self.url = f"{ws_base(host)}/xrpc/{nsid}"
        self.source = source
        self.writer = writer
        self.handler = handler
        self.start_cursor = start_cursor
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.backoff = Backoff(0.25, reconnect_max)
        self.stopping = stopping
        self.log = log
        self.oversize = False  # next connection reads one oversized frame
        self.last_frame = time.monotonic()
        self.frames = 0

    def cursor(self) -> int | None:
        if self.handler.last_seq is not None:
            return self.handler.last_seq
        return self.start_cursor

    async def run(self) -> None:
        while not self.stopping.is_set():
            cause = await self._connect_once()
            if self.stopping.is_set():
                break
            m.RECONNECTS.labels(self.source, cause).inc()
            delay = self.backoff.next()
            self.log.warning("reconnecting", source=self.source, cause=cause, delay_s=round(delay, 3), cursor=self.cursor())
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _connect_once(self) -> str:
        cursor = self.cursor()
        url = self.url if cursor is None else f"{self.url}?cursor={cursor}"
        oversize = self.oversize
        limit = self.max_frame * OVERSIZE_FACTOR if oversize else self.max_frame
        self.handler.max_frame = self.max_frame
        frames_before = self.frames
        try:
            async with connect(
                url, max_size=limit, max_queue=1 if oversize else 8, ping_interval=None, close_timeout=1,
                compression=None, open_timeout=10, proxy=None, user_agent_header="rsky-fleet-ingester",
            ) as ws:
                m.CONNECTS.labels(self.source).inc()
                self.log.info("connected", source=self.source, cursor=cursor, max_frame=limit)
                await self._read(ws)
                return "closed"
        except ErrorFrame as e:
            m.ERROR_FRAMES.labels(self.source, e.error).inc()
            self.log.error("error_frame", source=self.source, error=e.error, message=e.message, cursor=cursor)
            return "error_frame"
        except InvalidStatus as e:
            status = e.response.status_code
            self.log.warning("connect_refused", source=self.source, status=status)
            return f"http_{status}"
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == 1009:
                return self._too_large(oversize)
            return "closed"
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as e:
            self.log.warning("connect_failed", source=self.source, error=str(e) or type(e).__name__)
            return "connect_failed"
        finally:
            if self.frames > frames_before:
                self.backoff.reset()
                if oversize and self.oversize:
                    self.oversize = False

    def _too_large(self, was_oversize: bool) -> str:
        if not was_oversize:
            self.oversize = True
            self.log.warning("frame_too_large", source=self.source, after_seq=self.handler.last_seq, limit=self.max_frame)
            return "frame_too_large"
        # even the raised limit was not enough: step over the next seq without reading it
        self.oversize = False
        skipped = (self.handler.last_seq if self.handler.last_seq is not None else (self.start_cursor or 0)) + 1
        self.handler.skip_unread(skipped)
        self.log.error("frame_too_large_unread", source=self.source, skipped_seq=skipped, limit=self.max_frame * OVERSIZE_FACTOR)
        return "frame_too_large"

    async def _read(self, ws: Any) -> None:
        writer = self.writer
        handle: Callable[[bytes], None] = self.handler
        watchdog = asyncio.ensure_future(self._watchdog(ws))
        try:
            recv = ws.recv
            while True:
                if not writer._ready.is_set():
                    await writer.wait_ready()
                msg = await recv()
                self.last_frame = time.monotonic()
                self.frames += 1
                handle(msg)
                if writer.full:
                    await writer.flush()
        finally:
            watchdog.cancel()

    async def _watchdog(self, ws: Any) -> None:
        """Abort the connection when it is idle too long or the role is stopping."""
        tick = min(1.0, self.idle_timeout / 4)
        while True:
            try:
                await asyncio.wait_for(self.stopping.wait(), tick)
                ws.transport.abort()  # stopping: recv() raises at once
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if not self.writer._ready.is_set():
                self.last_frame = now  # paused on purpose: silence is ours, not the relay's
            elif now - self.last_frame > self.idle_timeout:
                self.log.warning("idle_timeout", source=self.source, idle_s=round(now - self.last_frame, 1))
                ws.transport.abort()
                return


__all__ = ["Subscription", "ws_base", "websockets"]
