"""Instructions per event of the indexing, on both sides, counted by callgrind: a noise-free A/B.

    python tools/bench_instructions.py [--events 6000] [--base 2000] [--side both|python|process|postgres|all]

On this shared 2-core VM the same benchmark run twice moves by ±15-25 % (``bench_index.py``),
which hides the few per cent one change is worth. ``valgrind --tool=callgrind`` counts
instructions, which repeat to within 0.1 % whatever else the machine does, so two trees can be
compared by running this script in each (it measures the code it is run from):

* **indexer** (``python``): the process that applies ``synthetic_events`` (the mix of
  ``tools/bench_indexing_path.py``, replies, quotes, reposts and likes naming posts at least
  200 events old, so the shorter run's events are the longer one's first) in batches of ``--batch`` (500) with ``Indexer.apply_batch`` on uvloop, against a throwaway
  PostgreSQL; run for ``--base`` and for ``--events`` events, the difference divided by the
  difference in events, so start-up, imports and the event generator cancel out
  (``PYTHONHASHSEED=0``: set and dict order, and so the instructions, repeat).
* **indexer process** (``process``): ``python -m fleet.indexer`` (one shard) under callgrind,
  draining a stream filled as the ingester fills it, for ``--base`` and ``--events`` entries:
  the runtime (read, parse, acknowledge) as well as the indexing.
* **PostgreSQL backend** (``postgres``): a throwaway server started under callgrind (every
  backend traced); the first third of the events is applied on one connection (warm-up:
  tables, caches, prepared statements), ``ANALYZE``, then the rest on a second connection,
  whose backend's instructions are divided by its events. Autovacuum is off, so no worker's
  work lands in the reading.

What it leaves out: time (an instruction of ``array_in`` is not one of ``_bt_compare``), the
Redis side of the runtime, and planning at steady state (a short run re-plans each prepared
statement a few times after ``ANALYZE``, a long one almost never). Use it to compare code, and
``bench_index.py`` for rates. Needs valgrind (``apt-get install -y valgrind``); about three
minutes for both sides at the defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psycopg  # noqa: E402

from fleet import embedded  # noqa: E402

SCHEMA = "bench_instr"
MIN_AGE = 200  # replies, quotes, reposts, likes name posts this many events old (the same in both runs: one prefix)
BATCH = 500  # events per batch by default (``--batch``): INDEXER_BATCH_SIZE's default


def _apply(url: str, n: int, batch: int = BATCH) -> None:
    """Apply the synthetic mix of ``n`` events to a fresh schema (one connection): the indexer side's run."""
    import uvloop

    from tools.bench_indexing_path import apply_all, fresh_schema, synthetic_events

    fresh_schema(url, SCHEMA)
    uvloop.run(apply_all(url, SCHEMA, synthetic_events(n, seed=1, min_age=MIN_AGE), batch, True))


