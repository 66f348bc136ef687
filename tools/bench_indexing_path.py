"""Micro-benchmark of the indexing path: synthetic batches -> ``Indexer.apply_batch`` on one connection.

No Redis, no runtime: it measures only what the indexing code costs per event, with the bulk
fast path on and off, against the ceiling of a plain ``COPY`` of the same rows into the same
(migrated, indexed) tables, all in one run on this machine. Besides events/s it reports the
CPU time per event of the indexing process and of its PostgreSQL backend (``/proc``), which
moves much less than wall time when other work shares the machine.

    python -m tools.bench_indexing_path --database-url URL [--events 20000] [--batch 500] [--json OUT]

The mix (``synthetic_events``): mostly likes (a fifth of them on three hot posts), then posts
(a third replies, a quarter quoting a post), follows, reposts, blocks, deletes of earlier
likes/reposts/follows, and profile updates; a few duplicate likes (same creator and subject).
Every account gets an actor row first, so the handle check finds nothing to re-resolve (no
network), as on a warm index.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import random
import resource
import sys
import time
from typing import Any, Optional

import psycopg
from psycopg import sql

from fleet.db.migrate import migrate
from fleet.indexing import Indexer, IndexingContext

CID1 = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
CID2 = "bafyreidfayvfuwqa7qlnopdjiqrxzs6blmoeu4rujcjtnci5beludirz2a"
B32 = "abcdefghijklmnopqrstuvwxyz234567"
SORT32 = "234567abcdefghijklmnopqrstuvwxyz"  # the TID alphabet: its order is the string order
MIX = {"like": 0.55, "post": 0.14, "follow": 0.1, "repost": 0.07, "block": 0.02, "delete": 0.08, "profile": 0.04}
# only the collections of the bulk fast path (no posts, no profiles)
SIMPLE_MIX = {"like": 0.7, "follow": 0.12, "repost": 0.08, "block": 0.02, "delete": 0.08}
MIXES = {"default": MIX, "simple": SIMPLE_MIX}


def did_for(i: int) -> str:
    """A valid did:plc for account ``i`` (24 base32 characters)."""
    s = ""
    for _ in range(24):
        s += B32[i % 32]
        i //= 32
    return "did:plc:" + s[::-1]


def _tid(n: int) -> str:
    """A sortable rev / rkey: 13 base32 characters, increasing with ``n``."""
    s = ""
    for _ in range(13):
        s += SORT32[n % 32]
        n //= 32
    return "3" + s[::-1][1:]


def _time(n: int) -> str:
    return f"2025-01-01T{(n // 3600000) % 24:02d}:{(n // 60000) % 60:02d}:{(n // 1000) % 60:02d}.{n % 1000:03d}Z"


def synthetic_events(
    n: int, *, seed: int = 1, accounts: int = 2000, mix: dict[str, float] = MIX, min_age: int = 0
) -> list[dict[str, Any]]:
    """``n`` stream events (create/update/delete) in seq order; see the module docstring.

    ``min_age``: a reply, quote, repost or like names a post created at least that many events
    earlier (the seed posts always qualify). 0: any post, even the one created just before."""
    rnd = random.Random(seed)
    kinds, weights = zip(*mix.items())
    posts: list[str] = [f"at://{did_for(a)}/app.bsky.feed.post/{_tid(a)}" for a in range(min(accounts, 50))]
    born: list[int] = [0] * len(posts)  # index in ``out`` of each post's create
    seeds = len(posts)
    hot = posts[:3]

    def old_post() -> str:
        # the posts created at least ``min_age`` events ago: a prefix of ``posts``
        k = bisect.bisect_right(born, len(out) - min_age) if min_age else len(posts)
        return posts[rnd.randrange(max(k, seeds))]

    out: list[dict[str, Any]] = []
    deletable: list[tuple[str, str, str]] = []  # (did, collection, rkey)
    seq = 1000

    def ev(did: str, typ: str, coll: str, rkey: str, record: dict | None = None) -> dict[str, Any]:
        e = {"type": typ, "seq": seq, "time": _time(seq), "did": did, "commit": CID1, "rev": _tid(10**9 + seq),
             "collection": coll, "rkey": rkey}  # fmt: skip
        if record is not None:
            e["cid"], e["record"] = CID1 if seq % 2 else CID2, record
        return e

    # the seed posts the mix refers to
    for i, uri in enumerate(posts):
        did = did_for(i)
        out.append(ev(did, "create", "app.bsky.feed.post", uri.rsplit("/", 1)[1], {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": _time(seq)}))
        seq += 1
    while len(out) < n:
        did = did_for(rnd.randrange(accounts))
        kind = rnd.choices(kinds, weights)[0]
        rkey = _tid(seq)
        created = _time(seq)
        if kind == "like":
            subject = rnd.choice(hot) if rnd.random() < 0.2 else old_post()
            rec = {"$type": "app.bsky.feed.like", "subject": {"uri": subject, "cid": CID2}, "createdAt": created}
            out.append(ev(did, "create", "app.bsky.feed.like", rkey, rec))
            deletable.append((did, "app.bsky.feed.like", rkey))
        elif kind == "repost":
            rec = {"$type": "app.bsky.feed.repost", "subject": {"uri": old_post(), "cid": CID2}, "createdAt": created}
            out.append(ev(did, "create", "app.bsky.feed.repost", rkey, rec))
            deletable.append((did, "app.bsky.feed.repost", rkey))
        elif kind in ("follow", "block"):
            coll = f"app.bsky.graph.{kind}"
            rec = {"$type": coll, "subject": did_for(rnd.randrange(accounts)), "createdAt": created}
            out.append(ev(did, "create", coll, rkey, rec))
            deletable.append((did, coll, rkey))
        elif kind == "post":
            rec: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": f"hello {seq}", "createdAt": created, "langs": ["en"]}
            r = rnd.random()
            if r < 0.33:
                parent = old_post()
                rec["reply"] = {"root": {"uri": parent, "cid": CID1}, "parent": {"uri": parent, "cid": CID1}}
            elif r < 0.58:
                rec["embed"] = {"$type": "app.bsky.embed.record", "record": {"uri": old_post(), "cid": CID1}}
            born.append(len(out))
            out.append(ev(did, "create", "app.bsky.feed.post", rkey, rec))
            posts.append(f"at://{did}/app.bsky.feed.post/{rkey}")
        elif kind == "delete" and deletable:
            d_did, coll, d_rkey = deletable.pop(rnd.randrange(len(deletable)))
            out.append(ev(d_did, "delete", coll, d_rkey))
        elif kind == "profile":
            rec = {"$type": "app.bsky.actor.profile", "displayName": f"name {seq}", "description": "bench"}
            out.append(ev(did, "update", "app.bsky.actor.profile", "self", rec))
        seq += 1
    return out[:n]


def dids_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted({e["did"] for e in events})


async def seed_actors(conn: Any, dids: list[str]) -> None:
    """Fresh actor rows, so the handle check has nothing to re-resolve."""
    await conn.execute(
        'INSERT INTO actor (did, handle, "indexedAt") SELECT d, NULL, %s FROM unnest(%s::varchar[]) d ON CONFLICT DO NOTHING',
        ("2025-01-01T23:59:59.999Z", dids),
    )


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 when /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def apply_all(database_url: str, schema: str, events: list[dict[str, Any]], batch: int, bulk: bool, cpu: Optional[dict[str, float]] = None,
                    backend: Optional[list[int]] = None) -> float:
    """Seconds to apply ``events`` in batches of ``batch``, one transaction per batch; ``cpu``
    (if given) gets the CPU seconds of this process and of the PostgreSQL backend meanwhile,
    ``backend`` (if given) that backend's pid."""
    indexer = Indexer(IndexingContext(), bulk=bulk)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        await seed_actors(conn, dids_of(events))
        pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]  # type: ignore[index]
        if backend is not None:
            backend.append(pid)
        await conn.commit()
        own0, pg0 = _own_cpu(), _cpu_seconds(pid)
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            async with conn.transaction():
                failed = await indexer.apply_batch(conn, events[i : i + batch])
            if failed:
                raise RuntimeError(f"bench events failed: {failed[:3]}")
        elapsed = time.perf_counter() - t0
        if cpu is not None:
            cpu["python"], cpu["postgres"] = _own_cpu() - own0, _cpu_seconds(pid) - pg0
        return elapsed


