"""The profile/graph/feed-generator/... plugins against real Postgres, with corpus records."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from fleet.codec.atjson import dumps
from fleet.indexing.plugin import InvalidRecord, Plugin, RecordOp
from fleet.indexing.plugins._helpers import blob_cid, normalize_datetime_always
from fleet.indexing.plugins.reference_list_opt_out import parse_subject
from tests.actor_support import connect, corpus_events, expected_rows, migrated, table_rows

# module -> table holding its rows
TABLES = {
    "profile": "profile",
    "follow": "follow",
    "block": "actor_block",
    "list": "list",
    "list_item": "list_item",
    "list_block": "list_block",
    "feed_generator": "feed_generator",
    "starter_pack": "starter_pack",
    "labeler": "labeler",
    "verification": "verification",
    "reference_list_opt_out": "reference_list_opt_out",
}
PLACEHOLDERS = ["status", "notif_declaration", "chat_declaration", "germ_declaration"]
ALICE = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"


def plugin(name: str) -> Plugin:
    return importlib.import_module(f"fleet.indexing.plugins.{name}").PLUGIN


def op_of(ev: dict) -> RecordOp:
    uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
    return RecordOp(uri=uri, did=ev["did"], collection=ev["collection"], rkey=ev["rkey"], cid=ev["cid"],
                    record=ev["record"], json=dumps(ev["record"]), indexed_at=ev["time"], rev=ev.get("rev"), seq=ev.get("seq"))


def op(collection: str, did: str, rkey: str, record: dict, time: str = "2025-01-01T00:00:00.000Z", cid: str = "bafyc") -> RecordOp:
    return RecordOp(uri=f"at://{did}/{collection}/{rkey}", did=did, collection=collection, rkey=rkey, cid=cid,
                    record=record, json=dumps(record), indexed_at=time)


@pytest.mark.parametrize("corpus", ["small", "edge"])
def test_corpus_records_make_exactly_the_official_rows(database_url, corpus):
    """Each record that is indexed at the end of the corpus, inserted by its plugin, gives the
    official row, column for column (indexedAt = the event's time)."""
    migrated(database_url)
    events = corpus_events(corpus)
    by_collection = {plugin(m).collection: m for m in TABLES}
    expected = {m: {r["uri"]: r for r in expected_rows(corpus, t)} for m, t in TABLES.items()}

    async def go():
        conn = await connect(database_url)
        for ev in events:
            m = by_collection.get(ev.get("collection"))
            if m is None or ev["type"] not in ("create", "update"):
                continue
            o = op_of(ev)
            want = expected[m].get(o.uri)
            if want is None or want["cid"] != o.cid:
                continue  # deleted later, replaced, or a duplicate: not a final row
            p = plugin(m)
            p.validate(o.record)
            await p.delete(conn, o.uri)
            row = await p.insert(conn, o)
            assert row is not None and row["uri"] == o.uri
        got = {m: await table_rows(conn, t, "uri") for m, t in TABLES.items()}
        await conn.close()
        return got

    got = asyncio.run(go())
    for m, rows in got.items():
        want = expected[m]
        # rows whose record lacks createdAt: the official stores its clock there (unreproducible)
        clock = {u for u, r in want.items() if m == "profile" and r["createdAt"] > r["indexedAt"]}
        for r in rows:
            w = want[r["uri"]]
            if r["uri"] in clock:
                assert {**dict(r), "createdAt": w["createdAt"]} == w
            else:
                assert dict(r) == w, m
        assert len(rows) == len(want), (m, sorted(set(want) - {r["uri"] for r in rows})[:3])


def test_follow_duplicate_notification_and_aggregates(database_url):
    migrated(database_url)
    p = plugin("follow")

    async def go():
        conn = await connect(database_url)
        first = op("app.bsky.graph.follow", ALICE, "f1", {"$type": "app.bsky.graph.follow", "subject": BOB, "createdAt": "2024-01-01T10:00:00+02:00"})
        second = op("app.bsky.graph.follow", ALICE, "f2", {"$type": "app.bsky.graph.follow", "subject": BOB, "createdAt": "2024-01-02T00:00:00Z"})
        row = await p.insert(conn, first)
        again = await p.insert(conn, first)
        dup = await p.find_duplicate(conn, second)
        deleted = await p.delete(conn, first.uri)
        gone = await p.delete(conn, first.uri)
        await conn.close()
        return row, again, dup, deleted, gone

    row, again, dup, deleted, gone = asyncio.run(go())
    assert row["createdAt"] == "2024-01-01T08:00:00.000Z" and row["sortAt"] == "2024-01-01T08:00:00.000Z"
    assert again is None and gone is None
    assert dup == f"at://{ALICE}/app.bsky.graph.follow/f1"
    assert deleted["uri"] == row["uri"]
    [n] = p.notifs_for_insert(row)
    assert (n.did, n.author, n.reason, n.reasonSubject, n.sortAt) == (BOB, ALICE, "follow", None, row["sortAt"])
    assert p.notifs_for_delete(deleted, None) == ([], [row["uri"]])
    assert p.notifs_for_delete(deleted, row) == ([], [])
    assert [(d.table, d.key, d.column, d.delta) for d in p.aggregates(row, -1)] == [
        ("profile_agg", BOB, "followersCount", -1), ("profile_agg", ALICE, "followsCount", -1)]


@pytest.mark.parametrize(
    "module,record,dup_record",
    [
        ("block", {"subject": BOB}, {"subject": BOB}),
        ("list_block", {"subject": f"at://{BOB}/app.bsky.graph.list/l"}, {"subject": f"at://{BOB}/app.bsky.graph.list/l"}),
        ("list_item", {"subject": BOB, "list": f"at://{ALICE}/app.bsky.graph.list/l"}, {"subject": BOB, "list": f"at://{ALICE}/app.bsky.graph.list/l"}),
        ("verification", {"subject": BOB, "handle": "bob.test", "displayName": "Bob"}, {"subject": BOB, "handle": "b.test", "displayName": "B"}),
        ("reference_list_opt_out", {"subject": f"at://{BOB}/app.bsky.graph.list/l"}, {"subject": f"at://{BOB}/app.bsky.graph.list/l"}),
    ],
)
def test_second_record_for_the_same_subject_is_found_as_duplicate(database_url, module, record, dup_record):
    migrated(database_url)
    p = plugin(module)

    async def go():
        conn = await connect(database_url)
        a = op(p.collection, ALICE, "r1", {**record, "createdAt": "2024-01-01T00:00:00Z"})
        b = op(p.collection, ALICE, "r2", {**dup_record, "createdAt": "2024-01-01T00:00:00Z"})
        other = op(p.collection, BOB, "r3", {**record, "createdAt": "2024-01-01T00:00:00Z"})
        before = await p.find_duplicate(conn, b)
        await p.insert(conn, a)
        found = await p.find_duplicate(conn, b)
        await conn.close()
        return before, found, other

    before, found, _ = asyncio.run(go())
    assert before is None
    assert found == f"at://{ALICE}/{p.collection}/r1"


def test_list_item_on_another_accounts_list_is_refused(database_url):
    migrated(database_url)
    p = plugin("list_item")

    async def go():
        conn = await connect(database_url)
        with pytest.raises(InvalidRecord):
            await p.insert(conn, op(p.collection, ALICE, "i1", {"subject": BOB, "list": f"at://{BOB}/app.bsky.graph.list/l", "createdAt": "2024-01-01T00:00:00Z"}))
        rows = await table_rows(conn, "list_item", "uri")
        await conn.close()
        return rows

    assert asyncio.run(go()) == []


@pytest.mark.parametrize("module", ["profile", "labeler"] + PLACEHOLDERS)
def test_self_only_collections_ignore_other_rkeys(database_url, module):
    migrated(database_url)
    p = plugin(module)

    async def go():
        conn = await connect(database_url)
        rec = {"$type": p.collection, "createdAt": "2024-01-01T00:00:00Z"}
        not_self = await p.insert(conn, op(p.collection, ALICE, "other", rec))
        is_self = await p.insert(conn, op(p.collection, ALICE, "self", rec))
        del_other = await p.delete(conn, f"at://{ALICE}/{p.collection}/other")
        del_self = await p.delete(conn, f"at://{ALICE}/{p.collection}/self")
        await conn.close()
        return not_self, is_self, del_other, del_self

    not_self, is_self, del_other, del_self = asyncio.run(go())
    assert not_self is None and del_other is None
    assert is_self and is_self["uri"].endswith("/self")
    assert del_self and del_self["uri"].endswith("/self")


def test_profile_joined_via_starter_pack_notifies_the_pack_creator(database_url):
    migrated(database_url)
    p = plugin("profile")
    sp = f"at://{BOB}/app.bsky.graph.starterpack/sp1"

    async def go():
        conn = await connect(database_url)
        row = await p.insert(conn, op(p.collection, ALICE, "self", {
            "$type": p.collection, "displayName": "A", "joinedViaStarterPack": {"uri": sp, "cid": "bafysp"},
            "avatar": {"$type": "blob", "ref": {"$link": "bafkav"}, "mimeType": "image/png", "size": 3},
            "createdAt": "2024-01-01T00:00:00+01:00"}, time="2025-01-01T00:00:00.000Z"))
        await conn.close()
        return row

    row = asyncio.run(go())
    assert row["avatarCid"] == "bafkav" and row["createdAt"] == "2024-01-01T00:00:00+01:00"  # stored as written
    [n] = p.notifs_for_insert(row)
    assert (n.did, n.author, n.reason, n.reasonSubject, n.sortAt) == (BOB, ALICE, "starterpack-joined", sp, "2025-01-01T00:00:00.000Z")


def test_verification_notifies_verified_and_unverified(database_url):
    migrated(database_url)
    p = plugin("verification")

    async def go():
        conn = await connect(database_url)
        row = await p.insert(conn, op(p.collection, ALICE, "v1", {"subject": BOB, "handle": "bob.test", "displayName": "Bob",
                                                                 "createdAt": "2024-01-01T00:00:00Z"}))
        deleted = await p.delete(conn, row["uri"])
        await conn.close()
        return row, deleted

    row, deleted = asyncio.run(go())
    assert row["rkey"] == "v1" and row["sortedAt"] == "2024-01-01T00:00:00.000Z"
    [n] = p.notifs_for_insert(row)
    assert (n.did, n.reason, n.sortAt) == (BOB, "verified", "2024-01-01T00:00:00.000Z")
    [d], to_delete = p.notifs_for_delete(deleted, None)
    assert (d.did, d.author, d.reason) == (BOB, ALICE, "unverified") and to_delete == []


def test_list_and_feed_generator_store_facets_as_compact_json(database_url):
    migrated(database_url)
    facets = [{"index": {"byteStart": 0, "byteEnd": 5}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "café"}]}]

    async def go():
        conn = await connect(database_url)
        lst = await plugin("list").insert(conn, op("app.bsky.graph.list", ALICE, "l1", {
            "name": "n", "purpose": "app.bsky.graph.defs#curatelist", "descriptionFacets": facets, "createdAt": "bad"}))
        fg = await plugin("feed_generator").insert(conn, op("app.bsky.feed.generator", ALICE, "g1", {
            "did": "did:web:feed.test", "descriptionFacets": facets, "createdAt": "2024-01-01T00:00:00Z"}))
        await conn.close()
        return lst, fg

    lst, fg = asyncio.run(go())
    text = '[{"index":{"byteStart":0,"byteEnd":5},"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"café"}]}]'
    assert lst["descriptionFacets"] == text and fg["descriptionFacets"] == text
    assert lst["createdAt"] == "1970-01-01T00:00:00.000Z"  # unparseable -> epoch, as normalizeDatetimeAlways
    assert fg["feedDid"] == "did:web:feed.test"


