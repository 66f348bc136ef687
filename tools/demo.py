#!/usr/bin/env python3
"""``make demo``: the whole fleet on the bundled corpus, on this machine, without internet.

1. starts a throwaway Redis and PostgreSQL from the system binaries (data under ``./var/demo``,
   wiped at start unless ``--keep``) and applies the schema;
2. starts the replay relay (``tools/replay.py``) on ``tests/fixtures/corpus/small``: firehose,
   listRepos, getRepo, the PLC directory and handle resolution, all on 127.0.0.1;
3. starts the master (``python -m fleet.cli`` = ``rsky-fleet``) with ingester, fetcher and
   ``--shards`` indexer shards pointed at the relay (its log goes to ``var/demo/fleet.log``);
4. shows ``tools/lag.py --watch`` until every stream is read and acknowledged, the relay cursor
   has reached the corpus's last ``seq`` and listRepos paging has finished;
5. prints the rows indexed per table next to the official AppView's rows for the same corpus,
   then drains the fleet (SIGTERM) and stops everything.

Exit 0 when the fleet drained within ``--timeout`` with rows indexed and no dead letter; 1
otherwise (with the tail of the fleet's log, or the dead-letter count); 69 when a server binary
is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fleet import embedded, exitcodes, streams  # noqa: E402
from fleet.codec.firehose import decode_message, iter_frames_file  # noqa: E402
from fleet.lag import cli as lag_cli  # noqa: E402

SCHEMA = "bsky"


class FleetDied(RuntimeError):
    """The master exited while the demo was watching it."""


def last_seq(corpus: str) -> int:
    """The highest ``seq`` of the corpus's firehose (what the relay cursor must reach)."""
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        data = f.read()
    top = 0
    for msg in iter_frames_file(data):
        _, body = decode_message(msg)
        if isinstance(body.get("seq"), int):
            top = max(top, body["seq"])
    return top


