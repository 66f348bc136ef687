"""A repo's records as backfill stream entries: the ``event`` JSON text of each create event.

    head = event_head(did, commit_cid, rev, time)   # the fields every event of the repo shares
    for chunk in create_event_chunks(blocks, commit.data, head, keep):
        ...   # a list of up to CHUNK items: bytes (one entry's JSON text, UTF-8, what XADD
              # sends) or a RepoError for a record that cannot be emitted
    repo_event_text(head)                           # the final {"type": "repo"} event

The text is built by concatenation around the record's canonical dump (``atjson.dumps_bytes``:
orjson, with ujson as the reference for anything orjson refuses), so the record inside is byte
for byte what the official AppView stores in ``record.json``; the collection prefix is dumped
once per collection and plain rkeys (TIDs, ``self``) need no escaping. The result parses to the
same object as dumping the whole event dict, key order included (``type, seq, time, did,
commit, rev, collection, rkey, cid, record``).

The MST walk and the event building are one loop (``create_event_chunks``): one generator step
per chunk rather than two per record, keys kept as bytes, records of collections that are not
kept never decoded. The order of the items, the chunk boundaries (every CHUNK items, errors
included) and the point where a broken MST raises are those of walking with
:func:`fleet.fetcher.repo.walk_mst` and taking ``islice(create_event_texts(...), CHUNK)``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from cbrrr import CID, _cbrrr

from fleet.codec.atjson import dump_record_bytes, dumps
from fleet.codec.firehose import SEQ_BACKFILL

from .repo import RepoError, cid_text, read_node

CHUNK = 500  # items per chunk: records per XADD_EVENTS call of the fetcher

_decode_record = _cbrrr.decode_dag_cbor  # (raw, cid_ctor, atjson_mode) -> (object, bytes read)


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
    """The items of :func:`create_event_chunks`, one at a time."""
    for chunk in create_event_chunks(blocks, root, head, keep):
        yield from chunk


def create_event_chunks(
    blocks: dict[bytes, bytes],
    root: bytes,
    head: str,
    keep: Callable[[str], bool] | None = None,
    size: int = CHUNK,
) -> Iterator[list[bytes | RepoError]]:
    """The create event (UTF-8 JSON text) of every record under MST ``root`` whose collection
    ``keep`` accepts, in key order, in lists of ``size`` items; the last list is shorter than
    ``size`` (possibly empty), so a caller knows it is the last.

    A record that is missing, undecodable or under a malformed key comes as a
    :class:`RepoError` in its place, so the caller counts it and carries on. A broken MST
    raises :class:`RepoError` when the walk reaches the broken node (the items before it in
    the same chunk are not delivered).
    """
    head_b = head.encode()
    prefixes: dict[bytes, bytes] = {}  # collection -> text up to the rkey value (b"" = not kept)
    decode_record = _decode_record
    dump = dump_record_bytes
    encode_cid = cid_text
    get = blocks.get
    join = b"".join
    out: list[Any] = []
    append = out.append

    # Explicit stack (a hostile repo cannot exhaust the Python stack; depth is capped). Items:
    # (node CID, depth: int) to expand, or (key bytes, value CID: bytes) to emit.
    stack: list[tuple[Any, Any]] = [(root, 0)]
    pop = stack.pop
    pending: list[tuple[bytes, bytes]] = []  # entries to emit now, in key order
    pend = pending.append
    coll_slash = b"\x00"  # the last collection seen + "/" (keys come sorted: runs of one collection)
    prefix = b""
    while stack:
        item, depth = pop()
        if depth.__class__ is bytes:  # an entry pushed behind a subtree
            pend((item, depth))
        else:
            left, entries = read_node(get, item, depth)
            # This node's in-order sequence: the entries before its first subtree go straight to
            # ``pending``; from the first subtree on, the sequence is pushed reversed (``rest``).
            down = depth + 1
            rest: list[tuple[Any, Any]] | None = None if left is None else [(left, down)]
            for key, val, right in entries:
                if rest is None:
                    pend((key, val))
                    if right is not None:
                        rest = [(right, down)]
                else:
                    rest.append((key, val))
                    if right is not None:
                        rest.append((right, down))
            if rest is not None:
                rest.reverse()
                stack.extend(rest)
        for key, cid in pending:
            if key.startswith(coll_slash):
                rkey = key[len(coll_slash) :]
            else:
                collection, sep, rkey = key.partition(b"/")
                if not sep or not rkey:
                    append(RepoError("bad_key", key.decode()[:200]))
                    continue
                coll_slash = collection + b"/"
                prefix = prefixes.get(collection)
                if prefix is None:
                    coll = collection.decode()
                    keep_it = keep is None or keep(coll)
                    prefix = (head_b + b',"collection":' + dumps(coll).encode() + b',"rkey":') if keep_it else b""
                    prefixes[collection] = prefix
            if not rkey:
                append(RepoError("bad_key", key.decode()[:200]))
                continue
            if not prefix:
                continue
            raw = get(cid)
            if raw is None:
                append(RepoError("missing_block", key.decode()[:200]))
                continue
            try:  # what atjson.decode_record and cbrrr.decode_dag_cbor check, inline
                obj, n = decode_record(raw, CID, True)
                if n != len(raw):
                    raise ValueError("did not parse to end of buffer")
                if obj.__class__ is not dict:
                    raise ValueError("record is not a map")
                record = dump(obj)
                cid_s = encode_cid(cid).encode()
            except Exception as e:  # cbrrr: CbrrrDecodeError, ValueError, EOFError...; ujson: OverflowError
                append(RepoError("bad_record", f"{key.decode()[:200]}: {str(e) or type(e).__name__}"))
                continue
            if rkey.isalnum():  # bytes.isalnum: ASCII letters and digits only
                append(join((prefix, b'"', rkey, b'","cid":"', cid_s, b'","record":', record, b"}")))
            else:
                append(join((prefix, dumps(rkey.decode()).encode(), b',"cid":"', cid_s, b'","record":', record, b"}")))
        pending.clear()
        while len(out) >= size:
            yield out[:size]
            del out[:size]
    yield out
