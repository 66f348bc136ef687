"""Indexer benchmark: synthetic events through Redis to the indexer shard processes, end to end.

    python tools/bench_index.py [--quick] [--events N] [--shards K]     (or: make bench)

One run on this machine, with throwaway Redis and PostgreSQL (``fleet.embedded``):

1. The synthetic mix of ``tools/bench_indexing_path.synthetic_events`` (mostly likes, a fifth
   of them on three hot posts; posts with replies and quote embeds; follows, reposts, blocks,
   deletes, profile updates) is XADDed to the shard streams (``shard(did)``), actors seeded.
   Replies, quotes, reposts and likes name posts at least ``MIN_AGE`` (2,000) events old; the
   same mix with any post (``min_age=0``) is measured again and reported as its own row.
2. K indexer processes (``python -m fleet.indexer``, ``SHARDS=k``) start; the rate is measured
   between 10 % and 90 % of the entries acknowledged (sustained, start-up excluded).
3. The ceiling, in the same run: a plain ``COPY`` of the very rows the indexers wrote into the
   same (migrated, indexed) tables of a fresh schema, one writer, as events/s (best of three).
4. Peak RSS of each indexer process (VmHWM).
Statistics: the run grows every table from empty within seconds, so the plans PostgreSQL
caches for the indexers' prepared statements would be those of near-empty tables (sequential
scans) until autovacuum analyzes them, after its default one-minute nap. A production index
has statistics; so the benchmark's own server runs autovacuum every second
(``autovacuum_naptime = 1s``) and, during the warm-up (the first 10 % of the events, not
measured), analyzes a table after 5 % of it changed, which keeps the cached plans current as
they are in steady state. From the 10 % mark on, a table is analyzed again each time it has
doubled (scale factor 1.0): ANALYZE samples 30,000 rows whatever the table's size, so on a
production index (10^8 rows, default 10 %) it runs once per 10^7 changes, nothing per event,
while analyzing every 5 % of tables growing from 20,000 to 200,000 rows kept three autovacuum
workers busy: 6.5 CPU seconds in a 19-second measurement (2026-12-03, ``record``, ``like`` and
``notification`` 1.5 s each), a sixth of this 2-core machine, which production does not pay.
Vacuum keeps its defaults (its work per inserted row is the same at any size).
``--stale-stats`` keeps PostgreSQL's defaults throughout.

Connection: the indexers and the ceiling's ``COPY`` reach PostgreSQL through its Unix socket,
as a deployment with PostgreSQL on the same machine should (``DATABASE_URL=postgresql://user@/db?host=/var/run/postgresql``;
README, Configuration). Over TCP on 127.0.0.1 the indexer spent about a sixth of its CPU in
``send()`` (py-spy --native, 2026-12-03); ``--tcp`` measures that way.

5. CPU time per event between the 10 % and 90 % marks, of the indexer processes and of the
   PostgreSQL backends serving them (``/proc``): what a shard costs, less sensitive than the
   rate to other work sharing the machine.
6. The machine's CPU between the marks (``/proc/stat``): the share of it busy, and its busy
   CPU time per event, whatever process spent it (indexers, backends, Redis, autovacuum, the
   WAL writer, this script's polling). On a machine this benchmark keeps busy, the rate is
   the busy cores over that figure; the busy cores over 0.4 of the ceiling is the CPU per
   event the target ratio allows, reported beside it.
7. The share of the shards' time between the marks spent taking the batches' cross-shard
   advisory locks (``rsky_indexing_lock_seconds``, read from each indexer's metrics on
   127.0.0.1): almost all of it is waiting for another shard's batch that writes a post this
   batch replies to, quotes or reposts, or that replies to a post this batch creates.

``run(quick) -> [{name, value, unit, ceiling, ratio}]``. Targets (issue 4): 10,000 events/s all
shards together, 40 % of the ceiling, < 300 MB per shard.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psycopg  # noqa: E402
import redis as syncredis  # noqa: E402
from psycopg import sql  # noqa: E402

from fleet import embedded, streams  # noqa: E402
from fleet.codec import atjson  # noqa: E402
from fleet.shard import shard  # noqa: E402
from tools.bench_indexing_path import _cpu_seconds, copy_ceiling, dids_of, fresh_schema, seed_actors, synthetic_events  # noqa: E402

SCHEMA = "bench_index"
# Replies, quotes, reposts and likes name posts at least this many events old (0.2 s at the
# target rate; ``synthetic_events(min_age=)``). A post and a reply to it in two shards'
# concurrent batches make the reply's batch wait for the post's commit (fleet/indexing/locks.py);
# on the network a reply within a fraction of a second of its post is rare, in a small
# synthetic pool it is not. The same mix with min_age 0 is measured too and reported.
MIN_AGE = 2000
WARMUP_ANALYZE = 0.05  # autovacuum_analyze_scale_factor before the 10 % mark (then 1.0; module doc)


def fill_streams(redis_url: str, events: list[dict[str, Any]], shards: int) -> None:
    """The events as the ingester writes them (``atjson.dumps``: compact, unescaped)."""
    r = syncredis.Redis.from_url(redis_url)
    p = r.pipeline(transaction=False)
    for i, ev in enumerate(events):
        p.xadd(streams.shard_stream(streams.FIREHOSE_LIVE, shard(ev["did"], shards), shards), {"event": atjson.dumps(ev)})
        if i % 2000 == 1999:
            p.execute()
    p.execute()
    r.close()


async def _seed(database_url: str, dids: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(SCHEMA)))
        await seed_actors(conn, dids)
        await conn.commit()


def _rss_peak_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _backend_pids(conn: Any) -> list[int]:
    """Client backends of the benchmark database other than ``conn``'s own."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    ).fetchall()
    return [r[0] for r in rows]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never through a proxy


