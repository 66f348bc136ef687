"""listRepos discovery against the replay relay (corpus/small) and a PDS-like keyset server."""

from __future__ import annotations

import asyncio
import json
import os
import time

import redis
from aiohttp import web

from fleet import config, streams
from fleet.ingester import listrepos
from fleet.log import get_logger
from fleet.runtime import RoleContext
from tests.conftest import CORPUS
from tools.replay import ReplayRelay

SMALL = os.path.join(CORPUS, "small")


def make_cfg(redis_url: str, host: str, **over: str) -> config.Config:
    cfg = config.load({"REDIS_URL": redis_url, "INGESTER_LISTREPOS": "true", "INGESTER_LISTREPOS_HOSTS": host,
                       "INGESTER_LISTREPOS_PAGE_SIZE": "10", "INGESTER_LISTREPOS_MAX_TRIES": "2", **over})
    return config.Config({**cfg.values, "LISTREPOS_BACKOFF_S": 0.01})


def ctx() -> RoleContext:
    return RoleContext(role="ingester", instance="1", shards=[], shard_count=1, log=get_logger("ingester"))


def queued(r: redis.Redis) -> list[dict]:
    return [json.loads(f[b"repo"]) for _i, f in r.xrange(streams.REPO_BACKFILL)]


def corpus_repos() -> list[dict]:
    out = []
    for name in sorted(os.listdir(os.path.join(SMALL, "listRepos"))):
        with open(os.path.join(SMALL, "listRepos", name)) as f:
            out.extend(json.load(f)["response"]["repos"])
    return out


def test_every_listed_repo_is_queued_in_order_with_cursor_and_done_marker(redis_url):
    r = redis.Redis.from_url(redis_url)

    async def go():
        relay = ReplayRelay(SMALL)
        url = await relay.start()
        try:
            await asyncio.wait_for(listrepos.run(make_cfg(redis_url, url), ctx()), 20)
        finally:
            await relay.stop()
        return url

    url = asyncio.run(go())
    got = queued(r)
    want = corpus_repos()
    assert [g["did"] for g in got] == [w["did"] for w in want]
    deact = next(i for i, w in enumerate(want) if w.get("status") == "deactivated")
    assert got[deact] == {"did": want[deact]["did"], "host": url, "rev": want[deact]["rev"], "status": "deactivated", "active": False}
    assert got[0] == {"did": want[0]["did"], "host": url, "rev": want[0]["rev"], "status": None, "active": True}
    assert r.get(streams.listrepos_cursor_key(url)).decode() == "1795325038051::did:plc:sm3ph7m5yphflisuzlil6to2"
    assert r.exists(streams.listrepos_done_key(url))
    assert int(r.hget(streams.BACKFILL_STATS, "queued")) == 42


def test_a_restart_resumes_after_the_stored_cursor_and_a_done_host_is_not_paged_again(redis_url):
    r = redis.Redis.from_url(redis_url)

    async def go():
        relay = ReplayRelay(SMALL)
        url = await relay.start()
        try:
            r.set(streams.listrepos_cursor_key(url), "1795325009248::did:plc:us26c452wkkbyyw5ma2e2dvc")  # after 3 pages
            await asyncio.wait_for(listrepos.run(make_cfg(redis_url, url), ctx()), 20)
            n = len(relay.http_requests)
            await asyncio.wait_for(listrepos.run(make_cfg(redis_url, url), ctx()), 20)
            assert len(relay.http_requests) == n
        finally:
            await relay.stop()

    asyncio.run(go())
    assert [g["did"] for g in queued(r)] == [w["did"] for w in corpus_repos()[30:]]


