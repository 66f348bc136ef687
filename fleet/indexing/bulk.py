"""The bulk fast path: runs of simple record events written with multi-row statements.

The per-event processor (``processor.apply_record_event``) costs 3-6 round trips per event.
Most of the firehose is likes, reposts, follows and blocks, whose writes are independent of
each other except through two keys: the record's uri and its duplicate key (creator + subject).
This module applies a run of such events with a fixed number of statements, and gives exactly
the rows, aggregates and notifications that applying them one by one in order gives.

**Simple event** (``simple``): with a ``rev``, a create or delete of a ``like``, ``repost``,
``follow`` or ``block``, a post create (``bulk_post``) or a profile create or update
(``bulk_profile``), whose rev-guard verdict (``processor.decide``, same guards as the
per-event path) is one the chunk writes (``_ACTIONS``). Anything else (other updates, post
deletes, gates, account events...) stays on the per-event path. ``plan`` orders the batch
into steps: a simple event waits in the pending run while later per-event events that
commute with it (``movable_past``: e.g. a like and a reply in a gated thread) are applied;
a barrier flushes the run first. An event of a pending event's collection and account is a
barrier (it may be the same uri or duplicate key).

**Why a chunk equals one-by-one.** Inside a chunk deletes are written first, then creates in
event order (``INSERT ... SELECT ... ORDER BY ordinality``, so of two creates with one duplicate
key the earlier wins and the later becomes its ``duplicate_record``, as in sequence). Events on
different uris and duplicate keys commute. Two cases do not, and end a chunk (``_cut``):

* a delete whose row has duplicates: it promotes one; that delete runs on the per-event path
  (a like's after the chunk, which goes on up to its account's next event: ``_cut``);
* a delete of the row holding a duplicate key that an earlier create of the chunk also holds
  (the create must become its duplicate first, then be promoted);
* a uri already written in the chunk (create then delete of one like in a batch): the next
  chunk, with the guards the first one left;
* a post create ``bulk_post.state`` refuses (replies already indexed, a gated thread), and an
  event whose verdict became one the chunk does not write (a ``bump``): per-event path.

After a cut the rest of the run re-reads its state (``_delete_state``), so the next chunk sees
the effects of the previous one. Actor effects (``actor_sync`` and the handle check of
``actors.on_event``) touch only actor tables, which the record writes do not read, so a chunk
writes them after its records: one ``actor_sync`` upsert (per did the last commit of the
highest rev, which is what the guarded upserts leave in sequence) and one ``actor`` read, made
only when ``plan`` found an account of the chunk due (``Env.due``; any actor write since makes
it read again); an event whose actor row is due for a handle re-resolution calls
``actors.index_handle`` itself.

Cross-shard order (``order.py``): notifications are stamped with the seq of their write
(``order.stamp``), so those to an account deleted after the write are dropped at flush; a new
repost whose subject was deleted or updated after it loses its feed item (``order.after_insert``
rule 4, one query per chunk: ``purged_after_many``).

**Plain inserts.** A chunk's creates have the verdict 'create', which the rev guard gives only
when no ``record`` row holds the uri (``processor.decide``; the guards are loaded with the
batch and kept current by every write of it, and only this shard writes the account's records).
A record's row in its collection's table, and a post's ``feed_item``, exist only with its
``record`` row. So the ``record`` and ``post`` rows (and the post's ``feed_item``) are written
with plain ``INSERT``s, and the like/repost/follow/block rows with the duplicate key as the only
arbiter (``ON CONFLICT (creator, key) DO NOTHING``): the check that ``ON CONFLICT`` makes before
each row costs one index descent per arbiter index (``ExecCheckIndexConstraints``: 13.6 % of the
PostgreSQL backend's CPU on the benchmark mix with every unique index an arbiter, perf,
2026-12-04). Were that invariant ever broken, the unique violation fails the batch, which the
facade applies again event by event on the per-event path, whose writes keep their
``ON CONFLICT`` clauses.

Failures: any exception leaves the batch to the facade, which rolls back and re-applies it one
event per savepoint on the per-event path, so a poison event fails alone as before.

The row builders below mirror the plugins' ``insert`` functions (``plugins/like.py``,
``repost.py``, ``follow.py``, ``block.py``); ``tests/test_bulk.py`` compares the two paths.

Metrics: ``rsky_indexing_bulk_events_total{action}`` (create, update, delete, skip, invalid) events
applied by the fast path; ``rsky_indexing_bulk_chunks_total`` chunks written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from prometheus_client import Counter as Metric
from psycopg.rows import dict_row

from . import actors, bulk_post, bulk_profile, duplicates, order
from .dates import normalize_datetime
from .plugin import InvalidRecord, Plugin
from .plugins._helpers import normalize_datetime_always
from .plugins.like import subject_fields
from .processor import Effects, Guard, apply_record_event, decide, make_op

BULK_EVENTS = Metric("rsky_indexing_bulk_events_total", "record events applied by the bulk fast path", ["action"])
BULK_CHUNKS = Metric("rsky_indexing_bulk_chunks_total", "chunks written by the bulk fast path")
_BULK = {a: BULK_EVENTS.labels(a) for a in ("create", "update", "delete", "skip", "invalid")}

LIKE, REPOST = "app.bsky.feed.like", "app.bsky.feed.repost"
FOLLOW, BLOCK = "app.bsky.graph.follow", "app.bsky.graph.block"


@dataclass(frozen=True)
class Table:
    """How one collection's rows are written in bulk (mirrors its plugin's ``insert``)."""

    name: str  # quoted SQL table name (a constant)
    columns: tuple[str, ...]  # inserted columns, quoted
    key_column: str  # the duplicate key beside ``creator``
    row: Callable[[Any], tuple[Any, ...]]  # RecordOp -> values in ``columns`` order (uri first)
    key: Callable[[dict[str, Any]], Any]  # record -> duplicate key value

    @property
    def names(self) -> tuple[str, ...]:
        """The column names unquoted: the keys of a row dict."""
        return tuple(c.strip('"') for c in self.columns)


def _interaction_row(op: Any) -> tuple[Any, ...]:
    s_uri, s_cid, v_uri, v_cid = subject_fields(op.record)
    return (op.uri, op.cid, op.did, s_uri, s_cid, v_uri, v_cid, normalize_datetime(op.record.get("createdAt")), op.indexed_at)


def _graph_row(op: Any) -> tuple[Any, ...]:
    return (op.uri, op.cid, op.did, op.record.get("subject"), normalize_datetime_always(op.record.get("createdAt")), op.indexed_at)


_INTERACTION_COLS = ("uri", "cid", "creator", "subject", '"subjectCid"', "via", '"viaCid"', '"createdAt"', '"indexedAt"')
_GRAPH_COLS = ("uri", "cid", "creator", '"subjectDid"', '"createdAt"', '"indexedAt"')

TABLES: dict[str, Table] = {
    LIKE: Table('"like"', _INTERACTION_COLS, "subject", _interaction_row, lambda r: subject_fields(r)[0]),
    REPOST: Table("repost", _INTERACTION_COLS, "subject", _interaction_row, lambda r: subject_fields(r)[0]),
    FOLLOW: Table("follow", _GRAPH_COLS, '"subjectDid"', _graph_row, lambda r: r.get("subject")),
    BLOCK: Table("actor_block", _GRAPH_COLS, '"subjectDid"', _graph_row, lambda r: r.get("subject")),
}


def uri_of(ev: dict[str, Any]) -> Optional[str]:
    if ev.get("type") in ("create", "update", "delete") and ev.get("collection") and ev.get("rkey") is not None:
        return f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}"
    return None


# Per-event collections a pending simple event may be moved past (see ``commutes``): which
# simple collections their writes and reads leave alone.
_INTERACTIONS = frozenset((LIKE, REPOST))
POST = "app.bsky.feed.post"
_FREE = frozenset((
    "app.bsky.actor.profile", "app.bsky.feed.generator", "app.bsky.graph.list", "app.bsky.graph.starterpack",
    "app.bsky.labeler.service", "app.bsky.actor.status", "chat.bsky.actor.declaration",
    "app.bsky.notification.declaration", "com.germnetwork.declaration",
))  # fmt: skip
_GATES = frozenset(("app.bsky.feed.threadgate", "app.bsky.feed.postgate"))
PROFILE = bulk_profile.NSID
_ACTIONS = {PROFILE: ("create", "update", "skip"), POST: ("create", "skip")}  # what a chunk writes, per collection
SIMPLE_COLLECTIONS = frozenset((*TABLES, POST, PROFILE))  # post creates: ``bulk_post``; profiles: ``bulk_profile``


def movable_past(ev: dict[str, Any], plugins: dict[str, Plugin], gated: Callable[[dict[str, Any]], bool]) -> frozenset[str]:
    """The simple collections whose pending events may be applied after ``ev`` instead of before.

    No post or gate code reads likes or blocks. A post delete or update removes the reposts'
    ``feed_item`` rows of that post. Thread-gate rules read follows: a reply (create or
    update) whose thread may have a gate (``gated``), and the gates themselves, keep follows
    in order. The ``_FREE`` collections touch only their own tables. A like, repost, follow
    or block on the per-event path (its uri twice in the batch, an update, a promoting
    delete) touches its own uri and its duplicate key (creator + subject), so it lets pass
    every pending event but those of its own collection and account (``_passes``); a follow
    keeps pending posts (gated replies read follows). Anything else (non-record events,
    other collections) is a barrier.
    """
    if ev.get("type") not in ("create", "update", "delete"):
        return frozenset()
    coll = ev.get("collection")
    if coll in _FREE or (coll not in plugins and coll not in TABLES and coll not in _GATES and coll != POST):
        return SIMPLE_COLLECTIONS  # pending post creates too: these read and write no post
    if coll in _GATES:
        return frozenset((LIKE, REPOST, BLOCK, PROFILE))
    if coll in TABLES:
        return SIMPLE_COLLECTIONS - {POST} if coll == FOLLOW else SIMPLE_COLLECTIONS
    if coll == POST:
        out = {LIKE, BLOCK, PROFILE}
        if ev["type"] == "create":
            out.add(REPOST)
        if ev["type"] == "delete" or not gated(ev):
            out.add(FOLLOW)
        return frozenset(out)
    return frozenset()


def _reply_root(ev: dict[str, Any]) -> Any:
    rec = ev.get("record")
    reply = rec.get("reply") if isinstance(rec, dict) else None
    root = reply.get("root") if isinstance(reply, dict) else None
    return root.get("uri") if isinstance(root, dict) else None


async def _gate_check(tx: Any, events: list[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    """``gated(ev)``: may this post event evaluate a thread gate (its root has or gets one)?"""
    if any(ev.get("collection") == "app.bsky.feed.threadgate" for ev in events):
        return lambda ev: True
    roots = sorted({r for ev in events if ev.get("collection") == POST and isinstance(r := _reply_root(ev), str)})
    gates: set[str] = set()
    if roots:
        cur = await tx.execute('SELECT "postUri" FROM thread_gate WHERE "postUri" = ANY(%s)', (roots,))
        gates = {r[0] for r in await cur.fetchall()}
    return lambda ev: ev.get("type") == "update" or (_reply_root(ev) is not None and (not isinstance(_reply_root(ev), str) or _reply_root(ev) in gates))


@dataclass
class Step:
    bulk: bool
    events: list[dict[str, Any]]


async def plan(
    tx: Any, events: list[dict[str, Any]], guards: dict[str, Guard], plugins: dict[str, Plugin], actor_effects: bool,
    due_out: Optional[set[str]] = None,
) -> list[Step]:
    """The order of application: runs of simple events (``bulk``) and single events.

    Equal to applying ``events`` in order: a simple event is held back in the pending run and
    applied after later per-event events only when it commutes with them (``movable_past``;
    same account: the later event has a higher rev, or the same commit; no handle
    re-resolution due for either account, which writes ``actor`` rows in event order).
    """
    uris = [uri_of(ev) for ev in events]
    due = await _due_dids(tx, events) if actor_effects else set()
    if due_out is not None:
        due_out.update(due)  # for ``_actor_effects``: the accounts whose actor row it must read
    gated = await _gate_check(tx, events)
    steps: list[Step] = []
    pending: list[dict[str, Any]] = []
    kinds: set[str] = set()
    owners: set[tuple[str, str]] = set()  # (collection, did) of pending events
    top: dict[str, tuple[str, Any]] = {}  # did -> (highest rev, its commit) among pending
    blocked = False  # a pending event's account is due a handle re-resolution

    def flush() -> None:
        nonlocal blocked
        if pending:
            steps.append(Step(True, pending.copy()))
            pending.clear()
            kinds.clear()
            owners.clear()
            top.clear()
        blocked = False

    for ev, uri in zip(events, uris):
        if simple(ev, uri, guards, plugins):
            pending.append(ev)
            kinds.add(ev["collection"])
            owners.add((ev["collection"], ev["did"]))
            t = top.get(ev["did"])
            if t is None or ev["rev"] > t[0]:
                top[ev["did"]] = (ev["rev"], ev.get("commit"))
            elif ev["rev"] == t[0] and ev.get("commit") != t[1]:
                top[ev["did"]] = (ev["rev"], object())  # two commits at one rev: nothing may pass
            blocked = blocked or ev.get("did") in due
            continue
        if pending and not _passes(ev, kinds, owners, top, blocked, due, plugins, gated):
            flush()
        steps.append(Step(False, [ev]))
    flush()
    return steps


def _passes(
    ev: dict[str, Any], kinds: set[str], owners: set[tuple[str, str]], top: dict[str, tuple[str, Any]], blocked: bool,
    due: set[str], plugins: dict[str, Plugin], gated: Callable[[dict[str, Any]], bool],
) -> bool:
    if blocked or ev.get("did") in due or not kinds <= movable_past(ev, plugins, gated):
        return False
    if ev.get("collection") in SIMPLE_COLLECTIONS and (ev["collection"], ev.get("did")) in owners:
        return False  # may be a pending event's uri, or share its duplicate key
    t = top.get(ev.get("did"))  # type: ignore[arg-type]
    if t is None:
        return True
    rev = ev.get("rev")
    return isinstance(rev, str) and (rev > t[0] or (rev == t[0] and ev.get("commit") == t[1]))


async def _due_dids(tx: Any, events: list[dict[str, Any]]) -> set[str]:
    """Accounts of the batch whose handle check would re-resolve (no actor row, or a stale one)."""
    dids = sorted({ev["did"] for ev in events if isinstance(ev.get("did"), str) and isinstance(ev.get("time"), str)})
    if not dids:
        return set()
    rows = await _actor_rows(tx, dids)
    return {
        ev["did"] for ev in events
        if isinstance(ev.get("did"), str) and isinstance(ev.get("time"), str)
        and _due(rows, ev)
    }  # fmt: skip


def simple(
    ev: dict[str, Any], uri: Optional[str], guards: dict[str, Guard], plugins: dict[str, Plugin]
) -> bool:
    """Can this event go through the bulk path (see the module docstring)?"""
    if uri is None or ev["collection"] not in SIMPLE_COLLECTIONS or ev["collection"] not in plugins:
        return False
    if not isinstance(ev.get("rev"), str):
        return False
    if ev["collection"] == PROFILE:  # creates and updates (``bulk_profile``)
        if ev["type"] not in ("create", "update"):
            return False
        return decide(ev, guards.get(uri) or Guard()) in ("create", "update", "skip")
    if ev["type"] not in ("create", "delete"):
        return False
    if ev["collection"] == POST and ev["type"] != "create":
        return False  # a post delete purges and re-evaluates: per-event path
    did = ev.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        return False
    return decide(ev, guards.get(uri) or Guard()) in ("create", "delete", "skip")


ApplyOne = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Env:
    """What a run needs from the facade."""

    plugins: dict[str, Plugin]
    apply_one: ApplyOne  # the per-event path (record + actor effects) for one event
    ctx: Any  # IndexingContext, for the handle check
    actor_effects: bool  # the facade runs ``actors.on_event``
    log: Any
    count: Callable[[str, int], None]  # rsky_indexing_events_total{kind=record,result} += n
    # accounts of the batch due a handle re-resolution as ``plan`` found them, while no actor
    # row has been written since (None: unknown, read them)
    due: Optional[set[str]] = None
    tally: Counter[str] = field(default_factory=Counter)  # counts of a run, added to the metrics at its end


async def apply_run(tx: Any, events: list[dict[str, Any]], guards: dict[str, Guard], fx: Effects, env: Env) -> None:
    """Apply a run of simple events (a bulk step of ``plan``) in order, in as few chunks as possible."""
    rest = events
    while rest:
        acts = {id(e): _action(e, guards) for e in rest}  # the guards change only between chunks
        state = await _delete_state(tx, [e for e in rest if acts[id(e)] == "delete"])
        posts = await bulk_post.state(tx, [e for e in rest if e["collection"] == POST and acts[id(e)] == "create"])
        chunk, singles, rest = _cut(rest, acts, state, posts, env.due if env.actor_effects else set())
        if chunk:
            await _apply_chunk(tx, chunk, acts, guards, fx, env)
        for single in singles:
            await env.apply_one(single)
    for action, n in env.tally.items():  # one metric update per action and run, not per event
        env.count(action, n)
        _BULK[action].inc(n)
    env.tally.clear()


def _action(ev: dict[str, Any], guards: dict[str, Guard]) -> str:
    return decide(ev, guards.get(uri_of(ev) or "") or Guard())


def _dup_key(coll: str, did: str, value: Any) -> tuple[str, str, str]:
    return (coll, did, value if isinstance(value, str) else repr(value))


@dataclass
class DeleteState:
    key: Any  # the row's duplicate key value, None when no row holds the uri
    has_dups: bool  # duplicate_record rows point to it (a delete would promote one)


async def _delete_state(tx: Any, deletes: list[dict[str, Any]]) -> dict[str, DeleteState]:
    """One query: for each uri to delete, its row's duplicate key and whether it has duplicates."""
    if not deletes:
        return {}
    uris = [uri_of(e) or "" for e in deletes]  # never empty: simple events have a uri
    # Scalar subqueries: only the uri's own collection table is probed (CASE evaluates one
    # branch), by its primary key. The former LEFT JOINs on CASE keys and EXISTS were planned,
    # at benchmark table sizes, as hash joins over whole tables (follow, repost, actor_block)
    # and a hashed scan of all of duplicate_record: 3.2 -> 2.0 us of execution per event on
    # the benchmark mix (pg_stat_statements, 2026-12-07).
    cur = await tx.execute(
        "SELECT u.uri, CASE u.c "
        f"WHEN '{LIKE}' THEN (SELECT l.subject FROM \"like\" l WHERE l.uri = u.uri) "
        f"WHEN '{REPOST}' THEN (SELECT r.subject FROM repost r WHERE r.uri = u.uri) "
        f"WHEN '{FOLLOW}' THEN (SELECT f.\"subjectDid\" FROM follow f WHERE f.uri = u.uri) "
        f"WHEN '{BLOCK}' THEN (SELECT b.\"subjectDid\" FROM actor_block b WHERE b.uri = u.uri) END, "
        '(SELECT true FROM duplicate_record d WHERE d."duplicateOf" = u.uri LIMIT 1) '
        "FROM unnest(%s::varchar[], %s::varchar[]) AS u(uri, c)",
        (uris, [e["collection"] for e in deletes]),
    )
    return {u: DeleteState(k, bool(d) and k is not None) for u, k, d in await cur.fetchall()}


