"""The sharding function: which indexer shard owns an account.

``shard(did, n)`` is part of the fleet's on-disk contract (streams are named by it), so it
is versioned and never changes silently. Version 1: the first 8 bytes of SHA-256 of the
UTF-8 DID, read big-endian, modulo the shard count. Python's ``hash()`` is salted per
process and must never be used here.

>>> shard("did:plc:ewvi7nxzyoun6zhxrhs64oiz", 1)
0
"""

from __future__ import annotations

import hashlib

SHARD_FUNCTION_VERSION = 1


def stable_hash(did: str) -> int:
    """64-bit stable hash of a DID (version 1)."""
    return int.from_bytes(hashlib.sha256(did.encode("utf-8")).digest()[:8], "big")


def shard(did: str, shard_count: int) -> int:
    """Shard number in ``range(shard_count)`` that owns ``did``."""
    if shard_count <= 1:
        return 0
    return stable_hash(did) % shard_count


def parse_shard_set(text: str, shard_count: int) -> list[int]:
    """Parse ``"0-3,6,8-9"`` into a sorted list of shard numbers; ``""``/``"all"`` is every shard.

    Raises ValueError naming the problem when a shard is out of range or the text is malformed.
    """
    text = text.strip()
    if text in ("", "all", "*"):
        return list(range(shard_count))
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
            if lo > hi:
                raise ValueError(f"range {part!r} is reversed")
            out.update(range(lo, hi + 1))
        else:
            out.add(int(part))
    bad = [s for s in out if s < 0 or s >= shard_count]
    if bad:
        raise ValueError(f"shard {bad[0]} is outside 0-{shard_count - 1}")
    if not out:
        raise ValueError("no shard named")
    return sorted(out)
