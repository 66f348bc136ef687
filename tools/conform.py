"""Conformance runner: index a corpus with the real fleet and compare with the official database.

    python tools/conform.py --corpus tests/fixtures/corpus/small --database-url URL --redis-url URL
        [--shards N] [--schema NAME] [--dump OUT] [--mode firehose] [--deliver-twice]
        [--kill-indexers] [--seed S] [--timeout S] [--keep-logs DIR]

What it does:

1. Drops and re-migrates schema NAME; FLUSHDB on the Redis database (use a scratch database:
   streams, cursors and identity caches of a previous run would falsify the result).
2. Serves the corpus with the replay relay (``tools/replay.py``: subscribeRepos, PLC
   directory, handle resolution) and starts the real ingester (``python -m fleet.ingester``)
   from cursor 0 and N indexer processes (``python -m fleet.indexer``, ``SHARD_COUNT=N``,
   ``SHARDS=k``).
3. Waits until the ingester's durable cursor is the corpus's last seq and every shard stream
   is empty (every entry applied and acknowledged), then stops everything with SIGTERM.
4. Dumps the schema canonically (``fleet/db/dump.py``; ``--dump OUT`` writes ``OUT/db`` and
   ``OUT/db-normalized``) and compares, table by table:
   - normalised dump = ``db-normalized/``;
   - raw dump = ``db/`` with only serial ids masked (``indexedAt`` included: the official
     indexer uses the firehose event's ``time``), for what the firehose carried (mode firehose);
   - ``DEVIATIONS`` tables their own way (below).
   It prints a per-table result table and exits 1 on any unexplained difference, on any
   dead-lettered entry, or on a timeout.

``--deliver-twice``: the ingester runs first, alone; then every shard stream is rewritten so
each window of 37 entries (a prime, so windows straddle batch boundaries) is delivered twice
in a row — duplicates land in the same batch, in the next batch, and after later events of the
same account — and only then do the indexers start.

``--kill-indexers``: a random indexer process is SIGKILLed ``--kills`` times (default 3) at
random moments (when the share of applied entries crosses random thresholds, ``--seed``) and
restarted at once; its pending entries are re-read by the new process.

Modes are the extension point for the backfill (issue 5): ``MODES`` maps a name to a
:class:`Mode` (how the streams are fed, when feeding is complete, which comparisons apply).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psycopg  # noqa: E402
import redis as syncredis  # noqa: E402
from psycopg import sql  # noqa: E402

from fleet import streams  # noqa: E402
from fleet.codec.firehose import decode_message, iter_frames_file  # noqa: E402
from fleet.db import dump  # noqa: E402
from fleet.db.migrate import migrate  # noqa: E402

DUPLICATE_WINDOW = 37


@dataclass(frozen=True)
class Deviation:
    reason: str
    comparison: str


# Every deliberate difference from the official database, in one place (README and tests name
# these). A table listed here is compared as ``comparison`` says instead of line for line.
DEVIATIONS: dict[str, Deviation] = {
    "post_agg": Deviation(
        reason="The official indexer recounts an aggregate only when a record of that kind is written "
        "through its plugins, so after it unindexes a deleted account the counts that included that "
        "account's records stay stale in db/. We keep every count exact (DESIGN.md, Aggregates).",
        comparison="same keys as db/; every count equals the official recount definition on our rows; "
        "a count that differs from db/ is explained only if db/'s own value differs from the recount "
        "of db/'s rows and ours equals that recount",
    ),
    "profile_agg": Deviation(
        reason="As post_agg: the official followers/follows/posts counts stay stale after an account "
        "deletion; ours are exact.",
        comparison="as post_agg",
    ),
}


# -- modes ----------------------------------------------------------------------------------------


@dataclass
class Mode:
    name: str
    compare_raw: bool  # indexedAt reproducible: only for rows the firehose carried
    start: Callable[["Run"], None]  # start whatever feeds the streams
    fed: Callable[["Run"], bool]  # everything has been written to the streams
    relay_options: dict = field(default_factory=dict)  # extra ReplayRelay arguments (backfill: pds_endpoint)
    compare: Optional[Callable[["Options"], list]] = None  # replaces compare_db (backfill: explained differences)


def _start_firehose(run: "Run") -> None:
    run.start_ingester()


def _firehose_fed(run: "Run") -> bool:
    return run.ingester_cursor() >= run.last_seq


MODES: dict[str, Mode] = {
    "firehose": Mode("firehose", compare_raw=True, start=_start_firehose, fed=_firehose_fed),
    # "backfill" and "both": registered by the backfill work (issue 5).
}
ALL_MODE_NAMES = ("firehose", "backfill", "both")


# -- a run ------------------------------------------------------------------------------------------


@dataclass
class Options:
    corpus: str
    database_url: str
    redis_url: str
    shards: int = 1
    schema: str = "conform"
    dump: str | None = None
    mode: str = "firehose"
    deliver_twice: bool = False
    kill_indexers: bool = False
    kills: int = 3
    seed: int = 1
    timeout: float = 300.0
    keep_logs: str | None = None
    batch_size: int = 100
    quiet: bool = False


@dataclass
class Run:
    opts: Options
    relay_url: str
    log_dir: str
    last_seq: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    kills: int = 0
    redis: Any = None

    @property
    def relay_ws(self) -> str:
        return self.relay_url.replace("http://", "ws://")

    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INDEXER_", "INGESTER_", "FETCHER_"))}
        env.update(
            {
                "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", ""),
                "REDIS_URL": self.opts.redis_url,
                "DATABASE_URL": self.opts.database_url,
                "DATABASE_SCHEMA": self.opts.schema,
                "SHARD_COUNT": str(self.opts.shards),
                "PLC_URL": self.relay_url,
                "HANDLE_RESOLVER_URL": self.relay_url,
                "METRICS_PORT": "0",
                "LOG_LEVEL": "info",
                "DB_POOL_SIZE": "2",
                "INDEXER_BATCH_SIZE": str(self.opts.batch_size),
                "INDEXER_BATCH_WAIT_MS": "20",
                "INGESTER_RELAY_HOSTS": self.relay_ws,
                "INGESTER_START_CURSOR": "0",
                "INGESTER_BATCH_MS": "10",
                "FLEET_INGESTERS": "1",
            }
        )
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        out = open(os.path.join(self.log_dir, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        out.close()

    def start_ingester(self) -> None:
        self._spawn("ingester", "fleet.ingester", self.env())

    def start_indexer(self, k: int) -> None:
        self._spawn(f"indexer-{k}", "fleet.indexer", self.env(SHARDS=str(k)))

    def ingester_cursor(self) -> int:
        v = self.redis.get(streams.relay_cursor_key(streams.FIREHOSE_LIVE, self.relay_ws))
        return int(v) if v else -1

    def streams_empty(self) -> bool:
        for k in range(self.opts.shards):
            for s in streams.indexer_streams(k, self.opts.shards):
                if self.redis.xlen(s):
                    return False
        return True

    def progress(self) -> float:
        """Share of the entries ever added to the indexer streams that are acknowledged (deleted)."""
        added = left = 0
        for k in range(self.opts.shards):
            for s in streams.indexer_streams(k, self.opts.shards):
                if self.redis.exists(s):
                    added += int(self.redis.xinfo_stream(s)["entries-added"])
                    left += self.redis.xlen(s)
        return (added - left) / added if added else 0.0

    def dead_letters(self) -> dict[str, list[dict[str, str]]]:
        out = {}
        for key in self.redis.scan_iter(match="*" + streams.DEAD_LETTER_SUFFIX):
            name = key.decode()
            out[name] = [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in self.redis.xrange(key)]
        return out

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RunFailed(f"{name} exited with {p.returncode} (log: {os.path.join(self.log_dir, name + '.log')})\n{self.tail(name)}")

    def tail(self, name: str, n: int = 30) -> str:
        try:
            with open(os.path.join(self.log_dir, name + ".log"), encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def kill_one(self, rng: random.Random) -> None:
        names = sorted(n for n in self.procs if n.startswith("indexer-"))
        name = rng.choice(names)
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.kills += 1
        self.start_indexer(int(name.split("-")[1]))

    def stop_all(self, timeout: float = 20.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class RunFailed(Exception):
    pass


def corpus_last_seq(corpus: str) -> int:
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        data = f.read()
    last = None
    for msg in iter_frames_file(data):
        last = msg
    if last is None:
        return 0
    _, body = decode_message(last)
    return int(body.get("seq") or 0)


def reset(opts: Options) -> None:
    with psycopg.connect(opts.database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(opts.schema)))
    migrate(opts.database_url, opts.schema)
    r = syncredis.Redis.from_url(opts.redis_url)
    r.flushdb()
    r.close()


def duplicate_streams(r: Any, shard_count: int, window: int = DUPLICATE_WINDOW) -> int:
    """Rewrite every indexer stream so each window of entries appears twice in a row."""
    total = 0
    for k in range(shard_count):
        for s in streams.indexer_streams(k, shard_count):
            entries = r.xrange(s)
            if not entries:
                continue
            r.delete(s)
            p = r.pipeline(transaction=False)
            for i in range(0, len(entries), window):
                chunk = entries[i : i + window]
                for _ in range(2):
                    for _, fields in chunk:
                        p.xadd(s, fields)
                        total += 1
            p.execute()
    return total


def _wait(run: Run, mode: Mode, deadline: float, rng: random.Random | None, indexers: bool) -> None:
    """Poll until fed and drained. With ``rng``, SIGKILL an indexer each time the share of
    entries applied crosses one of ``opts.kills`` random thresholds (so kills land while work
    is in hand, however fast or slow the machine)."""
    thresholds = sorted(rng.uniform(0.05, 0.9) for _ in range(run.opts.kills)) if rng else []
    while True:
        run.check_alive()
        if thresholds and run.progress() >= thresholds[0]:
            thresholds.pop(0)
            run.kill_one(rng)  # type: ignore[arg-type]
            continue
        if not thresholds and mode.fed(run) and (not indexers or run.streams_empty()):
            return
        if time.monotonic() > deadline:
            raise RunFailed(
                f"timeout: ingester cursor {run.ingester_cursor()} of {run.last_seq}, "
                f"streams empty: {run.streams_empty()}, kills {run.kills}"
            )
        time.sleep(0.02)


def feed_and_index(opts: Options, log_dir: str) -> Run:
    """Steps 1-3 of the module doc; the schema is left in place. Returns the finished run."""
    from tools.replay import ReplayRelay

    if opts.mode not in MODES:
        raise RunFailed(
            f"--mode {opts.mode} is not implemented yet (the backfill work registers it in tools/conform.py MODES)"
        )
    mode = MODES[opts.mode]
    reset(opts)
    relay = ReplayRelay(opts.corpus, **mode.relay_options)
    url = relay.start_in_thread()
    run = Run(opts, url, log_dir, corpus_last_seq(opts.corpus), redis=syncredis.Redis.from_url(opts.redis_url))
    rng = random.Random(opts.seed) if opts.kill_indexers else None
    deadline = time.monotonic() + opts.timeout
    try:
        if opts.deliver_twice:
            mode.start(run)
            _wait(run, mode, deadline, None, indexers=False)
            duplicate_streams(run.redis, opts.shards)
        else:
            mode.start(run)
        for k in range(opts.shards):
            run.start_indexer(k)
        _wait(run, mode, deadline, rng, indexers=True)
    finally:
        run.stop_all()
        relay.stop_in_thread()
    return run


# -- comparing ---------------------------------------------------------------------------------------


@dataclass
class TableResult:
    table: str
    expected: int
    got: int
    normalized: str  # "ok", "DIFFERS", "-"
    raw: str
    note: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return "DIFFERS" not in (self.normalized, self.raw)


@dataclass
class Report:
    tables: list[TableResult]
    dead_letters: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    kills: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.dead_letters and all(t.ok for t in self.tables)

    @property
    def differing(self) -> list[str]:
        return [t.table for t in self.tables if not t.ok]

    def format(self, show: int = 5) -> str:
        out = [f"{'table':30} {'expected':>8} {'got':>8} {'normalized':>10} {'raw':>8}  note"]
        for t in self.tables:
            out.append(f"{t.table:30} {t.expected:8} {t.got:8} {t.normalized:>10} {t.raw:>8}  {t.note}")
        for t in self.tables:
            if t.details:
                out.append(f"\n== {t.table}")
                out.extend("  " + d for d in t.details[: show * 4])
        for s, entries in self.dead_letters.items():
            out.append(f"\n== dead letters in {s}: {len(entries)}")
            out.extend(f"  {e.get('id')} {e.get('error', '')[:200]}" for e in entries[:show])
        if self.error:
            out.append(f"\nERROR: {self.error}")
        out.append(f"\nresult: {'OK' if self.ok else 'DIFFERENT'}  ({len(self.differing)} tables differ: {', '.join(self.differing) or '-'}; "
                   f"{sum(len(v) for v in self.dead_letters.values())} dead letters; {self.kills} indexer kills; {self.seconds:.1f}s)")
        return "\n".join(out)


def _diff_details(d: dump.TableDiff, kind: str, show: int = 5) -> list[str]:
    out = [f"{kind}: {len(d.missing)} missing, {len(d.extra)} extra"]
    for key, cols in d.changed[:show]:
        out.append(f"  changed {key}: " + ", ".join(f"{c}: {e!r} -> {g!r}" for c, (e, g) in cols.items())[:300])
    out.extend("  - " + x[:300] for x in d.missing[:show])
    out.extend("  + " + x[:300] for x in d.extra[:show])
    return out


def _recount(conn: psycopg.Connection, schema: str) -> dict[tuple[str, str], dict[str, int]]:
    from fleet.indexing.aggregates import RECOUNT_SQL

    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    return {key: {k: int(n) for k, n in conn.execute(q).fetchall()} for key, q in RECOUNT_SQL.items()}  # type: ignore[call-overload]


def compare_aggregates(opts: Options, spec: dump.Spec, ours_raw: dict[str, list[str]]) -> list[TableResult]:
    """DEVIATIONS' comparison of post_agg and profile_agg (see there)."""
    scratch = opts.schema + "_expected"
    db_dir = os.path.join(opts.corpus, "db")
    with psycopg.connect(opts.database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(scratch)))
    migrate(opts.database_url, scratch)
    dump.load_rows(opts.database_url, scratch, db_dir, spec)
    with psycopg.connect(opts.database_url, autocommit=True) as c:
        truth_ours = _recount(c, opts.schema)
        truth_exp = _recount(c, scratch)
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(scratch)))
    results = []
    for table in ("post_agg", "profile_agg"):
        key_col = spec.tables[table].primary_key[0]
        ours = {r[key_col]: r for r in (json.loads(x) for x in ours_raw.get(table, []))}
        with open(os.path.join(db_dir, table + ".jsonl"), encoding="utf-8") as f:
            exp = {r[key_col]: r for r in (json.loads(x) for x in f if x.strip())}
        cols = [c for c in spec.tables[table].columns if c != key_col]
        details = []
        missing = sorted(set(exp) - set(ours))
        extra = sorted(set(ours) - set(exp))
        details += [f"missing key {k}" for k in missing] + [f"extra key {k}" for k in extra]
        stale = 0
        for key in sorted(set(ours)):
            for col in cols:
                v = ours[key][col]
                recount = (table, col) in truth_ours
                if recount and v != truth_ours[(table, col)].get(key, 0):
                    details.append(f"{key} {col}={v} but a recount gives {truth_ours[(table, col)].get(key, 0)}")
                if key not in exp or exp[key][col] == v:
                    continue
                e = exp[key][col]
                official_truth = truth_exp.get((table, col), {}).get(key, 0) if recount else None
                if recount and e != official_truth and v == official_truth:
                    stale += 1  # the documented deviation: db/ is stale, ours is exact
                else:
                    details.append(f"{key} {col}={v}, db/ has {e} (recount of db/ rows: {official_truth})")
        res = TableResult(
            table,
            len(exp),
            len(ours),
            "DIFFERS" if details else "ok",
            "-",
            f"deviation: by key + recount; {stale} stale official count(s) differ as documented",
            details,
        )
        results.append(res)
    return results


