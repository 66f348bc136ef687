"""Cross-shard locks: a batch's transaction waits for the concurrent batches it must see.

    held = await lock_batch(conn, events)   # first statement of the batch's transaction
    deferred = await lock_some(conn, events, must)  # the runtime's: defers what would wait (below)

Why. Shards index concurrently, each batch in one READ COMMITTED transaction. A batch cannot
see another shard's uncommitted rows, so without locks a reply's batch looks for its parent
while the parent's batch (another shard) is not yet committed, and the parent's batch looks
for already-indexed dependents while the reply is not yet committed: both miss each other, and
``order.py``'s "evaluate as of seq, re-evaluate late dependents" never runs (its rules assume
that of two writes one was committed when the other looked).

What. At the start of the batch transaction, one statement takes transaction-scoped advisory
locks (``pg_advisory_xact_lock[_shared]``, 64-bit keys: ``key_id``, a blake2b hash of a string
key) for every cross-account key the batch touches, in one sorted order:

================================  ============  ==================================================
key                               mode          taken by
================================  ============  ==================================================
``at://<post uri>``               EXCLUSIVE     a post's create/update/delete; a thread gate's and a
                                                post gate's create/update/delete (key: the gated
                                                post, same did and rkey)
``at://<post uri>``               SHARED        a reply: its parent, its root and every ancestor
                                                above the parent (``chain``); a quote: the quoted
                                                uri; a repost: its subject (``purged_after``)
``acct:<did>``                    EXCLUSIVE     an account deletion (``#account`` deleted)
``acct:<did>``                    SHARED        every account a batch depends on or may notify:
                                                the dids of the uris above, subjects of likes,
                                                reposts, follows, list items…, mentioned dids
``graph:<did>``                   EXCLUSIVE     follow create/delete by ``<did>``
``graph:<root author>``           SHARED        a reply in another account's thread that has a
                                                thread gate (current, in history, or in the batch):
                                                its following rule reads the owner's follows
``list:<list uri>``               EXCLUSIVE     list item create/delete in that list
``list:<list uri>``               SHARED        a reply whose thread gate has a list rule; a
                                                thread gate write with a list rule
================================  ============  ==================================================

Likes take no uri key (no rule reads another account's likes), only ``acct:<subject did>``
(shared): a post with a million likes never serialises shards; shared locks never wait for
each other, only for the rare exclusive holder (an account deletion).

Why this suffices (each case: the two batches cannot both run their reads before the other's
commit; under READ COMMITTED every statement after the lock wait sees what the other committed):

* **Reply and parent/root/gate.** The reply holds S on its parent and root; the parent's,
  root's and gate's writers hold X on the same key. Whichever batch is second sees the first:
  the reply sees the parent (``invalidReplyRoot``, notifications), or the parent's
  ``order.after_insert`` sees the reply and re-evaluates it.
* **Ancestors further up, and re-evaluation cascades.** A reply R's flag reads its parent P's
  flag, which a late grandparent G's batch may rewrite (``order.reevaluate`` -> cascade to P's
  children), and R's notifications walk the ancestors up to depth 5. So R holds S on the whole
  ancestor chain (``CHAIN_DEPTH`` levels): G's X conflicts with it, and either R reads after
  G's re-evaluation committed, or G's cascade sees R. The chain is read from committed rows
  (``post.replyParent`` and history versions), so it may grow while R waits for the first keys
  (P committed meanwhile: now its parent is known). Hence rounds: read the chain, lock it, read
  it again, lock what is new, until nothing is new. Once R holds S on every uri of the chain
  and on the uri where the chain stops, nothing on it can change until R commits: a write there
  needs X. The keys of later rounds are only tried (``_grow``): when one is busy, every key
  is released (savepoint) and the next attempt takes them all in one sorted statement
  (``_rounds``), so no batch waits holding a key it took out of order.
* **A reply's delete or update and its late ancestor.** Deleting or updating P moves its
  current version, flag included, to history; a late ancestor G's batch re-evaluates P's row
  and the history versions it can see. Unordered, G's update of P's row can wait on the row
  lock of P's delete, then find the row gone, while G read P's history before that delete
  committed: the version keeps the flag of before G, and a reply to P indexed later reads it
  (found by the killed-indexer conformance run). So a post delete or update also holds S on
  P's ancestor chain (``starts``): G's X orders the two.
* **Quotes, reposts and purges.** A post's delete/update purges the quotes of it and its
  reposts' feed items written before the purge (``order.purged_after``): the quote/repost holds
  S on the subject, the purge X. A post gate and the quotes it governs: same key (gated post).
* **Account deletion.** It moves the account's posts to history, re-evaluates their dependents,
  deletes notifications to it, and a notification written later is dropped at flush if its
  write precedes the deletion. Its X on ``acct:<did>`` conflicts with every batch that
  depends on or notifies the account (S), so one of the two sees the other.
* **Thread-gate graph rules.** Follows and list items of the gate's owner/lists vs replies in
  the thread (``graph:``/``list:``). A reply takes ``graph:<owner>`` only when its thread has a
  gate: it holds S on the root uri, and a gate's writer needs X on it, so once the reply holds
  its round-1 locks no gate can appear until it commits; the keys read after that round
  (``read_keys`` runs again) decide, so a gate committed between the first read and the lock
  is still seen. Without a gate no rule reads the owner's follows: a follow by a thread owner
  and a reply in its ungated thread never wait for each other (the common case). The follower
  rule reads the replier's own follows: same shard, no lock. A follow or list item indexed
  after a later reply re-evaluates it (``order.graph_changed``): the follow's X on
  ``graph:<owner>`` / the item's X on ``list:<list>`` against the reply's S; a thread gate with
  a list rule holds S on that list, so a gate and a list item written concurrently see each
  other.

Deadlocks: a batch waits for keys only in one statement over sorted keys begun holding none
(``acquire``), taken before it writes anything, so batches never wait on each other's row
locks while holding advisory ones they lack, nor on keys held out of order: the keys a
chain grows by afterwards are tried without waiting, and if one is busy all are released and
taken again in one sorted statement (``_rounds``); ``lock_some`` tries every key, those of the
chain's growth too, in a savepoint it rolls back when any is busy. (The last of ``MAX_ROUNDS``
attempts waits for a grown chain's keys holding the others: PostgreSQL would break a deadlock
there after ``deadlock_timeout`` and the runtime retries the batch, class 40.)

Must run inside the batch's transaction, before its first savepoint: rolling back to a
savepoint releases the advisory locks taken inside it (``fleet/db/savepoint.py``, whose rollback
keeps the connection's prepared statements: psycopg's own deallocates them all). With a
connection not in a transaction (a test calling ``apply_batch`` in autocommit) there is nothing
to hold: it does nothing.

Costs (measured in tests/test_locks.py and the conformance runs; see the report): one lock
statement per batch; batches with replies also read the chain and the thread gates twice (two
small indexed queries each). Lock table: ``max_locks_per_transaction`` x ``max_connections``
must exceed shards x keys per batch (a 500-event batch takes at most ~1,000 keys).

Metrics: ``rsky_indexing_lock_keys`` (histogram, keys per batch), ``rsky_indexing_lock_seconds``
(histogram, time to read the chain and acquire the locks), ``rsky_indexing_lock_rounds_total``
(counter, acquisition rounds after the first, i.e. a chain that grew after its first read),
``rsky_indexing_lock_cuts_total`` and ``rsky_indexing_lock_deferred_events_total`` (``lock_some``).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from prometheus_client import Counter, Histogram
from psycopg import Rollback
from psycopg.pq import TransactionStatus

from ..db.savepoint import savepoint


POST = "app.bsky.feed.post"
THREADGATE = "app.bsky.feed.threadgate"
POSTGATE = "app.bsky.feed.postgate"
REPOST = "app.bsky.feed.repost"
LIKE = "app.bsky.feed.like"
FOLLOW = "app.bsky.graph.follow"
LISTITEM = "app.bsky.graph.listitem"
RECORD_TYPES = ("create", "update", "delete")
CHAIN_DEPTH = 64  # ancestors locked above a reply's parent (flag cascades deeper are not covered)
MAX_ROUNDS = 8

LOCK_KEYS = Histogram("rsky_indexing_lock_keys", "advisory lock keys taken per batch", buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2500))
LOCK_SECONDS = Histogram("rsky_indexing_lock_seconds", "time to read the chain and take the batch's advisory locks")
LOCK_ROUNDS = Counter("rsky_indexing_lock_rounds_total", "lock rounds after the first (a chain grew after it was first read)")
LOCK_CUTS = Counter("rsky_indexing_lock_cuts_total", "batches that deferred events whose keys another shard's batch held")
LOCK_DEFERRED = Counter("rsky_indexing_lock_deferred_events_total", "events deferred to the next batch (lock_some)")


@functools.lru_cache(maxsize=1 << 16)  # accounts and hot posts recur batch after batch
def key_id(key: str) -> int:
    """The 64-bit advisory lock id of a string key (stable across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _did(uri: Any) -> str:
    if not isinstance(uri, str):
        return ""
    rest = uri[5:] if uri.startswith("at://") else uri
    return rest.split("/", 1)[0]


def _coll(uri: str) -> str:
    parts = uri[5:].split("/") if uri.startswith("at://") else []
    return parts[1] if len(parts) > 1 else ""


def gated_post(did: str, rkey: str) -> str:
    return f"at://{did}/{POST}/{rkey}"


def _type(v: Any) -> Any:
    return v.get("$type") if isinstance(v, dict) else None


@dataclass
class Plan:
    """What a batch locks: ``keys`` (key -> exclusive) plus what the chain/gate reads start from."""

    keys: dict[str, bool] = field(default_factory=dict)
    users: dict[str, list[int]] = field(default_factory=dict)  # key -> indexes of the events naming it
    readers: list[int] = field(default_factory=list)  # events whose keys ``read_keys`` finds
    at: int = 0  # the event being planned
    starts: set[str] = field(default_factory=set)  # parents and roots of the batch's replies
    roots: dict[str, str] = field(default_factory=dict)  # root uri -> replier did (other accounts' threads)
    gates: dict[str, Any] = field(default_factory=dict)  # thread gate uri -> record in this batch
    listitem_deletes: list[str] = field(default_factory=list)

    def shared(self, key: str) -> None:
        if key and key not in self.keys:
            self.keys[key] = False
        if key:
            self._used(key)

    def exclusive(self, key: str) -> None:
        if key:
            self.keys[key] = True
            self._used(key)

    def _used(self, key: str) -> None:
        u = self.users.setdefault(key, [])
        if not u or u[-1] != self.at:
            u.append(self.at)

    def reads(self) -> None:
        """The event being planned gives ``read_keys`` something to read."""
        if not self.readers or self.readers[-1] != self.at:
            self.readers.append(self.at)

    def needing(self, key: str) -> list[int]:
        """The events that need ``key`` (a key found by ``read_keys``: every event that made it
        read something)."""
        return self.users.get(key) or self.readers

    def reads_uri(self, uri: Any) -> None:
        if isinstance(uri, str) and uri.startswith("at://"):
            self.shared(uri)
            self.shared("acct:" + _did(uri))

    def notifies(self, did: Any) -> None:
        if isinstance(did, str) and did.startswith("did:"):
            self.shared("acct:" + did)


def _subject_uri(rec: dict[str, Any]) -> Optional[str]:
    s = rec.get("subject")
    if isinstance(s, dict):
        s = s.get("uri")
    return s if isinstance(s, str) else None


def _quoted(rec: dict[str, Any]) -> list[str]:
    embed = rec.get("embed")
    if not isinstance(embed, dict):
        return []
    if _type(embed) == "app.bsky.embed.recordWithMedia":
        embed = embed.get("record")
    ref = embed.get("record") if isinstance(embed, dict) else None
    uri = ref.get("uri") if isinstance(ref, dict) else None
    return [uri] if isinstance(uri, str) else []


def _mentions(rec: dict[str, Any]) -> Iterable[Any]:
    for facet in rec.get("facets") or []:
        for f in (facet.get("features") or []) if isinstance(facet, dict) else []:
            if isinstance(f, dict) and f.get("did"):
                yield f.get("did")


def plan(events: list[dict[str, Any]]) -> Plan:
    """The keys a batch's own events name (no database read)."""
    p = Plan()
    for p.at, ev in enumerate(events):
        t, did = ev.get("type"), ev.get("did")
        if t == "account" and ev.get("active") is False and ev.get("status") == "deleted" and did:
            p.exclusive("acct:" + did)
            continue
        if t not in RECORD_TYPES or not did:
            continue
        coll, rkey = ev.get("collection") or "", ev.get("rkey")
        rec = ev.get("record") if t != "delete" and isinstance(ev.get("record"), dict) else None
        uri = f"at://{did}/{coll}/{rkey}"
        if coll == POST:
            p.exclusive(uri)
            if t != "create":  # it moves the current version to history, flag included
                p.starts.add(uri)
                p.reads()
        elif coll in (THREADGATE, POSTGATE):
            p.exclusive(gated_post(did, rkey))
            if coll == THREADGATE:
                p.gates[uri] = rec
                p.reads()
                for rule in (rec.get("allow") or []) if isinstance(rec, dict) and isinstance(rec.get("allow"), list) else []:
                    if isinstance(rule, dict) and isinstance(rule.get("list"), str):
                        p.shared("list:" + rule["list"])  # it re-evaluates replies by the list's items
        elif coll == FOLLOW:
            p.exclusive("graph:" + did)
        elif coll == LISTITEM:
            if rec is not None and isinstance(rec.get("list"), str):
                p.exclusive("list:" + rec["list"])
            elif t == "delete":
                p.listitem_deletes.append(uri)
                p.reads()
        if rec is None:
            continue
        if coll == POST:
            reply = rec.get("reply") if isinstance(rec.get("reply"), dict) else None
            if reply is not None:
                parent = (reply.get("parent") or {}).get("uri") if isinstance(reply.get("parent"), dict) else None
                root = (reply.get("root") or {}).get("uri") if isinstance(reply.get("root"), dict) else None
                for u in (parent, root):
                    if isinstance(u, str) and u.startswith("at://"):
                        p.reads_uri(u)
                        p.starts.add(u)
                        p.reads()
                if isinstance(root, str) and root.startswith("at://") and _did(root) != did:
                    p.roots[root] = did  # graph:<owner> when the thread has a gate (read_keys)
                    p.reads()
            for q in _quoted(rec):
                p.reads_uri(q)
            for m in _mentions(rec):
                p.notifies(m)
        elif coll == REPOST:
            p.reads_uri(_subject_uri(rec))
        else:  # likes, follows, blocks, list items, verifications…: notifications to the subject
            s = rec.get("subject")
            p.notifies(_did(_subject_uri(rec)) if not (isinstance(s, str) and s.startswith("did:")) else s)
            via = rec.get("via")
            if isinstance(via, dict):
                p.notifies(_did(via.get("uri")))
    return p


async def _rows(conn: Any, query: str, params: Any) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return list(await cur.fetchall())


async def read_keys(conn: Any, p: Plan) -> dict[str, bool]:
    """Keys found in committed rows: the ancestor chains above the replies' parents and roots,
    the list rules of their thread gates, the lists of deleted list items (all shared)."""
    out: dict[str, bool] = {}
    if p.starts:
        rows = await _rows(
            conn,
            "WITH RECURSIVE c(uri, depth) AS (SELECT u, 0 FROM unnest(%s::varchar[]) AS u"
            " UNION SELECT x.parent, c.depth + 1 FROM c CROSS JOIN LATERAL ("
            '  SELECT "replyParent" AS parent FROM post WHERE uri = c.uri'
            '  UNION SELECT "replyParent" FROM fleet_record_history WHERE uri = c.uri) x'
            "  WHERE x.parent IS NOT NULL AND c.depth < %s)"
            " SELECT DISTINCT uri FROM c",
            (sorted(p.starts), CHAIN_DEPTH),
        )
        for (u,) in rows:
            if isinstance(u, str) and u.startswith("at://"):
                out.setdefault(u, False)
                out.setdefault("acct:" + _did(u), False)
    if p.roots or p.gates:
        gate_uris = [f"at://{_did(r)}/{THREADGATE}/{r.rsplit('/', 1)[1]}" for r in p.roots if _coll(r) == POST]
        gates = [(u, g) for u, g in p.gates.items() if g is not None]
        gated = set(p.gates)  # gate uris of the batch, deleted ones too
        if gate_uris:
            rows = await _rows(
                conn,
                "SELECT uri, json FROM record WHERE uri = ANY(%(u)s) UNION ALL SELECT uri, json FROM fleet_record_history WHERE uri = ANY(%(u)s)",
                {"u": gate_uris},
            )
            from ..codec.atjson import loads

            gates += [(u, loads(j)) for u, j in rows]
            gated.update(u for u, _ in rows)
        for root in p.roots:  # a gated thread: its following rule reads the owner's follows
            if f"at://{_did(root)}/{THREADGATE}/{root.rsplit('/', 1)[1]}" in gated:
                out.setdefault("graph:" + _did(root), False)
        for _, g in gates:
            for rule in (g.get("allow") or []) if isinstance(g, dict) else []:
                if isinstance(rule, dict) and isinstance(rule.get("list"), str):
                    out.setdefault("list:" + rule["list"], False)
    if p.listitem_deletes:
        rows = await _rows(conn, 'SELECT "listUri" FROM list_item WHERE uri = ANY(%s)', (p.listitem_deletes,))
        for (lst,) in rows:
            if isinstance(lst, str):
                out["list:" + lst] = True
    return out


def _ids(keys: dict[str, bool]) -> dict[int, bool]:
    """Lock id -> exclusive, for ``keys`` (key -> exclusive)."""
    ids: dict[int, bool] = {}
    for k, x in keys.items():
        i = key_id(k)
        ids[i] = ids.get(i, False) or x
    return ids


async def acquire(conn: Any, keys: dict[str, bool]) -> None:
    """Take ``keys`` (key -> exclusive) in one statement, in ascending id order."""
    if not keys:
        return
    ids = _ids(keys)
    order = sorted(ids)
    await conn.execute(
        "SELECT count(CASE WHEN x THEN pg_advisory_xact_lock(k) ELSE pg_advisory_xact_lock_shared(k) END) "
        "FROM (SELECT k, x FROM unnest(%s::bigint[], %s::bool[]) AS u(k, x) ORDER BY k) s",
        (order, [ids[i] for i in order]),
    )


async def try_acquire(conn: Any, keys: dict[str, bool]) -> set[str]:
    """Take what of ``keys`` (key -> exclusive) is free now, in one statement that never waits;
    returns the keys another transaction holds (in a conflicting mode)."""
    if not keys:
        return set()
    ids = _ids(keys)
    cur = await conn.execute(
        "SELECT k FROM unnest(%s::bigint[], %s::bool[]) AS u(k, x) "
        "WHERE NOT CASE WHEN x THEN pg_try_advisory_xact_lock(k) ELSE pg_try_advisory_xact_lock_shared(k) END",
        (list(ids), list(ids.values())),
    )
    busy = {i for (i,) in await cur.fetchall()}
    return {k for k in keys if key_id(k) in busy} if busy else set()


async def _grow(conn: Any, p: Plan, want: dict[str, bool], held: dict[str, bool], wait: bool = False) -> set[str]:
    """Take the keys ``read_keys`` finds that ``held`` lacks (a chain that grew before the locks
    were held), again until nothing is new. Without ``wait`` they are only tried: returns those
    another transaction holds (then nothing more is taken). Both dicts get what is found."""
    for _ in range(MAX_ROUNDS):
        if not (p.starts or p.roots or p.listitem_deletes):
            break
        more = {k: x for k, x in (await read_keys(conn, p)).items() if k not in held or (x and not held[k])}
        if not more:
            break
        LOCK_ROUNDS.inc()
        for k, x in more.items():
            want[k] = want.get(k, False) or x
        if wait:
            await acquire(conn, more)
        else:
            busy = await try_acquire(conn, more)
            if busy:
                return busy
        for k, x in more.items():
            held[k] = held.get(k, False) or x
    return set()


async def _rounds(conn: Any, p: Plan, want: dict[str, bool]) -> dict[str, bool]:
    """Take ``want`` in one sorted statement (waiting), then the keys a chain grew by, without
    waiting: when one of those is busy the savepoint is rolled back, releasing every key taken,
    and the next attempt takes them all in one sorted statement. So a batch waits only in a
    sorted statement begun holding nothing, as every batch does, and batches cannot deadlock
    (a first version waited for the new keys holding the first ones: two batches whose chains
    grew into each other's keys deadlocked until ``deadlock_timeout``, seen with 3 shards). The
    last of ``MAX_ROUNDS`` attempts waits for the new keys as that version did."""
    for attempt in range(MAX_ROUNDS):
        last = attempt == MAX_ROUNDS - 1
        busy: set[str] = set()
        held: dict[str, bool] = {}
        async with savepoint(conn, "fleet_locks"):  # rolled back, it releases the keys it took
            await acquire(conn, want)
            held = dict(want)
            busy = await _grow(conn, p, want, held, wait=last)
            if busy:
                raise Rollback()
        if not busy:
            return held
    return held  # (not reached: the last attempt waits)


async def _wanted(conn: Any, p: Plan) -> dict[str, bool]:
    want = dict(p.keys)
    for k, x in (await read_keys(conn, p)).items():
        want[k] = want.get(k, False) or x
    return want


async def _lock_all(conn: Any, events: list[dict[str, Any]]) -> dict[str, bool]:
    p = plan(events)
    return await _rounds(conn, p, await _wanted(conn, p))


async def lock_batch(conn: Any, events: list[dict[str, Any]]) -> dict[str, bool]:
    """Take the batch's cross-shard locks (module doc); returns what is held (key -> exclusive)."""
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        return {}
    t0 = time.monotonic()
    held = await _lock_all(conn, events)
    LOCK_KEYS.observe(len(held))
    LOCK_SECONDS.observe(time.monotonic() - t0)
    return held


async def lock_some(conn: Any, events: list[dict[str, Any]], must: int = 0) -> list[int]:
    """Take the locks of the events that need not wait; returns the indexes of the others
    (deferred: the caller applies them first thing in its next batch).

    Another shard's batch in flight may hold a key this batch needs (a post this batch replies
    to, quotes or reposts, or a reply to a post this batch creates). Waiting for its commit
    leaves the shard idle for the rest of that batch. Instead every key is first tried without
    waiting. When some are held elsewhere, the events that need them are deferred, each with
    every later event of its account (an account's events keep their order), unless they are
    among the first ``must`` (deferred once already: they wait now, so nothing is deferred
    twice). The other accounts' events are applied now: relative to a deferred account they
    interleave as two shards' events do, which the cross-account rules allow (``order.py``).
    Nothing is deferred when that would leave nothing to apply: then the batch waits, as
    ``lock_batch`` does.

    Keys found by ``read_keys`` (ancestor chains, gated threads' graph and list keys) count as
    needed by every event that made it read anything. The keys are tried in a savepoint: when
    any is busy it is rolled back, which releases those taken, and the events applied take
    theirs as ``lock_batch`` does (one sorted statement, waiting): a batch never waits while
    holding keys taken out of order, which can deadlock (PostgreSQL breaks that only after
    ``deadlock_timeout``; a first version that kept them ran 4 shards at half the rate).
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        return []
    t0 = time.monotonic()
    p = plan(events)
    want = await _wanted(conn, p)
    busy: set[str] = set()
    held: dict[str, bool] = {}
    async with savepoint(conn, "fleet_locks"):  # rolled back, it releases the keys it took
        busy = await try_acquire(conn, want)
        if not busy:  # a chain may have grown before the locks: its new keys, tried too
            held = dict(want)
            busy = await _grow(conn, p, want, held)
        if busy:  # the batch will wait for some keys: never while holding others out of order
            raise Rollback()
    since: dict[str, int] = {}  # account -> its first event that must wait
    for k in busy:
        for i in p.needing(k):
            did = events[i].get("did")
            if i >= must and isinstance(did, str) and i < since.get(did, len(events)):
                since[did] = i
    deferred = [i for i, ev in enumerate(events) if i >= since.get(ev.get("did"), len(events))]  # type: ignore[arg-type]
    if busy and deferred and len(deferred) < len(events):
        LOCK_CUTS.inc()
        LOCK_DEFERRED.inc(len(deferred))
        skip = set(deferred)
        held = await _lock_all(conn, [ev for i, ev in enumerate(events) if i not in skip])
    elif busy:
        deferred = []
        held = await _lock_all(conn, events)
    LOCK_KEYS.observe(len(held))
    LOCK_SECONDS.observe(time.monotonic() - t0)
    return deferred
