"""Run the ingester role alone: ``python -m fleet.ingester`` (configuration from the environment).

The supervisor normally forks it; this entry point serves tests, benchmarks and debugging.
SIGTERM/SIGINT drain (the batch in hand is written with its cursor) and exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from .. import exitcodes
from ..config import ConfigError, load
from ..log import configure, get_logger
from ..runtime import RoleContext
from .main import run


def main() -> int:
    try:
        cfg = load()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return exitcodes.CONFIG
    configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role="ingester")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if cfg.METRICS_PORT:
        from prometheus_client import start_http_server

        try:
            start_http_server(cfg.METRICS_PORT, addr=cfg.METRICS_HOST)
        except OSError as e:
            get_logger("ingester").warning("metrics_listen_failed", port=cfg.METRICS_PORT, error=str(e))

    async def main_async() -> None:
        ctx = RoleContext(role="ingester", instance="1", shards=[], shard_count=cfg.SHARD_COUNT, log=get_logger("ingester"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctx.stopping.set)
        await run(cfg, ctx)

    asyncio.run(main_async())
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
