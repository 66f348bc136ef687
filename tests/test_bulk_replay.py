"""Re-delivered batches on the bulk fast path (fleet/indexing/bulk.py) change nothing.

A shard killed between COMMIT and XACK gets its last batch again on restart, often followed by
new entries in the same batch (``fleet/indexer/consumer.py``: pending entries first). Every
such replay must leave the database that applying the firehose once, in seq order, leaves; in
particular an original like/repost/follow and its semantic duplicate must never swap places
(the row in the collection table vs its ``duplicate_record``), which was reported once from a
4-shard conformance run with kills and is what these tests look for.

``replayed`` models the kills: each shard's events in seq order, cut into random batches; after
a random batch the same batch comes again, extended by the next entries.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import psycopg
import pytest

from conftest import CORPUS
from test_locks import A, B, CID, ev, uri
from test_order import N, by_shard, differences, fresh_schema, report, tables
from tools.parity import chunks, corpus_events, index_events

LIKE = "app.bsky.feed.like"


def replayed(events: list[dict[str, Any]], seed: int, max_batch: int = 60, p_replay: float = 0.3) -> list[list[dict[str, Any]]]:
    rnd, s, pos, out = random.Random(seed), by_shard(events), [0] * N, []
    while True:
        live = [k for k in range(N) if pos[k] < len(s[k])]
        if not live:
            return out
        k = rnd.choice(live)
        n = rnd.randint(1, max_batch)
        batch = s[k][pos[k] : pos[k] + n]
        out.append(batch)
        pos[k] += n
        if rnd.random() < p_replay:  # killed after COMMIT, before XACK: the batch again, and more
            extra = rnd.randint(0, max_batch)
            out.append(batch + s[k][pos[k] : pos[k] + extra])
            pos[k] += extra


def apply(url: str, schema: str, batches: list[list[dict[str, Any]]]) -> None:
    fresh_schema(url, schema)
    assert asyncio.run(index_events(url, schema, batches, bulk=True)) == []


def compare(url: str) -> dict:
    d = differences(tables(url, "seq_order"), tables(url, "replayed"))
    return d


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_corpus_with_redelivered_batches_on_the_bulk_path_equals_seq_order(database_url, seed):
    events = corpus_events(os.path.join(CORPUS, "edge"))
    apply(database_url, "seq_order", list(chunks(events, 100)))
    batches = replayed(events, seed)
    assert len(batches) > len(by_shard(events))  # some replays happened
    apply(database_url, "replayed", batches)
    d = compare(database_url)
    assert d == {}, report(d)


def like(rkey: str, seq: int, subject: str, did: str = A) -> dict:
    rec = {"$type": LIKE, "subject": {"uri": subject, "cid": CID}, "createdAt": "2025-01-01T00:00:00.000Z"}
    return ev(did, LIKE, rkey, seq, rec)


def test_duplicate_likes_keep_their_places_whatever_batch_is_redelivered(database_url):
    """The original (x), two duplicates (y, z), the original deleted (y promoted), z deleted, w a
    new duplicate of y: for every cut point, the first part committed, then re-delivered with
    the rest in one batch (bulk path), as after a kill between COMMIT and XACK."""
    target = uri(B, "3target")
    events = [
        like("3x", 10, target), like("3y", 11, target), like("3z", 12, target),
        ev(A, LIKE, "3x", 13, None, "delete"), ev(A, LIKE, "3z", 14, None, "delete"), like("3w", 15, target),
    ]  # fmt: skip
    apply(database_url, "seq_order", [events])
    with psycopg.connect(database_url) as c:
        c.execute("SET search_path TO seq_order")
        assert c.execute('SELECT uri FROM "like"').fetchall() == [(uri(A, "3y", LIKE),)]
        # as the official: the promoted duplicate keeps its (stale) duplicate_record row
        dups = sorted(c.execute('SELECT uri, "duplicateOf" FROM duplicate_record').fetchall())
        assert dups == [(uri(A, "3w", LIKE), uri(A, "3y", LIKE)), (uri(A, "3y", LIKE), uri(A, "3x", LIKE))]
    failures = {}
    for i in range(1, len(events)):
        for j in range(0, i):
            apply(database_url, "replayed", [events[:i], events[j:]])
            d = compare(database_url)
            if d:
                failures[(i, j)] = report(d)
    assert failures == {}, "\n".join(f"committed [:{i}], then [{j}:]:\n{r}" for (i, j), r in failures.items())
