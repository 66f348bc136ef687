"""Move an entry aside, with why, so it never blocks its shard and is never lost.

The dead-letter stream of ``firehose_live:3`` is ``firehose_live:3:dlq`` (``streams.dead_letter``).
Each entry keeps the original fields and adds ``error``, ``stream``, ``id`` and ``deliveries``;
an operator re-queues it by XADDing its ``event`` back to ``stream``.

The XADD to the dead-letter stream and the XACK+XDEL of the original touch different keys
(possibly on different Redis Cluster nodes), so they are not one transaction: a crash between
them leaves the entry pending and it is dead-lettered again (a duplicate in the dead-letter
stream, never a loss).
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import streams

MAX_ERROR_CHARS = 2000


async def dead_letter(
    redis: Any,
    group: str,
    stream: str,
    entry_id: str,
    fields: Mapping[bytes | str, Any] | None,
    error: str,
    deliveries: int,
) -> None:
    """XADD the entry with its error to ``dead_letter(stream)``, then XACK+XDEL the original."""
    out: dict[Any, Any] = dict(fields or {})
    out.update(
        {
            "error": error[:MAX_ERROR_CHARS],
            "stream": stream,
            "id": entry_id,
            "deliveries": str(deliveries),
        }
    )
    await redis.xadd(streams.dead_letter(stream), out)
    await ack(redis, group, stream, [entry_id])


async def ack(redis: Any, group: str, stream: str, ids: list[str]) -> None:
    """XACK and XDEL in one MULTI on one key: an acknowledged entry never lingers in the stream."""
    if not ids:
        return
    async with redis.pipeline(transaction=True) as p:
        p.xack(stream, group, *ids)
        p.xdel(stream, *ids)
        await p.execute()
