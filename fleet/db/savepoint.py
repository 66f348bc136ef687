"""A savepoint whose deliberate rollback keeps the connection's prepared statements.

    async with savepoint(conn, "fleet_locks"):
        ...
        if busy:
            raise psycopg.Rollback()   # back to the savepoint (swallowed); prepared statements kept

psycopg empties its prepared-statement cache, and has the server ``DEALLOCATE ALL``, whenever a
transaction or savepoint it manages is rolled back (``Transaction._rollback_gen``) and whenever
a statement it runs answers ``ROLLBACK`` (``PrepareManager._should_discard``): a cautious rule
for a rolled-back ``ALTER``. PostgreSQL's prepared statements are not transactional: they
survive ``ROLLBACK TO SAVEPOINT``, and PostgreSQL plans one again itself when a table it reads
changes. After a clear, psycopg runs each statement five times unprepared (parsed and planned
every time) before it prepares it again. The indexer rolls a savepoint back on purpose each
time another shard holds a lock key the batch needs (``fleet/indexing/locks.py``; 45 of 208
batches in a 2-shard ``tools/bench_index.py`` run): parsing and planning took 6.6 % of the
machine's CPU samples (perf, 2026-12-07), 0.9 % with this savepoint.

Its ``ROLLBACK TO SAVEPOINT`` runs with ``prepare_threshold`` None: psycopg then neither counts
nor checks that statement, so it clears nothing (``tests/test_savepoint.py`` holds that against
the installed psycopg). A ``psycopg.Rollback`` raised inside is swallowed; any other exception
rolls back the same way and propagates. Keeping the statements is safe after an error too: a
statement that failed is one psycopg forgets by itself (``PrepareManager.validate``), and no
caller runs DDL inside. Use it inside a transaction (``conn.transaction()``), on a connection no
other task uses meanwhile.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from psycopg import Rollback, sql


@asynccontextmanager
async def savepoint(conn: Any, name: str) -> AsyncIterator[None]:
    ident = sql.Identifier(name)
    await conn.execute(sql.SQL("SAVEPOINT {}").format(ident))
    undo = sql.SQL("ROLLBACK TO SAVEPOINT {0}; RELEASE SAVEPOINT {0}").format(ident)
    try:
        yield
    except BaseException as e:
        threshold = conn.prepare_threshold
        conn.prepare_threshold = None  # psycopg leaves its cache alone for this statement
        try:
            await conn.execute(undo)
        finally:
            conn.prepare_threshold = threshold
        if isinstance(e, Rollback):
            return
        raise
    await conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(ident))