def copy_ceiling(database_url: str, src: str, dst: str) -> tuple[int, float]:
    """(rows, seconds) of a plain COPY of every row ``src`` holds into the same tables of ``dst``."""
    with psycopg.connect(database_url, autocommit=True) as c:
        tables = [r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'", (src,)
        ).fetchall()]  # fmt: skip
        dumps: list[tuple[str, list[str], bytes]] = []
        for t in tables:
            cols = [r[0] for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND is_generated = 'NEVER' ORDER BY ordinal_position", (src, t)).fetchall()]  # fmt: skip
            n = c.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(src), sql.Identifier(t))).fetchone()[0]
            pre = c.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(dst), sql.Identifier(t))).fetchone()[0]
            if not n or pre:  # empty, or written by the migrations themselves
                continue
            buf = io.BytesIO()
            collist = sql.SQL(", ").join(sql.Identifier(x) for x in cols)
            with c.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT").format(collist, sql.Identifier(src), sql.Identifier(t))) as cp:
                for chunk in cp:
                    buf.write(chunk)
            dumps.append((t, cols, buf.getvalue()))
        rows = 0
        t0 = time.perf_counter()
        with c.transaction():
            for t, cols, data in dumps:
                collist = sql.SQL(", ").join(sql.Identifier(x) for x in cols)
                with c.cursor().copy(sql.SQL("COPY {}.{} ({}) FROM STDIN").format(sql.Identifier(dst), sql.Identifier(t), collist)) as cp:
                    cp.write(data)
                rows += data.count(b"\n")
        return rows, time.perf_counter() - t0


