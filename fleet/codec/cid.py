"""CIDs: binary form <-> the base32 string form (``bafy...``) used in JSON and the database."""

from __future__ import annotations

import base64


def cid_to_str(cid: bytes) -> str:
    """Binary CIDv1 (as libipld returns it, no 0x00 multibase prefix) -> ``b``+base32."""
    if cid[:1] == b"\x00":
        cid = cid[1:]
    return "b" + base64.b32encode(cid).decode("ascii").rstrip("=").lower()


def cid_from_str(text: str) -> bytes:
    """``bafy...`` -> binary CIDv1. Raises ValueError on anything else."""
    if not text.startswith("b"):
        raise ValueError(f"unsupported CID multibase: {text[:8]!r}")
    body = text[1:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))
