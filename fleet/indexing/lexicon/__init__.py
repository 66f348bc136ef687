"""Record validation with the official indexer's verdicts (``schema.check`` / ``matches``).

The official indexer (@atproto/bsky 0.0.280) validates every created or updated record against
its collection's lexicon before indexing it, and skips it entirely when that fails (no ``record``
row either); it re-checks a duplicate with ``matches`` before promoting it. These two functions
give the same verdicts for records in atproto JSON form (as fleet.codec.atjson decodes them).

>>> validate("app.bsky.feed.like", {"$type": "app.bsky.feed.like", "createdAt": "2024-01-01T00:00:00Z",
...     "subject": {"uri": "at://did:plc:abc/app.bsky.feed.post/3k", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}})
>>> matches("app.bsky.feed.like", {"$type": "app.bsky.feed.like"})
False

Every def compiles once, on first use of its collection (``warm()`` compiles all up front).
"""

from __future__ import annotations

from typing import Any, Callable

from fleet.indexing.lexicon.compile import Checker, Invalid
from fleet.indexing.lexicon.registry import LexiconError, Registry, load_documents
from fleet.indexing.plugin import InvalidRecord

# The record collections the official indexer handles (its plugins), each checked against the
# main def of the lexicon with the same NSID.
COLLECTIONS: tuple[str, ...] = (
    "app.bsky.actor.profile",
    "app.bsky.actor.status",
    "app.bsky.feed.generator",
    "app.bsky.feed.like",
    "app.bsky.feed.post",
    "app.bsky.feed.postgate",
    "app.bsky.feed.repost",
    "app.bsky.feed.threadgate",
    "app.bsky.graph.block",
    "app.bsky.graph.follow",
    "app.bsky.graph.list",
    "app.bsky.graph.listblock",
    "app.bsky.graph.listitem",
    "app.bsky.graph.referencelistoptout",
    "app.bsky.graph.starterpack",
    "app.bsky.graph.verification",
    "app.bsky.labeler.service",
    "app.bsky.notification.declaration",
    "chat.bsky.actor.declaration",
    "com.germnetwork.declaration",
)

# Collections whose plugin switches the create/update check off (chat-declaration.js:
# ``processor.assertValidRecord = () => null``): validate() accepts any record there, while
# matches() still answers with the lexicon, as the official ``matchesSchema`` does.
UNCHECKED: frozenset[str] = frozenset({"chat.bsky.actor.declaration"})

_registry: Registry | None = None
_checkers: dict[str, Checker] = {}


def _checker(collection: str) -> Checker:
    fn = _checkers.get(collection)
    if fn is None:
        if collection not in COLLECTIONS:
            raise LexiconError(f"no lexicon for collection {collection!r}")
        global _registry
        if _registry is None:
            _registry = Registry(load_documents())
        fn = _checkers[collection] = _registry.checker(collection)
    return fn


def warm() -> None:
    """Compile every collection's checker now (a worker calls this once at start)."""
    for collection in COLLECTIONS:
        _checker(collection)


def validate(collection: str, record: dict[str, Any]) -> None:
    """Raise :class:`InvalidRecord` (message names the path) unless ``record`` passes ``check``.

    Raises :class:`LexiconError` for a collection outside :data:`COLLECTIONS`. Collections in
    :data:`UNCHECKED` accept every record, as the official indexer does.
    """
    fn = _checkers.get(collection) or _checker(collection)
    if collection in UNCHECKED:
        return
    try:
        fn(record)
    except Invalid as e:
        raise InvalidRecord(f"{collection}: {e.message} at {e.where()}") from None


def validator_for(collection: str) -> Callable[[dict[str, Any]], None]:
    """``Plugin.validate`` for one collection: ``validator_for("app.bsky.feed.like")(record)``."""
    fn = _checker(collection)
    if collection in UNCHECKED:
        return lambda record: None

    def check(record: dict[str, Any]) -> None:
        try:
            fn(record)
        except Invalid as e:
            raise InvalidRecord(f"{collection}: {e.message} at {e.where()}") from None

    return check


def matches(collection: str, record: Any) -> bool:
    """True when ``record`` passes the collection's lexicon (the official ``matchesSchema``)."""
    fn = _checkers.get(collection) or _checker(collection)
    try:
        fn(record)
    except Invalid:
        return False
    return True


__all__ = ["COLLECTIONS", "UNCHECKED", "InvalidRecord", "LexiconError", "matches", "validate", "validator_for", "warm"]
