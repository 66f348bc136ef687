"""fleet/db/savepoint.py against a real PostgreSQL and the installed psycopg: a deliberate
rollback undoes the writes and releases the advisory locks taken inside, and keeps the
connection's prepared statements (psycopg's own savepoint deallocates them all)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from fleet.db.savepoint import savepoint

QUERY = "SELECT %s::int + 1"


async def _prepared(conn) -> int:
    """Statements prepared on this connection's server session (psycopg names them _pg3_N)."""
    cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '\\_pg3\\_%%'", prepare=False)
    return (await cur.fetchone())[0]


async def _setup(url: str):
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute("CREATE TABLE t (x int)")
    for i in range(conn.prepare_threshold + 1):  # psycopg prepares a query from its threshold-th run
        await conn.execute(QUERY, (i,))
    assert await _prepared(conn) == 1
    return conn


async def _locked_elsewhere(url: str, key: int) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
        cur = await other.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        got = (await cur.fetchone())[0]
        if got:
            await other.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return not got


def test_a_deliberate_rollback_undoes_writes_and_locks_and_keeps_prepared_statements(database_url):
    async def go():
        conn = await _setup(database_url)
        async with conn:
            async with conn.transaction():
                async with savepoint(conn, "sp"):
                    await conn.execute("INSERT INTO t VALUES (1)")
                    await conn.execute("SELECT pg_advisory_xact_lock(42)")
                    assert await _locked_elsewhere(database_url, 42)
                    raise psycopg.Rollback()  # swallowed by the savepoint
                assert not await _locked_elsewhere(database_url, 42)  # released with the savepoint
                cur = await conn.execute("SELECT count(*) FROM t")
                assert (await cur.fetchone())[0] == 0
                assert await _prepared(conn) == 1  # psycopg's conn.transaction() would leave 0
                await conn.execute(QUERY, (7,))
                assert await _prepared(conn) == 1  # still the same statement: not prepared again
                await conn.execute("INSERT INTO t VALUES (2)")
            cur = await conn.execute("SELECT array_agg(x) FROM t")
            assert (await cur.fetchone())[0] == [2]  # the outer transaction went on and committed

    asyncio.run(go())


def test_without_an_exception_the_savepoint_keeps_its_writes(database_url):
    async def go():
        conn = await _setup(database_url)
        async with conn:
            async with conn.transaction():
                async with savepoint(conn, "sp"):
                    await conn.execute("INSERT INTO t VALUES (3)")
            cur = await conn.execute("SELECT array_agg(x) FROM t")
            assert (await cur.fetchone())[0] == [3]
            assert await _prepared(conn) == 1

    asyncio.run(go())


def test_a_failing_statement_rolls_back_to_the_savepoint_and_propagates_keeping_prepared_statements(database_url):
    async def go():
        conn = await _setup(database_url)
        async with conn:
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
                with pytest.raises(psycopg.errors.DivisionByZero):
                    async with savepoint(conn, "sp"):
                        await conn.execute("INSERT INTO t VALUES (2)")
                        await conn.execute("SELECT 1 / 0")
                await conn.execute("INSERT INTO t VALUES (4)")  # the transaction is usable again
                assert await _prepared(conn) == 1
            cur = await conn.execute("SELECT array_agg(x ORDER BY x) FROM t")
            assert (await cur.fetchone())[0] == [1, 4]

    asyncio.run(go())
