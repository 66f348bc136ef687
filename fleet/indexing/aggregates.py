"""Exact ``post_agg`` / ``profile_agg`` from deltas, one upsert per table per batch.

The official indexer recounts (``SELECT count(*)``) after every like, repost, follow and post
write; that scan grows with the subject and exhausted the pool in production. Here every
plugin reports a delta only for a row change that really happened (an insert that inserted,
a delete that deleted), the batch sums them per key, and ``flush`` writes each table with one
``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE SET c = c + excluded.c`` whose rows
are in sorted key order: concurrent shards lock hot rows in the same order (no deadlock) and
only for the end of their transaction.

A delta of 0 still upserts its key: the official indexer creates the aggregate row (count 0)
whenever it recounts, so the set of rows matches.

Counts follow the official definitions (``recount`` below is the reference used by tests):
likes/reposts by subject uri, replies by parent excluding ``violatesThreadGate``, quotes by
subject, posts and follows by did, followers by subject did.

Metrics: ``rsky_indexing_agg_keys_total{table}`` aggregate rows upserted.
"""

from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import Counter

from .plugin import AggDelta

AGG_KEYS = Counter("rsky_indexing_agg_keys_total", "aggregate rows upserted (one per key per batch)", ["table"])

COLUMNS: dict[str, tuple[str, list[str]]] = {
    "post_agg": ("uri", ["likeCount", "replyCount", "repostCount", "quoteCount"]),
    "profile_agg": ("did", ["followersCount", "followsCount", "postsCount"]),
}


class AggBuffer:
    """Summed deltas of one batch: ``{table: {key: {column: delta}}}``."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, int]]] = {t: {} for t in COLUMNS}

    def add(self, d: AggDelta) -> None:
        if d.table not in COLUMNS or not isinstance(d.key, str):
            raise ValueError(f"unknown aggregate {d.table}.{d.column}")
        if d.column not in COLUMNS[d.table][1]:
            raise ValueError(f"unknown aggregate column {d.table}.{d.column}")
        row = self.tables[d.table].setdefault(d.key, {})
        row[d.column] = row.get(d.column, 0) + d.delta

    def extend(self, deltas: Iterable[AggDelta]) -> None:
        for d in deltas:
            self.add(d)

    def __len__(self) -> int:
        return sum(len(v) for v in self.tables.values())

    async def flush(self, tx: Any) -> None:
        """Apply and clear: one statement per table, keys sorted."""
        for table, rows in self.tables.items():
            if not rows:
                continue
            key_col, cols = COLUMNS[table]
            keys = sorted(rows)
            arrays: list[list[Any]] = [keys] + [[rows[k].get(c, 0) for k in keys] for c in cols]
            col_list = ", ".join(f'"{c}"' for c in cols)
            types = ", ".join(["%s::varchar[]"] + ["%s::bigint[]"] * len(cols))
            sets = ", ".join(f'"{c}" = {table}."{c}" + excluded."{c}"' for c in cols)
            await tx.execute(
                f"INSERT INTO {table} ({key_col}, {col_list}) SELECT * FROM unnest({types}) "  # noqa: S608 (names are constants)
                f"ON CONFLICT ({key_col}) DO UPDATE SET {sets}",
                arrays,
            )
            AGG_KEYS.labels(table).inc(len(keys))
            rows.clear()


RECOUNT_SQL = {
    ("post_agg", "likeCount"): 'SELECT subject, count(*) FROM "like" GROUP BY subject',
    ("post_agg", "repostCount"): "SELECT subject, count(*) FROM repost GROUP BY subject",
    ("post_agg", "replyCount"): 'SELECT "replyParent", count(*) FROM post WHERE "replyParent" IS NOT NULL'
    ' AND ("violatesThreadGate" IS NULL OR "violatesThreadGate" = false) GROUP BY "replyParent"',
    ("post_agg", "quoteCount"): "SELECT subject, count(*) FROM quote GROUP BY subject",
    ("profile_agg", "postsCount"): "SELECT creator, count(*) FROM post GROUP BY creator",
    ("profile_agg", "followsCount"): "SELECT creator, count(*) FROM follow GROUP BY creator",
    ("profile_agg", "followersCount"): 'SELECT "subjectDid", count(*) FROM follow GROUP BY "subjectDid"',
}


async def recount_mismatches(tx: Any) -> list[tuple[str, str, str, int, int]]:
    """(table, key, column, stored, recounted) for every aggregate that differs from a recount.

    A full scan: for tests and operators (``tools``), never called while indexing.
    """
    out = []
    for (table, col), q in RECOUNT_SQL.items():
        key_col = COLUMNS[table][0]
        truth = {k: n for k, n in await (await tx.execute(q)).fetchall()}
        stored = {k: n for k, n in await (await tx.execute(f'SELECT {key_col}, "{col}" FROM {table}')).fetchall()}
        for k in sorted(set(truth) | set(stored)):
            if truth.get(k, 0) != stored.get(k, 0):
                out.append((table, k, col, stored.get(k, 0), truth.get(k, 0)))
    return out