def _lock_seconds(ports: list[int]) -> float:
    """Sum of ``rsky_indexing_lock_seconds`` over the indexers' metrics: their time spent
    taking (mostly: waiting for) the batches' cross-shard locks (``fleet/indexing/locks.py``).
    NaN when an indexer's metrics cannot be read (reported as such, not as no wait)."""
    total = 0.0
    for port in ports:
        try:
            with _DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                lines = [ln for ln in resp.read().decode().splitlines() if ln.startswith("rsky_indexing_lock_seconds_sum")]
        except OSError:
            return float("nan")
        if not lines:
            return float("nan")
        total += float(lines[0].split()[-1])
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, summed over its cores
    (``/proc/stat``: busy is everything but idle and iowait); (0, 0) when it cannot be read."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - ticks[3] - ticks[4]) / hz, total / hz


def _cpu(pids: list[int]) -> dict[int, float]:
    return {p: _cpu_seconds(p) for p in pids}


def _remaining(r: Any, shards: int) -> int:
    return sum(r.xlen(streams.shard_stream(streams.FIREHOSE_LIVE, k, shards)) for k in range(shards))


def measure(redis_url: str, database_url: str, n_events: int, shards: int, batch: int = 500, min_age: int = MIN_AGE,
            ceiling: bool = True, steady_stats: bool = True) -> dict[str, Any]:
    events = synthetic_events(n_events, seed=1, min_age=min_age)
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("CHECKPOINT")  # the previous measurement's dirty pages are not this one's work
        if steady_stats:
            _analyze_after(c, WARMUP_ANALYZE)
    with syncredis.Redis.from_url(redis_url) as r0:
        r0.flushdb()  # a second measurement starts from empty streams
    fresh_schema(database_url, SCHEMA)
    asyncio.run(_seed(database_url, dids_of(events)))
    fill_streams(redis_url, events, shards)
    total = len(events)
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DATABASE_SCHEMA": SCHEMA,
        "SHARD_COUNT": str(shards),
        "INDEXER_BATCH_SIZE": str(batch),
        "INDEXER_RESOLVE_HANDLES": "false",
        "DB_POOL_SIZE": "2",
        "LOG_LEVEL": "warning",
    }
    r = syncredis.Redis.from_url(redis_url)
    ports = [embedded.free_port() for _ in range(shards)]  # metrics on 127.0.0.1: lock seconds
    procs = [subprocess.Popen([sys.executable, "-m", "fleet.indexer"], env={**env, "SHARDS": str(k), "METRICS_PORT": str(port)}, cwd=ROOT)
             for k, port in zip(range(shards), ports)]  # fmt: skip
    t10 = t90 = None
    rss: dict[int, float] = {}
    watch = psycopg.connect(database_url, autocommit=True)
    cpu10: dict[int, float] = {}
    pg10: dict[int, float] = {}
    cpu_py = cpu_pg = 0.0
    lock10 = lock90 = 0.0
    mach10 = mach90 = (0.0, 0.0)
    deadline = time.monotonic() + 600
    try:
        while True:
            left = _remaining(r, shards)
            done = total - left
            now = time.monotonic()
            for k, p in enumerate(procs):
                rss[k] = max(rss.get(k, 0.0), _rss_peak_mb(p.pid))
                if p.poll() is not None:
                    raise RuntimeError(f"indexer {k} exited with {p.returncode}")
            if t10 is None and done >= 0.1 * total:
                t10, d10 = now, done
                if steady_stats:
                    _analyze_after(watch, 1.0)  # steady state: see the module doc, Statistics
                cpu10, pg10 = _cpu([p.pid for p in procs]), _cpu(_backend_pids(watch))
                lock10 = _lock_seconds(ports)
                mach10 = _machine_cpu()
            if t90 is None and done >= 0.9 * total:
                t90, d90 = now, done
                cpu_py = sum(_cpu_seconds(p) - c for p, c in cpu10.items())
                cpu_pg = sum(_cpu_seconds(p) - c for p, c in pg10.items())
                lock90 = _lock_seconds(ports)
                mach90 = _machine_cpu()
            if left == 0:
                break
            if now > deadline:
                raise RuntimeError(f"indexers did not drain: {left} entries left")
            # 0.1 s: the rate is taken from the counts read at the marks, whatever the interval;
            # polling every 10 ms (XLEN per shard, /proc per indexer) cost this process 3.4 % of
            # the machine's CPU samples (perf, 2 shards, 2026-12-07), taken from what it measures
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        r.close()
        watch.close()
    rate = (d90 - d10) / max(1e-6, t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else 0.0
    dead = 0
    r = syncredis.Redis.from_url(redis_url)
    for key in r.scan_iter(match="*" + streams.DEAD_LETTER_SUFFIX):
        dead += r.xlen(key)
    r.close()
    rows, copy_s = 0, 0.0
    for _ in range(3 if ceiling else 0):  # the best of three: the ceiling is what PostgreSQL can do
        fresh_schema(database_url, SCHEMA + "_copy")
        rows, secs = copy_ceiling(database_url, SCHEMA, SCHEMA + "_copy")
        copy_s = secs if not copy_s else min(copy_s, secs)
    with psycopg.connect(database_url, autocommit=True) as c:  # leave nothing for the next measurement to write
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA + "_copy")))
        c.execute("CHECKPOINT")
    return {
        "events": total,
        "shards": shards,
        "events_per_s": rate,
        "copy_rows": rows,
        "copy_events_per_s": total / copy_s if copy_s else 0.0,
        "rss_mb": rss,
        "dead_letters": dead,
        "indexer_cpu_us_per_event": cpu_py / (d90 - d10) * 1e6 if t90 is not None and d90 > d10 else 0.0,
        "postgres_cpu_us_per_event": cpu_pg / (d90 - d10) * 1e6 if t90 is not None and d90 > d10 else 0.0,
        "machine_busy_share": (mach90[0] - mach10[0]) / (mach90[1] - mach10[1]) if mach90[1] > mach10[1] else 0.0,
        "machine_cpu_us_per_event": (mach90[0] - mach10[0]) / (d90 - d10) * 1e6 if t90 is not None and d90 > d10 else 0.0,
        # share of the shards' time (between the marks) spent taking the cross-shard locks
        "lock_wait_share": (lock90 - lock10) / (shards * (t90 - t10)) if t10 is not None and t90 is not None and t90 > t10 else 0.0,
    }


