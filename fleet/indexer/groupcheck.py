"""Notice a consumer group that cannot deliver the entries waiting in its stream.

``XREADGROUP >`` hands out only entries newer than the group's last-delivered id. An entry at
or before that id which is not in the group's pending list (PEL) will never be delivered:
the group was re-created at ``$``, moved with ``XGROUP SETID``, or lost its PEL. The old
pipeline idled 38 hours in that state with 14 M messages waiting. Because this fleet acks with
XACK+XDEL in one MULTI, every entry still in the stream is unacknowledged, so "present, not
after last-delivered, not pending" means stranded.

Self-heal: ``XGROUP SETID <stream> <group> 0`` so ``>`` delivers every entry present again.
It is safe because (1) nothing in the stream was acknowledged (acked entries are deleted),
(2) applying an event twice changes nothing (every write is idempotent and rev-guarded), and
(3) the shard is the group's only consumer, so no other process loses entries by the rewind.
Entries already pending are re-delivered too; that only re-applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class GroupState:
    stream: str
    length: int
    pending: int
    last_delivered: str
    first_id: str | None
    last_generated: str
    stranded: int  # entries present, at or before last_delivered, not pending (a lower bound)

    @property
    def stuck(self) -> bool:
        return self.stranded > 0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _field(d: dict, name: str) -> Any:
    return d.get(name, d.get(name.encode()))


async def check_group(redis: Any, stream: str, group: str) -> GroupState | None:
    """The group's state on ``stream``; None when the stream or the group does not exist."""
    if not await redis.exists(stream):
        return None
    info = await redis.xinfo_stream(stream)
    groups = await redis.xinfo_groups(stream)
    mine = next((g for g in groups if _s(_field(g, "name")) == group), None)
    if mine is None:
        return None
    length = int(_field(info, "length"))
    pending = int(_field(mine, "pending"))
    last_delivered = _s(_field(mine, "last-delivered-id"))
    first = _field(info, "first-entry")
    first_id = _s(first[0]) if first else None
    stranded = 0
    if length > pending and first_id is not None:
        # Entries up to last-delivered: all should be pending. Read one more than pending.
        behind = await redis.xrange(stream, "-", last_delivered, count=pending + 1)
        if len(behind) > pending:
            # at least one stranded; count them exactly only when that is cheap
            if pending == 0:
                stranded = len(await redis.xrange(stream, "-", last_delivered, count=10000))
            else:
                stranded = len(behind) - pending
    return GroupState(stream, length, pending, last_delivered, first_id, _s(_field(info, "last-generated-id")), stranded)


async def heal(redis: Any, stream: str, group: str) -> None:
    """Rewind the group so every entry present is delivered again (see the module doc)."""
    await redis.xgroup_setid(stream, group, "0")