# Produced with node and @atproto/syntax 0.0.280's normalizeDatetimeAlways.
NODE_NORMALIZED = [
    ("2024-05-01T12:00:00.123956+02:00", "2024-05-01T10:00:00.123Z"),
    ("2024-05-01T12:00:00.9999Z", "2024-05-01T12:00:00.999Z"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T12:00:00", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T23:30:00-05:30", "2024-05-02T05:00:00.000Z"),
    ("2024-02-30T00:00:00Z", "2024-03-01T00:00:00.000Z"),
    ("2024-02-32T00:00:00Z", "1970-01-01T00:00:00.000Z"),
    ("2024-01-01T24:00:00Z", "2024-01-02T00:00:00.000Z"),
    ("2024-01-01T24:00:01Z", "1970-01-01T00:00:00.000Z"),
    ("2024-01-01T00:00:60Z", "1970-01-01T00:00:00.000Z"),
    ("2024-01-01", "2024-01-01T00:00:00.000Z"),
    ("2024-01-01T00:00:00.5+0530", "2023-12-31T18:30:00.500Z"),
    ("2024-01-01 00:00:00", "2024-01-01T00:00:00.000Z"),
    ("9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00.000Z"),
    (" 2024-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
    ("yesterday", "1970-01-01T00:00:00.000Z"),
    ("", "1970-01-01T00:00:00.000Z"),
]


@pytest.mark.parametrize("value,want", NODE_NORMALIZED)
def test_normalize_datetime_matches_the_official_function(value, want):
    assert normalize_datetime_always(value) == want


def test_blob_cid_reads_typed_and_legacy_blobs():
    assert blob_cid({"$type": "blob", "ref": {"$link": "bafk1"}, "mimeType": "image/png", "size": 1}) == "bafk1"
    assert blob_cid({"cid": "bafk2", "mimeType": "image/png"}) == "bafk2"
    assert blob_cid(None) is None


@pytest.mark.parametrize(
    "subject,ok",
    [(f"at://{BOB}/app.bsky.graph.list/3abc", True), (f"at://{BOB}/app.bsky.graph.list/3abc/", False),
     (f"at://{BOB}/app.bsky.graph.list/3abc?x=1", False), (f"at://{BOB}/app.bsky.feed.post/3abc", False),
     ("at://bob.test/app.bsky.graph.list/3abc", False), (f"at://{BOB}/app.bsky.graph.list", False)],
)
def test_reference_list_opt_out_subject_must_be_a_canonical_list_uri(subject, ok):
    assert (parse_subject(subject) is not None) == ok
