"""The indexing facade: a batch of stream events -> AppView rows, in one transaction.

    indexer = Indexer(IndexingContext(cfg=cfg, redis=r, resolver=res, log=log, shards=[3]))
    async with conn.transaction():          # the runtime's batch transaction
        failed = await indexer.apply_batch(conn, events)
    # failed: [(index, exception)] of events rolled back to their savepoint; the rest applied
    deferred, failed = await indexer.apply_some(conn, events)   # the runtime's way: the events
    # another shard's batch in flight would make wait are left for the next batch (locks.lock_some)

Events are the stream event dicts of ``fleet.codec.firehose`` (create, update, delete,
account, identity, sync, repo) and of ``label_live`` (``{"type": "label", ...}``).

A batch is applied in one savepoint with no per-event savepoints (the fast path). If anything
in it fails, that savepoint is rolled back and the batch is applied again one event per
savepoint, so a poison event fails alone and its neighbours stay applied. Aggregate deltas and
notifications are collected per event and written once at the end of the batch.

Within the fast path, runs of simple events (like/repost/follow/block creates and deletes, post
creates: ``bulk_post``, profile creates and updates: ``bulk_profile``) are written with
multi-row statements by ``bulk``; the rest goes event by event, in order (``bulk.plan``, which
holds simple events past per-event ones they commute with). ``Indexer(ctx, bulk=False)`` (or
``INDEXER_BULK=0``) turns that off.

Record events go through their collection's plugin (``plugins``) via ``processor``; every
event also goes to ``actors.on_event`` (actor rows, ``actor_sync``, account status, handles),
label events to ``labels.apply_label``. A ``#account`` event with status ``deleted`` unindexes
the account (``unindex``). Records their lexicon rejects are skipped, as the official indexer
does (counted, not failures).

Metrics: ``rsky_indexing_events_total{kind,result}``, ``rsky_indexing_batch_fallbacks_total``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import psycopg
from prometheus_client import Counter

from ..db import arrays  # noqa: F401 - the fast list dumper for every connection of the process
from . import bulk as bulkmod
from .context import IndexingContext
from .locks import lock_batch, lock_some
from .plugin import InvalidRecord
from .plugins import registry
from .processor import Effects, Guard, WriteRejected, apply_record_event, load_guards
from .unindex import unindex_actor

__all__ = ["Indexer", "IndexingContext"]

EVENTS = Counter("rsky_indexing_events_total", "events applied by the indexing facade", ["kind", "result"])
FALLBACKS = Counter("rsky_indexing_batch_fallbacks_total", "batches re-applied one event per savepoint after a failure")

RECORD_TYPES = ("create", "update", "delete")


def _optional(module: str, attr: str) -> Optional[Callable[..., Any]]:
    """A handler from a sibling module that may not exist yet (then: not handled)."""
    try:
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr, None)
    except ImportError:
        return None


def rejected(e: BaseException) -> bool:
    """Failures the official indexer also has for this record, so it is never indexed there:
    a plugin's late refusal, or text PostgreSQL cannot store (NUL)."""
    if isinstance(e, WriteRejected):
        return True
    return isinstance(e, psycopg.errors.DataError) and "0x00" in str(e)


