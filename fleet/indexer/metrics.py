"""Indexer metrics (Prometheus default registry, one set per process).

| metric | type | labels | meaning |
|---|---|---|---|
| ``rsky_indexer_batches_total`` | counter | shard | batches committed |
| ``rsky_indexer_events_total`` | counter | shard, type | events applied (create, update, delete, account, identity, sync, repo...) |
| ``rsky_indexer_event_failures_total`` | counter | shard | events whose apply failed (left pending, retried) |
| ``rsky_indexer_batch_failures_total`` | counter | shard, kind | whole-transaction failures: ``database`` (unreachable, retried in hand) or ``error`` (bisected) |
| ``rsky_indexer_dead_lettered_total`` | counter | shard, reason | entries moved to a dead-letter stream: ``bad_entry`` or ``max_deliveries`` |
| ``rsky_indexer_batch_seconds`` | histogram | shard | read-to-ack time of a batch |
| ``rsky_indexer_commit_lag_seconds`` | histogram | shard | relay frame ``time`` -> our commit, live events |
| ``rsky_indexer_pending`` | gauge | shard, stream | entries delivered to the shard and not yet acknowledged |
| ``rsky_indexer_group_stuck`` | gauge | shard, stream | 1 while the group cannot deliver entries that wait (see groupcheck) |
| ``rsky_indexer_group_heals_total`` | counter | shard, stream | times the group was rewound to re-deliver stranded entries |
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ..metrics import BatchHistogram

BATCHES = Counter("rsky_indexer_batches_total", "batches committed", ["shard"])
EVENTS = Counter("rsky_indexer_events_total", "events applied", ["shard", "type"])
EVENT_FAILURES = Counter("rsky_indexer_event_failures_total", "events whose apply failed", ["shard"])
BATCH_FAILURES = Counter("rsky_indexer_batch_failures_total", "whole-transaction failures", ["shard", "kind"])
DEAD_LETTERED = Counter("rsky_indexer_dead_lettered_total", "entries moved to a dead-letter stream", ["shard", "reason"])
BATCH_SECONDS = Histogram(
    "rsky_indexer_batch_seconds",
    "read-to-ack time of a batch",
    ["shard"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMIT_LAG = BatchHistogram(  # observed a batch at a time (fleet/metrics.py)
    "rsky_indexer_commit_lag_seconds",
    "relay frame time to commit, live events",
    ["shard"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
PENDING = Gauge("rsky_indexer_pending", "entries delivered and not yet acknowledged", ["shard", "stream"])
GROUP_STUCK = Gauge("rsky_indexer_group_stuck", "1 while the group cannot deliver waiting entries", ["shard", "stream"])
GROUP_HEALS = Counter("rsky_indexer_group_heals_total", "group rewinds that re-deliver stranded entries", ["shard", "stream"])
