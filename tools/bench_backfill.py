"""Backfill benchmark: one fetcher process over synthetic repos served from 127.0.0.1.

    python -m tools.bench_backfill [--quick]

Repos of 10..50,000 records (real signed CARs from ``tools/synth_repo.py``) are served by a
PLC+PDS aiohttp server in this process; one fetcher runs as a child process (``fleet.fetcher``)
against a throwaway redis-server, its output stream trimmed as an indexer would. Figures:
repos/s and records/s of the fetcher (wall time from start to the last ack), and the ceiling:
``libipld.decode_car`` alone on the same CARs, records/s (best of three); fetcher peak RSS
(VmHWM) while it handles a 50,000-record repo. As in the ingest benchmark, the process measured
has a core of its own: the fetcher is pinned to core 1, the PDS/PLC server (this process) and
redis-server to core 0 (on a machine with two cores or more).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import libipld
import redis
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fleet import embedded, streams  # noqa: E402
from tools.bench_ingest import pin  # noqa: E402 - the process measured has a core of its own
from tools.synth_repo import build_repo, new_key, synthetic_records  # noqa: E402

CHILD = r"""
import asyncio, sys, signal
from fleet import config
from fleet.fetcher import main
from fleet.log import configure, get_logger
from fleet.runtime import RoleContext
async def go():
    cfg = config.load()
    configure(level=cfg.LOG_LEVEL, fmt=cfg.LOG_FORMAT)
    ctx = RoleContext(role="fetcher", instance="bench", shards=[], shard_count=1, log=get_logger("fetcher"))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, ctx.stopping.set)
    await main.run(cfg, ctx)
import uvloop; uvloop.install()
asyncio.run(go())
"""


def _did(i: int) -> str:
    return "did:plc:" + f"bench{i:019d}"


def serve(cars: dict[str, bytes]) -> tuple[str, threading.Event]:
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, str] = {}

    async def plc(req: web.Request) -> web.Response:
        did = req.match_info["did"]
        return web.json_response({"id": did, "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": box["url"]}]})

    async def get_repo(req: web.Request) -> web.Response:
        return web.Response(body=cars[req.query["did"]], content_type="application/vnd.ipld.car")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", get_repo)
        app.router.add_get("/{did}", plc)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
    ready.wait(10)
    return box["url"], stop


def run(quick: bool = False, child_cmd: list[str] | None = None, child_env: dict[str, str] | None = None) -> list[dict]:
    sizes = [10] * 50 + [100] * 20 + [1000] * 5 + [10000] * 2 + ([5000] if quick else [50000])
    key = new_key()
    cars: dict[str, bytes] = {}
    total_records = 0
    for i, n in enumerate(sizes):
        cars[_did(i)], _ = build_repo(_did(i), synthetic_records(n, _did(i), seed=i), key)
        total_records += n

    # ceiling: libipld.decode_car alone on the same CARs (best of 3: the strictest ceiling)
    ceiling = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for car in cars.values():
            libipld.decode_car(car)
        ceiling = max(ceiling, total_records / (time.perf_counter() - t0))

    tmp = tempfile.mkdtemp(prefix="bench-backfill-")
    rs = embedded.Redis(os.path.join(tmp, "redis"), embedded.free_port()).start()
    url, stop_server = serve(cars)
    r = redis.Redis.from_url(rs.url)
    try:
        env = {**os.environ, "REDIS_URL": rs.url, "PLC_URL": url, "INGESTER_COLLECTIONS": "*", "FETCHER_HIGH_WATER_MARK": "1000000",
               "LOG_LEVEL": "warning", "PYTHONPATH": ROOT, **(child_env or {})}
        proc = subprocess.Popen(child_cmd or [sys.executable, "-c", CHILD], env=env, cwd=ROOT)
        if (os.cpu_count() or 1) >= 2:  # the fetcher gets core 1; the PDS/PLC server, redis and the clock core 0
            pin(proc.pid, {1})
            pin(rs.proc.pid, {0})
            pin(os.getpid(), {0})
        peak_rss = 0
        try:
            # the clock starts once the fetcher is up and reading (interpreter start-up excluded)
            deadline = time.monotonic() + 60
            while not _consumers(r):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fetcher did not start (exit {proc.returncode})")
                time.sleep(0.01)
            pipe = r.pipeline(transaction=False)
            for i in range(len(sizes)):
                pipe.xadd(streams.REPO_BACKFILL, {"repo": json.dumps({"did": _did(i), "host": "bench", "rev": None, "status": None, "active": True})})
            t0 = time.perf_counter()
            cpu0 = _cpu_s(proc.pid)
            pipe.execute()
            while True:
                done = int(r.hget(streams.BACKFILL_STATS, "done") or 0) + int(r.hget(streams.BACKFILL_STATS, "failed") or 0)
                peak_rss = max(peak_rss, _rss_kib(proc.pid))
                if done >= len(sizes):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"fetcher exited with {proc.returncode}")
                if r.xlen(streams.FIREHOSE_BACKFILL) > 200_000:
                    r.xtrim(streams.FIREHOSE_BACKFILL, maxlen=0)  # the indexer's part
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            cpu_s = _cpu_s(proc.pid) - cpu0
            peak_rss = max(peak_rss, _hwm_kib(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
        records = int(r.hget(streams.BACKFILL_STATS, "records") or 0)
        assert records == total_records, (records, total_records)
    finally:
        stop_server.set()
        r.close()
        rs.stop()
        pin(os.getpid(), set(range(os.cpu_count() or 1)))
    rps = records / elapsed
    return [
        {"name": "backfill fetcher repos/s (1 process)", "value": len(sizes) / elapsed, "unit": "repos/s", "ceiling": None, "ratio": None},
        {"name": "backfill fetcher records/s (1 process)", "value": rps, "unit": "records/s", "ceiling": ceiling, "ratio": rps / ceiling},
        {"name": "backfill fetcher records per CPU-second (1 process)", "value": records / cpu_s if cpu_s else None, "unit": "records/cpu-s",
         "ceiling": ceiling, "ratio": records / cpu_s / ceiling if cpu_s else None},
        {"name": "backfill fetcher CPU use (1 process)", "value": cpu_s / elapsed, "unit": "cores", "ceiling": 1, "ratio": cpu_s / elapsed},
        {"name": f"backfill fetcher peak RSS ({max(sizes)}-record repo)", "value": peak_rss / 1024, "unit": "MiB", "ceiling": 500, "ratio": peak_rss / 1024 / 500},
    ]


def _consumers(r: redis.Redis) -> int:
    try:
        return sum(int(g["consumers"]) for g in r.xinfo_groups(streams.REPO_BACKFILL))
    except redis.ResponseError:  # the stream does not exist yet
        return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS:")


def _hwm_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM:")


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