def _need_valgrind() -> str:
    vg = shutil.which("valgrind")
    if vg is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    return vg


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def python_side(events: int, base: int, tmp: str, batch: int = BATCH) -> float:
    """Instructions per event of the indexing process (difference of two runs)."""
    vg = _need_valgrind()
    pg = embedded.Postgres(os.path.join(tmp, "pg-py"), embedded.free_port()).start()
    try:
        counts = []
        for n in (base, events):
            out = os.path.join(tmp, f"py.{n}.cg")
            code = f"import sys; sys.path.insert(0, {ROOT!r}); from tools.bench_instructions import _apply; _apply({pg.socket_url!r}, {n}, {batch})"
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            subprocess.run([vg, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", code],
                           check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts.append(_total(out))
        return (counts[1] - counts[0]) / (events - base)
    finally:
        pg.stop()


def process_side(events: int, base: int, tmp: str, batch: int = BATCH) -> float:
    """Instructions per event of ``python -m fleet.indexer`` (one shard) draining entries from Redis
    written as the ingester writes them: the runtime (read, parse, ack) and the indexing."""
    import asyncio

    import redis as syncredis

    from fleet import streams
    from tools import bench_index
    from tools.bench_indexing_path import dids_of, fresh_schema, synthetic_events

    vg = _need_valgrind()
    rs = embedded.Redis(os.path.join(tmp, "redis"), embedded.free_port()).start()
    pg = embedded.Postgres(os.path.join(tmp, "pg-proc"), embedded.free_port()).start()
    counts = []
    try:
        for n in (base, events):
            evs = synthetic_events(n, seed=1, min_age=MIN_AGE)
            fresh_schema(pg.socket_url, bench_index.SCHEMA)
            asyncio.run(bench_index._seed(pg.socket_url, dids_of(evs)))
            with syncredis.Redis.from_url(rs.url) as r:
                r.flushdb()
                bench_index.fill_streams(rs.url, evs, 1)  # as the ingester writes them
                env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0", "REDIS_URL": rs.url, "DATABASE_URL": pg.socket_url,
                       "DATABASE_SCHEMA": bench_index.SCHEMA, "SHARD_COUNT": "1", "SHARDS": "0", "INDEXER_BATCH_SIZE": str(batch),
                       "INDEXER_RESOLVE_HANDLES": "false", "DB_POOL_SIZE": "2", "METRICS_PORT": "0", "LOG_LEVEL": "warning"}  # fmt: skip
                out = os.path.join(tmp, f"proc.{n}.cg")
                proc = subprocess.Popen([vg, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "fleet.indexer"],
                                        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 900
                while r.xlen(streams.FIREHOSE_LIVE) > 0:  # acknowledged entries are deleted (XACK+XDEL)
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        raise RuntimeError("the indexer under callgrind exited or did not drain its stream")
                    time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                proc.wait(300)
            counts.append(_total(out))
    finally:
        rs.stop()
        pg.stop()
    return (counts[1] - counts[0]) / (events - base)


def postgres_side(events: int, tmp: str, batch: int = BATCH) -> float:
    """Instructions per event of the PostgreSQL backend that applied the measured events."""
    vg = _need_valgrind()
    pg = embedded.Postgres(os.path.join(tmp, "pg"), embedded.free_port())
    pg.start()  # initdb, then stopped: the server runs again under callgrind
    pg.stop()
    cg = os.path.join(tmp, "cg")
    os.makedirs(cg)
    os.chmod(cg, 0o777)
    opts = ["-c", f"port={pg.port}", "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={os.path.abspath(pg.datadir)}",
            "-c", "shared_buffers=256MB", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "autovacuum=off"]  # fmt: skip
    cmd = pg._as_owner() + [vg, "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={cg}/pg.%p",
                            os.path.join(embedded.find_pg_bindir(), "postgres"), "-D", pg.datadir, *opts]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = pg.socket_url
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                psycopg.connect(url, connect_timeout=5).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        warm = events // 3
        from tools.bench_indexing_path import synthetic_events

        evs = synthetic_events(events, seed=1, min_age=MIN_AGE)
        _run_part(url, evs[:warm], fresh=True, batch=batch)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("ANALYZE")
        backend = _run_part(url, evs[warm:], fresh=False, batch=batch)
    finally:
        try:
            with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGINT)  # fast shutdown: every backend writes its counts
        except (OSError, ValueError):
            proc.kill()
        proc.wait(300)
    return _total(os.path.join(cg, f"pg.{backend}")) / (events - warm)


def _run_part(url: str, evs: list, fresh: bool, batch: int) -> int:
    """Apply ``evs`` on one new connection; returns that connection's backend pid."""
    import uvloop

    from tools.bench_indexing_path import apply_all, fresh_schema

    if fresh:
        fresh_schema(url, SCHEMA)
    backend: list[int] = []
    uvloop.run(apply_all(url, SCHEMA, evs, batch, True, backend=backend))
    return backend[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--events", type=int, default=6000)
    p.add_argument("--base", type=int, default=2000, help="the shorter run of the indexer side")
    p.add_argument("--side", choices=("both", "python", "process", "postgres", "all"), default="both",
                   help="both: python and postgres; process: the whole indexer process reading Redis; all: the three")
    p.add_argument("--batch", type=int, default=BATCH, help="events per batch (INDEXER_BATCH_SIZE)")
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-instr-")
    os.chmod(tmp, 0o755)
    try:
        if a.side in ("both", "python", "all"):
            print(f"indexer instructions per event      {python_side(a.events, a.base, tmp, a.batch):>12,.0f}  ({a.events} - {a.base} events)")
        if a.side in ("process", "all"):
            print(f"indexer process (runtime) instr/ev  {process_side(a.events, a.base, tmp, a.batch):>12,.0f}  ({a.events} - {a.base} events from Redis)")
        if a.side in ("both", "postgres", "all"):
            print(f"postgres backend instructions/event {postgres_side(a.events, tmp, a.batch):>12,.0f}  ({a.events - a.events // 3} events after {a.events // 3})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
