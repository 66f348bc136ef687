"""CAR v1 reading with raw block bytes kept.

libipld's ``decode_car`` decodes every block and so loses the CBOR tag that tells a CID link
from plain bytes; records must keep it (``{"$link"}`` vs ``{"$bytes"}``), so this reader
returns the raw bytes of each block and leaves decoding to the caller.
"""

from __future__ import annotations

import hashlib

import libipld


class CarError(ValueError):
    """The bytes are not a well-formed CAR v1 (truncated, bad varint, bad CID...)."""


def read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    shift = 0
    result = 0
    n = len(buf)
    while True:
        if i >= n:
            raise CarError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise CarError("varint too long")


def _cid_len(buf: bytes, i: int) -> int:
    """Length of the binary CID starting at ``buf[i]`` (v0: bare sha-256 multihash, or v1)."""
    if buf[i : i + 2] == b"\x12\x20":  # CIDv0: bare sha256 multihash
        return 34
    j = i
    version, j = read_varint(buf, j)
    if version != 1:
        raise CarError(f"unsupported CID version {version}")
    _codec, j = read_varint(buf, j)
    _hash, j = read_varint(buf, j)
    dlen, j = read_varint(buf, j)
    return j + dlen - i


class BadBlock(CarError):
    """A block's bytes do not match the sha-256 digest in its CID."""


def check_block(cid: bytes, raw: bytes) -> None:
    """Raise :class:`BadBlock` unless ``raw`` hashes to ``cid`` (sha2-256 multihash)."""
    if cid[-34:-32] != b"\x12\x20":
        raise BadBlock(f"unsupported multihash in {cid.hex()[:16]}")
    if hashlib.sha256(raw).digest() != cid[-32:]:
        raise BadBlock(f"block {cid.hex()[:16]}... does not match its CID")


# CIDv1 dag-cbor / raw with a sha2-256 multihash: what every repo block uses (36 bytes).
_COMMON_CID_PREFIXES = (b"\x01\x71\x12\x20", b"\x01\x55\x12\x20")


def read_car(data: bytes, max_blocks: int | None = None, verify_hashes: bool = False) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Parse a CAR v1: returns (root CIDs, {binary CID: raw block bytes}).

    With ``verify_hashes`` every block is checked against its CID in the same pass
    (:class:`BadBlock`). Raises :class:`CarError` for a truncated or malformed file, or more
    than ``max_blocks``. Repo CIDs are 36 bytes and most length prefixes one or two bytes, so
    those are read inline; other forms take the general path.
    """
    if not data:
        raise CarError("empty CAR")
    try:
        hlen, i = read_varint(data, 0)
        if hlen == 0 or i + hlen > len(data):
            raise CarError("truncated CAR header")
        try:
            header = libipld.decode_dag_cbor(data[i : i + hlen])
        except Exception as e:  # libipld raises ValueError/TypeError subclasses
            raise CarError(f"bad CAR header: {e}") from None
        if not isinstance(header, dict) or header.get("version") != 1:
            raise CarError("not a CAR v1 header")
        roots = header.get("roots") or []
        if not isinstance(roots, list) or not all(isinstance(r, bytes) for r in roots):
            raise CarError("bad CAR roots")
        i += hlen
        n = len(data)
        blocks: dict[bytes, bytes] = {}
        sha256 = hashlib.sha256
        prefixes = _COMMON_CID_PREFIXES
        while i < n:
            b0 = data[i]
            if b0 < 0x80:
                blen, i = b0, i + 1
            elif i + 1 < n and data[i + 1] < 0x80:
                blen, i = (b0 & 0x7F) | (data[i + 1] << 7), i + 2
            else:
                blen, i = read_varint(data, i)
            end = i + blen
            if blen == 0 or end > n:
                raise CarError("truncated CAR block")
            if blen >= 36 and data[i : i + 4] in prefixes:
                cid = data[i : i + 36]
                raw = data[i + 36 : end]
                if verify_hashes and sha256(raw).digest() != cid[4:]:
                    raise BadBlock(f"block {cid.hex()[:16]}... does not match its CID")
            else:
                clen = _cid_len(data, i)
                if clen <= 0 or clen > blen:
                    raise CarError("bad block CID")
                cid = data[i : i + clen]
                raw = data[i + clen : end]
                if verify_hashes:
                    check_block(cid, raw)
            blocks[cid] = raw
            i = end
            if max_blocks is not None and len(blocks) > max_blocks:
                raise CarError(f"more than {max_blocks} blocks")
    except IndexError:
        raise CarError("truncated CAR") from None
    return [bytes(r) for r in roots], blocks