def compare_db(opts: Options, compare_raw: bool = True) -> list[TableResult]:
    """Dump ``opts.schema`` (writing ``opts.dump`` if set) and compare it with the corpus."""
    spec = dump.load_spec(os.path.join(opts.corpus, "db", "tables.json"))
    d = dump.dump(opts.database_url, opts.schema, spec)
    if opts.dump:
        dump.write(d, opts.dump)
    expected_raw = dump.read_dir(os.path.join(opts.corpus, "db"))
    names = [t for t in sorted(d.normalized) if t not in DEVIATIONS]
    expected_norm = dump.mask_clock_values(dump.read_dir(os.path.join(opts.corpus, "db-normalized")))
    norm = {n: _compare_lines(n, lines, expected_norm.get(n, []), spec)
            for n, lines in dump.mask_clock_values(d.normalized).items() if n in names}
    ours_raw_masked = dump.mask_clock_values(d.raw)
    expected_raw = dump.mask_clock_values(expected_raw)
    results = []
    for name in names:
        n = norm[name]
        details = [] if n.ok else _diff_details(n, "normalized")
        raw_state = "-"
        if compare_raw:
            ours = dump.normalize_rows(name, (json.loads(x) for x in ours_raw_masked[name]), None, dump.SERIAL_RULES)
            theirs = dump.normalize_rows(name, (json.loads(x) for x in expected_raw.get(name, [])), None, dump.SERIAL_RULES)
            r = _compare_lines(name, ours, theirs, spec)
            raw_state = "ok" if r.ok else "DIFFERS"
            if not r.ok:
                details += _diff_details(r, "raw (serial ids masked)")
        results.append(TableResult(name, n.expected, n.got, "ok" if n.ok else "DIFFERS", raw_state, "", details))
    results += compare_aggregates(opts, spec, d.raw)
    results.sort(key=lambda t: t.table)
    return results