class _NoopIndexer:
    async def apply_batch(self, conn: Any, events: list[dict[str, Any]]) -> list:
        await conn.execute("SELECT 1")
        return []


def runtime_alone(redis_url: str, database_url: str, n_events: int) -> float:
    """events/s of the runtime itself (read, parse, one transaction per batch, XACK+XDEL) with
    an apply that does nothing: what the indexer loop costs apart from the indexing."""
    from fleet.config import load
    from fleet.indexer.main import run as indexer_run
    from fleet.log import configure, get_logger
    from fleet.runtime import RoleContext

    configure("warning")
    r = syncredis.Redis.from_url(redis_url)
    r.flushdb()
    fill_streams(redis_url, synthetic_events(n_events, seed=2), 1)
    cfg = load({"REDIS_URL": redis_url, "DATABASE_URL": database_url, "DATABASE_SCHEMA": SCHEMA,
                "INDEXER_BATCH_SIZE": "500", "LOG_LEVEL": "warning"})  # fmt: skip

    async def go() -> float:
        ctx = RoleContext("indexer", "shard-0", [0], 1, get_logger("indexer"))
        t0 = time.monotonic()
        task = asyncio.create_task(indexer_run(cfg, ctx, indexer=_NoopIndexer()))
        while r.xlen(streams.FIREHOSE_LIVE):
            await asyncio.sleep(0.01)
        dt = time.monotonic() - t0
        ctx.stopping.set()
        await task
        return n_events / dt

    try:
        return asyncio.run(go())
    finally:
        r.close()