def _cut(
    events: list[dict[str, Any]], acts: dict[int, str], state: dict[str, DeleteState], posts: dict[str, str],
    due: Optional[set[str]] = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(chunk, events for the per-event path after it, rest) — the longest prefix that commutes.

    ``posts``: post creates that need the per-event path (``bulk_post.state``); a post create
    that refers to a post created at or after it in the run goes there too.

    A like delete that promotes a duplicate (*deferred*) leaves the chunk without ending it: it
    goes to the per-event path after the chunk, which equals sequence because the rest of the
    chunk commutes with it. The chunk ends before the next event of its account (its uri, its
    duplicates and their key belong to that account); other accounts' events touch only other
    uris and keys, and where they meet it, at the subject's ``post_agg`` counts and
    notifications, the effects add up in any order (no rule reads likes; a promoted repost's
    feed item reads its subject's history, which is left out here). Not when its
    account is due a handle re-resolution (``due``; None: unknown), which writes ``actor`` rows
    other events' handle checks read, and not first in the chunk (it simply goes first). On the
    benchmark mix such deletes ended some 200 chunks per 100,000 events, and the rest of each
    run paid every per-chunk statement (about 25) again.

    A like/repost/follow/block created and then deleted in the chunk (a *pair*) stays in it: the
    chunk writes that delete after its creates (``_apply_chunk``), which equals sequence when no
    other create of the chunk after the created one has its duplicate key (it would have become
    the created one's duplicate, then been promoted)."""
    created: set[tuple[str, str, str]] = set()
    last_create: dict[tuple[str, str, str], int] = {}  # duplicate key -> index of its last create
    creates: dict[str, tuple[int, dict[str, Any], tuple[str, str, str]]] = {}  # uri -> its create in the chunk
    paired: set[tuple[str, str, str]] = set()  # keys of created-then-deleted records
    post_at = {uri_of(e): i for i, e in enumerate(events) if e["collection"] == POST}
    seen: set[Optional[str]] = set()
    deferred: list[dict[str, Any]] = []  # promoting like deletes, after the chunk (doc)
    deferred_dids: set[str] = set()

    def upto(i: int) -> list[dict[str, Any]]:
        head = events[:i]
        if deferred:
            out = {id(e) for e in deferred}
            head = [e for e in head if id(e) not in out]
        return head

    for i, ev in enumerate(events):
        if ev["did"] in deferred_dids:  # its account's next event: after the deferred delete
            return upto(i), deferred, events[i:]
        action = acts[id(ev)]
        u = uri_of(ev)
        if u in seen:  # a uri twice: the next chunk, after this one's writes (and guards)
            c = creates.pop(u or "", None)
            if c is None or action != "delete" or not ev["rev"] >= c[1]["rev"] or last_create.get(c[2]) != c[0]:
                return upto(i), deferred, events[i:]
            paired.add(c[2])  # a pair: the delete is written after the chunk's creates
            continue
        seen.add(u)
        if action not in _ACTIONS.get(ev["collection"], ("create", "delete", "skip")):
            return upto(i), deferred + [ev], events[i + 1 :]  # e.g. a create that became a 'bump' in this batch
        if action == "create" and ev["collection"] == POST:
            u = uri_of(ev) or ""
            if u in posts or any(post_at.get(r, -1) >= i for r in bulk_post.refers_to(ev)):
                return upto(i), deferred + [ev], events[i + 1 :]
        elif action == "create" and ev["collection"] in TABLES:
            rec = ev.get("record")
            if isinstance(rec, dict):
                key = _dup_key(ev["collection"], ev["did"], TABLES[ev["collection"]].key(rec))
                if key in paired:  # would have been the paired record's duplicate or promoted
                    return upto(i), deferred, events[i:]
                created.add(key)
                last_create[key] = i
                creates[u or ""] = (i, ev, key)
        elif action == "delete":
            st = state.get(uri_of(ev) or "")
            if st is None or st.key is None:
                continue
            if st.has_dups:
                if ev["collection"] == LIKE and due is not None and ev["did"] not in due and upto(i):
                    deferred.append(ev)
                    deferred_dids.add(ev["did"])
                    continue
                return upto(i), deferred + [ev], events[i + 1 :]
            if _dup_key(ev["collection"], ev["did"], st.key) in created:
                return upto(i), deferred, events[i:]
    return upto(len(events)), deferred, []


async def _apply_chunk(
    tx: Any, chunk: list[dict[str, Any]], acts: dict[int, str], guards: dict[str, Guard], fx: Effects, env: Env
) -> None:
    BULK_CHUNKS.inc()
    deletes: list[dict[str, Any]] = []
    creates: list[tuple[dict[str, Any], Any]] = []  # (event, RecordOp)
    updates: list[Any] = []  # RecordOps of profile updates
    for ev in chunk:
        action = acts[id(ev)]
        if action == "skip":
            env.tally["skip"] += 1
        elif action == "delete":
            deletes.append(ev)
        else:
            plugin = env.plugins[ev["collection"]]
            try:
                plugin.validate(ev["record"])
            except InvalidRecord as e:
                env.tally["invalid"] += 1
                env.log.info("record_invalid", seq=ev.get("seq"), did=ev.get("did"), collection=ev.get("collection"), rkey=ev.get("rkey"), error=str(e))
                continue
            if action == "update":
                updates.append(make_op(ev))
            else:
                creates.append((ev, make_op(ev)))
    created = {op.uri for _, op in creates}
    late = [e for e in deletes if uri_of(e) in created]  # pairs (``_cut``): after the creates
    if late:
        deletes = [e for e in deletes if uri_of(e) not in created]
    if deletes:
        await _write_deletes(tx, deletes, guards, fx, env)
    took: set[str] = set()
    if creates or updates:
        took = await _write_creates(tx, creates, guards, fx, env, updates)
    # a pair's create that took its key's row now has duplicates: its delete promotes one
    single = [e for e in late if uri_of(e) in took]
    late = [e for e in late if uri_of(e) not in took]
    if late:
        await _write_deletes(tx, late, guards, fx, env)
    for e in single:
        u = uri_of(e) or ""
        env.tally[await apply_record_event(tx, env.plugins[e["collection"]], e, guards.setdefault(u, Guard()), fx)] += 1
    if env.actor_effects:
        await _actor_effects(tx, chunk, env)


async def _write_deletes(tx: Any, deletes: list[dict[str, Any]], guards: dict[str, Guard], fx: Effects, env: Env) -> None:
    uris = [uri_of(e) or "" for e in deletes]  # never empty: simple events have a uri
    seqs = [order.event_seq(e.get("seq")) for e in deletes]  # as processor.delete_record
    await tx.execute(
        "WITH a AS (DELETE FROM record WHERE uri = ANY(%s)), b AS (DELETE FROM duplicate_record WHERE uri = ANY(%s)) "
        'INSERT INTO fleet_record_tombstone (uri, did, rev, seq, "deletedAt") '
        "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::bigint[], %s::varchar[]) "
        'ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, seq = excluded.seq, "deletedAt" = excluded."deletedAt" '
        "WHERE fleet_record_tombstone.rev < excluded.rev",
        (uris, uris, uris, [e["did"] for e in deletes], [e["rev"] for e in deletes], seqs, [e.get("time") or "" for e in deletes]),
    )
    by_coll: dict[str, list[str]] = {}
    for e, u in zip(deletes, uris):
        by_coll.setdefault(e["collection"], []).append(u)
    removed: dict[str, dict[str, Any]] = {}
    for coll, curis in by_coll.items():
        t = TABLES[coll].name
        if coll == REPOST:
            q = f"WITH fi AS (DELETE FROM feed_item WHERE uri = ANY(%s)) DELETE FROM {t} WHERE uri = ANY(%s) RETURNING *"  # noqa: S608 (constant)
            params: tuple[Any, ...] = (curis, curis)
        else:
            q = f"DELETE FROM {t} WHERE uri = ANY(%s) RETURNING *"  # noqa: S608 (constant)
            params = (curis,)
        async with tx.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, params)
            for row in await cur.fetchall():
                removed[row["uri"]] = row
    for e, u in zip(deletes, uris):
        g = guards.setdefault(u, Guard())
        g.exists, g.cid = False, None
        g.tomb_rev = e["rev"] if g.tomb_rev is None else max(g.tomb_rev, e["rev"])
        env.tally["delete"] += 1
        row = removed.get(u)
        if row is None:
            continue
        plugin = env.plugins[e["collection"]]
        fx.aggs.extend(plugin.aggregates(row, -1))
        notifs, to_delete = plugin.notifs_for_delete(row, None)  # no duplicate to promote (see _cut)
        fx.notifs.delete_for(to_delete)
        fx.notifs.add(order.stamp(notifs, None))


def _array_types(n: int) -> str:
    return ", ".join(["%s::varchar[]"] * n)


async def _write_creates(
    tx: Any, creates: list[tuple[dict[str, Any], Any]], guards: dict[str, Guard], fx: Effects, env: Env, updates: list[Any]
) -> set[str]:
    """Write the chunk's creates; returns the uris that took their key's row from a holder
    written after them (``duplicates``)."""
    all_ops = [op for _, op in creates]
    if all_ops:
        cols = [list(c) for c in zip(*[(op.uri, op.cid, op.did, op.json, op.indexed_at, op.rev, op.seq) for op in all_ops])]
        await tx.execute(
            'INSERT INTO record (uri, cid, did, json, "indexedAt", rev, seq) '
            f"SELECT * FROM unnest({_array_types(6)}, %s::bigint[])",  # no row holds these uris (module doc, Plain inserts)
            cols,
        )
    profiles = [op for op in all_ops if op.collection == PROFILE]
    if profiles or updates:
        await bulk_profile.write(tx, profiles, updates, fx)
        for op, action in [(o, "create") for o in profiles] + [(o, "update") for o in updates]:
            g = guards.setdefault(op.uri, Guard())
            g.exists, g.rev, g.cid = True, op.rev, op.cid
            env.tally[action] += 1
    post_ops = [op for op in all_ops if op.collection == POST]
    if post_ops:
        await bulk_post.write(tx, post_ops, fx)
        for op in post_ops:
            g = guards.setdefault(op.uri, Guard())
            g.exists, g.rev, g.cid = True, op.rev, op.cid
            env.tally["create"] += 1
    ops = [op for op in all_ops if op.collection not in (POST, PROFILE)]
    by_coll: dict[str, list[Any]] = {}
    for op in ops:
        by_coll.setdefault(op.collection, []).append(op)
    inserted: dict[str, dict[str, Any]] = {}
    for coll, cops in by_coll.items():
        inserted.update(await _insert_rows(tx, coll, cops))
    missed = [op for op in ops if op.uri not in inserted]
    dupes = await _find_duplicates(tx, missed) if missed else {}
    contested: list[Any] = []
    if dupes:
        d_ops = [op for op in missed if dupes.get(op.uri, (None,))[0] not in (None, op.uri)]
        if d_ops:
            await tx.execute(
                'INSERT INTO duplicate_record (uri, cid, "duplicateOf", "indexedAt") '
                f"SELECT * FROM unnest({_array_types(4)}) ON CONFLICT DO NOTHING",
                ([o.uri for o in d_ops], [o.cid for o in d_ops], [dupes[o.uri][0] for o in d_ops], [o.indexed_at for o in d_ops]),
            )
        contested = [op for op in d_ops if duplicates.contested(op.seq, op.rev, *dupes[op.uri][1:])]
    for op in ops:
        g = guards.setdefault(op.uri, Guard())
        g.exists, g.rev, g.cid = True, op.rev, op.cid
        env.tally["create"] += 1
        row = inserted.get(op.uri)
        if row is None:
            continue
        plugin = env.plugins[op.collection]
        fx.aggs.extend(plugin.aggregates(row, 1))
        fx.notifs.add(order.stamp(plugin.notifs_for_insert(row), op.seq))
    # order.after_insert: for a new repost, its feed item goes when its subject was purged after
    # it (rule 4); for likes, follows and blocks it does nothing.
    reposts = [(op.uri, inserted[op.uri]["subject"], op.seq) for op in ops if op.collection == REPOST and op.uri in inserted]
    purged = await purged_after_many(tx, [(s, q) for _, s, q in reposts])
    gone = [u for (u, _, _), p in zip(reposts, purged) if p]
    if gone:
        await tx.execute("DELETE FROM feed_item WHERE uri = ANY(%s)", (gone,))
    # the cutover (``duplicates`` rules 1 and 2), once the chunk's rows and notifications are
    # written: a create made before its key's holder takes the row, in event order (an earlier
    # one of the chunk may take it first)
    took: set[str] = set()
    for op in contested:
        if await duplicates.after_duplicate(tx, env.plugins[op.collection], op, fx):
            took.add(op.uri)
    return took


async def purged_after_many(tx: Any, pairs: list[tuple[Any, Optional[int]]]) -> list[bool]:
    """``order.purged_after(uri, seq)`` for many (uri, seq) pairs in one query, in order."""
    idx = [i for i, (u, s) in enumerate(pairs) if s is not None and isinstance(u, str)]
    out = [False] * len(pairs)
    if not idx:
        return out
    uris = [pairs[i][0] for i in idx]
    cur = await tx.execute(
        "SELECT k.i FROM unnest(%s::int[], %s::varchar[], %s::bigint[], %s::varchar[]) AS k(i, uri, seq, did) "
        "WHERE EXISTS (SELECT 1 FROM fleet_record_history h WHERE h.uri = k.uri AND h.seq_to > k.seq AND NOT EXISTS "
        "(SELECT 1 FROM fleet_account_deletion a WHERE a.did = k.did AND a.seq = h.seq_to)) "
        "OR EXISTS (SELECT 1 FROM fleet_record_tombstone t WHERE t.uri = k.uri AND t.seq > k.seq)",
        (idx, uris, [pairs[i][1] for i in idx], [u[5:].split("/", 1)[0] for u in uris]),
    )
    for (i,) in await cur.fetchall():
        out[i] = True
    return out


async def _insert_rows(tx: Any, coll: str, ops: list[Any]) -> dict[str, dict[str, Any]]:
    """Multi-row ``INSERT ... ON CONFLICT (creator, key) DO NOTHING`` in event order: {uri: row} of the rows
    written. Only their uris and generated ``sortAt`` (the database's collation decides
    ``LEAST``) come back; the rest of each row is the one sent, which is what ``RETURNING *``
    would return, without loading it again."""
    t = TABLES[coll]
    rows = [t.row(op) for op in ops]
    values = [list(c) for c in zip(*rows)]
    n = len(t.columns)
    names = [f"c{i}" for i in range(n)]
    select = (
        f"SELECT {', '.join(names)} FROM unnest({_array_types(n)}) WITH ORDINALITY AS v({', '.join(names)}, ord) ORDER BY ord"
    )
    # the duplicate key is the only arbiter: the uri holds no row (module doc, Plain inserts)
    head = (
        f'INSERT INTO {t.name} ({", ".join(t.columns)}) {select} '  # noqa: S608 (constants)
        f'ON CONFLICT (creator, {t.key_column}) DO NOTHING RETURNING uri, "sortAt"'
    )
    params: list[Any] = list(values)
    if coll == REPOST:
        # the plugin writes the feed_item in the same statement, whether or not the repost is new
        fi = [(op.uri, op.cid, v[3], op.did, _sort_at(op.indexed_at, v[7])) for op, v in zip(ops, rows)]
        head = (
            "WITH fi AS (INSERT INTO feed_item (type, uri, cid, \"postUri\", \"originatorDid\", \"sortAt\") "
            f"SELECT 'repost', * FROM unnest({_array_types(5)}) ON CONFLICT DO NOTHING) " + head
        )
        params = [list(c) for c in zip(*fi)] + params
    cur = await tx.execute(head, params)
    written = dict(await cur.fetchall())  # uri -> sortAt
    keys = t.names
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row[0] in written:
            d = dict(zip(keys, row))
            d["sortAt"] = written[row[0]]
            out[row[0]] = d
    return out


def _sort_at(indexed_at: str, created: str) -> str:
    return indexed_at if indexed_at < created else created


async def _find_duplicates(tx: Any, ops: list[Any]) -> dict[str, tuple[str, Optional[int], Optional[str]]]:
    """For creates not inserted: the uri of the row holding their duplicate key (plugin
    ``find_duplicate``), with its record's seq and rev."""
    out: dict[str, tuple[str, Optional[int], Optional[str]]] = {}
    by_coll: dict[str, list[Any]] = {}
    for op in ops:
        by_coll.setdefault(op.collection, []).append(op)
    for coll, cops in by_coll.items():
        t = TABLES[coll]
        cur = await tx.execute(
            "SELECT k.u, x.uri, r.seq, r.rev FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) AS k(u, c, s) "
            f"JOIN LATERAL (SELECT uri FROM {t.name} WHERE creator = k.c AND {t.key_column} = k.s LIMIT 1) x ON true "  # noqa: S608
            "LEFT JOIN record r ON r.uri = x.uri",
            ([o.uri for o in cops], [o.did for o in cops], [t.key(o.record) for o in cops]),
        )
        out.update({u: (found, h_seq, h_rev) for u, found, h_seq, h_rev in await cur.fetchall()})
    return out


async def _actor_effects(tx: Any, chunk: list[dict[str, Any]], env: Env) -> None:
    """``actors.on_event`` for every event of the chunk, with one upsert and one read."""
    latest: dict[str, tuple[str, str]] = {}  # did -> (rev, commit) of the last event with the top rev
    for ev in chunk:
        commit = ev.get("commit")
        if commit:
            cur_top = latest.get(ev["did"])
            if cur_top is None or ev["rev"] >= cur_top[0]:
                latest[ev["did"]] = (ev["rev"], commit)
    if latest:
        dids = sorted(latest)  # one lock order for every shard
        await tx.execute(
            'INSERT INTO actor_sync (did, "commitCid", "repoRev") '
            "SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) "
            'ON CONFLICT (did) DO UPDATE SET "commitCid" = excluded."commitCid", "repoRev" = excluded."repoRev" '
            'WHERE actor_sync."repoRev" IS NULL OR excluded."repoRev" IS NULL OR actor_sync."repoRev" <= excluded."repoRev"',
            (dids, [latest[d][1] for d in dids], [latest[d][0] for d in dids]),
        )
    timed = [ev for ev in chunk if isinstance(ev.get("time"), str)]
    if not timed:
        return
    if env.due is not None and not any(ev["did"] in env.due for ev in timed):
        return  # no account of the chunk was due, and no actor row changed since: nothing to check
    dids = sorted({ev["did"] for ev in timed})
    rows = await _actor_rows(tx, dids)
    for ev in timed:
        if _due(rows, ev):
            env.due = None  # actor rows change: later chunks read them again
            await actors.index_handle(tx, ev["did"], ev["time"], env.ctx, force=False)
            rows = await _actor_rows(tx, dids)  # it may also have released another actor's handle


async def _actor_rows(tx: Any, dids: list[str]) -> dict[str, tuple[Any, Any]]:
    """did -> (handle, indexedAt) of the actor rows there are."""
    # a join, not ``did = ANY(array)``: a generic plan of that scans the table and compares
    # every row with every element (measured 10 ms for 440 dids against 2,000 actors)
    cur = await tx.execute('SELECT a.did, a.handle, a."indexedAt" FROM unnest(%s::varchar[]) AS u(did) JOIN actor a ON a.did = u.did', (dids,))
    return {did: (handle, indexed) for did, handle, indexed in await cur.fetchall()}


def _due(rows: dict[str, tuple[Any, Any]], ev: dict[str, Any]) -> bool:
    """Is the event's account due a handle re-resolution (``actors.needs_handle_reindex``)?"""
    row = rows.get(ev["did"])
    return True if row is None else actors.handle_due(row[0], row[1], ev["time"])
