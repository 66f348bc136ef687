"""The ingester against the replay relay and a real Redis: streams, cursor, faults, backpressure."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from fleet.codec import atjson
from fleet.codec.firehose import FrameError, collection_filter, iter_frames_file, message_events
from fleet.config import load
from fleet.ingester.main import run
from fleet.log import get_logger
from fleet.runtime import RoleContext
from fleet.shard import shard
from fleet.streams import FIREHOSE_LIVE, LABEL_LIVE, relay_cursor_key, shard_stream
from tests.conftest import CORPUS, ROOT
from tools.replay import ReplayRelay, label_frame

SMALL = os.path.join(CORPUS, "small")
EDGE = os.path.join(CORPUS, "edge")
KEEP = collection_filter(["app.bsky.*", "chat.bsky.*"])


def expected_streams(corpus: str, shard_count: int, skip_seqs: set[int] = frozenset()) -> dict[str, list[tuple[str, str]]]:
    """What the streams must hold after ingesting the corpus: {stream: [(id, event json)]}."""
    out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        for msg in iter_frames_file(f.read()):
            try:
                _t, seq, events = message_events(msg, KEEP)
            except FrameError:
                continue
            if seq in skip_seqs:
                continue
            for n, ev in enumerate(events):
                out[shard_stream(FIREHOSE_LIVE, shard(ev["did"], shard_count), shard_count)].append((f"{seq}-{n}", atjson.dumps(ev)))
    return dict(out)


def last_seq(corpus: str) -> int:
    with open(os.path.join(corpus, "firehose.frames"), "rb") as f:
        return len(list(iter_frames_file(f.read())))


def read_streams(url: str, shard_count: int, base: str = FIREHOSE_LIVE) -> dict[str, list[tuple[str, str]]]:
    r = redis.Redis.from_url(url)
    out = {}
    for k in range(shard_count):
        name = shard_stream(base, k, shard_count)
        rows = [(i.decode(), f[b"event"].decode()) for i, f in r.xrange(name)]
        if rows:
            out[name] = rows
    r.close()
    return out


def env_for(redis_url: str, relay_url: str, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url, "INGESTER_RELAY_HOSTS": relay_url.replace("http://", "ws://"), "SHARD_COUNT": "4",
        "INGESTER_START_CURSOR": "0", "METRICS_PORT": "0", "INGESTER_RECONNECT_MAX_S": "0.1", "INGESTER_BATCH_MS": "5",
        "INGESTER_BATCH_SIZE": "100", "SUMMARY_INTERVAL_S": "1", "LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def ingest(relay: ReplayRelay, redis_url: str, until_seq: int, timeout: float = 30.0, during=None, **extra: str) -> None:
    """Run the ingester in this loop until the relay cursor reaches ``until_seq``, then stop it."""
    cfg = load(environ=env_for(redis_url, relay.base_url, **extra))
    ctx = RoleContext(role="ingester", instance="1", shards=[], shard_count=cfg.SHARD_COUNT, log=get_logger("ingester"))
    task = asyncio.ensure_future(run(cfg, ctx))
    r = aioredis.Redis.from_url(redis_url)
    key = relay_cursor_key(FIREHOSE_LIVE, cfg.INGESTER_RELAY_HOSTS[0])
    deadline = time.monotonic() + timeout
    try:
        if during is not None:
            await during(r)
        while True:
            v = await r.get(key)
            if v is not None and int(v) >= until_seq:
                break
            assert not task.done(), task.exception() if task.done() else None
            assert time.monotonic() < deadline, f"cursor {v} did not reach {until_seq}"
            await asyncio.sleep(0.02)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await r.aclose()


def with_relay(corpus: str, fn, **kw):
    async def main():
        relay = ReplayRelay(corpus, **kw)
        await relay.start()
        try:
            return await fn(relay)
        finally:
            await relay.stop()

    return asyncio.run(main())


def test_every_corpus_event_lands_once_in_its_shard_stream_with_the_official_record_json(redis_url):
    with_relay(SMALL, lambda relay: ingest(relay, redis_url, last_seq(SMALL)))
    got = read_streams(redis_url, 4)
    assert got == expected_streams(SMALL, 4)
    assert len(got) == 4  # the small corpus's 40 accounts spread over every shard
    latest = {}
    for stream, rows in got.items():
        for _id, text in rows:
            ev = json.loads(text)
            assert stream == shard_stream(FIREHOSE_LIVE, shard(ev["did"], 4), 4)
            if ev["type"] in ("create", "update"):
                latest[(f"at://{ev['did']}/{ev['collection']}/{ev['rkey']}", ev["cid"])] = atjson.dumps(atjson.loads(text)["record"])
    with open(os.path.join(SMALL, "db", "record.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 854
    for row in rows:
        assert latest[(row["uri"], row["cid"])] == row["json"]


def test_dropped_connection_resumes_from_the_cursor_without_gap_or_duplicate(redis_url):
    async def go(relay):
        relay.faults.disconnect_after = 300
        await ingest(relay, redis_url, last_seq(SMALL))
        assert relay.connections == 2
        second = [p for p in relay.http_requests if "subscribeRepos" in p][1]
        assert int(second.split("cursor=")[1]) >= 290  # resumed near frame 300, not from 0

    with_relay(SMALL, go)
    assert read_streams(redis_url, 4) == expected_streams(SMALL, 4)


def test_corrupt_and_oversized_frames_are_skipped_and_counted_and_neighbours_kept(redis_url):
    async def go(relay):
        source = f"127.0.0.1:{relay.port}"
        relay.faults.corrupt_seqs = {5, 100}
        relay.faults.oversize_seqs = {200}
        relay.faults.oversize_bytes = 300_000
        await ingest(relay, redis_url, last_seq(SMALL), INGESTER_MAX_FRAME_BYTES="200000")
        assert metric("rsky_ingester_bad_frames_total", source=source, reason="undecodable") == 2
        assert metric("rsky_ingester_bad_frames_total", source=source, reason="frame_too_large") == 1
        assert metric("rsky_ingester_seq_gaps_total", source=source) == 2
        assert metric("rsky_ingester_reconnects_total", source=source, cause="frame_too_large") == 1

    with_relay(SMALL, go)
    assert read_streams(redis_url, 4) == expected_streams(SMALL, 4, skip_seqs={5, 100, 200})


def test_backpressure_pauses_above_high_water_and_completes_after_the_streams_drain(redis_url):
    high, low = 150, 50
    consumed: list[tuple[str, str]] = []
    peak = [0]

    async def consumer(r):
        """An indexer stand-in: lets the stream fill, checks the ingester stops, then drains it."""
        deadline = time.monotonic() + 20
        while metric("rsky_ingester_backpressure_pauses_total", source=source[0]) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        n0 = await r.xlen(FIREHOSE_LIVE)
        await asyncio.sleep(0.3)  # paused: the stream must not grow meanwhile
        assert await r.xlen(FIREHOSE_LIVE) == n0
        last = "0-0"
        while len(consumed) < total:
            assert time.monotonic() < deadline
            peak[0] = max(peak[0], await r.xlen(FIREHOSE_LIVE))
            rows = await r.xread({FIREHOSE_LIVE: last}, count=40, block=100)
            for _name, entries in rows:
                for i, f in entries:
                    consumed.append((i.decode(), f[b"event"].decode()))
                    last = i
                await r.xdel(FIREHOSE_LIVE, *[i for i, _ in entries])

    expected = expected_streams(SMALL, 1)[FIREHOSE_LIVE]
    total = len(expected)
    source = [""]

    async def go(relay):
        source[0] = f"127.0.0.1:{relay.port}"
        await ingest(relay, redis_url, last_seq(SMALL), during=consumer, SHARD_COUNT="1", INGESTER_BATCH_SIZE="20",
                     INGESTER_HIGH_WATER_MARK=str(high), INGESTER_LOW_WATER_MARK=str(low))

    with_relay(SMALL, go)
    assert consumed == expected
    # above the mark by at most what was in flight when the check ran (two batches)
    assert peak[0] <= high + 2 * 20 + 50


def test_stalled_relay_is_treated_as_dead_after_the_idle_timeout(redis_url):
    async def go(relay):
        relay.faults.stall_after, relay.faults.stall_s = 100, 0
        await ingest(relay, redis_url, last_seq(SMALL), INGESTER_IDLE_TIMEOUT_S="0.3")
        assert relay.connections == 2

    with_relay(SMALL, go)
    assert read_streams(redis_url, 4) == expected_streams(SMALL, 4)


def test_refused_handshakes_and_error_frames_are_retried_with_backoff(redis_url):
    async def go(relay):
        source = f"127.0.0.1:{relay.port}"
        relay.faults.http = [{"path": "/xrpc/com.atproto.sync.subscribeRepos", "status": 429, "times": 2}]
        relay.faults.error_frame_after = 50
        await ingest(relay, redis_url, last_seq(SMALL))
        assert metric("rsky_ingester_reconnects_total", source=source, cause="http_429") == 2
        assert metric("rsky_ingester_error_frames_total", source=source, error="ConsumerTooSlow") == 1

    with_relay(SMALL, go)
    assert read_streams(redis_url, 4) == expected_streams(SMALL, 4)


def test_first_start_live_takes_only_frames_published_after_connecting(redis_url):
    async def publish_later(r):
        deadline = time.monotonic() + 10
        while relay_box[0].open_connections == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        relay_box[0].publish(5)

    relay_box = []

    async def go(relay):
        relay_box.append(relay)
        await ingest(relay, redis_url, 15, during=publish_later, INGESTER_START_CURSOR="live")

    with_relay(SMALL, go, head=10)
    got = read_streams(redis_url, 4)
    ids = sorted(int(i.split("-")[0]) for rows in got.values() for i, _ in rows)
    assert ids and min(ids) == 11 and max(ids) == 15


def test_label_frames_go_to_label_live_with_seq_ids_and_atproto_json(redis_url):
    sig = bytes(range(64))
    labels = [label_frame(i, [{"src": "did:plc:labeler", "uri": f"at://did:plc:x/app.bsky.feed.post/{i}", "val": "spam",
                               "cts": "2025-01-01T00:00:00.000Z", "sig": sig}, {"src": "did:plc:labeler", "uri": "did:plc:x", "val": "!hide",
                                                                               "neg": True, "cts": "2025-01-01T00:00:00.000Z"}]) for i in (1, 2, 3)]

    async def go(relay):
        cfg_env = {"INGESTER_LABELER_HOSTS": relay.ws_url}
        r = aioredis.Redis.from_url(redis_url)
        key = relay_cursor_key(LABEL_LIVE, relay.ws_url)

        async def until_labels(_r):
            deadline = time.monotonic() + 10
            while (await r.get(key)) != b"3":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)

        await ingest(relay, redis_url, last_seq(SMALL), during=until_labels, **cfg_env)
        await r.aclose()

    with_relay(SMALL, go, label_frames=labels)
    r = redis.Redis.from_url(redis_url)
    rows = r.xrange(LABEL_LIVE)
    assert [i.decode() for i, _ in rows] == ["1-0", "1-1", "2-0", "2-1", "3-0", "3-1"]
    first = json.loads(rows[0][1][b"event"])
    assert first["type"] == "label" and first["seq"] == 1 and first["label"]["val"] == "spam"
    assert first["label"]["sig"] == {"$bytes": base64.b64encode(sig).decode().rstrip("=")}
    assert json.loads(rows[1][1][b"event"])["label"]["neg"] is True


def _run_killed(redis_url: str, relay_url: str, corpus: str, kills: int, seed: int, **extra: str) -> None:
    """Start the ingester process, SIGKILL it at random points ``kills`` times, then let it finish."""
    rnd = random.Random(seed)
    env = {**os.environ, **env_for(redis_url, relay_url, **extra), "PYTHONPATH": ROOT}
    r = redis.Redis.from_url(redis_url)
    target = last_seq(corpus)
    hosts = env["INGESTER_RELAY_HOSTS"].split(",")
    keys = [relay_cursor_key(FIREHOSE_LIVE, h) for h in hosts]

    def entries() -> int:
        return sum(r.xlen(shard_stream(FIREHOSE_LIVE, k, 4)) for k in range(4))

    total_expected = sum(len(v) for v in expected_streams(corpus, 4).values()) * len(hosts)
    for i in range(kills + 1):
        proc = subprocess.Popen([sys.executable, "-m", "fleet.ingester"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            if i < kills:
                kill_at = entries() + rnd.randint(1, max(2, (total_expected - entries()) // (kills - i + 1)))
                while entries() < kill_at and time.monotonic() < deadline:
                    time.sleep(0.002)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            else:
                while not all((r.get(k) or b"0") == str(target).encode() for k in keys):
                    assert time.monotonic() < deadline, "ingester did not finish"
                    time.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r.close()


def test_sigkill_at_random_points_then_restart_leaves_exactly_the_same_streams(redis_url):
    relay = ReplayRelay(EDGE)
    relay.faults.rate = 4000
    url = relay.start_in_thread()
    try:
        _run_killed(redis_url, url, EDGE, kills=5, seed=7)
    finally:
        relay.stop_in_thread()
    assert relay.connections == 6
    assert read_streams(redis_url, 4) == expected_streams(EDGE, 4)


def test_sigkill_with_two_relays_and_auto_ids_neither_loses_nor_duplicates_a_window(redis_url):
    # two sources feeding the same streams use auto ids: only the MULTI (batch + cursor) protects
    relay = ReplayRelay(SMALL)
    relay.faults.rate = 3000
    url = relay.start_in_thread()
    try:
        two = url.replace("http://", "ws://") + "," + url.replace("http://", "ws://").replace("127.0.0.1", "localhost")
        _run_killed(redis_url, url, SMALL, kills=4, seed=11, INGESTER_RELAY_HOSTS=two)
    finally:
        relay.stop_in_thread()
    got = read_streams(redis_url, 4)
    want = expected_streams(SMALL, 4)
    for stream, rows in want.items():
        texts = collections.Counter(t for _i, t in got[stream])
        assert texts == collections.Counter({t: 2 for _i, t in rows}), stream


def test_reconnect_backoff_doubles_up_to_the_cap_with_jitter_and_resets():
    from fleet.ingester.backoff import Backoff

    b = Backoff(base=0.25, cap=2.0)
    delays = [b.next() for _ in range(8)]
    for d, nominal in zip(delays, [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]):
        assert nominal * 0.5 <= d <= nominal
    assert len(set(delays)) > 1
    b.reset()
    assert b.next() <= 0.25