class KeysetPds:
    """listRepos with the PDS's keyset cursor ``<createdAt ms>::<did>``; pages holding a bad DID fail."""

    def __init__(self, n: int, bad: set[int]) -> None:
        self.repos = [(1_700_000_000_000 + 1000 * i, f"did:plc:{i:024d}") for i in range(n)]
        self.bad = {self.repos[i][1] for i in bad}
        self.requests = 0

    async def list_repos(self, req: web.Request) -> web.Response:
        self.requests += 1
        limit = int(req.query.get("limit", "500"))
        cur = req.query.get("cursor")
        start = 0
        if cur:
            ms, did = cur.split("::")
            if not did:
                return web.json_response({"error": "InvalidRequest"}, status=400)
            start = next((i for i, k in enumerate(self.repos) if k > (int(ms), did)), len(self.repos))
        page = self.repos[start : start + limit]
        if any(d in self.bad for _, d in page):
            return web.json_response({"error": "InternalServerError", "message": "bad repo"}, status=500)
        body: dict = {"repos": [{"did": d, "head": "bafy", "rev": "3k", "active": True} for _, d in page]}
        if page:
            body["cursor"] = f"{page[-1][0]}::{page[-1][1]}"
        return web.json_response(body)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.listRepos", self.list_repos)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def test_a_page_that_keeps_failing_is_narrowed_skipped_recorded_and_retryable(redis_url):
    r = redis.Redis.from_url(redis_url)

    async def go():
        pds = KeysetPds(35, bad={12})
        url = await pds.start()
        try:
            cfg = make_cfg(redis_url, url)
            await asyncio.wait_for(listrepos.run(cfg, ctx()), 30)
            first = [g["did"] for g in queued(r)]
            skipped = [(f[b"cursor"].decode(), f[b"next"].decode(), f[b"error"].decode()) for _i, f in r.xrange(streams.listrepos_skipped_key(url))]
            done = bool(r.exists(streams.listrepos_done_key(url)))
            pds.bad.clear()  # the relay got fixed: the operator retries the gap
            rc = await listrepos.retry_skipped(cfg)
            left = r.xlen(streams.listrepos_skipped_key(url))
        finally:
            await pds.runner.cleanup()
        return pds, first, skipped, done, rc, left

    pds, first, skipped, done, rc, left = asyncio.run(go())
    dids = [d for _, d in pds.repos]
    assert first == dids[:12] + dids[13:]  # every repo but the bad one, none twice
    assert len(skipped) == 1
    cursor, nxt, error = skipped[0]
    assert cursor == f"{pds.repos[11][0]}::{pds.repos[11][1]}" and "500" in error
    assert nxt.endswith("::did:") and pds.repos[12][0] <= int(nxt.split("::")[0]) < pds.repos[13][0]
    assert done and int(r.hget(streams.BACKFILL_STATS, "skipped_pages")) == 1
    assert rc == 0 and left == 0
    assert [g["did"] for g in queued(r)] == first + [dids[12]]


def test_an_unreachable_host_is_retried_a_bounded_number_of_times_and_recorded(redis_url):
    r = redis.Redis.from_url(redis_url)

    async def go():
        relay = ReplayRelay(SMALL)
        relay.faults.http = [{"path": "/xrpc/com.atproto.sync.listRepos", "status": 502, "times": None}]
        url = await relay.start()
        try:
            await asyncio.wait_for(listrepos.run(make_cfg(redis_url, url), ctx()), 20)
        finally:
            await relay.stop()
        return url, relay.http_requests

    url, reqs = asyncio.run(go())
    # 2 tries at limit 10, 2 at limit 1, then the first page (no cursor) cannot be skipped: stuck, recorded
    assert len(reqs) == 4
    (_, f), = r.xrange(streams.listrepos_skipped_key(url))
    assert f[b"cursor"] == b"" and f[b"next"] == b""
    assert not r.exists(streams.listrepos_done_key(url))


def test_listing_pauses_above_the_high_water_mark_and_resumes_when_drained(redis_url):
    r = redis.Redis.from_url(redis_url)

    async def go():
        relay = ReplayRelay(SMALL)
        url = await relay.start()
        c = ctx()
        task = asyncio.create_task(listrepos.run(make_cfg(redis_url, url, FETCHER_HIGH_WATER_MARK="15"), c))
        try:
            deadline = time.monotonic() + 10
            while r.xlen(streams.REPO_BACKFILL) < 20:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.8)  # it would have written the rest by now if it ignored the mark
            held = r.xlen(streams.REPO_BACKFILL)
            drained = 0
            while not task.done():  # fetchers drain it
                assert time.monotonic() < deadline + 10
                drained += r.xlen(streams.REPO_BACKFILL)
                r.delete(streams.REPO_BACKFILL)
                await asyncio.sleep(0.1)
            drained += r.xlen(streams.REPO_BACKFILL)
        finally:
            c.stopping.set()
            await relay.stop()
        return held, drained

    held, drained = asyncio.run(go())
    assert held == 20 and drained == 42
    assert int(r.hget(streams.BACKFILL_STATS, "queued")) == 42


def test_fetch_page_refuses_an_answer_far_larger_than_the_page_it_asked_for():
    import asyncio

    import aiohttp
    from aiohttp import web

    from fleet.ingester.listrepos import PageError, fetch_page

    async def go():
        async def huge(request):
            return web.Response(body=b'{"repos": [' + b" " * 400_000 + b"]}", content_type="application/json")

        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.listRepos", huge)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as s:
                try:
                    await fetch_page(s, f"http://127.0.0.1:{port}", None, 10)
                except PageError as e:
                    return str(e)
                return "accepted"
        finally:
            await runner.cleanup()

    assert "larger than" in asyncio.run(go())
