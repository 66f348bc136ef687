"""CID strings, accepted exactly as the official validator's ``parseCid`` + ``toString`` round trip.

@atproto/lex-data ``validateCidString`` parses with multiformats 13 ``CID.parse`` and requires
``cid.toString() === input``. ``CID.parse`` caches the source text under its multibase prefix,
so the round trip holds for any parseable CIDv1 written in base32 (``b...``, even with trailing
``=``) and any CIDv0 in bare base58btc (``Q...``); every other base re-encodes differently and
fails. Varints are read leniently (non-minimal forms pass), the multihash length must match the
remaining bytes exactly, and the text is at most 128 characters.
"""

from __future__ import annotations

import base64
import re

MAX_CID_STRING_LENGTH = 128
RAW_CODEC = 0x55
DAG_CBOR_CODEC = 0x71

_B32_BODY = re.compile(r"[a-z2-7]*")
_B32_INDEX = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz234567")}
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def _b32decode(body: str) -> bytes | None:
    """multiformats rfc4648 decode: trailing '=' ignored, leftover bits must be < 5 and zero."""
    body = body.rstrip("=")
    if not _B32_BODY.fullmatch(body):
        return None
    n = len(body)
    left = (n * 5) % 8
    if left >= 5:
        return None
    if left and _B32_INDEX[body[-1]] & ((1 << left) - 1):
        return None
    return base64.b32decode(body.upper() + "=" * (-n % 8))


def _b58decode(text: str) -> bytes | None:
    """base-x decode: leading '1's are zero bytes; any character outside the alphabet fails."""
    if not text:
        return None
    num = 0
    for ch in text:
        d = _B58_INDEX.get(ch)
        if d is None:
            return None
        num = num * 58 + d
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\x00" * zeros + body


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            return None
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _inspect(data: bytes) -> tuple[int, int] | None:
    """(version, codec) of binary CID ``data``, or None unless it is exactly one valid CID."""
    r = _varint(data, 0)
    if r is None:
        return None
    version, pos = r
    codec = 0x70  # dag-pb
    if version == 18:  # a bare sha2-256 multihash: CIDv0
        version, pos = 0, 0
    else:
        r = _varint(data, pos)
        if r is None:
            return None
        codec, pos = r
    if version not in (0, 1):
        return None
    r = _varint(data, pos)  # multihash code
    if r is None:
        return None
    _code, pos = r
    r = _varint(data, pos)  # digest length
    if r is None:
        return None
    size, pos = r
    if pos + size != len(data):
        return None
    return version, codec


# The common shape, CIDv1 + sha2-256 in base32: "b" + the 4 header bytes (01, codec, 12, 20)
# whose last 2 bits open the 7th character (so it is one of a-h), 32 digest bytes, and 2 zero
# padding bits (so the last character's index is a multiple of 4). Everything this accepts the
# full parse accepts too (tests check both ways); anything else takes the full parse.
_COMMON = re.compile(r"b(afyrei|afkrei)[a-h][a-z2-7]{50}[aeimquy4]")
_COMMON_CODEC = {"afyrei": DAG_CBOR_CODEC, "afkrei": RAW_CODEC}


def parse_cid(text: str) -> tuple[int, int] | None:
    """(version, codec) if ``text`` is a CID string the official validator accepts, else None.

    >>> parse_cid("bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
    (1, 85)
    """
    m = _COMMON.fullmatch(text)
    if m is not None:
        return 1, _COMMON_CODEC[m.group(1)]
    return parse_cid_full(text)


def parse_cid_full(text: str) -> tuple[int, int] | None:
    """:func:`parse_cid` without the fast path for the common shape."""
    if len(text) > MAX_CID_STRING_LENGTH or not text:
        return None
    first = text[0]
    if first == "b":
        data = _b32decode(text[1:])
        want = 1
    elif first == "Q":
        data = _b58decode(text)
        want = 0
    else:
        return None  # base58btc/base36 v1 texts re-encode as base32, others do not parse
    if data is None:
        return None
    info = _inspect(data)
    if info is None or info[0] != want:
        return None
    return info


def is_cid_string(text: str) -> bool:
    return parse_cid(text) is not None
