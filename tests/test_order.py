"""Cross-shard order (fleet/indexing/order.py): any interleaving of the shards ends in the seq-order database.

Each of N = 4 shards applies its own events in seq order, in batches (one transaction each);
between shards there is no order. Every interleaving below must leave exactly the database that
applying the whole firehose in seq order leaves, table by table (rows compared as the raw dump
with serial ids and the clock-stamped ``op_thread_reply.deletedAt`` masked).

The hand-made cases name one rule each: a small firehose of hand-built events applied in the
adversarial order, then compared with its seq-order result.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from typing import Any, Iterable

import psycopg
import pytest
from psycopg import sql

from conftest import CORPUS
from fleet.db import dump as dumpmod
from fleet.shard import shard
from tools.bench_indexing_path import fresh_schema
from tools.parity import chunks, corpus_events, index_events, recount

N = 4
RULES = {"*": {"deletedAt": "ts"}, **dumpmod.SERIAL_RULES}
# migration bookkeeping; history versions keep the flags a post had when it was deleted (a
# snapshot of evaluation, not firehose state: see order.py's limits)
SKIP_TABLES = {"kysely_migration", "kysely_migration_lock", "fleet_migration", "fleet_record_history"}


# ---------------------------------------------------------------- harness


def by_shard(events: list[dict[str, Any]], n: int = N) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for e in events:
        out[shard(e.get("did", ""), n)].append(e)
    return out


def shard_after_shard(events: list[dict[str, Any]], order: list[int], batch: int = 50) -> list[list[dict[str, Any]]]:
    """Each shard drained completely before the next starts."""
    s = by_shard(events)
    return [b for k in order for b in chunks(s[k], batch)]


def round_robin(events: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    """Shards take turns; shard k takes ``sizes[k]`` events per turn."""
    s, pos, out = by_shard(events), [0] * N, []
    while any(pos[k] < len(s[k]) for k in range(N)):
        for k in range(N):
            if pos[k] < len(s[k]):
                out.append(s[k][pos[k] : pos[k] + sizes[k]])
                pos[k] += sizes[k]
    return out


def random_merge(events: list[dict[str, Any]], seed: int, max_batch: int = 40) -> list[list[dict[str, Any]]]:
    """A seeded random shard and batch size at every step."""
    rnd, s, pos, out = random.Random(seed), by_shard(events), [0] * N, []
    while True:
        live = [k for k in range(N) if pos[k] < len(s[k])]
        if not live:
            return out
        k = rnd.choice(live)
        n = rnd.randint(1, max_batch)
        out.append(s[k][pos[k] : pos[k] + n])
        pos[k] += n


async def _index(url: str, schema: str, batches: Iterable[list[dict[str, Any]]]) -> list:
    # the per-event path: the bulk fast path (likes/reposts/follows) has its own order hooks to add
    return await index_events(url, schema, batches, bulk=False)


def index(url: str, schema: str, batches: Iterable[list[dict[str, Any]]]) -> None:
    fresh_schema(url, schema)
    assert asyncio.run(_index(url, schema, batches)) == []


def tables(url: str, schema: str) -> dict[str, list[str]]:
    d = dumpmod.dump(url, schema)
    out = {}
    for t, lines in d.raw.items():
        if t not in SKIP_TABLES:
            out[t] = dumpmod.normalize_rows(t, [json.loads(x) for x in lines], None, RULES)
    return out


def differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, tuple[list[str], list[str]]]:
    out = {}
    for t in sorted(set(a) | set(b)):
        ca, cb = Counter(a.get(t, [])), Counter(b.get(t, []))
        missing, extra = sorted((ca - cb).elements()), sorted((cb - ca).elements())
        if missing or extra:
            out[t] = (missing, extra)
    return out


def report(diffs: dict[str, tuple[list[str], list[str]]]) -> str:
    lines = []
    for t, (m, e) in diffs.items():
        lines.append(f"{t}: -{len(m)} +{len(e)}")
        lines += ["  - " + x[:300] for x in m[:3]] + ["  + " + x[:300] for x in e[:3]]
    return "\n".join(lines)


def seq_order_tables(url: str, name: str, events: list[dict[str, Any]]) -> dict[str, list[str]]:
    index(url, "seq_order", chunks(events, 100))
    return tables(url, "seq_order")


# ---------------------------------------------------------------- corpora

INTERLEAVINGS = {
    "shards_0123": lambda ev: shard_after_shard(ev, [0, 1, 2, 3]),
    "shards_3210": lambda ev: shard_after_shard(ev, [3, 2, 1, 0]),
    "round_robin_1_7_3_25": lambda ev: round_robin(ev, [1, 7, 3, 25]),
    "random_merge_seed_1": lambda ev: random_merge(ev, 1),
    "random_merge_seed_2": lambda ev: random_merge(ev, 2, max_batch=5),
}


@pytest.mark.parametrize("name", ["small", "edge"])
def test_every_interleaving_of_four_shards_ends_in_the_seq_order_database(database_url, name):
    events = corpus_events(os.path.join(CORPUS, name))
    expected = seq_order_tables(database_url, name, events)
    failed = {}
    for label, make in INTERLEAVINGS.items():
        index(database_url, "interleaved", make(events))
        diffs = differences(expected, tables(database_url, "interleaved"))
        if diffs:
            failed[label] = report(diffs)
        assert asyncio.run(recount(database_url, "interleaved")) == [], label
    assert not failed, "\n".join(f"== {k}\n{v}" for k, v in failed.items())


# ---------------------------------------------------------------- thread-gate graph rules (order.py rules 6 and 8)
# Hand-made firehoses: A owns a gated thread, B replies. Each case applies A's and B's events
# (two shards, each in seq order) in an adversarial order and must end in the seq-order
# database; both on the per-event path and on the bulk fast path (follows are bulk events).

from test_locks import A, B, ev, post, uri  # noqa: E402

TS = "2025-01-01T00:00:00.000Z"
LIST = f"at://{A}/app.bsky.graph.list/3list"


def gate(seq: int, *rules: dict, rkey: str = "3root", typ: str = "create") -> dict:
    rec = {"$type": "app.bsky.feed.threadgate", "post": uri(A, rkey), "allow": list(rules), "createdAt": TS}
    return ev(A, "app.bsky.feed.threadgate", rkey, seq, rec, typ)


def follow(did: str, rkey: str, seq: int, subject: str) -> dict:
    return ev(did, "app.bsky.graph.follow", rkey, seq, {"$type": "app.bsky.graph.follow", "subject": subject, "createdAt": TS})


def the_list(seq: int) -> dict:
    rec = {"$type": "app.bsky.graph.list", "name": "friends", "purpose": "app.bsky.graph.defs#curatelist", "createdAt": TS}
    return ev(A, "app.bsky.graph.list", "3list", seq, rec)


def list_item(rkey: str, seq: int, subject: str) -> dict:
    rec = {"$type": "app.bsky.graph.listitem", "subject": subject, "list": LIST, "createdAt": TS}
    return ev(A, "app.bsky.graph.listitem", rkey, seq, rec)


def gone(did: str, coll: str, rkey: str, seq: int) -> dict:
    return ev(did, coll, rkey, seq, None, "delete")


FOLLOWING = {"$type": "app.bsky.feed.threadgate#followingRule"}
FOLLOWER = {"$type": "app.bsky.feed.threadgate#followerRule"}
LIST_RULE = {"$type": "app.bsky.feed.threadgate#listRule", "list": LIST}
ROOT, REPLY = post(A, "3root", 10), post(B, "3reply", 20, parent=uri(A, "3root"))

# name -> (events in seq order, the adversarial batches)
GRAPH_CASES = {
    # following rule: A's follow of B is deleted (30) before B's reply (20) is indexed
    "following_deleted_before_the_late_reply": (
        f := [ROOT, gate(11, FOLLOWING), follow(A, "3f", 12, B), REPLY, gone(A, "app.bsky.graph.follow", "3f", 30)],
        [[f[0], f[1], f[2], f[4]], [f[3]]],
    ),
    # following rule: A's follow of B (12) is indexed after B's reply (20) was judged without it
    "following_written_late": (
        f := [ROOT, gate(11, FOLLOWING), follow(A, "3f", 12, B), REPLY],
        [[f[0], f[1]], [f[3]], [f[2]]],
    ),
    # following rule: A's follow (12) and its delete (15) both precede the reply: the late
    # delete takes back what the reply's early evaluation allowed
    "following_deleted_late": (
        f := [ROOT, gate(11, FOLLOWING), follow(A, "3f", 12, B), gone(A, "app.bsky.graph.follow", "3f", 15), REPLY],
        [[f[0], f[1], f[2]], [f[4]], [f[3]]],
    ),
    # follower rule: B's follow of A (12) is deleted (30) before A's gate is indexed; the late
    # gate re-evaluates B's reply as of its seq (the corpus case 3n2uuuvq4un2e)
    "follower_deleted_before_the_late_gate": (
        f := [ROOT, gate(11, FOLLOWER), follow(B, "3f", 12, A), REPLY, gone(B, "app.bsky.graph.follow", "3f", 30)],
        [[f[2], f[3], f[4]], [f[0], f[1]]],
    ),
    # list rule: the list item (12) is deleted (30) before the reply (20) is indexed
    "list_item_deleted_before_the_late_reply": (
        f := [the_list(5), ROOT, gate(11, LIST_RULE), list_item("3i", 12, B), REPLY, gone(A, "app.bsky.graph.listitem", "3i", 30)],
        [[f[0], f[1], f[2], f[3], f[5]], [f[4]]],
    ),
    # list rule: the list item (12) is indexed after the reply (20)
    "list_item_written_late": (
        f := [the_list(5), ROOT, gate(11, LIST_RULE), list_item("3i", 12, B), REPLY],
        [[f[0], f[1], f[2]], [f[4]], [f[3]]],
    ),
    # list rule: the list item's delete (15) precedes the reply (20) but is indexed after it
    "list_item_deleted_late": (
        f := [the_list(5), ROOT, gate(11, LIST_RULE), list_item("3i", 12, B), gone(A, "app.bsky.graph.listitem", "3i", 15), REPLY],
        [[f[0], f[1], f[2], f[3]], [f[5]], [f[4]]],
    ),
}


def _graph_index(url: str, schema: str, batches: list[list[dict[str, Any]]], bulk: bool) -> None:
    fresh_schema(url, schema)
    assert asyncio.run(index_events(url, schema, batches, bulk=bulk)) == []


@pytest.mark.parametrize("bulk", [False, True], ids=["per-event", "bulk"])
@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_thread_gate_graph_rules_judge_a_reply_as_of_its_seq_in_any_order(database_url, case, bulk):
    events, batches = GRAPH_CASES[case]
    assert sorted(e["seq"] for b in batches for e in b) == [e["seq"] for e in events]
    _graph_index(database_url, "seq_order", [events], bulk)
    expected = tables(database_url, "seq_order")
    _graph_index(database_url, "interleaved", batches, bulk)
    got = tables(database_url, "interleaved")
    assert differences(expected, got) == {}, report(differences(expected, got))
    # the case is not vacuous: the reply's verdict is what seq order gives, and shows in the counts
    flags = q_rows(database_url, "interleaved", 'SELECT "violatesThreadGate" FROM post WHERE uri = %s', uri(B, "3reply"))
    allowed = case.endswith(("before_the_late_reply", "written_late", "before_the_late_gate"))
    assert flags == [(None if allowed else True,)]
    assert q_rows(database_url, "interleaved", "SELECT count(*) FROM fleet_graph_change") == [(0,)]


def q_rows(url: str, schema: str, query: str, *params: Any) -> list:
    with psycopg.connect(url) as c:
        c.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        return c.execute(query, params).fetchall()
