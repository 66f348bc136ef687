"""One indexer process without a master: ``python -m fleet.indexer`` (tools, tests, debugging).

Runs the shards of ``SHARDS`` (of ``SHARD_COUNT``) in this process until SIGTERM or SIGINT,
then drains the batches in hand and exits 0. Production runs shards under the master
(``rsky-indexer``), which adds heartbeats, restarts and the systemd protocol.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from .. import exitcodes, log
from ..config import ConfigError, load
from ..runtime import RoleContext


async def _main(cfg) -> None:  # type: ignore[no-untyped-def]
    from .main import run

    shards = cfg.shards
    ctx = RoleContext(
        role="indexer",
        instance="shard-" + "-".join(map(str, shards)),
        shards=shards,
        shard_count=cfg.SHARD_COUNT,
        log=log.get_logger("indexer"),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctx.stopping.set)
    await run(cfg, ctx)


def main() -> int:
    try:
        cfg = load()
    except ConfigError as e:
        print(f"rsky indexer: configuration error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    log.configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role="indexer", shard=cfg.SHARDS)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from psycopg_pool import PoolTimeout
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        asyncio.run(_main(cfg))
    except (OSError, PoolTimeout, RedisConnectionError) as e:
        log.get_logger("indexer").error("unavailable", error=str(e))
        return exitcodes.UNAVAILABLE
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
