"""Actor-level indexing: ``actor``, ``actor_sync``, account status, handles, account deletion.

The facade calls :func:`on_event` for every stream event, beside the record plugins, as the
official subscription does (``data-plane/server/subscription.js``):

=============================  ================================================================
event                          effect (official function)
=============================  ================================================================
create / update / delete       ``actor_sync`` = (commit, rev) (``setCommitLastSeen``) and
                               :func:`index_handle` not forced (``indexHandle``)
sync                           the same, with the CAR root as commit
repo (backfill end of repo)    the same (ours: the official backfill creates no actor rows)
identity                       :func:`index_handle` forced
account, deleted               nothing here: the facade runs ``fleet.indexing.unindex``
                               (``deleteActor`` + ``unindexActor``) with its batch effects
account, other                 ``actor.upstreamStatus`` (``updateActorStatus``): NULL when
                               active, else deactivated/suspended/takendown; only an existing
                               actor row is updated
=============================  ================================================================

**Handle rule** (``indexHandle``): a non-forced call re-resolves only when the actor has no row
yet, when its row is more than a day older than the event, or when its handle is NULL and the
row is more than an hour older. Resolution: the DID document (fresh for #identity) must have a
handle (``alsoKnownAs`` ``at://``), a PDS endpoint and an ``#atproto`` key, else nothing is
written (the official throws); the handle counts only if it resolves back to the DID, and is
stored lowercased, else NULL. An actor holding that handle already loses it (NULL). The row's
``indexedAt`` is the event's time.

**Replays** (ours): an event older than the actor row's ``indexedAt`` does not rewrite it, and
``actor_sync`` never goes back to an older ``repoRev``, so a replayed or late (backfill) event
changes nothing.

Metrics: ``rsky_indexer_actor_events_total{kind}`` (kind: handle_resolved, handle_skipped,
handle_failed, status, status_unknown).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from prometheus_client import Counter
from psycopg.rows import dict_row

from ..identity.did import DidError, handle_from_doc, pds_endpoint, signing_key

ACTOR_EVENTS = Counter("rsky_indexer_actor_events_total", "actor-level effects of stream events", ["kind"])

DAY_S = 86400.0
HOUR_S = 3600.0
ACCOUNT_STATUSES = ("deactivated", "suspended", "takendown")
KEY_TYPES = ("Multikey", "EcdsaSecp256k1VerificationKey2019", "EcdsaSecp256r1VerificationKey2019")


class IdentityUnavailable(Exception):
    """The DID document is missing or lacks a handle, PDS or key: the official writes nothing."""


async def on_event(tx: Any, ev: dict, ctx: Any) -> None:
    """Apply the actor-level effects of one stream event (see the module table)."""
    t = ev.get("type")
    did = ev.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        return
    time = ev.get("time")
    if t in ("create", "update", "delete", "sync", "repo"):
        commit = ev.get("commit")
        if commit:
            await set_commit_last_seen(tx, did, commit, ev.get("rev"))
        if isinstance(time, str):
            await index_handle(tx, did, time, ctx, force=False)
    elif t == "identity":
        if isinstance(time, str):
            await index_handle(tx, did, time, ctx, force=True)
    elif t == "account":
        if ev.get("active") or ev.get("status") != "deleted":
            await update_actor_status(tx, did, bool(ev.get("active")), ev.get("status"), ctx)


async def set_commit_last_seen(tx: Any, did: str, commit: str, rev: str | None) -> None:
    """``actor_sync`` upsert; an older rev never replaces a newer one (TIDs sort as text)."""
    await tx.execute(
        'INSERT INTO actor_sync (did, "commitCid", "repoRev") VALUES (%s, %s, %s) '
        'ON CONFLICT (did) DO UPDATE SET "commitCid" = excluded."commitCid", "repoRev" = excluded."repoRev" '
        'WHERE actor_sync."repoRev" IS NULL OR excluded."repoRev" IS NULL OR actor_sync."repoRev" <= excluded."repoRev"',
        (did, commit, rev),
    )


def _ts(value: Any) -> float | None:
    return _ts_text(value) if isinstance(value, str) else _ts_text(str(value))


@lru_cache(maxsize=8192)  # an actor's indexedAt recurs for each of its events; parsing costs ~1.5 us
def _ts_text(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def needs_handle_reindex(row: dict | None, time: str) -> bool:
    """``needsHandleReindex``: no row; row a day old; NULL handle and row an hour old."""
    return True if row is None else handle_due(row["handle"], row["indexedAt"], time)


def handle_due(handle: Any, indexed_at: Any, time: str) -> bool:
    """``needs_handle_reindex`` of an actor row given as its handle and ``indexedAt``."""
    now, then = _ts(time), _ts(indexed_at)
    if now is None or then is None:
        return True
    diff = now - then
    return diff > DAY_S or (handle is None and diff > HOUR_S)


async def verified_handle(resolver: Any, did: str, fresh: bool) -> str | None:
    """The DID's handle if it resolves back to the DID (lowercased), else None.

    Raises :class:`IdentityUnavailable` (no usable DID document) or ``DidError``.
    """
    doc = await resolver.resolve_did(did, fresh=fresh)
    if doc is None:
        raise IdentityUnavailable("did_not_found")
    handle = handle_from_doc(doc)
    key = signing_key(doc)
    if not handle:
        raise IdentityUnavailable("no_handle")
    if pds_endpoint(doc) is None:
        raise IdentityUnavailable("no_pds")
    if key is None or key[0] not in KEY_TYPES:
        raise IdentityUnavailable("no_key")
    resolved = await resolver.resolve_handle(handle, fresh=fresh)
    return handle.lower() if resolved == did else None


async def index_handle(tx: Any, did: str, time: str, ctx: Any, force: bool = False) -> None:
    """``indexHandle``: (re)resolve and store the actor's verified handle when due."""
    async with tx.cursor(row_factory=dict_row) as cur:
        await cur.execute('SELECT handle, "indexedAt" FROM actor WHERE did = %s', (did,))
        row = await cur.fetchone()
    if not force and not needs_handle_reindex(row, time):
        return
    if row is not None:
        then, now = _ts(row["indexedAt"]), _ts(time)
        if then is not None and now is not None and now < then:
            ACTOR_EVENTS.labels("handle_skipped").inc()  # a replayed or late event
            return
    resolver = getattr(ctx, "resolver", None)
    if resolver is None or not hasattr(resolver, "resolve_handle"):
        # ctx.resolver must be a fleet.identity.resolver.IdentityResolver (DID docs + handles)
        ACTOR_EVENTS.labels("handle_failed").inc()
        log = getattr(ctx, "log", None)
        if log is not None:
            log.warning("handle_not_indexed", did=did, reason="no_handle_resolver")
        return
    try:
        handle = await verified_handle(resolver, did, fresh=force)
    except (IdentityUnavailable, DidError) as e:
        ACTOR_EVENTS.labels("handle_failed").inc()
        log = getattr(ctx, "log", None)
        if log is not None:
            log.warning("handle_not_indexed", did=did, reason=getattr(e, "reason", str(e)))
        return
    if handle is not None:
        await tx.execute("UPDATE actor SET handle = NULL WHERE handle = %s AND did <> %s", (handle, did))
    await tx.execute(
        'INSERT INTO actor (did, handle, "indexedAt") VALUES (%s, %s, %s) '
        'ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, "indexedAt" = excluded."indexedAt"',
        (did, handle, time),
    )
    ACTOR_EVENTS.labels("handle_resolved").inc()


async def update_actor_status(tx: Any, did: str, active: bool, status: Any, ctx: Any = None) -> None:
    """``updateActorStatus``: NULL when active, else the status; unknown statuses are skipped."""
    if active:
        upstream = None
    elif status in ACCOUNT_STATUSES:
        upstream = status
    else:
        ACTOR_EVENTS.labels("status_unknown").inc()
        log = getattr(ctx, "log", None)
        if log is not None:
            log.warning("account_status_unknown", did=did, status=str(status))
        return
    await tx.execute('UPDATE actor SET "upstreamStatus" = %s WHERE did = %s', (upstream, did))
    ACTOR_EVENTS.labels("status").inc()
