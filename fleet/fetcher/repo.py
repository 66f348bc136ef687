"""A ``getRepo`` CAR -> its signed commit and every record (collection, rkey, CID, record).

    commit, blocks = open_repo(car_bytes, expect_did="did:plc:...")
    for collection, rkey, cid, record in iter_records(blocks, commit.data, keep):
        ...   # record: atproto-JSON dict, or a RepoError for a block that cannot be decoded

The commit block is the CAR root: ``{did, version, data, rev, prev, sig}``. ``data`` is the
root of the Merkle Search Tree, whose nodes are ``{l, e: [{p, k, v, t}]}``: ``l`` the subtree
left of every entry, each entry a key (``p`` bytes shared with the previous key + suffix ``k``),
its value CID ``v`` and the subtree ``t`` right of it. An in-order walk yields keys sorted.

Every block's bytes are checked against its CID's sha-256 digest (a corrupt CAR is refused
before anything is emitted). Records are decoded with ``fleet.codec.atjson`` so they are
byte-exact atproto JSON. The walk is a generator: callers take records in chunks and never
hold more than a chunk of decoded records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import libipld

from fleet.codec.atjson import RecordDecodeError, decode_record
from fleet.codec.car import BadBlock, CarError, check_block, read_car
from fleet.codec.cid import cid_to_str  # error messages: never fails, whatever the bytes

# The hot paths name CIDs with libipld: 15x faster than base64.b32encode, same text.
cid_text = libipld.encode_cid

MAX_MST_DEPTH = 128


class RepoError(ValueError):
    """The repo cannot be read: ``reason`` is a short word (bad_car, bad_commit, missing_block...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass(frozen=True)
class Commit:
    cid: bytes  # binary CID of the commit block
    did: str
    rev: str
    data: bytes  # binary CID of the MST root
    version: int
    sig: bytes
    fields: dict[str, Any]  # the decoded commit (for signature checks)

    @property
    def cid_str(self) -> str:
        return cid_text(self.cid)


def check_block_hashes(blocks: dict[bytes, bytes]) -> None:
    """Raise RepoError(bad_block) if a block's sha-256 does not match its CID."""
    for cid, raw in blocks.items():
        _check_hash(cid, raw)


def _check_hash(cid: bytes, raw: bytes) -> None:
    try:
        check_block(cid, raw)
    except BadBlock:
        raise RepoError("bad_block", f"block {cid_to_str(cid)} does not match its CID") from None


def split_car(car: bytes, verify_hashes: bool = True) -> tuple[list[bytes], dict[bytes, bytes]]:
    """CAR v1 -> (root CIDs, {binary CID: raw block}) via :func:`fleet.codec.car.read_car`,
    every block checked against its CID in the same pass. Raises :class:`RepoError`
    (bad_car, bad_block)."""
    try:
        return read_car(car, verify_hashes=verify_hashes)
    except BadBlock as e:
        raise RepoError("bad_block", str(e)) from None
    except CarError as e:
        raise RepoError("bad_car", str(e)) from None


def open_repo(car: bytes, expect_did: str | None = None, verify_hashes: bool = True) -> tuple[Commit, dict[bytes, bytes]]:
    """Parse a repo CAR: returns (commit, raw blocks). Raises :class:`RepoError`."""
    roots, blocks = split_car(car, verify_hashes)
    if len(roots) != 1:
        raise RepoError("bad_car", f"{len(roots)} roots, expected 1")
    raw = blocks.get(roots[0])
    if raw is None:
        raise RepoError("missing_block", "commit block")
    try:
        c = libipld.decode_dag_cbor(raw)
    except Exception as e:
        raise RepoError("bad_commit", str(e)) from None
    if not isinstance(c, dict):
        raise RepoError("bad_commit", "not a map")
    did, rev, data, sig, version = c.get("did"), c.get("rev"), c.get("data"), c.get("sig"), c.get("version")
    if not isinstance(did, str) or not isinstance(rev, str) or not isinstance(data, bytes) or not isinstance(sig, bytes):
        raise RepoError("bad_commit", "missing did, rev, data or sig")
    if version not in (2, 3):
        raise RepoError("bad_commit", f"version {version!r}")
    if expect_did is not None and did != expect_did:
        raise RepoError("wrong_did", f"commit is for {did[:100]}")
    return Commit(cid=roots[0], did=did, rev=rev, data=data, version=version, sig=sig, fields=c), blocks


def read_node(get: Callable[[bytes], bytes | None], cid: bytes, depth: int) -> tuple[Any, list[tuple[bytes, bytes, Any]]]:
    """(left subtree CID or None, [(full key, value CID, right subtree CID or None), ...]) of
    the MST node ``cid`` at ``depth``, keys rebuilt from their shared prefixes and checked
    (UTF-8), CIDs checked to be links; RepoError for a tree too deep, a missing block or a
    node or entry that is not one."""
    if depth > MAX_MST_DEPTH:
        raise RepoError("bad_mst", "tree too deep")
    raw = get(cid)
    if raw is None:
        raise RepoError("missing_block", f"MST node {cid_to_str(cid)}")
    try:
        node = libipld.decode_dag_cbor(raw)
        left, entries = node.get("l"), node["e"]
    except Exception as e:
        raise RepoError("bad_mst", f"node {cid_to_str(cid)}: {e}") from None
    out: list[tuple[bytes, bytes, Any]] = []
    add = out.append
    prev = b""
    try:
        for e in entries:
            key = prev[: e["p"]] + e["k"]
            val = e["v"]
            right = e.get("t")
            if val.__class__ is not bytes or (right is not None and right.__class__ is not bytes):
                raise TypeError("v/t is not a CID")
            if not key.isascii():
                key.decode("utf-8")
            prev = key
            add((key, val, right))
    except UnicodeDecodeError:
        raise RepoError("bad_mst", "key is not UTF-8") from None
    except Exception as ex:
        raise RepoError("bad_mst", f"entry in {cid_to_str(cid)}: {ex}") from None
    return left, out


def walk_mst(blocks: dict[bytes, bytes], root: bytes) -> Iterator[tuple[str, bytes]]:
    """Every (key, value CID) of the MST rooted at ``root``, in key order.

    Iterative (explicit stack): a hostile repo cannot exhaust the Python stack, and depth is
    capped. Raises :class:`RepoError` for a missing or malformed node.
    """
    # Stack items: (node CID, depth >= 0) to expand, or ((key, value CID), -1) to emit.
    stack: list[tuple[Any, int]] = [(root, 0)]
    pop = stack.pop
    while stack:
        item, depth = pop()
        if depth < 0:
            yield item
            continue
        left, entries = read_node(blocks.get, item, depth)
        # This node's in-order sequence, pushed reversed.
        seq: list[tuple[Any, int]] = []
        down = depth + 1
        if left is not None:
            seq.append((left, down))
        for key, val, right in entries:
            seq.append(((key.decode("utf-8"), val), -1))
            if right is not None:
                seq.append((right, down))
        seq.reverse()
        stack.extend(seq)


def iter_records(
    blocks: dict[bytes, bytes],
    root: bytes,
    keep: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, str, str, dict[str, Any] | RepoError]]:
    """(collection, rkey, CID string, record) for every record whose collection ``keep`` accepts.

    A record block that is missing or not a valid record is yielded as a :class:`RepoError`
    in place of the record, so the caller can count it and carry on with the others.
    """
    for key, cid in walk_mst(blocks, root):
        collection, sep, rkey = key.partition("/")
        if not sep or not rkey:
            yield collection, rkey, cid_to_str(cid), RepoError("bad_key", key[:200])
            continue
        if keep is not None and not keep(collection):
            continue
        raw = blocks.get(cid)
        if raw is None:
            yield collection, rkey, cid_to_str(cid), RepoError("missing_block", key[:200])
            continue
        try:
            record: dict[str, Any] | RepoError = decode_record(raw)
        except RecordDecodeError as e:
            record = RepoError("bad_record", f"{key[:200]}: {e}")
        yield collection, rkey, cid_text(cid), record
