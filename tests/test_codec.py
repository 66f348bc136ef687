"""subscribeRepos frames -> stream events: the corpus byte for byte, and every kind of bad frame."""

from __future__ import annotations

import collections
import hashlib
import json
import os

import cbrrr
import pytest

from fleet.codec import atjson
from fleet.codec.firehose import (
    MAX_OPS,
    ErrorFrame,
    FrameError,
    collection_filter,
    decode_info,
    iter_frames_file,
    message_events,
)
from tests.conftest import CORPUS

KEEP_BSKY = collection_filter(["app.bsky.*", "chat.bsky.*"])


def corpus_frames(name: str) -> list[bytes]:
    with open(os.path.join(CORPUS, name, "firehose.frames"), "rb") as f:
        return list(iter_frames_file(f.read()))


def dag_cid(raw: bytes) -> cbrrr.CID:
    return cbrrr.CID(b"\x01\x71\x12\x20" + hashlib.sha256(raw).digest())


def car(roots: list[cbrrr.CID], blocks: list[tuple[cbrrr.CID, bytes]]) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    header = cbrrr.encode_dag_cbor({"version": 1, "roots": roots})
    out = varint(len(header)) + header
    for cid, raw in blocks:
        out += varint(len(cid.cid_bytes) + len(raw)) + cid.cid_bytes + raw
    return out


def commit_frame(seq: int, ops: list[tuple[str, str, dict | None]], *, did: str = "did:plc:alice", too_big: bool = False,
                 tamper: dict[str, bytes] | None = None, drop: set[str] = frozenset()) -> bytes:
    """A #commit frame: ops = (action, path, record). ``tamper[path]`` replaces a record block's
    bytes (keeping its CID), ``drop`` leaves a record's block out of the CAR."""
    commit_raw = cbrrr.encode_dag_cbor({"did": did, "version": 3, "rev": "3l"})
    commit_cid = dag_cid(commit_raw)
    blocks = [(commit_cid, commit_raw)]
    wire_ops = []
    for action, path, record in ops:
        op = {"action": action, "path": path, "cid": None}
        if record is not None:
            raw = cbrrr.encode_dag_cbor(record)
            cid = dag_cid(raw)
            op["cid"] = cid
            if path not in drop:
                blocks.append((cid, (tamper or {}).get(path, raw)))
        wire_ops.append(op)
    body = {"ops": wire_ops, "rev": "3l", "seq": seq, "repo": did, "time": "2025-01-01T00:00:00.000Z", "blobs": [],
            "since": None, "blocks": car([commit_cid], blocks), "commit": commit_cid, "rebase": False, "tooBig": too_big}
    return cbrrr.encode_dag_cbor({"t": "#commit", "op": 1}) + cbrrr.encode_dag_cbor(body)


def frame(t: str, body: dict, op: int = 1) -> bytes:
    return cbrrr.encode_dag_cbor({"t": t, "op": op} if op == 1 else {"op": op}) + cbrrr.encode_dag_cbor(body)


