"""The indexer role: ``async def run(cfg, ctx)`` runs one consumer loop per shard in ``ctx.shards``.

Everything is opened here, after the fork: one Redis client, one psycopg pool
(``DB_POOL_SIZE`` connections, ``search_path`` = ``DATABASE_SCHEMA``), one identity resolver,
one ``fleet.indexing.Indexer``. A test may inject its own indexer object (anything with
``async apply_batch(conn, events) -> list[(index, exc)]``; when it also has
``async apply_some(conn, events, must) -> (deferred indexes, [(index, exc)])`` the consumer uses
that, and carries the deferred events into its next batch).

**Plans.** The pool's sessions run with ``plan_cache_mode = INDEXER_PLAN_CACHE_MODE``
(default ``force_generic_plan``). Every statement of the indexing is a prepared one (psycopg
prepares a query from its fifth run) over ``unnest`` of array parameters, joined to the
tables through their indexes; with PostgreSQL's default (``auto``) each run is planned again
for its arrays' sizes (a custom plan), which cost 15.4 - 17.1 us of planning per event on the
benchmark (wall time), and for a 500-element array picks a hash join over a sequential scan of the table
while the table is small enough: the batch's rev-guard read (``processor.load_guards``) scanned
all of ``record`` each batch, 18.5 us per event at 60,000 events (pg_stat_statements and
auto_explain, 2026-12-07), 4.6 us with the generic plan (index lookups). One plan per statement
and connection (made again after a vacuum or ``ANALYZE`` of a table it reads) costs 437,439 PostgreSQL instructions per event
against 474,566 (-7.8 %, ``tools/bench_instructions.py --side postgres``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from ..db.pool import open_pool
from ..runtime import RoleContext
from .consumer import ShardConsumer


def make_indexer(cfg: Any, ctx: RoleContext, redis: Any) -> tuple[Any, Any]:
    """The real indexer and its identity resolver (closed by the caller; may be None)."""
    from ..indexing import Indexer
    from ..indexing.context import IndexingContext

    resolver = None
    if cfg.INDEXER_RESOLVE_HANDLES:
        from ..identity.resolver import from_config

        resolver = from_config(cfg, redis)  # PLC_URL, HANDLE_RESOLVER_URL, Redis cache
    ictx = IndexingContext(
        cfg=cfg, redis=redis, resolver=resolver, log=ctx.log, shards=list(ctx.shards), shard_count=ctx.shard_count
    )
    return Indexer(ictx), resolver


async def run(cfg: Any, ctx: RoleContext, indexer: Any = None) -> None:
    """Consume ``ctx.shards`` until ``ctx.stopping`` is set; returns after the batches in hand."""
    log = ctx.log
    redis = aioredis.Redis.from_url(cfg.REDIS_URL, decode_responses=False)
    pool = await open_pool(
        cfg.DATABASE_URL,
        cfg.DATABASE_SCHEMA,
        cfg.DB_POOL_SIZE,
        name=f"indexer-{ctx.instance}",
        settings={"plan_cache_mode": cfg.INDEXER_PLAN_CACHE_MODE},
    )
    resolver = None
    try:
        if indexer is None:
            indexer, resolver = make_indexer(cfg, ctx, redis)
        consumers = [
            ShardConsumer(
                redis,
                pool,
                indexer,
                k,
                ctx.shard_count,
                batch_size=cfg.INDEXER_BATCH_SIZE,
                wait_ms=cfg.INDEXER_BATCH_WAIT_MS,
                max_deliveries=cfg.INDEXER_MAX_DELIVERIES,
                stopping=ctx.stopping,
                log=log,
                self_heal=cfg.INDEXER_SELF_HEAL,
                summary_interval_s=cfg.SUMMARY_INTERVAL_S,
                # each shard keeps its backend between batches when the pool has one for each
                hold_connection=cfg.DB_POOL_SIZE >= len(ctx.shards),
            )
            for k in ctx.shards
        ]
        log.info("indexer_started", shards=",".join(map(str, ctx.shards)), shard_count=ctx.shard_count)
        async with asyncio.TaskGroup() as tg:
            for c in consumers:
                tg.create_task(c.run())
    finally:
        if resolver is not None:
            await resolver.close()
        await pool.close()
        await redis.aclose()
