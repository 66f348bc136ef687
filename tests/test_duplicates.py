"""Duplicate arbitration at the cutover (fleet/indexing/duplicates.py): backfilled and firehose
members of one duplicate key, in any interleaving, end in the firehose-only state.

Hand-made firehoses of duplicate groups (an account's likes, reposts or follows of one subject,
created, deleted and promoted as the edge corpus does), each applied alone in seq order (the
reference), then again with a backfill of the records alive at its end (``seq`` =
``SEQ_BACKFILL``, the repo's last rev, a later clock time) merged in: the normalised official
tables (clock values masked, as the conformance comparison masks them) must be equal, on the
per-event and on the bulk path. Real PostgreSQL, one schema per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from typing import Any

import pytest

from conftest import CORPUS
from fleet.codec.firehose import SEQ_BACKFILL
from fleet.db import dump as dumpmod
from tools.bench_indexing_path import CID1, CID2, did_for, fresh_schema
from tools.parity import index_events, recount

LIKE, REPOST, FOLLOW, POST = "app.bsky.feed.like", "app.bsky.feed.repost", "app.bsky.graph.follow", "app.bsky.feed.post"
AUTHOR = did_for(700)
SUBJECT = f"at://{AUTHOR}/{POST}/3subject"
SPEC = dumpmod.load_spec(os.path.join(CORPUS, "small", "db", "tables.json"))  # the official tables and columns
CLOCK = "2026-06-01T00:00:00.000Z"  # a backfill writes the clock's time, later than every event here


def rev(seq: int) -> str:
    return f"3m{seq:011d}"


def time_of(seq: int) -> str:
    return f"2025-01-01T12:{seq // 60:02d}:{seq % 60:02d}.000Z"


def record(coll: str, rkey: str) -> dict[str, Any]:
    subject: Any = AUTHOR if coll == FOLLOW else {"uri": SUBJECT, "cid": CID1}
    return {"$type": coll, "subject": subject, "createdAt": f"2025-01-01T00:00:00.{len(rkey):03d}Z"}


def event(typ: str, did: str, coll: str, rkey: str, seq: int, rev_: str | None = None) -> dict[str, Any]:
    e = {"type": typ, "seq": seq, "time": time_of(seq), "did": did, "commit": CID1, "rev": rev_ or rev(seq),
         "collection": coll, "rkey": rkey}  # fmt: skip
    if typ != "delete":
        e["cid"], e["record"] = CID2, record(coll, rkey)
    return e


# ---------------------------------------------------------------- cases: (collection, [(op, rkey)]) per account
# every op is one commit; "same" puts the next two creates in one commit (one seq and rev)

CASES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "delete-earlier": (LIKE, [("c", "3a"), ("c", "3b"), ("d", "3a")]),
    "delete-later": (LIKE, [("c", "3a"), ("c", "3b"), ("d", "3b")]),
    "delete-then-create": (LIKE, [("c", "3a"), ("d", "3a"), ("c", "3b")]),
    "three-delete-first": (LIKE, [("c", "3a"), ("c", "3b"), ("c", "3c"), ("d", "3a")]),
    "promote-then-create": (LIKE, [("c", "3a"), ("c", "3b"), ("d", "3a"), ("c", "3c")]),
    "promote-twice": (LIKE, [("c", "3a"), ("c", "3b"), ("c", "3c"), ("d", "3a"), ("d", "3b")]),
    "repost-delete-earlier": (REPOST, [("c", "3a"), ("c", "3b"), ("d", "3a")]),
    "repost-three": (REPOST, [("c", "3a"), ("c", "3b"), ("d", "3a"), ("c", "3c")]),
    "follow-delete-earlier": (FOLLOW, [("c", "3a"), ("c", "3b"), ("d", "3a")]),
    "follow-recreate": (FOLLOW, [("c", "3a"), ("d", "3a"), ("c", "3b"), ("c", "3c")]),
    "same-commit": (LIKE, [("same", "3a"), ("c", "3b"), ("c", "3c"), ("d", "3a")]),
}


def firehose_and_backfill(names: list[str]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The firehose of ``names`` (one account each, interleaved commit by commit) and, per
    account, the backfill of its records alive at the end, in key order."""
    live: list[dict[str, Any]] = [event("create", AUTHOR, POST, "3subject", 1)]
    live[0]["record"] = {"$type": POST, "text": "subject", "createdAt": "2025-01-01T00:00:00.000Z"}
    seq = 10
    ops = {n: list(CASES[n][1]) for n in names}
    last_rev: dict[str, str] = {}
    alive: dict[str, dict[str, None]] = {n: {} for n in names}
    while any(ops.values()):
        for i, n in enumerate(names):
            if not ops[n]:
                continue
            did, coll = did_for(800 + list(CASES).index(n)), CASES[n][0]
            op, rkey = ops[n].pop(0)
            seq += 1
            if op == "same":  # this create and the next one in one commit
                _, rkey2 = ops[n].pop(0)
                live += [event("create", did, coll, rkey, seq), event("create", did, coll, rkey2, seq)]
                alive[n].update({rkey: None, rkey2: None})
            elif op == "c":
                live.append(event("create", did, coll, rkey, seq))
                alive[n][rkey] = None
            else:
                live.append(event("delete", did, coll, rkey, seq))
                alive[n].pop(rkey, None)
            last_rev[n] = rev(seq)
    backfill = []
    for n in names:
        did, coll = did_for(800 + list(CASES).index(n)), CASES[n][0]
        copies = []
        for rkey in sorted(alive[n]):
            e = event("create", did, coll, rkey, SEQ_BACKFILL, rev_=last_rev[n])
            e["time"] = CLOCK
            copies.append(e)
        backfill.append(copies)
    return live, backfill