def _compare_lines(name: str, ours: list[str], theirs: list[str], spec: dump.Spec) -> dump.TableDiff:
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, name + ".jsonl"), "w", encoding="utf-8") as f:
            f.write("".join(x + "\n" for x in theirs))
        return dump.compare({name: ours}, tmp, spec, tables=[name])[name]


def conform(opts: Options) -> Report:
    """Run the whole conformance check; never raises for a failed run (see ``Report.error``)."""
    t0 = time.monotonic()
    log_dir = opts.keep_logs or tempfile.mkdtemp(prefix="conform-")
    os.makedirs(log_dir, exist_ok=True)
    run = None
    try:
        run = feed_and_index(opts, log_dir)
        mode = MODES[opts.mode]
        tables = mode.compare(opts) if mode.compare else compare_db(opts, mode.compare_raw)
        report = Report(tables, run.dead_letters(), run.kills, time.monotonic() - t0)
    except RunFailed as e:
        report = Report([], {}, run.kills if run else 0, time.monotonic() - t0, str(e))
    if report.ok and not opts.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    elif not report.ok:
        report.error = (report.error + "\n" if report.error else "") + f"process logs kept in {log_dir}"
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="conform", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--redis-url", required=True, help="a scratch Redis database: it is flushed")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--schema", default="conform")
    p.add_argument("--dump")
    p.add_argument("--mode", choices=ALL_MODE_NAMES, default="firehose")
    p.add_argument("--deliver-twice", action="store_true")
    p.add_argument("--kill-indexers", action="store_true")
    p.add_argument("--kills", type=int, default=3, help="with --kill-indexers: how many SIGKILLs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--keep-logs", help="write process logs here (default: a temporary directory, kept on failure)")
    a = p.parse_args(argv)
    opts = Options(
        corpus=a.corpus, database_url=a.database_url, redis_url=a.redis_url, shards=a.shards, schema=a.schema,
        dump=a.dump, mode=a.mode, deliver_twice=a.deliver_twice, kill_indexers=a.kill_indexers, kills=a.kills, seed=a.seed,
        timeout=a.timeout, keep_logs=a.keep_logs, batch_size=a.batch_size,
    )
    report = conform(opts)
    print(report.format())
    if DEVIATIONS:
        print("\ndeliberate deviations:")
        for t, dv in DEVIATIONS.items():
            print(f"  {t}: {dv.reason}")
    return 0 if report.ok else 1


def _register_backfill_modes() -> None:
    """tools/conform_backfill.py adds "backfill" and "both" (issue 5); it gets this module itself,
    so running conform.py as a script registers into the same MODES."""
    from tools import conform_backfill

    conform_backfill.register(sys.modules[__name__])


_register_backfill_modes()

if __name__ == "__main__":
    sys.exit(main())
