"""The only state lag.py changes, and only when asked: a consumer-group cursor that points into a
trimmed region, past the end of its stream, or beyond entries it never delivered is set back to just before the first entry still
in the stream (``XGROUP SETID <stream> <group> <id> ENTRIESREAD <n>``).

Why that is safe: indexers delete every entry they have applied (XACK+XDEL), so what is left in
a stream is unapplied or pending, and every write is idempotent, so re-delivering an entry that
was in fact applied changes nothing. What it cannot do: bring back entries that were trimmed
before delivery — those accounts need a backfill (docs/operating.md, "backfill gap").
"""

from __future__ import annotations

from typing import Any

import redis

from .. import streams
from .sample import id_before, sample_stream


def targets(target: str, shard_count: int) -> list[tuple[str, str, int | None]]:
    """``"3"`` -> the streams of shard 3; anything else is taken as a stream name."""
    if target.isdigit():
        k = int(target)
        if k >= shard_count:
            raise ValueError(f"shard {k} does not exist (SHARD_COUNT={shard_count})")
        return [(s, b, k) for s, b in zip(streams.indexer_streams(k, shard_count),
                                          (streams.FIREHOSE_LIVE, streams.FIREHOSE_BACKFILL))]
    base = target.split(":", 1)[0]
    return [(target, base, None)]


def plan(r: redis.Redis, target: str, shard_count: int) -> list[dict[str, Any]]:
    """What ``--repair-trimmed-cursor TARGET`` would do: one action per broken cursor.

    Each action: ``{stream, group, from, to, entries_read, lost, redeliver, explain}``.
    Cursors that are fine get no action.
    """
    import time

    actions = []
    for name, base, shard in targets(target, shard_count):
        for row in sample_stream(r, name, base, shard, True, shard_count, time.time()):
            if not row.get("group_exists") or row.get("position") not in ("trimmed", "past_end", "stranded"):
                continue
            if row["length"]:
                to = id_before(row["first_id"])
                entries_read = (row["entries_added"] or 0) - row["length"]
            else:
                to = row["last_generated_id"]
                entries_read = row["entries_added"] or 0
            why = {
                "trimmed": f"is in a trimmed region: {row['lost']} entries were removed before delivery and cannot "
                           "be recovered from Redis; backfill those accounts (docs/operating.md#backfill-gap)",
                "past_end": f"is past the end of the stream (last id {row['last_generated_id']}): entries with "
                            "smaller ids would never be delivered",
                "stranded": f"has {row['stranded']} entries at or before it that are neither pending nor "
                            "acknowledged: they would never be delivered",
            }[row["position"]]
            explain = (
                f"XGROUP SETID {name} {row['group']} {to} ENTRIESREAD {entries_read}\n"
                f"  cursor {row['last_delivered_id']} {why}.\n"
                f"  After this the group reads from {row['first_id'] or 'the next new entry'}: the {row['length']} "
                "entries still in the stream are (re)delivered; applied entries were deleted by the indexer and "
                "writes are idempotent, so a repeat changes nothing."
            )
            actions.append({"stream": name, "group": row["group"], "from": row["last_delivered_id"], "to": to,
                            "entries_read": entries_read, "lost": row.get("lost"), "redeliver": row["length"],
                            "explain": explain})
    return actions


def apply(r: redis.Redis, actions: list[dict[str, Any]]) -> None:
    for a in actions:
        r.xgroup_setid(a["stream"], a["group"], a["to"], entries_read=a["entries_read"])
