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
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator

import libipld

from .atjson import RecordDecodeError, decode_record
from .car import CarError, read_car
from .cid import cid_to_str

SEQ_BACKFILL = -2


class FrameError(ValueError):
    """A message that cannot be decoded, or a decoded message that is not a valid frame."""


class OpError(ValueError):
    """One op of a commit cannot be turned into an event (missing block, bad record...)."""


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
    except Exception as e:
        raise FrameError(f"undecodable frame: {e}") from None
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise FrameError(f"frame has {len(parts)} objects, expected header and body")
    header, body = parts
    if header.get("op") not in (1, -1):
        raise FrameError(f"unknown frame op {header.get('op')!r}")
    return header, body


def commit_events(
    body: dict[str, Any],
    keep: Callable[[str], bool] | None = None,
    on_error: Callable[[OpError, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Events for the ops of a ``#commit`` body whose collection ``keep`` accepts.

    An op that cannot be decoded is reported to ``on_error`` and skipped; its neighbours are
    still returned. Raises FrameError when the commit itself is unusable (no repo, bad CAR).
    """
    did = body.get("repo")
    seq = body.get("seq")
    if not isinstance(did, str) or not isinstance(seq, int):
        raise FrameError("commit without repo or seq")
    commit = body.get("commit")
    base = {
        "seq": seq,
        "time": body.get("time"),
        "did": did,
        "commit": cid_to_str(commit) if isinstance(commit, bytes) else None,
        "rev": body.get("rev"),
    }
    ops = body.get("ops") or []
    wanted = []
    for op in ops:
        path = op.get("path") if isinstance(op, dict) else None
        if not isinstance(path, str) or "/" not in path:
            if on_error:
                on_error(OpError(f"bad op path {path!r}"), base)
            continue
        collection, rkey = path.split("/", 1)
        if keep is not None and not keep(collection):
            continue
        wanted.append((op, collection, rkey))
    if not wanted:
        return []
    blocks: dict[bytes, bytes] = {}
    if any(op.get("action") in ("create", "update") for op, _, _ in wanted):
        try:
            _roots, blocks = read_car(body.get("blocks") or b"")
        except CarError as e:
            raise FrameError(f"commit blocks: {e}") from None
    out = []
    for op, collection, rkey in wanted:
        action = op.get("action")
        ev: dict[str, Any]
        if action in ("create", "update"):
            cid = op.get("cid")
            raw = blocks.get(cid) if isinstance(cid, bytes) else None
            if raw is None:
                if on_error:
                    on_error(OpError(f"missing block for {collection}/{rkey}"), base)
                continue
            try:
                record = decode_record(raw)
            except RecordDecodeError as e:
                if on_error:
                    on_error(OpError(f"bad record {collection}/{rkey}: {e}"), base)
                continue
            ev = {"type": action, **base, "collection": collection, "rkey": rkey, "cid": cid_to_str(cid), "record": record}
        elif action == "delete":
            ev = {"type": "delete", **base, "collection": collection, "rkey": rkey}
        else:
            if on_error:
                on_error(OpError(f"unknown op action {action!r}"), base)
            continue
        out.append(ev)
    return out


def message_events(
    msg: bytes,
    keep: Callable[[str], bool] | None = None,
    on_error: Callable[[OpError, dict[str, Any]], None] | None = None,
) -> tuple[str, int | None, list[dict[str, Any]]]:
    """Decode one message: returns (type, seq, events). Error frames raise FrameError."""
    header, body = decode_message(msg)
    if header.get("op") == -1:
        raise FrameError(f"error frame: {body.get('error')}: {body.get('message')}")
    t = header.get("t")
    seq = body.get("seq") if isinstance(body.get("seq"), int) else None
    if t == "#commit":
        if body.get("tooBig"):
            raise FrameError("commit marked tooBig")
        return t, seq, commit_events(body, keep, on_error)
    did = body.get("did")
    if t in ("#identity", "#account", "#sync") and not isinstance(did, str):
        raise FrameError(f"{t} without did")
    if t == "#identity":
        ev = {"type": "identity", "seq": seq, "time": body.get("time"), "did": did}
        if body.get("handle") is not None:
            ev["handle"] = body["handle"]
        return t, seq, [ev]
    if t == "#account":
        ev = {"type": "account", "seq": seq, "time": body.get("time"), "did": did, "active": bool(body.get("active"))}
        if body.get("status") is not None:
            ev["status"] = body["status"]
        return t, seq, [ev]
    if t == "#sync":
        commit = None
        try:
            roots, _ = read_car(body.get("blocks") or b"")
            commit = cid_to_str(roots[0]) if roots else None
        except CarError:
            pass
        return t, seq, [{"type": "sync", "seq": seq, "time": body.get("time"), "did": did, "rev": body.get("rev"), "commit": commit}]
    return t or "", seq, []  # #info and unknown types carry no event


def collection_filter(patterns: list[str]) -> Callable[[str], bool]:
    """``["app.bsky.*", "chat.bsky.*"]`` -> predicate on collection NSIDs (``*`` alone keeps all)."""
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    if "" in prefixes:
        return lambda c: True

    def keep(collection: str) -> bool:
        return collection in exact or collection.startswith(prefixes)

    return keep