def _run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop, the loop the indexer process runs on (``fleet/indexer/__main__``):
    psycopg's per-statement wait costs about three times as much CPU on the default loop."""
    import uvloop

    return uvloop.run(coro)


def fresh_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    migrate(database_url, schema)


def run(database_url: str, events: int, batch: int, seed: int = 1, compare_single: bool = True, mix: str = "default") -> dict[str, Any]:
    evs = synthetic_events(events, seed=seed, mix=MIXES[mix])
    res: dict[str, Any] = {"events": len(evs), "batch": batch, "mix": MIXES[mix]}
    if compare_single:
        fresh_schema(database_url, "bench_single")
        cpu: dict[str, float] = {}
        s = _run_loop(apply_all(database_url, "bench_single", evs, batch, bulk=False, cpu=cpu))
        res["single_events_per_s"] = round(len(evs) / s)
        res["single_cpu_us_per_event"] = {k: round(v / len(evs) * 1e6) for k, v in cpu.items()}
    fresh_schema(database_url, "bench_bulk")
    cpu = {}
    s = _run_loop(apply_all(database_url, "bench_bulk", evs, batch, bulk=True, cpu=cpu))
    res["bulk_events_per_s"] = round(len(evs) / s)
    res["bulk_cpu_us_per_event"] = {k: round(v / len(evs) * 1e6) for k, v in cpu.items()}
    fresh_schema(database_url, "bench_copy")
    rows, cs = copy_ceiling(database_url, "bench_bulk", "bench_copy")
    res["copy_rows"] = rows
    res["copy_rows_per_s"] = round(rows / cs)
    res["copy_events_per_s"] = round(len(evs) / cs)
    res["bulk_vs_copy"] = round((len(evs) / s) / (len(evs) / cs), 3)
    res["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mix", choices=sorted(MIXES), default="default")
    p.add_argument("--no-single", action="store_true", help="skip the per-event baseline")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    if not a.database_url:
        p.error("--database-url (or DATABASE_URL) is required")
    res = run(a.database_url, a.events, a.batch, a.seed, compare_single=not a.no_single, mix=a.mix)
    print(json.dumps(res, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
