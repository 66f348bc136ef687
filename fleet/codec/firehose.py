"""``com.atproto.sync.subscribeRepos`` frames -> stream events.

A WebSocket message is two concatenated DAG-CBOR objects: a header ``{op, t}`` and a body.
``op == 1`` is a message of type ``t`` (``#commit``, ``#identity``, ``#account``, ``#sync``,
``#info``); ``op == -1`` is an error frame ``{error, message}``.

Stream events (the JSON in each stream entry's ``event`` field; DESIGN.md "Streams") are
plain dicts::

    {"type": "create"|"update", "seq", "time", "did", "commit", "rev", "collection", "rkey", "cid", "record"}
    {"type": "delete", "seq", "time", "did", "commit", "rev", "collection", "rkey"}
    {"type": "account", "seq", "time", "did", "active", "status"}     # status absent when active
    {"type": "identity", "seq", "time", "did", "handle"}              # handle may be absent
    {"type": "sync", "seq", "time", "did", "rev", "commit"}
    {"type": "repo", "seq": -2, "time", "did", "commit", "rev"}       # backfill: end of a repo

Backfilled record events carry ``seq = SEQ_BACKFILL`` (-2), as in the old pipeline.

What is refused, and how (each :class:`FrameError` has a ``reason`` the ingester counts; the
choices follow the official ``@atproto/sync`` Firehose that the AppView runs, unauthenticated):

| input | result | reason |
|---|---|---|
| bytes that are not two DAG-CBOR maps, unknown ``op`` | frame skipped | ``undecodable`` / ``not_a_frame`` |
| error frame ``op == -1`` | :class:`ErrorFrame` (``error``, ``message``) | ``error_frame`` |
| required field missing or of the wrong type (lexicon) | frame skipped | ``invalid`` |
| ``#commit`` marked ``tooBig`` (deprecated in sync 1.1) | frame skipped | ``too_big`` |
| more than 200 ops, blocks over 2,000,000 bytes (``#sync``: 10,000) | frame skipped | ``too_many_ops`` / ``blocks_too_big`` |
| commit CAR that does not parse | frame skipped | ``bad_car`` |
| record block whose bytes do not hash to its CID | whole commit skipped (official ``readCar`` verifies) | ``bad_cid`` |
| record block that is not DAG-CBOR or not a map | whole commit skipped (official ``cborToLexRecord`` throws) | ``bad_record`` |
| ``#account`` with a status outside takendown/suspended/deleted/deactivated | frame skipped | ``bad_status`` |
| ``#sync`` whose CAR has not exactly one root | frame skipped | ``bad_car`` |
| op with a bad path, unknown action, or no block for its CID | that op skipped, ``on_error`` called | (``OpError.reason``) |
| ``#info`` (e.g. ``OutdatedCursor``) and unknown types | no event (``decode_info`` reads an ``#info``) | |
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable, Iterator

import libipld

from .atjson import RecordDecodeError, decode_record
from .car import CarError, read_car

cid_to_str = libipld.encode_cid  # 15x faster than base64.b32encode; same "b..." base32 text

SEQ_BACKFILL = -2
MAX_OPS = 200  # lexicon com.atproto.sync.subscribeRepos#commit ops.maxLength
MAX_BLOCKS_BYTES = 2_000_000  # #commit blocks.maxLength
MAX_SYNC_BLOCKS_BYTES = 10_000  # #sync blocks.maxLength
ACCOUNT_STATUSES = frozenset(("takendown", "suspended", "deleted", "deactivated"))
_DAG_CBOR_SHA256 = b"\x01\x71\x12\x20"  # CIDv1, dag-cbor, sha2-256, 32 bytes


class FrameError(ValueError):
    """A message that cannot be decoded, or a decoded message that is not a valid frame.

    ``reason`` is a short metric label; ``seq`` and ``did`` are set when the frame told them.
    """

    def __init__(self, message: str, reason: str = "undecodable", seq: int | None = None, did: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.seq = seq
        self.did = did


class ErrorFrame(FrameError):
    """An error frame (``op == -1``): the relay says why it is closing (FutureCursor, ConsumerTooSlow...)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"error frame: {error}: {message}", "error_frame")
        self.error = error
        self.message = message


class OpError(ValueError):
    """One op of a commit cannot be turned into an event (missing block, bad path, unknown action)."""

    def __init__(self, message: str, reason: str = "bad_op") -> None:
        super().__init__(message)
        self.reason = reason


def iter_frames_file(data: bytes) -> Iterator[bytes]:
    """Split a corpus ``firehose.frames`` file: repeated [4-byte big-endian length][message]."""
    i = 0
    n = len(data)
    while i < n:
        if i + 4 > n:
            raise FrameError("truncated length prefix")
        (size,) = struct.unpack_from(">I", data, i)
        i += 4
        if i + size > n:
            raise FrameError("truncated frame")
        yield data[i : i + size]
        i += size