def merge(live: list[dict[str, Any]], backfill: list[list[dict[str, Any]]], seed: int) -> list[list[dict[str, Any]]]:
    """A random interleaving (each stream in its order) cut into batches of 1-6 events."""
    rng = random.Random(seed)
    streams = [list(live)] + [list(b) for b in backfill if b]
    merged: list[dict[str, Any]] = []
    while any(streams):
        s = rng.choice([x for x in streams if x])
        merged.append(s.pop(0))
    out, i = [], 0
    while i < len(merged):
        k = rng.randint(1, 6)
        out.append(merged[i : i + k])
        i += k
    return out


# ---------------------------------------------------------------- harness


async def _index(url: str, schema: str, batches: list[list[dict[str, Any]]], bulk: bool) -> list:
    """Failures of indexing ``batches``, then every aggregate row that differs from a recount."""
    return await index_events(url, schema, batches, bulk=bulk) + await recount(url, schema)


def run(url: str, schema: str, batches: list[list[dict[str, Any]]], bulk: bool) -> dict[str, list[str]]:
    """Index ``batches`` into a fresh ``schema``; the normalised official tables."""
    fresh_schema(url, schema)
    assert asyncio.run(_index(url, schema, batches, bulk)) == []  # no failure, every count exact
    d = dumpmod.dump(url, schema, SPEC)
    return {t: rows for t, rows in d.normalized.items() if rows}


def differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> str:
    lines = []
    for t in sorted(set(a) | set(b)):
        ca, cb = Counter(a.get(t, [])), Counter(b.get(t, []))
        missing, extra = sorted((ca - cb).elements()), sorted((cb - ca).elements())
        if missing or extra:
            lines.append(f"{t}: -{len(missing)} +{len(extra)}")
            lines += ["  - " + x[:260] for x in missing[:4]] + ["  + " + x[:260] for x in extra[:4]]
    return "\n".join(lines)


def rows(tables: dict[str, list[str]], table: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in tables.get(table, [])]


# ---------------------------------------------------------------- the brief's interleaving


@pytest.mark.parametrize("bulk", [False, True], ids=["per-event", "bulk"])
def test_a_backfilled_like_written_before_an_earlier_firehose_like_becomes_its_duplicate_when_anchored(database_url, bulk):
    """Backfilled L2 (seq 0) first, then the firehose's L1 (seq 10, same subject), then L2's
    own create (seq 20) anchors it: L1 is the original, L2 its duplicate, one notification (L1's)."""
    a = did_for(900)
    post = event("create", AUTHOR, POST, "3subject", 1)
    post["record"] = {"$type": POST, "text": "subject", "createdAt": "2025-01-01T00:00:00.000Z"}
    l1, l2 = event("create", a, LIKE, "3l1", 10), event("create", a, LIKE, "3l2", 20)
    l2_backfilled = dict(event("create", a, LIKE, "3l2", SEQ_BACKFILL, rev_=rev(20)), time=CLOCK)
    l1_uri, l2_uri = f"at://{a}/{LIKE}/3l1", f"at://{a}/{LIKE}/3l2"

    expected = run(database_url, "firehose_only", [[post], [l1], [l2]], bulk)
    got = run(database_url, "both", [[post], [l2_backfilled], [l1], [l2]], bulk)

    assert [r["uri"] for r in rows(got, "like")] == [l1_uri]
    assert [(r["uri"], r["duplicateOf"]) for r in rows(got, "duplicate_record")] == [(l2_uri, l1_uri)]
    assert [(r["recordUri"], r["reason"], r["did"]) for r in rows(got, "notification")] == [(l1_uri, "like", AUTHOR)]
    assert [r["likeCount"] for r in rows(got, "post_agg")] == [1]
    assert got == expected, differences(expected, got)