POST = {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2025-01-01T00:00:00.000Z"}


@pytest.mark.parametrize("name, counts", [
    ("small", {"#commit": 1113, "#identity": 47, "#account": 48, "#sync": 44}),
    ("edge", {"#commit": 1394, "#identity": 220, "#account": 224, "#sync": 214}),
])
def test_every_corpus_frame_decodes_and_records_equal_the_official_record_json(name, counts):
    types: collections.Counter = collections.Counter()
    latest: dict[tuple[str, str], str] = {}
    for msg in corpus_frames(name):
        t, seq, events = message_events(msg, KEEP_BSKY, on_error=lambda e, b: pytest.fail(str(e)))
        types[t] += 1
        for ev in events:
            assert ev["seq"] == seq and ev["did"].startswith("did:")
            if ev["type"] in ("create", "update"):
                uri = f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
                # the event travels as JSON text: what the indexer re-dumps after loading it
                text = atjson.dumps(atjson.loads(atjson.dumps(ev))["record"])
                latest[(uri, ev["cid"])] = text
    assert dict(types) == counts
    with open(os.path.join(CORPUS, name, "db", "record.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert rows
    for row in rows:
        assert latest[(row["uri"], row["cid"])] == row["json"], row["uri"]


def test_links_and_bytes_keep_their_atproto_json_shapes():
    target = dag_cid(b"blob")
    record = {"$type": "app.bsky.feed.post", "link": target, "raw": b"\x00\xff", "n": -(2**53), "big": 2**63 - 1, "s": "a/b \u00e9"}
    _t, _seq, [ev] = message_events(commit_frame(7, [("create", "app.bsky.feed.post/1", record)]))
    assert ev["record"]["link"] == {"$link": target.encode()}
    assert ev["record"]["raw"] == {"$bytes": "AP8"}
    assert atjson.dumps(ev["record"]) == (
        '{"n":-9007199254740992,"s":"a/b é","big":9223372036854775807,"raw":{"$bytes":"AP8"},"link":{"$link":"%s"},"$type":"app.bsky.feed.post"}'
        % target.encode()
    )


def test_commit_ops_become_create_update_delete_events_with_commit_fields():
    msg = commit_frame(9, [("create", "app.bsky.feed.post/a", POST), ("update", "app.bsky.actor.profile/self", {"$type": "app.bsky.actor.profile"}),
                           ("delete", "app.bsky.feed.like/b", None)])
    t, seq, evs = message_events(msg)
    assert (t, seq) == ("#commit", 9)
    assert [(e["type"], e["collection"], e["rkey"]) for e in evs] == [("create", "app.bsky.feed.post", "a"), ("update", "app.bsky.actor.profile", "self"), ("delete", "app.bsky.feed.like", "b")]
    assert all(e["commit"].startswith("bafyrei") and e["rev"] == "3l" and e["time"] == "2025-01-01T00:00:00.000Z" for e in evs)
    assert evs[0]["record"] == POST and "record" not in evs[2]


def test_collection_filter_keeps_configured_prefixes_and_exact_nsids():
    msg = commit_frame(1, [("create", "app.bsky.feed.post/a", POST), ("create", "com.example.thing/b", {"$type": "com.example.thing"}),
                           ("create", "chat.bsky.actor.declaration/self", {"$type": "chat.bsky.actor.declaration"})])
    assert [e["collection"] for e in message_events(msg, KEEP_BSKY)[2]] == ["app.bsky.feed.post", "chat.bsky.actor.declaration"]
    assert [e["collection"] for e in message_events(msg, collection_filter(["com.example.thing"]))[2]] == ["com.example.thing"]
    assert len(message_events(msg, collection_filter(["*"]))[2]) == 3


def test_missing_block_skips_only_that_op_and_reports_it():
    errors = []
    msg = commit_frame(3, [("create", "app.bsky.feed.post/a", POST), ("create", "app.bsky.feed.post/b", {**POST, "text": "b"})], drop={"app.bsky.feed.post/a"})
    _t, _s, evs = message_events(msg, on_error=lambda e, base: errors.append((e.reason, base["seq"], base["did"])))
    assert [e["rkey"] for e in evs] == ["b"]
    assert errors == [("missing_block", 3, "did:plc:alice")]


def test_unknown_action_and_bad_path_skip_only_that_op():
    errors = []
    msg = commit_frame(4, [("create", "app.bsky.feed.post/a", POST), ("frobnicate", "app.bsky.feed.post/b", None), ("delete", "nopath", None)])
    evs = message_events(msg, on_error=lambda e, base: errors.append(e.reason))[2]
    assert [e["rkey"] for e in evs] == ["a"]
    assert sorted(errors) == ["bad_path", "unknown_action"]


@pytest.mark.parametrize("make, reason", [
    (lambda: commit_frame(5, [("create", "app.bsky.feed.post/a", POST)], too_big=True), "too_big"),
    (lambda: commit_frame(5, [("create", "app.bsky.feed.post/a", POST)], tamper={"app.bsky.feed.post/a": cbrrr.encode_dag_cbor({**POST, "text": "forged"})}), "bad_cid"),
    (lambda: commit_frame(5, [("create", "app.bsky.feed.post/a", [1, 2])]), "bad_record"),
    (lambda: commit_frame(5, [("delete", f"app.bsky.feed.like/{i}", None) for i in range(MAX_OPS + 1)]), "too_many_ops"),
    (lambda: commit_frame(5, [("create", "app.bsky.feed.post/a", POST)])[:-40], "undecodable"),
    (lambda: b"\xff\x00garbage", "undecodable"),
    (lambda: cbrrr.encode_dag_cbor({"op": 1, "t": "#commit"}), "not_a_frame"),
    (lambda: frame("#commit", {"seq": 5, "repo": "did:plc:x"}, op=2), "not_a_frame"),
    (lambda: frame("#commit", {"seq": 5, "repo": "did:plc:x", "ops": [], "commit": b"x"}), "invalid"),
    (lambda: frame("#account", {"seq": 5, "did": "did:plc:x", "time": "t", "active": False, "status": "banished"}), "bad_status"),
    (lambda: frame("#identity", {"seq": 5, "time": "t"}), "invalid"),
    (lambda: frame("#sync", {"seq": 5, "did": "did:plc:x", "time": "t", "rev": "r", "blocks": car([dag_cid(b"a"), dag_cid(b"b")], [])}), "bad_car"),
    (lambda: frame("#sync", {"seq": 5, "did": "did:plc:x", "time": "t", "rev": "r", "blocks": b"\x05abc"}), "bad_car"),
])
def test_bad_frames_raise_frame_error_with_a_reason(make, reason):
    with pytest.raises(FrameError) as info:
        message_events(make())
    assert info.value.reason == reason


def test_a_bad_commit_reports_its_seq_and_repo():
    with pytest.raises(FrameError) as info:
        message_events(commit_frame(42, [("create", "app.bsky.feed.post/a", POST)], did="did:plc:bob", too_big=True))
    assert (info.value.seq, info.value.did) == (42, "did:plc:bob")


def test_error_frames_raise_error_frame_with_name_and_message():
    with pytest.raises(ErrorFrame) as info:
        message_events(frame("", {"error": "FutureCursor", "message": "Cursor in the future."}, op=-1))
    assert (info.value.error, info.value.message, info.value.reason) == ("FutureCursor", "Cursor in the future.", "error_frame")


def test_info_frames_carry_no_event_and_expose_their_name():
    msg = frame("#info", {"name": "OutdatedCursor", "message": "too old"})
    assert message_events(msg) == ("#info", None, [])
    assert decode_info(msg) == ("OutdatedCursor", "too old")


def test_account_identity_and_sync_events():
    acc = message_events(frame("#account", {"seq": 1, "did": "did:plc:x", "time": "t", "active": False, "status": "deactivated"}))[2]
    assert acc == [{"type": "account", "seq": 1, "time": "t", "did": "did:plc:x", "active": False, "status": "deactivated"}]
    acc = message_events(frame("#account", {"seq": 2, "did": "did:plc:x", "time": "t", "active": True}))[2]
    assert acc == [{"type": "account", "seq": 2, "time": "t", "did": "did:plc:x", "active": True}]
    ident = message_events(frame("#identity", {"seq": 3, "did": "did:plc:x", "time": "t", "handle": "x.test"}))[2]
    assert ident == [{"type": "identity", "seq": 3, "time": "t", "did": "did:plc:x", "handle": "x.test"}]
    root = dag_cid(b"commit")
    sync = message_events(frame("#sync", {"seq": 4, "did": "did:plc:x", "time": "t", "rev": "r", "blocks": car([root], [(root, b"commit")])}))[2]
    assert sync == [{"type": "sync", "seq": 4, "time": "t", "did": "did:plc:x", "rev": "r", "commit": root.encode()}]


def test_a_cid_link_inside_another_block_is_not_mistaken_for_the_record_block():
    # the commit block links the record's CID; the record block itself is absent
    raw = cbrrr.encode_dag_cbor(POST)
    cid = dag_cid(raw)
    commit_raw = cbrrr.encode_dag_cbor({"did": "did:plc:x", "data": cid, "pad": cid})
    commit_cid = dag_cid(commit_raw)
    body = {"ops": [{"action": "create", "path": "app.bsky.feed.post/a", "cid": cid}], "rev": "r", "seq": 1, "repo": "did:plc:x", "time": "t",
            "blobs": [], "since": None, "blocks": car([commit_cid], [(commit_cid, commit_raw)]), "commit": commit_cid, "rebase": False, "tooBig": False}
    errors = []
    evs = message_events(cbrrr.encode_dag_cbor({"t": "#commit", "op": 1}) + cbrrr.encode_dag_cbor(body), on_error=lambda e, b: errors.append(e.reason))[2]
    assert evs == [] and errors == ["missing_block"]


def test_frames_file_splitting_refuses_truncation():
    with pytest.raises(FrameError):
        list(iter_frames_file(b"\x00\x00\x00\x10abc"))


def test_a_commit_whose_ops_are_all_filtered_still_yields_its_commit_as_a_sync_event():
    # The official indexer sets actor_sync and re-checks the handle for every op, whatever
    # its collection; a commit of only com.example.* records must keep that much.
    from fleet.codec.firehose import collection_filter, iter_frames_file, message_events

    keep = collection_filter(["app.bsky.*", "chat.bsky.*"])
    with open(os.path.join(CORPUS, "small", "firehose.frames"), "rb") as f:
        data = f.read()
    found = 0
    for msg in iter_frames_file(data):
        t, seq, unfiltered = message_events(msg)
        if t != "#commit" or not unfiltered:
            continue
        if any(keep(e["collection"]) for e in unfiltered):
            continue
        _, _, events = message_events(msg, keep)
        assert events == [{"type": "sync", "seq": seq, "time": unfiltered[0]["time"], "did": unfiltered[0]["did"],
                           "commit": unfiltered[0]["commit"], "rev": unfiltered[0]["rev"]}]
        found += 1
    assert found >= 3  # the small corpus has com.example.* commits


@pytest.mark.parametrize("name", ["small", "edge"])
def test_stream_entries_read_back_as_ujson_reads_them(name):
    """``atjson.loads_stream_entry`` (orjson with a round-trip check) equals ``atjson.loads`` on
    every event the ingester writes for the corpus, type for type."""
    import ujson

    from tools.parity import corpus_events

    for ev in corpus_events(os.path.join(CORPUS, name)):
        raw = atjson.dumps(ev).encode()
        got = atjson.loads_stream_entry(raw)
        assert got == ev and ujson.dumps(got) == ujson.dumps(atjson.loads(raw))


@pytest.mark.parametrize("raw", [
    b'{"a":-9223372036854775809}', b'{"a":-18446744073709551616}', b'{"a":18446744073709551615}',
    b'{"a":123456789012345678901234567890}', b'{"a":-9223372036854775808,"b":9223372036854775807}',
    b'{"a": 1}', b'{"t":"caf\\u00e9 \\/ x"}', b'{"t":"\\ud83d\\ude00"}', b'{"x":[true,false,null,"",0]}',
])  # fmt: skip
def test_stream_entries_with_big_integers_or_foreign_spelling_are_read_as_ujson_reads_them(raw):
    import ujson

    got = atjson.loads_stream_entry(raw)
    assert got == ujson.loads(raw) and ujson.dumps(got) == ujson.dumps(ujson.loads(raw))
    assert all(type(v) is not float for v in got.values())


def test_a_stream_entry_that_is_not_json_raises_a_value_error():
    with pytest.raises(ValueError):
        atjson.loads_stream_entry(b'{"event": ')