class Indexer:
    def __init__(self, ctx: IndexingContext, bulk: Optional[bool] = None) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.plugins = registry(ctx.log)
        self.on_actor_event = _optional("actors", "on_event")
        self.apply_label = _optional("labels", "apply_label")
        cfg_bulk = getattr(ctx.cfg, "INDEXER_BULK", True) if ctx.cfg is not None else True
        self.bulk = bool(cfg_bulk) if bulk is None else bulk

    async def apply_batch(self, conn: Any, events: list[dict[str, Any]]) -> list[tuple[int, BaseException]]:
        """Apply ``events`` in order inside the caller's transaction; returns the failed ones."""
        if not events:
            return []
        await lock_batch(conn, events)  # cross-shard order (locks.py): before the first savepoint
        return await self._apply_locked(conn, events)

    async def apply_some(
        self, conn: Any, events: list[dict[str, Any]], must: int = 0
    ) -> tuple[list[int], list[tuple[int, BaseException]]]:
        """Apply ``events`` but those whose cross-shard locks another shard's batch holds now
        (``locks.lock_some``; never one of the first ``must``): returns the indexes of those
        deferred, which the caller applies first thing in its next batch, and the failed ones."""
        if not events:
            return [], []
        deferred = await lock_some(conn, events, must)
        if not deferred:
            return [], await self._apply_locked(conn, events)
        skip = set(deferred)
        idx = [i for i in range(len(events)) if i not in skip]
        failed = await self._apply_locked(conn, [events[i] for i in idx])
        return deferred, [(idx[i], e) for i, e in failed]

    async def _apply_locked(self, conn: Any, events: list[dict[str, Any]]) -> list[tuple[int, BaseException]]:
        try:
            async with conn.transaction():
                fx = Effects()
                guards = await load_guards(conn, self._uris(events))
                if self.bulk:
                    await self._apply_segments(conn, events, guards, fx)
                else:
                    for ev in events:
                        await self._apply_one(conn, ev, guards, fx)
                await fx.flush(conn)
            return []
        except Exception as e:  # noqa: BLE001 - any failure: retry one by one to isolate it
            FALLBACKS.inc()
            self.log.warning("batch_fallback", events=len(events), error=f"{type(e).__name__}: {e}")
        return await self._apply_one_by_one(conn, events)

    async def _apply_one_by_one(self, conn: Any, events: list[dict[str, Any]]) -> list[tuple[int, BaseException]]:
        errors: list[tuple[int, BaseException]] = []
        fx = Effects()
        guards = await load_guards(conn, self._uris(events))
        for i, ev in enumerate(events):
            efx = Effects()
            try:
                async with conn.transaction():
                    await self._apply_one(conn, ev, guards, efx)
                fx.merge(efx)
            except Exception as e:  # noqa: BLE001 - reported to the runtime, which dead-letters
                if rejected(e):  # rolled back to the savepoint: skipped, as the official does
                    EVENTS.labels("record", "invalid").inc()
                    self.log.info("record_rejected", seq=ev.get("seq"), did=ev.get("did"), collection=ev.get("collection"), rkey=ev.get("rkey"), error=str(e))
                    uri = self._uri(ev)
                    if uri:
                        guards.update(await load_guards(conn, [uri]))
                    continue
                errors.append((i, e))
                EVENTS.labels(ev.get("type", "?"), "error").inc()
                self.log.error("event_failed", seq=ev.get("seq"), did=ev.get("did"), type=ev.get("type"), error=f"{type(e).__name__}: {e}")
                uri = self._uri(ev)
                if uri:
                    guards.update(await load_guards(conn, [uri]))
        await fx.flush(conn)
        return errors

    async def _apply_segments(self, conn: Any, events: list[dict[str, Any]], guards: dict[str, Guard], fx: Effects) -> None:
        """Runs of simple events through ``bulk``, everything else one by one (``bulk.plan``)."""

        async def one(ev: dict[str, Any]) -> None:
            # the per-event path may write actor rows: an account or identity event, or the handle
            # check of a record event whose account ``plan`` found due; other record events write
            # none, so the accounts found due stay the answer (``bulk._actor_effects``)
            if env.due is not None and (ev.get("type") not in RECORD_TYPES or ev.get("did") in env.due):
                env.due = None
            await self._apply_one(conn, ev, guards, fx)

        env = bulkmod.Env(
            plugins=self.plugins,
            apply_one=one,
            ctx=self.ctx,
            actor_effects=self.on_actor_event is not None,
            log=self.log,
            count=lambda result, n: EVENTS.labels("record", result).inc(n),
        )
        due: set[str] = set()
        steps = await bulkmod.plan(conn, events, guards, self.plugins, env.actor_effects, due_out=due)
        env.due = due
        for step in steps:
            if step.bulk:
                await bulkmod.apply_run(conn, step.events, guards, fx, env)
            else:
                await one(step.events[0])

    @staticmethod
    def _uri(ev: dict[str, Any]) -> Optional[str]:
        if ev.get("type") in RECORD_TYPES and ev.get("collection") and ev.get("rkey") is not None:
            return f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
        return None

    def _uris(self, events: list[dict[str, Any]]) -> list[str]:
        seen: dict[str, None] = {}
        for ev in events:
            if ev.get("collection") in self.plugins:
                u = self._uri(ev)
                if u:
                    seen[u] = None
        return list(seen)

    async def _apply_one(self, conn: Any, ev: dict[str, Any], guards: dict[str, Guard], fx: Effects) -> None:
        t = ev.get("type")
        if t == "label":
            if self.apply_label is not None:
                await self.apply_label(conn, ev, self.ctx)
            EVENTS.labels("label", "ok" if self.apply_label else "unhandled").inc()
            return
        if t in RECORD_TYPES:
            plugin = self.plugins.get(ev.get("collection", ""))
            if plugin is None:
                EVENTS.labels("record", "unhandled").inc()
            else:
                uri = self._uri(ev)
                g = guards.setdefault(uri, Guard()) if uri else Guard()
                try:
                    result = await apply_record_event(conn, plugin, ev, g, fx)
                    EVENTS.labels("record", result).inc()
                except InvalidRecord as e:
                    EVENTS.labels("record", "invalid").inc()
                    self.log.info("record_invalid", seq=ev.get("seq"), did=ev.get("did"), collection=ev.get("collection"), rkey=ev.get("rkey"), error=str(e))
        if self.on_actor_event is not None:
            await self.on_actor_event(conn, ev, self.ctx)
        if t == "account" and ev.get("active") is False and ev.get("status") == "deleted":
            await unindex_actor(conn, ev["did"], fx, ev.get("seq"))
            EVENTS.labels("account_deleted", "ok").inc()
        elif t not in RECORD_TYPES:
            EVENTS.labels(t or "?", "ok" if self.on_actor_event else "unhandled").inc()
