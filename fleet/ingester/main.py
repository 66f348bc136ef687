"""The ingester role: relays and labelers -> Redis streams (``async def run(cfg, ctx)``).

With ``FLEET_INGESTERS`` = N > 1, ingester instance i (1-based) takes every N-th relay and
labeler (``hosts[i-1::N]``) so no subscription runs twice; listRepos discovery runs in
instance 1 only.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import redis.asyncio as aioredis

from ..log import Logger, get_logger
from ..runtime import RoleContext
from ..streams import FIREHOSE_LIVE, LABEL_LIVE, relay_cursor_key, shard_stream, strip_scheme
from .firehose import FirehoseHandler
from .labels import LabelHandler
from .subscription import Subscription
from .writer import StreamWriter

SUBSCRIBE_REPOS = "com.atproto.sync.subscribeRepos"
SUBSCRIBE_LABELS = "com.atproto.label.subscribeLabels"


def my_hosts(hosts: list[str], ctx: RoleContext, count: int) -> list[str]:
    """The hosts this ingester instance owns (all of them when it is the only one)."""
    if count <= 1 or not ctx.instance.isdigit():
        return list(hosts)
    i = int(ctx.instance) - 1
    return [h for j, h in enumerate(hosts) if j % count == i]


async def _subscription(cfg: Any, ctx: RoleContext, r: Any, host: str, labels: bool, seq_ids: bool, log: Logger) -> tuple[Subscription, StreamWriter]:
    source = strip_scheme(host)
    if labels:
        stream_base, watch = LABEL_LIVE, [LABEL_LIVE]
    else:
        stream_base = FIREHOSE_LIVE
        watch = [shard_stream(FIREHOSE_LIVE, k, cfg.SHARD_COUNT) for k in range(cfg.SHARD_COUNT)]
    writer = StreamWriter(
        r, source=source, cursor_key=relay_cursor_key(stream_base, host), watch=watch,
        batch_size=cfg.INGESTER_BATCH_SIZE, batch_ms=cfg.INGESTER_BATCH_MS,
        high_water=cfg.INGESTER_HIGH_WATER_MARK, low_water=cfg.INGESTER_LOW_WATER_MARK, log=log,
    )
    stored = await writer.load_cursor()
    handler: Any
    if labels:
        handler = LabelHandler(source=source, writer=writer, log=log, seq_ids=seq_ids, last_seq=stored)
    else:
        handler = FirehoseHandler(source=source, writer=writer, log=log, shard_count=cfg.SHARD_COUNT,
                                  collections=cfg.INGESTER_COLLECTIONS, seq_ids=seq_ids, last_seq=stored)
    start = None if cfg.INGESTER_START_CURSOR == "live" else int(cfg.INGESTER_START_CURSOR)
    log.info("subscription_start", source=source, kind="labels" if labels else "repos",
             stored_cursor=stored, start=stored if stored is not None else (start if start is not None else "live"))
    sub = Subscription(
        host=host, nsid=SUBSCRIBE_LABELS if labels else SUBSCRIBE_REPOS, source=source, writer=writer,
        handler=handler, start_cursor=start, max_frame=cfg.INGESTER_MAX_FRAME_BYTES,
        idle_timeout=cfg.INGESTER_IDLE_TIMEOUT_S, reconnect_max=cfg.INGESTER_RECONNECT_MAX_S,
        stopping=ctx.stopping, log=log,
    )
    return sub, writer


async def _summary(cfg: Any, ctx: RoleContext, subs: list[tuple[Subscription, StreamWriter]], log: Logger) -> None:
    last_t = time.monotonic()
    last = {s.source: (s.frames, w.written_entries) for s, w in subs}
    while not ctx.stopping.is_set():
        try:
            await asyncio.wait_for(ctx.stopping.wait(), cfg.SUMMARY_INTERVAL_S)
        except asyncio.TimeoutError:
            pass
        now = time.monotonic()
        dt = max(1e-6, now - last_t)
        for s, w in subs:
            f0, e0 = last[s.source]
            log.info("summary", source=s.source, frames=s.frames, frames_per_s=round((s.frames - f0) / dt, 1),
                     entries_per_s=round((w.written_entries - e0) / dt, 1), cursor=w.durable,
                     paused=w.paused, longest_stream=max(w.lengths.values(), default=None))
            last[s.source] = (s.frames, w.written_entries)
        last_t = now


async def _listrepos(cfg: Any, ctx: RoleContext, log: Logger) -> None:
    try:
        mod = importlib.import_module("fleet.ingester.listrepos")
    except ImportError as e:
        log.error("listrepos_missing", error=str(e))
        return
    await mod.run(cfg, ctx)


async def run(cfg: Any, ctx: RoleContext) -> None:
    """Subscribe to every relay and labeler this instance owns until ``ctx.stopping``."""
    log = ctx.log if ctx.log is not None else get_logger("ingester")
    count = cfg.FLEET_INGESTERS
    relays = my_hosts(cfg.INGESTER_RELAY_HOSTS, ctx, count)
    labelers = my_hosts(cfg.INGESTER_LABELER_HOSTS, ctx, count)
    r = aioredis.Redis.from_url(cfg.REDIS_URL)
    subs: list[tuple[Subscription, StreamWriter]] = []
    try:
        # ids <seq>-<n> only when one source feeds the streams: seq spaces of two relays collide
        for host in relays:
            subs.append(await _subscription(cfg, ctx, r, host, False, len(cfg.INGESTER_RELAY_HOSTS) == 1, log))
        for host in labelers:
            subs.append(await _subscription(cfg, ctx, r, host, True, len(cfg.INGESTER_LABELER_HOSTS) == 1, log))
        tasks = [asyncio.ensure_future(s.run()) for s, _ in subs]
        tasks += [asyncio.ensure_future(w.run_timer(ctx.stopping)) for _, w in subs]
        tasks.append(asyncio.ensure_future(_summary(cfg, ctx, subs, log)))
        if cfg.INGESTER_LISTREPOS and (count <= 1 or ctx.instance in ("1", "")):
            tasks.append(asyncio.ensure_future(_listrepos(cfg, ctx, log)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for _, w in subs:
                await w.drain()
            for s, w in subs:
                log.info("subscription_stopped", source=s.source, cursor=w.durable, frames=s.frames)
    finally:
        await r.aclose()
