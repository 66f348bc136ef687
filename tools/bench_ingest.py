"""Ingest benchmark: replay relay -> ingester -> shard streams, for ``make bench``.

    python tools/bench_ingest.py [--quick]

The small corpus's frames are served repeated and renumbered (``tools/replay.py --repeat``) to
at least 200,000 frames by a relay process; the ingester runs as its own process
(``python -m fleet.ingester``, pinned to one core when the machine has two or more, relay and
Redis on another) from cursor 0 with 4 shards. Figures:

- ``ingest_frames_per_s``: frames from the relay into the shard streams (cursor durable), timed
  from the first durable cursor to the last; ceiling = ``libipld`` alone decoding the same
  frames (each frame's header and body, and the CAR blocks of commits), measured in this run
- ``ingest_events_per_s``: stream entries written per second in the same run
- ``ingest_rss_mb``: peak resident memory of the ingester process (VmHWM), ceiling 200 MB
- ``libipld_frame_decode_per_s``: libipld decoding header+body only (blocks left as bytes), for reference
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CORPUS = os.path.join(ROOT, "tests", "fixtures", "corpus", "small")
TARGET_FRAMES = 200_000


def _frames(repeat: int) -> list[bytes]:
    from tools.replay import _Frames, read_frames_file

    f = _Frames(read_frames_file(os.path.join(CORPUS, "firehose.frames")), repeat)
    return [f.get(i)[1] for i in range(f.total)]


def libipld_ceiling(frames: list[bytes]) -> tuple[float, float]:
    """(frames/s decoding frame + commit CAR, frames/s decoding the frame only)."""
    import libipld

    t = time.perf_counter()
    for m in frames:
        header, body = libipld.decode_dag_cbor_multi(m)
        if header.get("t") == "#commit":
            libipld.decode_car(body["blocks"])
    full = len(frames) / (time.perf_counter() - t)
    t = time.perf_counter()
    for m in frames:
        libipld.decode_dag_cbor_multi(m)
    frame_only = len(frames) / (time.perf_counter() - t)
    return full, frame_only


def pin(pid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cpus)
    except (AttributeError, OSError):
        pass


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_ingest(repeat: int) -> dict[str, float]:
    import redis

    from fleet import embedded
    from fleet.streams import FIREHOSE_LIVE, relay_cursor_key, shard_stream

    cores = os.cpu_count() or 1
    tmp = tempfile.mkdtemp(prefix="rsky-bench-ingest-")
    srv = embedded.Redis(os.path.join(tmp, "redis"), embedded.free_port()).start()
    relay = ingester = None
    try:
        if cores >= 2:
            pin(getattr(getattr(srv, "proc", None), "pid", 0) or os.getpid(), {1} if getattr(srv, "proc", None) else set(range(cores)))
        relay = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "replay.py"), CORPUS, "--port", "0", "--repeat", str(repeat)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = relay.stdout.readline() if relay.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"relay did not start: {line!r}")
        url = line.split()[1].replace("http://", "ws://")
        total = int(line.split("frames=")[1])
        if cores >= 2:
            pin(relay.pid, {1})
        env = {**os.environ, "PYTHONPATH": ROOT, "REDIS_URL": srv.url, "INGESTER_RELAY_HOSTS": url, "SHARD_COUNT": "4",
               "INGESTER_START_CURSOR": "0", "METRICS_PORT": "0", "INGESTER_HIGH_WATER_MARK": "10000000",
               "INGESTER_LOW_WATER_MARK": "5000000", "LOG_LEVEL": "warning", "SUMMARY_INTERVAL_S": "3600"}
        ingester = subprocess.Popen([sys.executable, "-m", "fleet.ingester"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        if cores >= 2:
            pin(ingester.pid, {0})
        r = redis.Redis.from_url(srv.url)
        key = relay_cursor_key(FIREHOSE_LIVE, url)
        deadline = time.monotonic() + 600
        first = None
        while True:
            v = r.get(key)
            now = time.monotonic()
            if v is not None and first is None:
                first = (now, int(v))
            if v is not None and int(v) >= total:
                break
            if ingester.poll() is not None or now > deadline:
                raise RuntimeError(f"ingester stopped or too slow (cursor {v})")
            time.sleep(0.01)
        end = time.monotonic()
        assert first is not None
        entries = sum(r.xlen(shard_stream(FIREHOSE_LIVE, k, 4)) for k in range(4))
        rss = _peak_rss_mb(ingester.pid)
        r.close()
        frames = total - first[1]
        secs = max(1e-9, end - first[0])
        return {"frames": total, "frames_per_s": frames / secs, "events_per_s": entries * frames / total / secs, "rss_mb": rss}
    finally:
        for p in (ingester, relay):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        srv.stop()


def run(quick: bool = False) -> list[dict]:
    n_base = 1252
    repeat = 10 if quick else math.ceil(TARGET_FRAMES / n_base)
    got = measure_ingest(repeat)
    full, frame_only = libipld_ceiling(_frames(min(repeat, 40)))
    rate = got["frames_per_s"]
    return [
        {"name": "ingest_frames_per_s", "value": rate, "unit": "frames/s", "ceiling": full, "ratio": rate / full, "frames": got["frames"]},
        {"name": "ingest_events_per_s", "value": got["events_per_s"], "unit": "events/s", "ceiling": None, "ratio": None},
        {"name": "ingest_rss_mb", "value": got["rss_mb"], "unit": "MB", "ceiling": 200.0, "ratio": got["rss_mb"] / 200.0},
        {"name": "libipld_frame_decode_per_s", "value": frame_only, "unit": "frames/s", "ceiling": None, "ratio": None},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
