"""Run one fetcher process alone: ``python -m fleet.fetcher`` (configuration from the environment).

The supervisor normally forks fetchers; this entry point serves tools (``tools/conform.py
--mode backfill``), benchmarks and debugging. ``FETCHER_INSTANCE`` names its consumer in the
``fetcher`` group (default ``1``): a restart under the same name first re-reads its own pending
entries. SIGTERM/SIGINT finish the repos in hand, then exit 0.
"""

from __future__ import annotations

import asyncio
import os
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
    instance = os.environ.get("FETCHER_INSTANCE", "1")
    configure(cfg.LOG_LEVEL, cfg.LOG_FORMAT, role="fetcher", instance=instance)
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
            get_logger("fetcher").warning("metrics_listen_failed", port=cfg.METRICS_PORT, error=str(e))

    async def main_async() -> None:
        ctx = RoleContext(role="fetcher", instance=instance, shards=[], shard_count=cfg.SHARD_COUNT, log=get_logger("fetcher"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctx.stopping.set)
        await run(cfg, ctx)

    asyncio.run(main_async())
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
