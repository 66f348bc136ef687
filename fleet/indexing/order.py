"""Cross-shard order: rules between accounts give the firehose-``seq``-order answer.

(Rules are written out in full below as they are implemented.)
"""

from __future__ import annotations

from typing import Any

from .plugin import RecordOp, Row


async def after_insert(tx: Any, collection: str, row: Row, op: RecordOp, fx: Any) -> None:
    """Re-evaluate dependents of a just-indexed post, thread gate or post gate."""
    return None
