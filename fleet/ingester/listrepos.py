"""listRepos discovery: page ``com.atproto.sync.listRepos`` of each host into ``repo_backfill``.

Each repo becomes an entry ``repo=<json {did, host, rev, status, active}>``. A page's entries,
the ``queued`` counter and the cursor after the page (``repo_backfill:cursor:<host>``) are
written in one MULTI, so a restart resumes exactly after the last queued page (at most that
page is repeated, never skipped). The end of the listing sets ``repo_backfill:done:<host>``.

Failures are retried with exponential backoff (``INGESTER_LISTREPOS_MAX_TRIES`` tries). A cursor
that keeps failing (a relay's 500 on one bad repo) is first narrowed: the host is paged one repo
at a time, so every repo before the bad one is still queued. When a one-repo page still fails,
the cursor is advanced past the failing position (:func:`skip_cursor`, which knows the PDS's
``<ms>::<did>``, plain integer and ``<prefix>:<n>`` cursors; consecutive skips jump twice as
far) and the gap ``{cursor, next, error, tries}`` is appended to the stream
``repo_backfill:skipped:<host>`` in the same MULTI as the new cursor. An opaque cursor that
cannot be advanced stops that host with the gap recorded (``next`` empty): never a loop, never
a silent hole. ``python -m fleet.ingester.listrepos --retry-skipped`` re-pages every recorded
gap one repo at a time and removes the gaps it fills.

The writer pauses while ``repo_backfill`` is longer than the high-water mark
(``min(FETCHER_HIGH_WATER_MARK, INGESTER_HIGH_WATER_MARK)``); it never drops a page.

Metrics: ``rsky_listrepos_repos_total{host}``, ``rsky_listrepos_pages_total{host}``,
``rsky_listrepos_errors_total{host}``, ``rsky_listrepos_skipped_total{host}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import re
import sys
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import ujson
from prometheus_client import Counter

from fleet import streams

REPOS = Counter("rsky_listrepos_repos_total", "repos queued to repo_backfill", ["host"])
PAGES = Counter("rsky_listrepos_pages_total", "listRepos pages queued", ["host"])
ERRORS = Counter("rsky_listrepos_errors_total", "failed listRepos requests", ["host"])
SKIPPED = Counter("rsky_listrepos_skipped_total", "listRepos cursors skipped and recorded", ["host"])

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
TIMEOUT_S = 60.0
PAGE_BYTES_BASE = 64 * 1024
PAGE_BYTES_PER_REPO = 2048
MAX_SKIPS_IN_A_ROW = 64  # doubling steps: covers any realistic cursor range, then stop


class PageError(Exception):
    """One listRepos request failed (network, timeout, HTTP status, malformed answer)."""


def listrepos_hosts(cfg: Any) -> list[str]:
    """INGESTER_LISTREPOS_HOSTS, else the relays with ws(s):// turned into http(s)://."""
    hosts = list(cfg.INGESTER_LISTREPOS_HOSTS) or list(cfg.INGESTER_RELAY_HOSTS)
    out = []
    for h in hosts:
        h = h.rstrip("/")
        if h.startswith("wss://"):
            h = "https://" + h[6:]
        elif h.startswith("ws://"):
            h = "http://" + h[5:]
        elif not h.startswith(("http://", "https://")):
            h = "https://" + h
        out.append(h)
    return out


_PDS = re.compile(r"^(\d+)::(.+)$")
_NUM = re.compile(r"^(.*?)(\d+)$")


def cursor_key(cursor: str) -> tuple[int, str] | None:
    """A comparable key for the cursor formats :func:`skip_cursor` knows, else None."""
    m = _PDS.match(cursor)
    if m:
        return int(m.group(1)), m.group(2)
    m = _NUM.match(cursor)
    if m:
        return int(m.group(2)), ""
    return None


def skip_cursor(cursor: str | None, step: int = 1) -> str | None:
    """A cursor ``step`` positions past ``cursor`` (PDS: milliseconds), or None if opaque."""
    if not cursor:
        return None
    m = _PDS.match(cursor)
    if m:
        # PDS keyset: (createdAt > ms) or (createdAt = ms and did > secondary); "did:" sorts
        # before every DID, so this resumes at the first repo created at ms + step.
        return f"{int(m.group(1)) + step}::did:"
    m = _NUM.match(cursor)
    if m:
        return f"{m.group(1)}{int(m.group(2)) + step}"
    return None


