"""Direct parity harness: corpus frames -> Indexer.apply_batch -> canonical dump -> compare.

No Redis, no streams: decodes ``firehose.frames`` with ``fleet.codec``, feeds the events in
seq order (or any given order) through ``fleet.indexing.Indexer`` in batches, one transaction
per batch, then compares the dump with the corpus's ``db-normalized/`` table by table.

    python -m tools.parity --corpus tests/fixtures/corpus/small --database-url URL [--schema S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import sys
from typing import Any, Iterable

import psycopg
from psycopg import sql

from fleet.codec.firehose import iter_frames_file, message_events
from fleet.db import dump as dumpmod
from fleet.db.migrate import migrate
from fleet.indexing import Indexer, IndexingContext
from fleet.indexing.aggregates import recount_mismatches

AGG_TABLES = ("post_agg", "profile_agg")


def corpus_events(corpus: str) -> list[dict[str, Any]]:
    """Every stream event of the corpus's firehose, in seq order."""
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        data = f.read()
    out: list[dict[str, Any]] = []
    for msg in iter_frames_file(data):
        _t, _seq, evs = message_events(msg)
        out.extend(evs)
    return out


async def index_events(
    database_url: str, schema: str, batches: Iterable[list[dict[str, Any]]], ctx: IndexingContext | None = None,
    bulk: bool | None = None,
) -> list[tuple[int, BaseException]]:
    """Apply each batch in its own transaction (as the indexer runtime does); ``bulk`` as
    ``Indexer(bulk=)`` (None: the configured default, the fast path)."""
    indexer = Indexer(ctx or IndexingContext(), bulk=bulk)
    failures: list[tuple[int, BaseException]] = []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        await conn.commit()
        for batch in batches:
            async with conn.transaction():
                failures.extend(await indexer.apply_batch(conn, batch))
    return failures


async def recount(database_url: str, schema: str) -> list[tuple[str, str, str, int, int]]:
    """``aggregates.recount_mismatches`` of ``schema``: aggregate rows that differ from a recount."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        return await recount_mismatches(conn)


def chunks(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def compare(database_url: str, schema: str, corpus: str) -> dict[str, dumpmod.TableDiff]:
    spec = dumpmod.load_spec(os.path.join(corpus, "db", "tables.json"))
    d = dumpmod.dump(database_url, schema, spec)
    expected = dumpmod.mask_clock_values(dumpmod.read_dir(os.path.join(corpus, "db-normalized")))
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in expected.items():
            with open(os.path.join(tmp, name + ".jsonl"), "w", encoding="utf-8") as f:
                f.write("".join(x + "\n" for x in lines))
        return dumpmod.compare(dumpmod.mask_clock_values(d.normalized), tmp, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--schema", default="parity")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--tables", default="")
    a = p.parse_args(argv)
    with psycopg.connect(a.database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(a.schema)))
    migrate(a.database_url, a.schema)
    evs = corpus_events(a.corpus)
    fails = asyncio.run(index_events(a.database_url, a.schema, chunks(evs, a.batch)))
    for i, e in fails[:20]:
        print("FAILED", i, type(e).__name__, e)
    diffs = compare(a.database_url, a.schema, a.corpus)
    if a.tables:
        diffs = {k: v for k, v in diffs.items() if k in a.tables.split(",")}
    print(dumpmod.format_report(diffs))
    return 0 if all(d.ok for d in diffs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