def _fresh_statistics(database_url: str) -> None:
    """Autovacuum looks every second on the benchmark's own throwaway server (see above)."""
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        c.execute("SELECT pg_reload_conf()")


def _analyze_after(conn: Any, fraction: float) -> None:
    """Autovacuum analyzes a table once ``fraction`` of it has changed (the server's setting)."""
    conn.execute(sql.SQL("ALTER SYSTEM SET autovacuum_analyze_scale_factor = {}").format(sql.Literal(fraction)))
    conn.execute("SELECT pg_reload_conf()")


def run(quick: bool = False, events: int | None = None, shards: int = 2, batch: int = 500, stale_stats: bool = False,
        tcp: bool = False) -> list[dict]:
    n = events or (20_000 if quick else 200_000)
    tmp = tempfile.mkdtemp(prefix="bench-index-")
    os.chmod(tmp, 0o755)
    rs = embedded.Redis(os.path.join(tmp, "redis"), embedded.free_port()).start()
    pg = embedded.Postgres(os.path.join(tmp, "pg"), embedded.free_port()).start()
    try:
        if not stale_stats:
            _fresh_statistics(pg.url)
        db = pg.url if tcp else pg.socket_url  # indexers, ceiling and CPU readings alike
        m = measure(rs.url, db, n, shards, batch, steady_stats=not stale_stats)
        fresh = measure(rs.url, db, n, shards, batch, min_age=0, ceiling=False, steady_stats=not stale_stats)
        loop_rate = runtime_alone(rs.url, pg.url, 20_000 if quick else 100_000)
    finally:
        rs.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rate, ceiling = m["events_per_s"], m["copy_events_per_s"]
    rss = max(m["rss_mb"].values() or [0.0])
    return [
        {"name": f"index events/s ({shards} shards, {n} events, target 10000)", "value": rate, "unit": "events/s",
         "ceiling": ceiling, "ratio": rate / ceiling if ceiling else None},
        {"name": f"index events/s, fresh subjects (min_age 0: cross-shard waits; ceiling of the run above), {shards} shards", "value": fresh["events_per_s"],
         "unit": "events/s", "ceiling": ceiling, "ratio": fresh["events_per_s"] / ceiling if ceiling else None},
        {"name": "indexer peak RSS per shard (target < 300)", "value": rss, "unit": "MB", "ceiling": None, "ratio": None},
        {"name": f"indexer CPU per event (batch {batch})", "value": m["indexer_cpu_us_per_event"], "unit": "us", "ceiling": None, "ratio": None},
        {"name": "postgres backend CPU per event", "value": m["postgres_cpu_us_per_event"], "unit": "us", "ceiling": None, "ratio": None},
        {"name": "machine CPU busy between the marks (all cores)", "value": m["machine_busy_share"] * 100, "unit": "%",
         "ceiling": None, "ratio": None},
        {"name": "machine CPU per event (every process: indexers, backends, Redis, autovacuum...)", "value": m["machine_cpu_us_per_event"],
         "unit": "us", "ceiling": None, "ratio": None},
        {"name": "machine CPU per event that 0.4 of the ceiling allows (at this run's busy share)",
         "value": m["machine_busy_share"] * (os.cpu_count() or 1) * 1e6 / (0.4 * ceiling) if ceiling else 0.0,
         "unit": "us", "ceiling": None, "ratio": None},
        {"name": "share of shard time taking cross-shard locks (waits for other shards' batches)", "value": m["lock_wait_share"] * 100,
         "unit": "%", "ceiling": None, "ratio": None},
        {"name": "same, fresh subjects", "value": fresh["lock_wait_share"] * 100, "unit": "%", "ceiling": None, "ratio": None},
        {"name": "indexer runtime alone, no-op apply (1 shard)", "value": loop_rate, "unit": "events/s", "ceiling": None, "ratio": None},
        {"name": "index dead letters (must be 0)", "value": float(m["dead_letters"]), "unit": "entries", "ceiling": None, "ratio": None},
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--events", type=int)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--batch", type=int, default=500, help="INDEXER_BATCH_SIZE of the indexers")
    p.add_argument("--stale-stats", action="store_true", help="default autovacuum (one-minute nap): plans of empty tables")
    p.add_argument("--tcp", action="store_true", help="connect to PostgreSQL over TCP 127.0.0.1 instead of its Unix socket")
    a = p.parse_args(argv)
    for row in run(a.quick, a.events, a.shards, a.batch, a.stale_stats, a.tcp):
        ceil = f"  ceiling {row['ceiling']:.0f}  ratio {row['ratio']:.2f}" if row["ceiling"] else ""
        print(f"{row['name']:<60} {row['value']:>12.1f} {row['unit']}{ceil}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