def decode_message(msg: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode one WebSocket message into (header, body). Raises :class:`FrameError`."""
    try:
        parts = libipld.decode_dag_cbor_multi(msg)
    except Exception as e:  # libipld raises ValueError, EOFError, TypeError...
        raise FrameError(f"undecodable frame: {e}") from None
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise FrameError(f"frame has {len(parts)} objects, expected header and body", "not_a_frame")
    header, body = parts
    if header.get("op") not in (1, -1):
        raise FrameError(f"unknown frame op {header.get('op')!r}", "not_a_frame")
    return header, body


def find_block(car: bytes, cid: bytes) -> bytes | None:
    """Raw bytes of the block ``cid`` in a CAR, without parsing the other blocks.

    The CID is searched for as bytes. A hit counts where a block starts there: a varint length
    ends right before it and the bytes it frames hash to the CID. A CID *link* inside another
    block is preceded by the 0x00 multibase byte, which no block length ends with. When a hit
    is framed like a block but does not hash to its CID (a forged block, or framing that only
    looked right), the whole CAR is parsed to decide. Raises :class:`FrameError` ``bad_cid``
    (block present, wrong bytes) or ``bad_car``.
    """
    if cid[:4] != _DAG_CBOR_SHA256 or len(cid) != 36:
        raise FrameError("record CID is not a dag-cbor sha2-256 CIDv1", "bad_cid")
    digest = cid[4:]
    size_total = len(car)
    sha256 = hashlib.sha256
    suspicious = False
    p = car.find(cid)
    while p > 0:
        if car[p - 1] != 0:
            for k in (2, 1, 3):
                start = p - k
                if start < 0:
                    continue
                size = 0
                shift = 0
                i = start
                while i < p:
                    byte = car[i]
                    size |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if byte < 0x80:
                        break
                if i != p or car[p - 1] >= 0x80 or size <= 36 or p + size > size_total:
                    continue
                raw = car[p + 36 : p + size]
                if sha256(raw).digest() == digest:
                    return raw
                suspicious = True
        p = car.find(cid, p + 1)
    if not suspicious:
        return None
    try:
        _roots, blocks = read_car(car)
    except CarError as e:
        raise FrameError(f"commit blocks: {e}", "bad_car") from None
    raw = blocks.get(cid)
    if raw is not None and not cid_matches(cid, raw):
        raise FrameError("block does not hash to its CID", "bad_cid")
    return raw


def cid_matches(cid: bytes, raw: bytes) -> bool:
    """True when ``raw`` hashes to ``cid`` (a binary CIDv1 dag-cbor sha2-256, as in commits)."""
    if cid[:1] == b"\x00":
        cid = cid[1:]
    return cid[:4] == _DAG_CBOR_SHA256 and len(cid) == 36 and hashlib.sha256(raw).digest() == cid[4:]


def commit_events(
    body: dict[str, Any],
    keep: Callable[[str], bool] | None = None,
    on_error: Callable[[OpError, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Events for the ops of a ``#commit`` body whose collection ``keep`` accepts.

    An op that cannot be used (bad path, unknown action, missing block) is reported to
    ``on_error`` and skipped; its neighbours are still returned. Raises :class:`FrameError`
    when the commit itself is unusable (see the module table), as the official reader does.
    """
    did = body.get("repo")
    seq = body.get("seq")
    if not isinstance(did, str) or not did.startswith("did:") or not isinstance(seq, int):
        raise FrameError("commit without repo or seq", "invalid", seq if isinstance(seq, int) else None)
    ops = body.get("ops")
    blocks_bytes = body.get("blocks")
    commit = body.get("commit")
    if not isinstance(ops, list) or not isinstance(blocks_bytes, bytes) or not isinstance(commit, bytes):
        raise FrameError("commit without ops, blocks or commit CID", "invalid", seq, did)
    if len(ops) > MAX_OPS:
        raise FrameError(f"commit has {len(ops)} ops (max {MAX_OPS})", "too_many_ops", seq, did)
    if len(blocks_bytes) > MAX_BLOCKS_BYTES:
        raise FrameError(f"commit blocks are {len(blocks_bytes)} bytes (max {MAX_BLOCKS_BYTES})", "blocks_too_big", seq, did)
    base = {
        "seq": seq,
        "time": body.get("time"),
        "did": did,
        "commit": cid_to_str(commit),
        "rev": body.get("rev"),
    }
    wanted = []
    for op in ops:
        path = op.get("path") if isinstance(op, dict) else None
        if not isinstance(path, str) or path.count("/") != 1 or path[0] == "/" or path[-1] == "/":
            if on_error:
                on_error(OpError(f"bad op path {path!r}", "bad_path"), base)
            continue
        collection, rkey = path.split("/", 1)
        if keep is not None and not keep(collection):
            continue
        wanted.append((op, collection, rkey))
    if not wanted:
        # The official indexer records the commit (actor_sync) and re-checks the handle for
        # every op, indexed collection or not. When the filter dropped every op, keep that
        # much as a sync event so the account's commit rev stays exact.
        if ops and keep is not None:
            return [{"type": "sync", **base}]
        return []
    out = []
    for op, collection, rkey in wanted:
        action = op.get("action")
        ev: dict[str, Any]
        if action == "create" or action == "update":
            cid = op.get("cid")
            if isinstance(cid, bytes) and cid[:1] == b"\x00":
                cid = cid[1:]
            if not isinstance(cid, bytes) or len(cid) < 4:
                if on_error:
                    on_error(OpError(f"op {collection}/{rkey} without a CID", "missing_cid"), base)
                continue
            try:
                raw = find_block(blocks_bytes, cid)
            except FrameError as e:
                raise FrameError(f"block of {collection}/{rkey}: {e}", e.reason, seq, did) from None
            if raw is None:
                _check_car(blocks_bytes, seq, did)
                if on_error:
                    on_error(OpError(f"missing block for {collection}/{rkey}", "missing_block"), base)
                continue
            try:
                record = decode_record(raw)
            except RecordDecodeError as e:
                raise FrameError(f"bad record {collection}/{rkey}: {e}", "bad_record", seq, did) from None
            ev = {"type": action, **base, "collection": collection, "rkey": rkey, "cid": cid_to_str(cid), "record": record}  # type: ignore[arg-type]
        elif action == "delete":
            ev = {"type": "delete", **base, "collection": collection, "rkey": rkey}
        else:
            if on_error:
                on_error(OpError(f"unknown op action {action!r}", "unknown_action"), base)
            continue
        out.append(ev)
    return out


def _check_car(data: bytes, seq: int, did: str) -> None:
    """A missing block in a CAR that does not even parse is a bad CAR, not a missing block."""
    try:
        read_car(data)
    except CarError as e:
        raise FrameError(f"commit blocks: {e}", "bad_car", seq, did) from None


def decode_info(msg: bytes) -> tuple[str | None, str | None]:
    """``(name, message)`` of an ``#info`` frame (e.g. ``OutdatedCursor``)."""
    _header, body = decode_message(msg)
    name, message = body.get("name"), body.get("message")
    return (name if isinstance(name, str) else None, message if isinstance(message, str) else None)


def message_events(
    msg: bytes,
    keep: Callable[[str], bool] | None = None,
    on_error: Callable[[OpError, dict[str, Any]], None] | None = None,
) -> tuple[str, int | None, list[dict[str, Any]]]:
    """Decode one message: returns (type, seq, events).

    Raises :class:`ErrorFrame` for an error frame and :class:`FrameError` (with ``reason``) for
    a frame that must be skipped. ``#info`` and unknown types return no event.
    """
    header, body = decode_message(msg)
    if header.get("op") == -1:
        raise ErrorFrame(str(body.get("error")), str(body.get("message")))
    t = header.get("t")
    seq = body.get("seq") if isinstance(body.get("seq"), int) else None
    if t == "#commit":
        if body.get("tooBig"):
            raise FrameError("commit marked tooBig", "too_big", seq, body.get("repo"))
        return t, seq, commit_events(body, keep, on_error)
    if t not in ("#identity", "#account", "#sync"):
        return t if isinstance(t, str) else "", seq, []  # #info and unknown types carry no event
    did = body.get("did")
    if not isinstance(did, str) or not did.startswith("did:") or seq is None:
        raise FrameError(f"{t} without did or seq", "invalid", seq)
    time = body.get("time")
    if t == "#identity":
        ev = {"type": "identity", "seq": seq, "time": time, "did": did}
        if isinstance(body.get("handle"), str):
            ev["handle"] = body["handle"]
        return t, seq, [ev]
    if t == "#account":
        active, status = body.get("active"), body.get("status")
        if not isinstance(active, bool):
            raise FrameError("#account without active", "invalid", seq, did)
        if status is not None and status not in ACCOUNT_STATUSES:
            raise FrameError(f"#account with unknown status {status!r}", "bad_status", seq, did)
        ev = {"type": "account", "seq": seq, "time": time, "did": did, "active": active}
        if status is not None:
            ev["status"] = status
        return t, seq, [ev]
    blocks_bytes = body.get("blocks")
    if not isinstance(blocks_bytes, bytes):
        raise FrameError("#sync without blocks", "invalid", seq, did)
    if len(blocks_bytes) > MAX_SYNC_BLOCKS_BYTES:
        raise FrameError(f"#sync blocks are {len(blocks_bytes)} bytes", "blocks_too_big", seq, did)
    try:
        roots, _ = read_car(blocks_bytes)
    except CarError as e:
        raise FrameError(f"#sync blocks: {e}", "bad_car", seq, did) from None
    if len(roots) != 1:
        raise FrameError(f"#sync CAR has {len(roots)} roots, expected one", "bad_car", seq, did)
    return t, seq, [{"type": "sync", "seq": seq, "time": time, "did": did, "rev": body.get("rev"), "commit": cid_to_str(roots[0])}]


def collection_filter(patterns: list[str]) -> Callable[[str], bool]:
    """``["app.bsky.*", "chat.bsky.*"]`` -> predicate on collection NSIDs (``*`` alone keeps all)."""
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    if "" in prefixes:
        return lambda c: True

    def keep(collection: str) -> bool:
        return collection in exact or collection.startswith(prefixes)

    return keep