@pytest.mark.parametrize("bulk", [False, True], ids=["per-event", "bulk"])
def test_a_firehose_delete_does_not_promote_a_backfilled_duplicate_whose_create_is_still_to_come(database_url, bulk):
    """Firehose: L1 (10), L2 (20), delete L1 (30) promotes L2 (L1's notification stays, L2's
    duplicate row too: the official promotion). With L2 backfilled before all of it the same."""
    a = did_for(901)
    l1, l2, d1 = event("create", a, LIKE, "3l1", 10), event("create", a, LIKE, "3l2", 20), event("delete", a, LIKE, "3l1", 30)
    l2_backfilled = dict(event("create", a, LIKE, "3l2", SEQ_BACKFILL, rev_=rev(30)), time=CLOCK)
    expected = run(database_url, "firehose_only", [[l1], [l2], [d1]], bulk)
    assert [r["recordUri"] for r in rows(expected, "notification")] == [f"at://{a}/{LIKE}/3l1"]
    for order in ([[l2_backfilled], [l1], [l2], [d1]], [[l1], [l2_backfilled], [l2], [d1]], [[l2_backfilled, l1, l2, d1]]):
        got = run(database_url, "both", order, bulk)
        assert got == expected, differences(expected, got)


def test_a_like_deleted_before_a_backfilled_one_is_created_leaves_the_backfilled_one_its_notification(database_url):
    """Firehose: L1 (10), delete L1 (20), L2 (30): L1's notification goes, L2 gets one. With L2
    backfilled between L1 and its delete, the delete finds a duplicate whose create is still
    to come: no promotion, L2 takes the row as a create."""
    a = did_for(902)
    l1, d1, l2 = event("create", a, LIKE, "3l1", 10), event("delete", a, LIKE, "3l1", 20), event("create", a, LIKE, "3l2", 30)
    l2_backfilled = dict(event("create", a, LIKE, "3l2", SEQ_BACKFILL, rev_=rev(30)), time=CLOCK)
    expected = run(database_url, "firehose_only", [[l1], [d1], [l2]], False)
    for order in ([[l1], [l2_backfilled], [d1], [l2]], [[l2_backfilled], [l1], [d1], [l2]], [[l1], [l2_backfilled], [d1]]):
        got = run(database_url, "both", order, False)
        if len(order) == 3:  # L2's create not applied yet: the state L2 created last gives
            assert [r["uri"] for r in rows(got, "like")] == [f"at://{a}/{LIKE}/3l2"]
            assert not rows(got, "duplicate_record")
            assert [r["recordUri"] for r in rows(got, "notification")] == [f"at://{a}/{LIKE}/3l2"]
        else:
            assert got == expected, differences(expected, got)


def test_a_live_like_after_the_backfill_is_a_duplicate_of_the_backfilled_one(database_url):
    """A backfilled like from before the stream (never anchored; its rev older than the live
    events) keeps the row: a live like of the same subject is its duplicate and is promoted
    when it goes — as if the backfilled one had been created first on the firehose."""
    a = did_for(903)
    pre = event("create", a, LIKE, "3l0", 5)  # the reference: created on the firehose, before the rest
    pre_backfilled = dict(event("create", a, LIKE, "3l0", SEQ_BACKFILL, rev_=rev(6)), time=time_of(6))
    live = [event("create", a, LIKE, "3l1", 10), event("create", a, LIKE, "3l2", 20), event("delete", a, LIKE, "3l0", 30)]
    expected = run(database_url, "firehose_only", [[pre]] + [[e] for e in live], False)
    for bulk in (False, True):
        got = run(database_url, "both", [[pre_backfilled]] + [[e] for e in live], bulk)
        assert got == expected, differences(expected, got)
        # and a backfill that comes after those live likes (a late fetch of an older rev) too
        got = run(database_url, "both", [[live[0]], [live[1]], [pre_backfilled], [live[2]]], bulk)
        assert got == expected, differences(expected, got)


# ---------------------------------------------------------------- every case, random interleavings


