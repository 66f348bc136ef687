"""One psycopg connection pool per process, opened after the fork, never shared.

Every connection is in autocommit mode with ``search_path`` set to the AppView schema, so SQL
names tables unqualified; a caller that needs a transaction opens one explicitly
(``async with conn.transaction():``), which is how the indexer applies a batch.

    pool = await open_pool(cfg.DATABASE_URL, cfg.DATABASE_SCHEMA, cfg.DB_POOL_SIZE, name="indexer-3")
    async with pool.connection() as conn:
        async with conn.transaction():
            ...
    await pool.close()

Metrics (default registry): ``rsky_db_pool_size``, ``rsky_db_pool_in_use`` (gauges, by pool
name), refreshed by :func:`record_stats`.
"""

from __future__ import annotations

from typing import Mapping

from prometheus_client import Gauge
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from . import arrays  # noqa: F401 - the fast list dumper (fleet/db/arrays.py)

POOL_SIZE = Gauge("rsky_db_pool_size", "connections open in the process's PostgreSQL pool", ["pool"])
POOL_IN_USE = Gauge("rsky_db_pool_in_use", "connections of the pool lent out right now", ["pool"])


async def open_pool(
    database_url: str,
    schema: str,
    size: int,
    name: str = "fleet",
    timeout: float = 30.0,
    settings: Mapping[str, str] | None = None,
) -> AsyncConnectionPool:
    """Open a pool of ``size`` connections to ``database_url`` whose search_path is ``schema``
    and whose sessions have ``settings`` (PostgreSQL parameters, e.g. ``plan_cache_mode``).

    Waits until the connections are up (raises ``psycopg_pool.PoolTimeout`` after ``timeout``
    seconds, e.g. when PostgreSQL is unreachable).
    """
    search_path = sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema))

    async def configure(conn: AsyncConnection) -> None:
        await conn.set_autocommit(True)
        await conn.execute(search_path)
        for key, value in (settings or {}).items():
            await conn.execute("SELECT set_config(%s, %s, false)", (key, value))

    pool = AsyncConnectionPool(
        database_url,
        min_size=size,
        max_size=size,
        open=False,
        configure=configure,
        name=name,
        timeout=timeout,
    )
    await pool.open(wait=True, timeout=timeout)
    record_stats(pool)
    return pool


def record_stats(pool: AsyncConnectionPool) -> None:
    """Refresh the pool gauges (cheap; call once per batch or per second)."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    POOL_SIZE.labels(pool.name).set(size)
    POOL_IN_USE.labels(pool.name).set(size - stats.get("pool_available", 0))
