"""labels.apply_label against real Postgres."""

from __future__ import annotations

import asyncio

from fleet.indexing.labels import apply_label
from tests.actor_support import connect, migrated, table_rows

SRC = "did:plc:labelerlabelerlabelerlab"
URI = "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/p1"


def ev(val="spam", neg=False, cts="2025-01-01T00:00:00.000Z", **kw):
    label = {"ver": 1, "src": SRC, "uri": URI, "val": val, "cts": cts, **kw}
    if neg:
        label["neg"] = True
    return {"type": "label", "seq": 1, "label": label}


def run(database_url, events):
    migrated(database_url)

    async def go():
        conn = await connect(database_url)
        for e in events:
            await apply_label(conn, e, None)
        rows = await table_rows(conn, "label", "val")
        await conn.close()
        return [(r["src"], r["uri"], r["cid"], r["val"], r["neg"], r["cts"], r["exp"]) for r in rows]

    return asyncio.run(go())


def test_label_is_stored_with_empty_cid_when_it_has_none(database_url):
    rows = run(database_url, [ev(exp="2026-01-01T00:00:00.000Z"), ev(val="nsfw", cid="bafyc")])
    assert rows == [(SRC, URI, "bafyc", "nsfw", False, "2025-01-01T00:00:00.000Z", None),
                    (SRC, URI, "", "spam", False, "2025-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z")]


def test_negation_takes_the_label_back(database_url):
    rows = run(database_url, [ev(), ev(neg=True, cts="2025-01-02T00:00:00.000Z")])
    assert rows == [(SRC, URI, "", "spam", True, "2025-01-02T00:00:00.000Z", None)]


def test_older_label_delivered_late_or_replayed_does_not_undo_a_newer_one(database_url):
    first, negation = ev(), ev(neg=True, cts="2025-01-02T00:00:00.000Z")
    rows = run(database_url, [first, negation, first, negation, first])
    assert rows == [(SRC, URI, "", "spam", True, "2025-01-02T00:00:00.000Z", None)]


def test_relabel_after_negation_applies_again(database_url):
    rows = run(database_url, [ev(), ev(neg=True, cts="2025-01-02T00:00:00.000Z"), ev(cts="2025-01-03T00:00:00.000Z")])
    assert rows == [(SRC, URI, "", "spam", False, "2025-01-03T00:00:00.000Z", None)]


def test_malformed_labels_are_skipped_and_the_good_ones_kept(database_url):
    bad = [
        {"type": "label", "label": None},
        {"type": "label", "label": {"src": "nobody", "uri": URI, "val": "x", "cts": "t"}},
        {"type": "label", "label": {"src": SRC, "uri": URI, "val": "", "cts": "t"}},
        {"type": "label", "label": {"src": SRC, "uri": URI, "val": "x" * 200, "cts": "t"}},
        {"type": "label", "label": {"src": SRC, "uri": URI, "val": "x\x00", "cts": "t"}},
        {"type": "label", "label": {"src": SRC, "uri": URI, "val": "x"}},
    ]
    rows = run(database_url, bad + [ev()])
    assert [r[3] for r in rows] == ["spam"]
