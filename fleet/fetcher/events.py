"""A repo's records as backfill stream entries: the ``event`` JSON text of each create event.

    head = event_head(did, commit_cid, rev, time)   # the fields every event of the repo shares
    for text in create_event_texts(blocks, commit.data, head, keep):
        ...   # bytes: one entry's JSON text (UTF-8, what XADD sends), or a RepoError for a record that cannot be emitted
    repo_event_text(head)                           # the final {"type": "repo"} event

The text is built by concatenation around the record's canonical dump (``atjson.dumps``), so
the record inside is byte for byte what the official AppView stores in ``record.json``; the
collection prefix is dumped once per collection and plain rkeys (TIDs, ``self``) need no
escaping. The result parses to the same object as dumping the whole event dict, key order
included (``type, seq, time, did, commit, rev, collection, rkey, cid, record``).
"""

from __future__ import annotations

from typing import Callable, Iterator

from fleet.codec.atjson import RecordDecodeError, decode_record, dumps
from fleet.codec.firehose import SEQ_BACKFILL

from .repo import RepoError, cid_text, walk_mst


def event_head(did: str, commit: str, rev: str, time: str) -> str:
    """``{"type":"create","seq":-2,...,"rev":"..."`` without the closing brace."""
    return dumps({"type": "create", "seq": SEQ_BACKFILL, "time": time, "did": did, "commit": commit, "rev": rev})[:-1]


def repo_event_text(head: str) -> bytes:
    """The ``{"type": "repo", ...}`` event that ends a repo (same seq/time/did/commit/rev)."""
    return ('{"type":"repo"' + head[len('{"type":"create"') :] + "}").encode()


def create_event_texts(
    blocks: dict[bytes, bytes],
    root: bytes,
    head: str,
    keep: Callable[[str], bool] | None = None,
) -> Iterator[bytes | RepoError]:
    """The create event (UTF-8 JSON text) of every record under MST ``root`` whose collection ``keep`` accepts.

    A record that is missing, undecodable or under a malformed key comes as a
    :class:`RepoError` in its place, so the caller counts it and carries on. A broken MST
    raises :class:`RepoError` from the walk.
    """
    prefixes: dict[str, str] = {}  # collection -> text up to the rkey value ("" = not kept)
    for key, cid in walk_mst(blocks, root):
        collection, sep, rkey = key.partition("/")
        if not sep or not rkey:
            yield RepoError("bad_key", key[:200])
            continue
        prefix = prefixes.get(collection)
        if prefix is None:
            prefix = head + ',"collection":' + dumps(collection) + ',"rkey":' if keep is None or keep(collection) else ""
            prefixes[collection] = prefix
        if not prefix:
            continue
        raw = blocks.get(cid)
        if raw is None:
            yield RepoError("missing_block", key[:200])
            continue
        try:
            record = dumps(decode_record(raw))
            cid_s = cid_text(cid)
        except (RecordDecodeError, ValueError, OverflowError) as e:  # OverflowError: ujson and a huge int
            yield RepoError("bad_record", f"{key[:200]}: {e}")
            continue
        rkey_s = '"' + rkey + '"' if rkey.isascii() and rkey.isalnum() else dumps(rkey)
        yield (prefix + rkey_s + ',"cid":"' + cid_s + '","record":' + record + "}").encode()