def start_relay(corpus: str, log_path: str) -> tuple[subprocess.Popen, str]:
    """``tools/replay.py`` on a free port; returns the process and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tools", "replay.py"), corpus, "--port", "0", "--pds-endpoint", "self"],
        stdout=subprocess.PIPE, stderr=open(log_path, "ab"), text=True, start_new_session=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "listening http://127.0.0.1:<port> frames=N"
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"replay relay did not start (see {log_path}): {line!r}")
    return proc, line.split()[1]


def fleet_env(redis_url: str, database_url: str, relay: str, shards: int, backfill: bool) -> dict[str, str]:
    host = relay.split("://", 1)[1]
    env = {k: v for k, v in os.environ.items() if k not in ("ENV_FILE", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update({
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DATABASE_SCHEMA": SCHEMA,
        "SHARD_COUNT": str(shards),
        "SHARDS": "all",
        "FLEET_ROLES": "ingester,fetcher,indexer" if backfill else "ingester,indexer",
        "INGESTER_RELAY_HOSTS": f"ws://{host}",
        "INGESTER_START_CURSOR": "0",
        "INGESTER_LISTREPOS": "true" if backfill else "false",
        "INGESTER_LISTREPOS_HOSTS": relay,
        "PLC_URL": relay,
        "HANDLE_RESOLVER_URL": relay,
        "METRICS_PORT": "0",
        "LOG_FORMAT": "kv",
        "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


def counts(database_url: str) -> dict[str, int]:
    """Rows per table of the AppView schema."""
    import psycopg
    from psycopg import sql

    out = {}
    with psycopg.connect(database_url) as c:
        tables = [r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' "
            "ORDER BY table_name", (SCHEMA,))]
        for t in tables:
            out[t] = c.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(t))).fetchone()[0]
    return out


def official_counts(corpus: str) -> dict[str, int]:
    """Rows per table of the official AppView after indexing the same corpus (``db/*.jsonl``)."""
    out = {}
    d = os.path.join(corpus, "db")
    for name in sorted(os.listdir(d)):
        if name.endswith(".jsonl"):
            with open(os.path.join(d, name), "rb") as f:
                out[name[:-6]] = sum(1 for line in f if line.strip())
    return out


def summary(ours: dict[str, int], official: dict[str, int]) -> str:
    # migration bookkeeping, and the fleet's own additive tables (history, tombstones), which
    # the official AppView does not have
    skip = {"kysely_migration", "kysely_migration_lock"}
    names = sorted(t for t in set(ours) | set(official)
                   if t not in skip and not t.startswith("fleet_") and (ours.get(t) or official.get(t)))
    w = max([len(n) for n in names] + [5])
    lines = [f"{'table'.ljust(w)}  {'indexed':>8}  {'official':>8}", f"{'-' * w}  {'-' * 8}  {'-' * 8}"]
    same = 0
    for n in names:
        a, b = ours.get(n), official.get(n)
        mark = "" if a == b else "   <- differs"
        same += a == b
        lines.append(f"{n.ljust(w)}  {'-' if a is None else a:>8}  {'-' if b is None else b:>8}{mark}")
    lines.append(f"{same}/{len(names)} non-empty tables have the official row count "
                 "(counts only; tools/conform.py compares the rows themselves)")
    return "\n".join(lines)


def dead_lettered(redis_url: str) -> int:
    """Entries in every dead-letter stream (``<stream>:dlq``)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return sum(r.xlen(k) for k in r.scan_iter(match="*" + streams.DEAD_LETTER_SUFFIX, _type="stream"))
    finally:
        r.close()


def stop(proc: subprocess.Popen | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: str, n: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


def watch(redis_url: str, shards: int, relay_key: str, want_seq: int, master: subprocess.Popen,
          deadline: float) -> bool:
    """``lag.py --watch --until-drained`` until the relay cursor reached ``want_seq`` as well."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)

    def pause(seconds: float) -> None:
        if master.poll() is not None:
            raise FleetDied(f"the fleet master exited with {master.returncode}")
        time.sleep(seconds)

    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            lag_cli.main(["--redis-url", redis_url, "--shards", str(shards), "--watch", "--until-drained",
                          "--interval", "1", "--window", "2", "--timeout", f"{left:.1f}"], pause=pause)
            cursor = r.get(relay_key)
            if cursor is not None and int(cursor) >= want_seq:
                return True
            pause(1.0)
    finally:
        r.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=os.path.join(ROOT, "tests", "fixtures", "corpus", "small"))
    p.add_argument("--var", default=os.path.join(ROOT, "var", "demo"), help="data directory (wiped at start)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the fleet to drain")
    p.add_argument("--no-backfill", action="store_true", help="firehose only (no listRepos, no fetcher)")
    p.add_argument("--keep", action="store_true", help="do not wipe --var first")
    a = p.parse_args(argv)

    if not a.keep:
        shutil.rmtree(a.var, ignore_errors=True)
    os.makedirs(a.var, exist_ok=True)
    rds = pg = relay = master = None
    fleet_log = os.path.join(a.var, "fleet.log")
    try:
        print(f"demo: starting Redis and PostgreSQL under {a.var}", flush=True)
        try:
            rds = embedded.Redis(os.path.join(a.var, "redis"), embedded.free_port()).start()
            pg = embedded.Postgres(os.path.join(a.var, "pg"), embedded.free_port()).start()
        except embedded.ServerMissing as e:
            print(f"demo: {e}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
        from fleet.db.migrate import migrate

        migrate(pg.url, SCHEMA)
        relay, relay_url = start_relay(a.corpus, os.path.join(a.var, "relay.log"))
        want = last_seq(a.corpus)
        print(f"demo: replay relay {relay_url} serving {a.corpus} (seq 1..{want})", flush=True)
        with open(fleet_log, "ab") as log:
            master = subprocess.Popen([sys.executable, "-m", "fleet.cli"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      env=fleet_env(rds.url, pg.url, relay_url, a.shards, not a.no_backfill),
                                      start_new_session=True)
        print(f"demo: fleet master pid {master.pid} ({a.shards} indexer shards); its log: {fleet_log}", flush=True)
        relay_key = streams.relay_cursor_key(streams.FIREHOSE_LIVE, relay_url.split("://", 1)[1])
        started = time.monotonic()
        try:
            ok = watch(rds.url, a.shards, relay_key, want, master, started + a.timeout)
        except FleetDied as e:
            print(f"\ndemo: {e}; last lines of {fleet_log}:\n{tail(fleet_log)}", file=sys.stderr)
            return 1
        took = time.monotonic() - started
        if not ok:
            print(f"\ndemo: not drained after {a.timeout:g}s; last lines of {fleet_log}:\n{tail(fleet_log)}", file=sys.stderr)
            return 1
        print(f"\ndemo: everything indexed in {took:.1f}s. Rows per table:\n", flush=True)
        ours = counts(pg.url)
        print(summary(ours, official_counts(a.corpus)), flush=True)
        dead = dead_lettered(rds.url)
        if dead or not any(ours.values()):
            print(f"\ndemo: {dead} entries were dead-lettered, {sum(ours.values())} rows indexed: the fleet is not "
                  f"healthy; see {fleet_log} (journal lines at <3>) and the dead-letter streams", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 1
    finally:
        stop(master, 40)
        stop(relay, 10)
        for srv in (pg, rds):
            if srv is not None:
                srv.stop()


if __name__ == "__main__":
    sys.exit(main())
