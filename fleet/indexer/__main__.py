"""One indexer process without a master: ``python -m fleet.indexer`` (tools, tests, debugging).

Runs the shards of ``SHARDS`` (of ``SHARD_COUNT``) in this process until SIGTERM or SIGINT,
then drains the batches in hand and exits 0. Its metrics are served only when ``METRICS_PORT``
is set in the environment (not on the default port: tools start several on one box).
Production runs shards under the master (``rsky-indexer``), which adds heartbeats, restarts
and the systemd protocol.
"""

import os
import sys

from ..runtime import run_standalone


def _run(cfg, ctx):  # type: ignore[no-untyped-def]
    from .main import run

    return run(cfg, ctx)


if __name__ == "__main__":
    sys.exit(run_standalone(
        "indexer", _run,
        instance=lambda cfg: "shard-" + "-".join(map(str, cfg.shards)),
        shards=lambda cfg: cfg.shards,
        # conform and the tests start several on one box: metrics only on a port given explicitly
        # (the benchmark gives each process its own, to read its lock-wait seconds)
        serve_metrics="METRICS_PORT" in os.environ,
    ))
