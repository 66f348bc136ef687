"""Redis key names shared by every role (the contract in DESIGN.md, "Streams").

Names stay compatible with the old pipeline: with one shard the streams are the bare names
(``firehose_live``); with N > 1 each shard has its own stream suffixed ``:<k>``.
Every command touches one key at a time (no MULTI across shard streams), so the streams may
live on different Redis Cluster nodes.
"""

from __future__ import annotations

FIREHOSE_LIVE = "firehose_live"
FIREHOSE_BACKFILL = "firehose_backfill"
REPO_BACKFILL = "repo_backfill"
LABEL_LIVE = "label_live"

INDEXER_GROUP = "indexer"  # consumer group of every indexer stream; one consumer per shard
FETCHER_GROUP = "fetcher"  # consumer group of repo_backfill; fetchers share it

DEAD_LETTER_SUFFIX = ":dlq"


def shard_stream(base: str, shard: int, shard_count: int) -> str:
    """Stream name of ``base`` for ``shard`` (the bare name when there is one shard)."""
    if shard_count <= 1:
        return base
    return f"{base}:{shard}"


def dead_letter(stream: str) -> str:
    """Dead-letter stream of a stream: entries that failed too often, with their error."""
    return stream + DEAD_LETTER_SUFFIX


def relay_cursor_key(stream: str, host: str) -> str:
    """Key holding the last durably written relay ``seq`` (old pipeline: ``cursorFor``)."""
    return f"{stream}:cursor:{strip_scheme(host)}"


def strip_scheme(host: str) -> str:
    for prefix in ("https://", "http://", "wss://", "ws://"):
        if host.startswith(prefix):
            return host[len(prefix):].rstrip("/")
    return host.rstrip("/")


def indexer_streams(shard: int, shard_count: int) -> list[str]:
    """The streams shard ``shard`` consumes, live first."""
    return [
        shard_stream(FIREHOSE_LIVE, shard, shard_count),
        shard_stream(FIREHOSE_BACKFILL, shard, shard_count),
    ]


# Backfill bookkeeping (written by the listRepos discovery and the fetchers, read by lag.py).
BACKFILL_STATS = "backfill:stats"  # hash: queued, done, failed, gone, records, skipped_pages


def listrepos_cursor_key(host: str) -> str:
    """Last listRepos cursor whose page is durably queued for ``host``."""
    return f"{REPO_BACKFILL}:cursor:{strip_scheme(host)}"


def listrepos_done_key(host: str) -> str:
    """Set (to the finish time) once listRepos of ``host`` has been paged to the end."""
    return f"{REPO_BACKFILL}:done:{strip_scheme(host)}"


def listrepos_skipped_key(host: str) -> str:
    """Stream of skipped listRepos ranges for ``host`` (cursor, error, attempts): re-tryable."""
    return f"{REPO_BACKFILL}:skipped:{strip_scheme(host)}"