async def fetch_page(session: aiohttp.ClientSession, host: str, cursor: str | None, limit: int) -> tuple[list[dict], str | None]:
    params = {"limit": str(limit)}
    if cursor:
        params["cursor"] = cursor
    try:
        async with session.get(f"{host}/xrpc/com.atproto.sync.listRepos", params=params, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
            # a page lists `limit` repos of ~200 bytes each: anything far larger is refused, not buffered
            cap = PAGE_BYTES_BASE + limit * PAGE_BYTES_PER_REPO
            raw = await resp.content.read(cap + 1)
            if len(raw) > cap:
                raise PageError(f"answer larger than {cap} bytes")
            text = raw.decode("utf-8", errors="replace")
            if resp.status != 200:
                raise PageError(f"HTTP {resp.status}: {text[:200]}")
    except asyncio.TimeoutError:
        raise PageError("timeout") from None
    except aiohttp.ClientError as e:
        raise PageError(f"{type(e).__name__}: {e}") from None
    try:
        body = ujson.loads(text)
        repos = body["repos"]
        nxt = body.get("cursor")
        if not isinstance(repos, list) or (nxt is not None and not isinstance(nxt, str)):
            raise ValueError("bad shape")
    except (ValueError, KeyError, TypeError) as e:
        raise PageError(f"malformed answer: {e}") from None
    return [r for r in repos if isinstance(r, dict) and isinstance(r.get("did"), str)], nxt


def repo_entry(rp: dict, host: str) -> str:
    return ujson.dumps({"did": rp["did"], "host": host, "rev": rp.get("rev"), "status": rp.get("status"), "active": rp.get("active", True)})


def _now() -> str:
    t = dt.datetime.now(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Pager:
    def __init__(self, cfg: Any, r: aioredis.Redis, session: aiohttp.ClientSession, log: Any, stopping: asyncio.Event) -> None:
        self.cfg = cfg
        self.r = r
        self.session = session
        self.log = log
        self.stopping = stopping
        self.limit = int(getattr(cfg, "INGESTER_LISTREPOS_PAGE_SIZE", 1000))
        self.max_tries = int(getattr(cfg, "INGESTER_LISTREPOS_MAX_TRIES", 5))
        self.backoff_s = float(getattr(cfg, "LISTREPOS_BACKOFF_S", BACKOFF_BASE_S))
        self.hwm = min(cfg.FETCHER_HIGH_WATER_MARK, cfg.INGESTER_HIGH_WATER_MARK)

    async def _sleep(self, s: float) -> bool:
        """Wait ``s`` seconds unless stopping; True if stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=s)
            return True
        except asyncio.TimeoutError:
            return False

    async def _below_high_water(self) -> bool:
        paused = False
        while await self.r.xlen(streams.REPO_BACKFILL) > self.hwm:
            if not paused:
                self.log.info("listrepos_paused", high_water=self.hwm)
                paused = True
            if await self._sleep(0.5):  # polling the stream length: nothing to await on
                return False
        return True

    async def _try_page(self, host: str, cursor: str | None, limit: int) -> tuple[list[dict], str | None] | PageError:
        """Fetch one page with bounded retries; the last error if every try failed."""
        err = PageError("not tried")
        for attempt in range(self.max_tries):
            if attempt and await self._sleep(min(BACKOFF_CAP_S, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)):
                return err
            try:
                return await fetch_page(self.session, host, cursor, limit)
            except PageError as e:
                err = e
                ERRORS.labels(host).inc()
                self.log.warning("listrepos_error", host=host, cursor=cursor, limit=limit, attempt=attempt + 1, error=str(e))
        return err

    async def page_host(self, host: str) -> None:
        if await self.r.exists(streams.listrepos_done_key(host)):
            self.log.info("listrepos_already_done", host=host)
            return
        raw = await self.r.get(streams.listrepos_cursor_key(host))
        cursor = raw.decode() if raw else None
        narrow_left = 0  # pages left to fetch one repo at a time around a failing cursor
        skip_step = 1
        gap: tuple[str | None, bytes] | None = None  # (start cursor, skipped entry id) of the open gap
        self.log.info("listrepos_start", host=host, cursor=cursor)
        while not self.stopping.is_set():
            if not await self._below_high_water():
                return
            limit = 1 if narrow_left > 0 else self.limit
            res = await self._try_page(host, cursor, limit)
            if self.stopping.is_set():
                return
            if isinstance(res, PageError):
                if limit > 1:
                    narrow_left = self.limit
                    self.log.warning("listrepos_narrowing", host=host, cursor=cursor)
                    continue
                nxt = skip_cursor(cursor, skip_step) if skip_step < 2**MAX_SKIPS_IN_A_ROW else None
                gap = await self._record_skip(host, cursor, nxt, str(res), gap)
                if nxt is None:
                    self.log.error("listrepos_stuck", host=host, cursor=cursor, error=str(res))
                    return
                cursor = nxt
                skip_step *= 2
                continue
            repos, nxt = res
            done = not repos or not nxt
            pipe = self.r.pipeline(transaction=True)
            for rp in repos:
                pipe.xadd(streams.REPO_BACKFILL, {"repo": repo_entry(rp, host)})
            if repos:
                pipe.hincrby(streams.BACKFILL_STATS, "queued", len(repos))
            if nxt:
                pipe.set(streams.listrepos_cursor_key(host), nxt)
            if done:
                pipe.set(streams.listrepos_done_key(host), _now())
            await pipe.execute()
            REPOS.labels(host).inc(len(repos))
            PAGES.labels(host).inc()
            if repos:
                skip_step = 1
                gap = None
            narrow_left = max(0, narrow_left - 1)
            if done:
                self.log.info("listrepos_done", host=host)
                return
            cursor = nxt

    async def _record_skip(
        self, host: str, cursor: str | None, nxt: str | None, error: str, gap: tuple[str | None, bytes] | None
    ) -> tuple[str | None, bytes]:
        """Record (or, for consecutive skips, widen) the gap [start, nxt] with the new cursor."""
        key = streams.listrepos_skipped_key(host)
        start = gap[0] if gap else cursor
        pipe = self.r.pipeline(transaction=True)
        if gap:
            pipe.xdel(key, gap[1])
        else:
            pipe.hincrby(streams.BACKFILL_STATS, "skipped_pages", 1)
        pipe.xadd(key, {"cursor": start or "", "next": nxt or "", "error": error[:1000], "tries": self.max_tries, "time": _now()})
        if nxt:
            pipe.set(streams.listrepos_cursor_key(host), nxt)
        res = await pipe.execute()
        if not gap:
            SKIPPED.labels(host).inc()
        self.log.error("listrepos_skipped", host=host, cursor=start, next=nxt, error=error[:300])
        return start, res[1]

    async def retry_skipped(self, host: str) -> tuple[int, int]:
        """Re-page every recorded gap of ``host`` one repo at a time; returns (filled, left)."""
        filled = left = 0
        for sid, f in await self.r.xrange(streams.listrepos_skipped_key(host)):
            start = f[b"cursor"].decode() or None
            end = f[b"next"].decode()
            end_key = cursor_key(end) if end else None
            cursor, ok = start, True
            while True:
                res = await self._try_page(host, cursor, 1)
                if isinstance(res, PageError):
                    ok = False
                    break
                repos, nxt = res
                k = cursor_key(nxt) if nxt else None
                if not repos or (end_key is not None and k is not None and k > end_key):
                    break  # past the gap: that repo was queued by the main pass
                pipe = self.r.pipeline(transaction=True)
                for rp in repos:
                    pipe.xadd(streams.REPO_BACKFILL, {"repo": repo_entry(rp, host)})
                pipe.hincrby(streams.BACKFILL_STATS, "queued", len(repos))
                await pipe.execute()
                if not nxt:
                    break
                cursor = nxt
            if ok:
                await self.r.xdel(streams.listrepos_skipped_key(host), sid)
                filled += 1
            else:
                left += 1
        return filled, left


async def run(cfg: Any, ctx: Any) -> None:
    """Page every listRepos host until done or ``ctx.stopping`` (the ingester starts this)."""
    r = aioredis.from_url(cfg.REDIS_URL)
    session = aiohttp.ClientSession()
    pager = Pager(cfg, r, session, ctx.log.bind(component="listrepos"), ctx.stopping)
    try:
        await asyncio.gather(*(pager.page_host(h) for h in listrepos_hosts(cfg)))
    finally:
        await session.close()
        await r.aclose()


async def retry_skipped(cfg: Any) -> int:
    from fleet.log import get_logger

    r = aioredis.from_url(cfg.REDIS_URL)
    session = aiohttp.ClientSession()
    pager = Pager(cfg, r, session, get_logger("listrepos"), asyncio.Event())
    left_total = 0
    try:
        for host in listrepos_hosts(cfg):
            filled, left = await pager.retry_skipped(host)
            print(f"{host}: {filled} gap(s) filled, {left} still failing")
            left_total += left
    finally:
        await session.close()
        await r.aclose()
    return 1 if left_total else 0


def main(argv: list[str] | None = None) -> int:
    from fleet import config

    p = argparse.ArgumentParser(prog="python -m fleet.ingester.listrepos")
    p.add_argument("--retry-skipped", action="store_true", help="re-page the recorded skipped listRepos gaps")
    a = p.parse_args(argv)
    try:
        cfg = config.load()
    except config.ConfigError as e:
        print(e, file=sys.stderr)
        return 78
    if a.retry_skipped:
        return asyncio.run(retry_skipped(cfg))
    p.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
