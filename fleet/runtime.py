"""What a role's coroutine receives from the process runner.

Every role module exposes ``async def run(cfg: Config, ctx: RoleContext) -> None``: it works
until ``ctx.stopping`` is set, then finishes and acknowledges the batch in hand, closes its
pools and returns. The runner (``fleet/supervisor``) installs uvloop, sets the process title,
produces the heartbeat from the event loop itself and serves metrics; role code only has to
never block the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .log import Logger


@dataclass
class RoleContext:
    role: str  # "ingester", "fetcher", "indexer"
    instance: str  # "1", "shard-3"...: unique within the fleet, used as consumer name
    shards: list[int]  # indexer: the shards this process owns; others: []
    shard_count: int
    log: Logger
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