@pytest.mark.parametrize("seed", range(6))
def test_duplicate_groups_end_in_the_firehose_only_state_in_any_interleaving_with_their_backfill(database_url, seed):
    names = list(CASES)
    live, backfill = firehose_and_backfill(names)
    expected = run(database_url, "firehose_only", [live], True)
    assert rows(expected, "duplicate_record")  # the cases do make duplicates
    interleavings = {
        "backfill-first": [[e for b in backfill for e in b]] + [[e] for e in live],
        "backfill-last": [[e] for e in live] + [[e for b in backfill for e in b]],
        "random": merge(live, backfill, seed),
        "random-small-batches": [[e] for b in merge(live, backfill, seed + 100) for e in b],
    }
    for name, batches in interleavings.items():
        bulk = (seed + len(name)) % 2 == 0
        got = run(database_url, "both", batches, bulk)
        assert got == expected, f"{name} (bulk={bulk}):\n" + differences(expected, got)


# ---------------------------------------------------------------- updated records (cutover.py rule 6)


def moved(ev_: dict[str, Any], subject_did: str) -> dict[str, Any]:
    """``ev_`` as an update of its record to a subject of ``subject_did`` (another cid)."""
    e = dict(ev_, type="update", cid=CID1)
    if ev_["collection"] == FOLLOW:
        e["record"] = dict(ev_["record"], subject=subject_did)
    else:
        e["record"] = dict(ev_["record"], subject={"uri": f"at://{subject_did}/{POST}/3other", "cid": CID1})
    return e


@pytest.mark.parametrize("bulk", [False, True], ids=["per-event", "bulk"])
def test_a_record_updated_to_another_subject_keeps_the_notification_of_its_first_version(database_url, bulk):
    """Firehose: a like and a follow created (notifications to AUTHOR), then updated to another
    subject (the official update keeps the first notifications and adds none); a like created
    as a duplicate, then updated to a free subject (it gets its row and its notification then).
    The backfill holds the updated versions: written first, before the creates or between."""
    a, other = did_for(904), did_for(905)
    l0 = event("create", a, LIKE, "3l0", 10)
    lk, fw, dup = event("create", a, LIKE, "3lk", 11), event("create", a, FOLLOW, "3fw", 12), event("create", a, LIKE, "3dup", 13)
    lk["record"] = dict(lk["record"], subject={"uri": f"at://{AUTHOR}/{POST}/3second", "cid": CID1})  # not l0's subject
    updates = [dict(moved(lk, other), seq=20, rev=rev(20), time=time_of(20)),
               dict(moved(fw, other), seq=21, rev=rev(21), time=time_of(21)),
               dict(moved(dup, did_for(906)), seq=22, rev=rev(22), time=time_of(22))]  # fmt: skip
    live = [l0, lk, fw, dup] + updates
    backfill = [dict(e, type="create", seq=SEQ_BACKFILL, rev=rev(22), time=CLOCK) for e in [l0] + updates]
    expected = run(database_url, "firehose_only", [[e] for e in live], bulk)
    assert {r["recordUri"].rsplit("/", 1)[1]: r["did"] for r in rows(expected, "notification")} == {
        "3l0": AUTHOR, "3lk": AUTHOR, "3fw": AUTHOR, "3dup": did_for(906)}
    for batches in ([backfill] + [[e] for e in live], [[l0], backfill] + [[e] for e in live[1:]],
                    [[l0, lk], backfill, [fw, dup]] + [[e] for e in updates]):  # fmt: skip
        got = run(database_url, "both", batches, bulk)
        assert got == expected, differences(expected, got)


@pytest.mark.parametrize("bulk", [False, True], ids=["per-event", "bulk"])
def test_a_record_deleted_and_created_again_under_its_rkey_keeps_the_notification_of_the_new_version(database_url, bulk):
    """Firehose: a like created (cid 2), deleted, created again under the same rkey with another
    cid (1): the delete removed the first notification, the second create wrote its own. The
    backfill holds the second version; written before the first create, rule 6 gave the record
    the first version's notification, which the second create (the anchor) must replace
    (found by the edge corpus's firehose-and-backfill run, 4 shards)."""
    a = did_for(907)
    c1, d1 = event("create", a, LIKE, "3lr", 10), event("delete", a, LIKE, "3lr", 11)
    c2 = dict(event("create", a, LIKE, "3lr", 12), cid=CID1)
    backfilled = dict(c2, seq=SEQ_BACKFILL, time=CLOCK)
    expected = run(database_url, "firehose_only", [[c1], [d1], [c2]], bulk)
    assert [(r["recordUri"], r["recordCid"]) for r in rows(expected, "notification")] == [(f"at://{a}/{LIKE}/3lr", CID1)]
    for batches in ([[backfilled], [c1], [d1], [c2]], [[c1], [backfilled], [d1], [c2]], [[c1], [d1], [backfilled], [c2]],
                    [[c1], [d1], [c2], [backfilled]], [[backfilled, c1, d1, c2]]):  # fmt: skip
        got = run(database_url, "both", batches, bulk)
        assert got == expected, differences(expected, got)
