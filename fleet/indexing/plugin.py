"""The shape of a collection plugin (one module per collection under ``plugins/``).

Mirrors the official indexer (``RecordProcessor`` options): plain functions registered by
NSID, no class hierarchy. ``tx`` is a psycopg ``AsyncConnection`` inside the batch's
transaction with ``search_path`` set to the AppView schema, so SQL names tables unqualified.
All SQL is parameterised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

Row = dict[str, Any]


class InvalidRecord(ValueError):
    """The record does not match its lexicon; the official indexer skips such records."""


@dataclass
class RecordOp:
    uri: str  # at://did/collection/rkey
    did: str
    collection: str
    rkey: str
    cid: str
    record: dict[str, Any]  # atproto JSON ($link, $bytes)
    json: str  # record.json text, byte-exact
    indexed_at: str  # the event's time (firehose) or the clock (backfill)
    rev: str | None = None
    seq: int | None = None


@dataclass
class Notif:
    did: str
    author: str
    recordUri: str
    recordCid: str
    reason: str
    reasonSubject: str | None
    sortAt: str


@dataclass
class AggDelta:
    """``table.column += delta`` for the row keyed ``key`` (post_agg by uri, profile_agg by did)."""

    table: str
    key: str
    column: str
    delta: int


@dataclass
class Plugin:
    collection: str
    validate: Callable[[dict[str, Any]], None]  # raises InvalidRecord
    insert: Callable[[Any, RecordOp], Awaitable[Optional[Row]]]  # inserted row, None if it existed
    delete: Callable[[Any, str], Awaitable[Optional[Row]]]  # deleted row by uri, None if absent
    find_duplicate: Callable[[Any, RecordOp], Awaitable[Optional[str]]] = None  # type: ignore[assignment]
    notifs_for_insert: Callable[[Row], list[Notif]] = lambda row: []
    notifs_for_delete: Callable[[Row, Optional[Row]], tuple[list[Notif], list[str]]] = lambda d, r: ([], [])
    aggregates: Callable[[Row, int], list[AggDelta]] = lambda row, sign: []  # sign +1 insert, -1 delete
    promote_duplicate_on_delete: bool = True
    # the row leaves the collection table to become a duplicate (``duplicates.install``): by
    # default ``delete``; a repost keeps its ``feed_item``, as a duplicate repost has one
    demote: Optional[Callable[[Any, str], Awaitable[Optional[Row]]]] = None
