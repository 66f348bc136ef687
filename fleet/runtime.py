"""What a role's coroutine receives from the process runner.

Every role module exposes ``async def run(cfg: Config, ctx: RoleContext) -> None``: it works
until ``ctx.stopping`` is set, then finishes and acknowledges the batch in hand, closes its
pools and returns. The runner (``fleet/supervisor``) installs uvloop, sets the process title,
produces the heartbeat from the event loop itself and serves metrics; role code only has to
never block the loop.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .log import Logger


@dataclass
class RoleContext:
    role: str  # "ingester", "fetcher", "indexer"
    instance: str  # "1", "shard-3"...: unique within the fleet, used as consumer name
    shards: list[int]  # indexer: the shards this process owns; others: []
    shard_count: int
    log: Logger
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


GC_GEN0_THRESHOLD = 10_000  # allocations between collections of the youngest generation (CPython: 700)


def tune_gc() -> None:
    """Collect the youngest generation every ``GC_GEN0_THRESHOLD`` allocations, not 700.

    A role allocates hundreds of containers per event (parsed events, rows, parameter lists)
    that live until their batch is written; at 700 the collector ran every few events and
    walked the batch's live objects each time, older generations in turn. Applying the
    benchmark mix in-process (30,000 events, batches of 500, the events held in a list):
    5.3 - 5.6 us per event in the collector (gc callbacks), 0.7 at 10,000; ``python -m
    fleet.indexer`` draining Redis: 431,444 -> 425,605 instructions per event (-1.4 %,
    ``tools/bench_instructions.py --side process``). Reference counting frees everything
    acyclic at once; the threshold only delays reclaiming cycles, a few thousand objects at
    most. Process-wide: called by the process runners, not by code a test imports."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def run_standalone(
    role: str,
    run: Callable[[Any, RoleContext], Awaitable[None]],
    instance: Callable[[Any], str] = lambda cfg: "1",
    shards: Callable[[Any], list[int]] = lambda cfg: [],
    serve_metrics: bool = True,
) -> int:
    """Run one role in this process without a master (``python -m fleet.<role>``).

    For tools, tests, benchmarks and debugging; production runs roles under the master, which
    adds heartbeats, restarts and the systemd protocol. Configuration comes from the
    environment (exit 78 on an error); SIGTERM/SIGINT set ``ctx.stopping`` so the role drains
    the work in hand; an unreachable Redis or PostgreSQL exits 69.
    """
    import signal
    import sys

    from . import exitcodes
    from .config import ConfigError, load
    from .log import configure, get_logger

    try:
        cfg = load()
    except ConfigError as e:
        print(f"rsky {role}: configuration error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    name, owned = instance(cfg), shards(cfg)
    configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role=role, instance=name, shard=",".join(map(str, owned)) or None)
    log = get_logger(role)
    tune_gc()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if serve_metrics and cfg.METRICS_PORT:
        from prometheus_client import start_http_server

        try:
            start_http_server(cfg.METRICS_PORT, addr=cfg.METRICS_HOST)
        except OSError as e:
            log.warning("metrics_listen_failed", port=cfg.METRICS_PORT, error=str(e))

    async def main() -> None:
        ctx = RoleContext(role=role, instance=name, shards=owned, shard_count=cfg.SHARD_COUNT, log=log)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctx.stopping.set)
        await run(cfg, ctx)

    from psycopg_pool import PoolTimeout
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        asyncio.run(main())
    except (OSError, PoolTimeout, RedisConnectionError) as e:
        log.error("unavailable", error=str(e))
        return exitcodes.UNAVAILABLE
    return exitcodes.OK
