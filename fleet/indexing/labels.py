"""Labels from ``label_live`` (``com.atproto.label.subscribeLabels``) into the ``label`` table.

An event is ``{"type": "label", "label": {src, uri, cid?, val, neg?, cts, exp?, ...}}``.
Written as the official AppView's label indexer (``indexLabels`` of @atproto/bsky's Redis
pipeline, bluesky-social/atproto branch ``divy/backfill``): one row per (src, uri, cid, val)
with ``cid = ''`` when the label has none; a label for a key that exists replaces ``neg``,
``cts`` and ``exp`` only if its ``cts`` is newer.

**Negation**: a ``neg: true`` label overwrites the positive row of the same key with
``neg = true`` — the AppView's hydration ignores negated rows, so the label is gone for
readers — instead of deleting it. Keeping the negation row is what makes replays and
out-of-order delivery safe: an older positive label arriving later has an older ``cts`` and
cannot resurrect a label that was taken back.

Malformed labels (missing src/uri/val/cts, oversized values) are skipped with a log line and
``rsky_indexer_labels_total{outcome="invalid"}``; others count as ``applied``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

LABELS = Counter("rsky_indexer_labels_total", "label events", ["outcome"])

MAX_VAL_BYTES = 128
MAX_URI = 8192


def label_row(label: Any) -> tuple[str, str, str, str, bool, str, str | None] | None:
    """(src, uri, cid, val, neg, cts, exp) of a well-formed label, else None."""
    if not isinstance(label, dict):
        return None
    src, uri, val, cts = label.get("src"), label.get("uri"), label.get("val"), label.get("cts")
    cid, exp = label.get("cid"), label.get("exp")
    if not (isinstance(src, str) and src.startswith("did:") and len(src) <= 2048):
        return None
    if not (isinstance(uri, str) and 0 < len(uri) <= MAX_URI and (uri.startswith("at://") or uri.startswith("did:"))):
        return None
    if not (isinstance(val, str) and val and len(val.encode()) <= MAX_VAL_BYTES):
        return None
    if not (isinstance(cts, str) and cts):
        return None
    if cid is not None and not isinstance(cid, str):
        return None
    if exp is not None and not isinstance(exp, str):
        return None
    if any("\x00" in s for s in (src, uri, val, cts, cid or "", exp or "")):
        return None
    return src, uri, cid or "", val, bool(label.get("neg")), cts, exp


async def apply_label(tx: Any, ev: dict, ctx: Any = None) -> None:
    """Upsert one label event (see the module docstring)."""
    row = label_row(ev.get("label"))
    if row is None:
        LABELS.labels("invalid").inc()
        log = getattr(ctx, "log", None)
        if log is not None:
            log.warning("label_invalid", seq=ev.get("seq"), label=str(ev.get("label"))[:300])
        return
    await tx.execute(
        "INSERT INTO label (src, uri, cid, val, neg, cts, exp) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (src, uri, cid, val) DO UPDATE SET neg = excluded.neg, cts = excluded.cts, exp = excluded.exp "
        "WHERE label.cts < excluded.cts",
        row,
    )
    LABELS.labels("applied").inc()
