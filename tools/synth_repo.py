"""Synthetic atproto repos as real CAR bytes: an MST *writer* for tests and benchmarks.

    key = new_key("ES256K")
    car, info = build_repo("did:plc:...", {"app.bsky.feed.post/3k...": {...}}, key)

Layout as @atproto/repo writes it: a signed v3 commit (root) -> MST (fanout 16: a key's layer is
the number of leading zero 2-bit groups of sha256(key)) -> DAG-CBOR record blocks, CIDv1
dag-cbor sha2-256. Not used by the fleet itself.
"""

from __future__ import annotations

import hashlib
import random
import string
from typing import Any, Iterable

import cbrrr
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fleet.codec.cid import cid_to_str
from fleet.fetcher.verify import P256_PREFIX, SECP256K1_PREFIX, _ORDER

import libipld


def cid_for(raw: bytes) -> bytes:
    return b"\x01\x71\x12\x20" + hashlib.sha256(raw).digest()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key_layer(key: bytes) -> int:
    h = hashlib.sha256(key).digest()
    n = 0
    for byte in h:
        if byte == 0:
            n += 4
            continue
        for shift in (6, 4, 2, 0):
            if (byte >> shift) & 3 == 0:
                n += 1
            else:
                return n
        return n
    return n


def build_mst(entries: list[tuple[bytes, bytes]], blocks: dict[bytes, bytes]) -> bytes:
    """Write the MST of sorted (key, value CID) pairs into ``blocks``; returns the root CID."""
    layered = [(k, v, key_layer(k)) for k, v in entries]
    top = max((lay for _, _, lay in layered), default=0)

    def node(items: list[tuple[bytes, bytes, int]], layer: int) -> bytes:
        # items all have layer <= `layer`; entries at `layer` split the rest into subtrees
        left: list = []
        groups: list = []  # [(key, val, right_items)]
        for it in items:
            if it[2] == layer:
                groups.append((it[0], it[1], []))
            elif groups:
                groups[-1][2].append(it)
            else:
                left.append(it)
        e = []
        prev = b""
        for k, v, right in groups:
            p = 0
            while p < min(len(prev), len(k)) and prev[p] == k[p]:
                p += 1
            t = cbrrr.CID(node(right, layer - 1)) if right else None
            e.append({"k": k[p:], "p": p, "t": t, "v": cbrrr.CID(v)})
            prev = k
        obj = {"e": e, "l": cbrrr.CID(node(left, layer - 1)) if left else None}
        raw = cbrrr.encode_dag_cbor(obj)
        cid = cid_for(raw)
        blocks[cid] = raw
        return cid

    return node(layered, top)


def new_key(alg: str = "ES256K") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256K1() if alg == "ES256K" else ec.SECP256R1())


def did_key(priv: ec.EllipticCurvePrivateKey) -> str:
    """``did:key:z...`` (Multikey) of a private key's public half."""
    pub = priv.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    prefix = SECP256K1_PREFIX if isinstance(priv.curve, ec.SECP256K1) else P256_PREFIX
    return "did:key:" + libipld.encode_multibase("z", prefix + pub)


def sign(priv: ec.EllipticCurvePrivateKey, data: bytes, low_s: bool = True) -> bytes:
    r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hashes.SHA256())))
    n = _ORDER["ES256K" if isinstance(priv.curve, ec.SECP256K1) else "ES256"]
    if (s > n // 2) == low_s:
        s = n - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def write_car(root: bytes, blocks: Iterable[tuple[bytes, bytes]]) -> bytes:
    header = cbrrr.encode_dag_cbor({"roots": [cbrrr.CID(root)], "version": 1})
    out = bytearray(_varint(len(header)) + header)
    for cid, raw in blocks:
        out += _varint(len(cid) + len(raw)) + cid + raw
    return bytes(out)


def build_repo(
    did: str, records: dict[str, dict[str, Any]], priv: ec.EllipticCurvePrivateKey, rev: str = "3kaaaaaaaaa2a", low_s: bool = True
) -> tuple[bytes, dict[str, Any]]:
    """CAR of a signed repo holding ``records`` ({"collection/rkey": record}); info has commit/rev."""
    blocks: dict[bytes, bytes] = {}
    entries = []
    for key in sorted(records):
        raw = cbrrr.encode_dag_cbor(records[key])
        cid = cid_for(raw)
        blocks[cid] = raw
        entries.append((key.encode(), cid))
    root = build_mst(entries, blocks)
    unsigned = {"did": did, "version": 3, "data": cbrrr.CID(root), "rev": rev, "prev": None}
    sig = sign(priv, cbrrr.encode_dag_cbor(unsigned), low_s=low_s)
    commit_raw = cbrrr.encode_dag_cbor({**unsigned, "sig": sig})
    commit = cid_for(commit_raw)
    # commit first, as the PDS writes it
    car = write_car(commit, [(commit, commit_raw), *blocks.items()])
    return car, {"commit": commit, "rev": rev, "data": root}


_TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


def synthetic_records(n: int, did: str, seed: int = 1) -> dict[str, dict[str, Any]]:
    """``n`` plausible Bluesky records (posts, likes, follows) with distinct TID-like rkeys."""
    rnd = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    t = 1_700_000_000_000_000
    for i in range(n):
        t += rnd.randint(1, 10_000_000)
        rkey = "".join(_TID_CHARS[(t >> (5 * j)) & 31] for j in range(12, -1, -1))
        kind = i % 3
        if kind == 0:
            text = " ".join("".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(rnd.randint(3, 30)))
            out[f"app.bsky.feed.post/{rkey}"] = {"$type": "app.bsky.feed.post", "createdAt": "2024-01-01T00:00:00.000Z", "langs": ["en"], "text": text}
        elif kind == 1:
            subj = cbrrr.CID(cid_for(rkey.encode()))
            out[f"app.bsky.feed.like/{rkey}"] = {
                "$type": "app.bsky.feed.like",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "subject": {"cid": cid_to_str(subj.cid_bytes), "uri": f"at://{did}/app.bsky.feed.post/{rkey}"},
            }
        else:
            out[f"app.bsky.graph.follow/{rkey}"] = {"$type": "app.bsky.graph.follow", "createdAt": "2024-01-01T00:00:00.000Z", "subject": f"did:plc:{rkey:a<24}"}
    return out
