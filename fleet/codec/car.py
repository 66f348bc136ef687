"""CAR v1 reading with raw block bytes kept.

libipld's ``decode_car`` decodes every block and so loses the CBOR tag that tells a CID link
from plain bytes; records must keep it (``{"$link"}`` vs ``{"$bytes"}``), so this reader
returns the raw bytes of each block and leaves decoding to the caller.
"""

from __future__ import annotations

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
    """Length of the binary CIDv1 starting at ``buf[i]``."""
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


def read_car(data: bytes, max_blocks: int | None = None) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Parse a CAR v1: returns (root CIDs, {binary CID: raw block bytes}).

    Raises :class:`CarError` for a truncated or malformed file, or more than ``max_blocks``.
    """
    if not data:
        raise CarError("empty CAR")
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
    i += hlen
    blocks: dict[bytes, bytes] = {}
    n = len(data)
    while i < n:
        blen, i = read_varint(data, i)
        end = i + blen
        if blen == 0 or end > n:
            raise CarError("truncated CAR block")
        clen = _cid_len(data, i)
        if clen <= 0 or clen > blen:
            raise CarError("bad block CID")
        blocks[data[i : i + clen]] = data[i + clen : end]
        i = end
        if max_blocks is not None and len(blocks) > max_blocks:
            raise CarError(f"more than {max_blocks} blocks")
    return [bytes(r) for r in roots], blocks
