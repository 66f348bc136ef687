"""The fetcher against the replay relay (corpus/small) or a small PDS on 127.0.0.1, with real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import redis
from aiohttp import web

from fleet import config, streams
from fleet.codec.firehose import SEQ_BACKFILL
from fleet.fetcher import main as fetcher
from fleet.fetcher.repo import RepoError, open_repo
from fleet.fetcher.verify import SignatureError, public_key, verify_commit
from fleet.log import get_logger
from fleet.runtime import RoleContext
from tests.conftest import CORPUS
from tools.replay import ReplayRelay
from tools.synth_repo import build_repo, did_key, new_key, synthetic_records

SMALL = os.path.join(CORPUS, "small")


def make_cfg(redis_url: str, plc_url: str, **over: str) -> config.Config:
    env = {
        "REDIS_URL": redis_url,
        "PLC_URL": plc_url,
        "FETCHER_RETRY_BACKOFF_S": "0.05",
        "FETCHER_MAX_ATTEMPTS": "3",
        "FETCHER_TIMEOUT_S": "2",
        "FETCHER_RECLAIM_IDLE_S": "60",
        "SUMMARY_INTERVAL_S": "1",
        "INGESTER_COLLECTIONS": "*",
        **over,
    }
    return config.load(env)


def listed_repos() -> list[dict]:
    out = []
    for name in sorted(os.listdir(os.path.join(SMALL, "listRepos"))):
        with open(os.path.join(SMALL, "listRepos", name)) as f:
            out.extend(json.load(f)["response"]["repos"])
    return out


def enqueue(r: redis.Redis, repos: list[dict], host: str = "relay") -> None:
    for rp in repos:
        r.xadd(streams.REPO_BACKFILL, {"repo": json.dumps({"did": rp["did"], "host": host, "rev": rp.get("rev"), "status": rp.get("status"), "active": rp.get("active", True)})})


def stats(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(streams.BACKFILL_STATS).items()}


async def run_fetcher_until(cfg, cond, timeout: float = 30.0, shard_count: int = 1, instance: str = "f1") -> None:
    """Run the fetcher role in this loop until ``cond()`` (sync, on a Redis client) holds."""
    ctx = RoleContext(role="fetcher", instance=instance, shards=[], shard_count=shard_count, log=get_logger("fetcher"))
    task = asyncio.create_task(fetcher.run(cfg, ctx))
    deadline = time.monotonic() + timeout
    try:
        while not await asyncio.to_thread(cond):
            assert not task.done(), task.exception() if task.done() else ""
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 10)


def finished(r: redis.Redis, n: int):
    def cond() -> bool:
        s = stats(r)
        return s.get("done", 0) + s.get("gone", 0) + s.get("failed", 0) >= n
    return cond


def read_events(r: redis.Redis, stream: str = streams.FIREHOSE_BACKFILL) -> list[dict]:
    return [json.loads(f[b"event"]) for _i, f in r.xrange(stream)]


def test_corpus_repos_become_byte_exact_create_events_then_a_repo_event(redis_url):
    repos = listed_repos()
    r = redis.Redis.from_url(redis_url)
    enqueue(r, repos)

    async def go():
        relay = ReplayRelay(SMALL, pds_endpoint="self")
        url = await relay.start()
        try:
            await run_fetcher_until(make_cfg(redis_url, url), finished(r, len(repos)))
        finally:
            await relay.stop()

    asyncio.run(go())
    s = stats(r)
    assert s["done"] == 40 and s["gone"] == 2 and s.get("failed", 0) == 0
    gone = {k.decode(): json.loads(v)["status"] for k, v in r.hgetall(fetcher.GONE_KEY).items()}
    assert gone == {"did:plc:r3bljf6fu3jwuxgaze4everd": "deactivated", "did:plc:lnhjcftjuqg7z36kk4e6t5jq": "takendown"}
    assert r.xlen(streams.REPO_BACKFILL) == 0 and r.xpending(streams.REPO_BACKFILL, streams.FETCHER_GROUP)["pending"] == 0
    events = read_events(r)
    creates = [e for e in events if e["type"] == "create"]
    ends = [e for e in events if e["type"] == "repo"]
    assert len(ends) == 40 and s["records"] == len(creates)
    expected = {}
    with open(os.path.join(SMALL, "db", "record.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            expected[row["uri"]] = row
    exact = 0
    last_type: dict[str, str] = {}
    for e in events:
        last_type[e["did"]] = e["type"]
    assert set(last_type.values()) == {"repo"}  # every repo's events end with its repo event
    for e in creates:
        assert e["seq"] == SEQ_BACKFILL and e["time"].endswith("Z") and len(e["time"]) == 24
        row = expected.get(f"at://{e['did']}/{e['collection']}/{e['rkey']}")
        if row is not None:
            assert row["cid"] == e["cid"]
            assert row["json"] == json.dumps(e["record"], ensure_ascii=False, separators=(",", ":"))
            exact += 1
    assert exact == 811
    # rev/commit are the repo's current commit (what listRepos announced)
    revs = {rp["did"]: rp["rev"] for rp in repos}
    for e in ends:
        assert e["rev"] == revs[e["did"]] and e["commit"].startswith("bafy")


def test_unknown_did_plc_errors_and_pds_errors_are_recorded_retried_or_dead_lettered(redis_url):
    r = redis.Redis.from_url(redis_url)
    ok_did = "did:plc:2e2f6czdxvwjjmtzgtp5aaoq"
    flaky_did = "did:plc:5n26h67ilncigk36yeefq3rq"
    plc_down_did = "did:plc:5ckqzijnthqofbonww5bpr7e"
    pds_500_did = "did:plc:vnvuiylctb7hizgmspi7icca"
    bad_req_did = "did:plc:zwfk62wt36dwt5sf3qytlaf6"
    enqueue(r, [{"did": d} for d in (ok_did, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", flaky_did, plc_down_did, pds_500_did, bad_req_did, "not-a-did")])

    async def go():
        relay = ReplayRelay(SMALL, pds_endpoint="self")
        relay.faults.http = [
            {"path": "/xrpc/com.atproto.sync.getRepo", "query": {"did": flaky_did}, "status": 503, "times": 1},
            {"path": "/xrpc/com.atproto.sync.getRepo", "query": {"did": ok_did}, "status": 429, "times": 1, "retry_after": 1},
            {"path": "/" + plc_down_did, "status": 500, "times": None},
            {"path": "/xrpc/com.atproto.sync.getRepo", "query": {"did": pds_500_did}, "status": 500, "times": None},
            {"path": "/xrpc/com.atproto.sync.getRepo", "query": {"did": bad_req_did}, "status": 403, "times": None},
        ]
        url = await relay.start()
        t0 = time.monotonic()
        try:
            await run_fetcher_until(make_cfg(redis_url, url), finished(r, 7))
        finally:
            await relay.stop()
        return relay.http_requests, time.monotonic() - t0

    requests, elapsed = asyncio.run(go())
    s = stats(r)
    assert (s["done"], s["gone"], s["failed"]) == (2, 1, 4)
    gone = {k.decode(): json.loads(v)["status"] for k, v in r.hgetall(fetcher.GONE_KEY).items()}
    assert gone == {"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa": "did_not_found"}
    dlq = {}
    for _i, f in r.xrange(streams.dead_letter(streams.REPO_BACKFILL)):
        repo = json.loads(f[b"repo"])
        dlq[repo.get("did", repo.get("raw"))] = (f[b"reason"].decode(), int(f[b"attempts"]))
    assert dlq[plc_down_did] == ("did_http_status", 3)
    assert dlq[pds_500_did] == ("getrepo_http_status", 3)
    assert dlq[bad_req_did] == ("getrepo_http_status", 1)  # a 4xx is not retried
    assert dlq["not-a-did"][0] == "did_bad_did"
    # the 429 was honoured: the retry came after Retry-After, and it did not use up an attempt
    assert elapsed >= 1.0
    assert sum(1 for q in requests if "getRepo" in q and ok_did in q) == 2
    assert r.xpending(streams.REPO_BACKFILL, streams.FETCHER_GROUP)["pending"] == 0
    assert r.hlen(fetcher.ATTEMPTS_KEY) == 0


class TinyPds:
    """PLC + PDS for synthetic repos: per-DID CAR bytes, stall or status on demand."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}
        self.cars: dict[str, bytes] = {}
        self.stall: set[str] = set()
        self.url = ""

    def add(self, did: str, car: bytes, key_did: str | None = None) -> None:
        doc = {"id": did, "alsoKnownAs": [], "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "SELF"}]}
        if key_did:
            doc["verificationMethod"] = [{"id": did + "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": key_did[8:]}]
        self.docs[did] = doc
        self.cars[did] = car

    async def plc(self, req: web.Request) -> web.StreamResponse:
        doc = self.docs.get(req.match_info["did"])
        if doc is None:
            return web.json_response({"message": "not found"}, status=404)
        doc = json.loads(json.dumps(doc).replace("SELF", self.url))
        return web.json_response(doc)

    async def get_repo(self, req: web.Request) -> web.StreamResponse:
        did = req.query["did"]
        if did in self.stall:
            await asyncio.sleep(30)
        return web.Response(body=self.cars[did], content_type="application/vnd.ipld.car")

    async def __aenter__(self) -> "TinyPds":
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", self.get_repo)
        app.router.add_get("/{did}", self.plc)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


def _did(i: int) -> str:
    return "did:plc:" + f"synth{i:019d}"


def test_truncated_oversized_corrupt_cars_and_timeouts_are_dead_lettered_with_their_reason(redis_url):
    r = redis.Redis.from_url(redis_url)
    key = new_key("ES256K")
    good, _ = build_repo(_did(1), synthetic_records(50, _did(1)), key)
    big, _ = build_repo(_did(2), synthetic_records(3000, _did(2)), key)
    trunc, _ = build_repo(_did(3), synthetic_records(50, _did(3)), key)
    corrupt, _ = build_repo(_did(4), synthetic_records(50, _did(4)), key)
    stalled, _ = build_repo(_did(5), synthetic_records(5, _did(5)), key)
    wrong, _ = build_repo(_did(99), synthetic_records(5, _did(99)), key)
    i = corrupt.index(b"app.bsky.feed.post")
    corrupt = corrupt[:i] + b"APP" + corrupt[i + 3:]
    enqueue(r, [{"did": _did(i)} for i in (1, 2, 3, 4, 5, 6)])

    async def go():
        async with TinyPds() as pds:
            for i, car in ((1, good), (2, big), (3, trunc[: len(trunc) // 2]), (4, corrupt), (5, stalled), (6, wrong)):
                pds.add(_did(i), car)
            pds.stall.add(_did(5))
            cfg = make_cfg(redis_url, pds.url, FETCHER_MAX_CAR_BYTES=str(len(good) * 4), FETCHER_TIMEOUT_S="0.3", FETCHER_MAX_ATTEMPTS="2")
            await run_fetcher_until(cfg, finished(r, 6))

    asyncio.run(go())
    s = stats(r)
    assert s["done"] == 1 and s["failed"] == 5
    reasons = {}
    for _i, f in r.xrange(streams.dead_letter(streams.REPO_BACKFILL)):
        reasons[json.loads(f[b"repo"])["did"]] = (f[b"reason"].decode(), int(f[b"attempts"]))
    assert reasons == {
        _did(2): ("getrepo_too_large", 1),
        _did(3): ("car_bad_car", 2),
        _did(4): ("car_bad_block", 2),
        _did(5): ("getrepo_timeout", 2),
        _did(6): ("car_wrong_did", 1),
    }
    events = read_events(r)
    assert {e["did"] for e in events} == {_did(1)}  # nothing of a refused repo was emitted
    assert len(events) == 51


def test_signature_verification_accepts_p256_and_k256_and_dead_letters_a_wrong_key(redis_url):
    r = redis.Redis.from_url(redis_url)
    k1, k2, other = new_key("ES256K"), new_key("ES256"), new_key("ES256K")
    enqueue(r, [{"did": _did(i)} for i in (1, 2, 3)])

    async def go():
        async with TinyPds() as pds:
            pds.add(_did(1), build_repo(_did(1), synthetic_records(20, _did(1)), k1)[0], did_key(k1))
            pds.add(_did(2), build_repo(_did(2), synthetic_records(20, _did(2)), k2)[0], did_key(k2))
            pds.add(_did(3), build_repo(_did(3), synthetic_records(20, _did(3)), other)[0], did_key(k1))
            await run_fetcher_until(make_cfg(redis_url, pds.url, FETCHER_VERIFY_SIGNATURES="true"), finished(r, 3))

    asyncio.run(go())
    s = stats(r)
    assert s["done"] == 2 and s["failed"] == 1
    (_, f), = r.xrange(streams.dead_letter(streams.REPO_BACKFILL))
    assert f[b"reason"] == b"bad_signature" and json.loads(f[b"repo"])["did"] == _did(3)


def test_high_s_signatures_are_refused():
    k = new_key("ES256K")
    car, _ = build_repo(_did(1), {"app.bsky.feed.post/a": {"text": "x"}}, k, low_s=False)
    commit, _ = open_repo(car)
    with pytest.raises(SignatureError, match="high-S"):
        verify_commit(commit.fields, public_key("did:key", did_key(k)))
    car, _ = build_repo(_did(1), {"app.bsky.feed.post/a": {"text": "x"}}, k)
    verify_commit(open_repo(car)[0].fields, public_key("did:key", did_key(k)))


def test_mst_walk_of_a_synthetic_repo_yields_every_key_in_order():
    from fleet.fetcher.repo import iter_records

    recs = synthetic_records(3000, _did(1))
    car, info = build_repo(_did(1), recs, new_key())
    commit, blocks = open_repo(car, _did(1))
    got = [(c + "/" + k, rec) for c, k, _cid, rec in iter_records(blocks, commit.data)]
    assert [k for k, _ in got] == sorted(recs)
    assert all(rec == recs[k] for k, rec in got)
    assert commit.rev == info["rev"]
    with pytest.raises(RepoError):
        del blocks[commit.data]
        list(iter_records(blocks, commit.data))


def test_full_output_stream_pauses_the_fetcher_until_it_drains(redis_url):
    r = redis.Redis.from_url(redis_url)
    key = new_key()
    enqueue(r, [{"did": _did(1)}])

    async def go():
        async with TinyPds() as pds:
            pds.add(_did(1), build_repo(_did(1), synthetic_records(2000, _did(1)), key)[0])
            cfg = make_cfg(redis_url, pds.url, FETCHER_HIGH_WATER_MARK="600")
            ctx = RoleContext(role="fetcher", instance="f1", shards=[], shard_count=1, log=get_logger("fetcher"))
            task = asyncio.create_task(fetcher.run(cfg, ctx))
            try:
                deadline = time.monotonic() + 20
                while r.xlen(streams.FIREHOSE_BACKFILL) < 1000:  # two chunks beyond the mark = paused
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # give it the chance to (wrongly) keep writing
                paused_len = r.xlen(streams.FIREHOSE_BACKFILL)
                pending = r.xpending(streams.REPO_BACKFILL, streams.FETCHER_GROUP)["pending"]
                # an indexer drains the stream
                r.delete(streams.FIREHOSE_BACKFILL)
                while stats(r).get("done", 0) < 1:
                    assert time.monotonic() < deadline
                    if r.xlen(streams.FIREHOSE_BACKFILL) > 300:
                        r.delete(streams.FIREHOSE_BACKFILL)
                    await asyncio.sleep(0.05)
            finally:
                ctx.stopping.set()
                await asyncio.wait_for(task, 10)
            return paused_len, pending

    paused_len, pending = asyncio.run(go())
    assert paused_len <= 1100 and pending == 1
    assert stats(r)["records"] == 2000


def test_event_texts_equal_the_dumped_event_dict_and_keep_link_and_bytes_apart():
    import cbrrr

    from fleet.codec.atjson import dumps
    from fleet.fetcher.events import create_event_texts, event_head, repo_event_text

    link = cbrrr.CID(b"\x01\x71\x12\x20" + bytes(range(32)))
    recs = {
        "app.bsky.feed.post/3kabc": {"$type": "app.bsky.feed.post", "text": "é \"q\" / \u2028", "blob": {"$type": "blob", "ref": link, "size": 3}},
        "app.bsky.feed.post/a:b~c.d-e_f": {"raw": b"\x00\x01\xff", "n": -5},
        "com.example.other/1": {"x": 1},
    }
    car, info = build_repo(_did(1), recs, new_key())
    commit, blocks = open_repo(car, _did(1))
    head = event_head(_did(1), commit.cid_str, commit.rev, "2026-01-01T00:00:00.000Z")
    texts = list(create_event_texts(blocks, commit.data, head, lambda c: c.startswith("app.bsky.")))
    assert len(texts) == 2 and all(isinstance(t, bytes) for t in texts)
    events = [json.loads(t) for t in texts]
    for t, e in zip(texts, events):
        assert list(e) == ["type", "seq", "time", "did", "commit", "rev", "collection", "rkey", "cid", "record"]
        assert t.decode() == dumps(e)  # byte for byte what dumping the whole dict gives
    by_rkey = {e["rkey"]: e for e in events}
    assert by_rkey["3kabc"]["record"]["blob"]["ref"] == {"$link": link.encode()}
    assert by_rkey["a:b~c.d-e_f"]["record"]["raw"] == {"$bytes": "AAH/"}
    assert by_rkey["3kabc"]["record"]["text"] == "é \"q\" / \u2028"
    assert json.loads(repo_event_text(head)) == {"type": "repo", "seq": SEQ_BACKFILL, "time": "2026-01-01T00:00:00.000Z",
                                                 "did": _did(1), "commit": commit.cid_str, "rev": info["rev"]}


def test_split_car_refuses_a_block_that_does_not_match_its_cid_and_a_truncated_car():
    from fleet.fetcher.repo import split_car

    car, _ = build_repo(_did(1), synthetic_records(30, _did(1)), new_key())
    roots, blocks = split_car(car)
    assert len(roots) == 1 and roots[0] in blocks and len(blocks) > 30
    i = car.index(b"app.bsky.feed")
    bad = car[:i] + b"APP" + car[i + 3 :]
    with pytest.raises(RepoError) as e:
        split_car(bad)
    assert e.value.reason == "bad_block"
    assert split_car(bad, verify_hashes=False)[0] == roots  # the check is what refuses it
    for cut in (1, 5, len(car) // 2, len(car) - 1):
        with pytest.raises(RepoError) as e:
            split_car(car[:cut])
        assert e.value.reason == "bad_car"


def test_split_car_reads_blocks_with_other_cid_forms_through_the_general_path():
    import hashlib

    from fleet.fetcher.repo import split_car
    from tools.synth_repo import write_car

    raw = b"\xa1ax\x01"
    sha = hashlib.sha256(raw).digest()
    v1 = b"\x01\x71\x12\x20" + sha
    odd = b"\x01\x80\x01\x12\x20" + sha  # CIDv1 with a two-byte codec varint
    big = b"\xa1ax" + b"\x79\x01\x00" + b"y" * 256  # block over 127 bytes: two-byte length
    car = write_car(v1, [(v1, raw), (odd, raw), (b"\x01\x71\x12\x20" + hashlib.sha256(big).digest(), big)])
    roots, blocks = split_car(car)
    assert roots == [v1] and blocks[odd] == raw and len(blocks) == 3
    wrong = write_car(v1, [(b"\x01\x80\x01\x12\x20" + bytes(32), raw)])
    with pytest.raises(RepoError, match="does not match"):
        split_car(wrong)


def _reference_items(blocks, root, head, keep):
    """The create events as the straightforward path writes them: walk_mst, decode_record, dump
    the event dict (the reference create_event_chunks must equal, errors in their places)."""
    from fleet.codec.atjson import RecordDecodeError, decode_record, dumps
    from fleet.fetcher.repo import walk_mst

    ev0 = json.loads(head + "}")
    out = []
    for key, cid in walk_mst(blocks, root):
        collection, sep, rkey = key.partition("/")
        if not sep or not rkey:
            out.append(("bad_key",))
            continue
        if keep is not None and not keep(collection):
            continue
        raw = blocks.get(cid)
        if raw is None:
            out.append(("missing_block",))
            continue
        try:
            text = dumps({**ev0, "collection": collection, "rkey": rkey, "cid": fetcher_cid(cid), "record": decode_record(raw)})
        except (RecordDecodeError, ValueError, OverflowError):
            out.append(("bad_record",))
            continue
        out.append(text.encode())
    return out


def fetcher_cid(cid: bytes) -> str:
    from fleet.codec.cid import cid_to_str

    return cid_to_str(cid)


def test_event_chunks_equal_the_reference_path_item_for_item_with_damaged_records_and_odd_values():
    import cbrrr

    from fleet.fetcher.events import create_event_chunks, event_head

    deep: dict = {"x": 1}
    for _ in range(300):  # past orjson's depth limit: the ujson reference takes over
        deep = {"d": deep}
    recs = {f"app.bsky.feed.like/{i:05d}": {"n": i, "s": "é/\u2028\x00\x1f😀"[: i % 7]} for i in range(1200)}
    recs.update({
        "app.bsky.feed.post/big": {"a": -(2**64), "b": 2**64 - 1},  # beyond orjson's 64-bit ints
        "app.bsky.feed.post/deep": deep,
        "app.bsky.feed.post/blob": {"b": {"$type": "blob", "ref": cbrrr.CID(b"\x01\x71\x12\x20" + bytes(32)), "size": 1}, "raw": b"\x00\xff"},
        "app.bsky.feed.post/a:b~c.d-e_f": {"x": "odd rkey"},
        "app.bsky.feed.post/notamap": [1, 2],
        "com.example.other/1": {"x": 1},
        "nokey": {"x": 1},
    })
    car, _ = build_repo(_did(1), recs, new_key())
    commit, blocks = open_repo(car, _did(1))
    from fleet.fetcher.repo import walk_mst

    values = [cid for _k, cid in walk_mst(blocks, commit.data)]
    for cid in values[::97]:
        del blocks[cid]  # missing record blocks
    for cid in values[5::89]:
        if cid in blocks:
            blocks[cid] += b"\x00"  # trailing bytes
    head = event_head(_did(1), commit.cid_str, commit.rev, "2026-01-01T00:00:00.000Z")
    for keep in (None, lambda c: c.startswith("app.bsky.")):
        want = _reference_items(blocks, commit.data, head, keep)
        for size in (500, 100, 7):
            chunks = list(create_event_chunks(blocks, commit.data, head, keep, size))
            assert all(len(c) == size for c in chunks[:-1]) and len(chunks[-1]) < size
            got = [x if isinstance(x, bytes) else (x.reason,) for c in chunks for x in c]
            assert got == want
    assert any(isinstance(x, tuple) and x[0] == "bad_record" for x in want) and any(x == ("missing_block",) for x in want)


def test_a_broken_mst_node_raises_where_the_walk_reaches_it_after_the_chunks_before_it():
    from itertools import islice

    from fleet.fetcher.events import create_event_chunks, create_event_texts, event_head
    from fleet.fetcher.repo import walk_mst

    car, _ = build_repo(_did(1), synthetic_records(3000, _did(1)), new_key())
    commit, blocks = open_repo(car, _did(1))
    values = {cid for _k, cid in walk_mst(blocks, commit.data)}
    nodes = [c for c in blocks if c not in values and c != commit.cid and c != commit.data]
    head = event_head(_did(1), commit.cid_str, commit.rev, "2026-01-01T00:00:00.000Z")
    delivered = []
    for node in nodes[len(nodes) // 2 :: 7]:
        broken = dict(blocks)
        broken[node] = b"\xa0"  # an empty map: no "e"
        got = []
        with pytest.raises(RepoError):
            for chunk in create_event_chunks(broken, commit.data, head, None, 500):
                got.append(chunk)
        # what taking islice(..., 500) of the one-record-at-a-time walk delivers before the error
        it, want = create_event_texts(blocks, commit.data, head), []
        n_before = sum(1 for k, _ in walk_mst_until(blocks, commit.data, node))
        while n_before >= 500:
            want.append(list(islice(it, 500)))
            n_before -= 500
        assert got == want
        delivered.append(len(got))
    assert max(delivered) >= 2 and min(delivered) == 0  # nodes early and late in the walk


def walk_mst_until(blocks, root, node):
    """The MST entries in walk order before the walk expands ``node``."""
    import libipld

    stack = [(root, 0)]
    while stack:
        item, depth = stack.pop()
        if depth < 0:
            yield item
            continue
        if item == node:
            return
        n = libipld.decode_dag_cbor(blocks[item])
        seq, prev = [], b""
        if n.get("l") is not None:
            seq.append((n["l"], 1))
        for e in n["e"]:
            key = prev[: e["p"]] + e["k"]
            prev = key
            seq.append(((key, e["v"]), -1))
            if e.get("t") is not None:
                seq.append((e["t"], 1))
        stack.extend(reversed(seq))


def test_chunks_are_written_whole_with_multi_exec_as_the_script_writes_them(redis_url, monkeypatch):
    """The fetcher's MULTI/EXEC write (replies read off hiredis) and its XADD_EVENTS script
    fallback leave the same entries; an error reply raises and the connection stays usable."""
    import redis.asyncio as aioredis

    r = redis.Redis.from_url(redis_url)
    texts = [json.dumps({"n": i, "s": "é \"q\" \u2028"}, ensure_ascii=False).encode() for i in range(1200)] + [b"", b"x" * 70000]

    async def go():
        ar = aioredis.from_url(redis_url)
        f = fetcher.Fetcher.__new__(fetcher.Fetcher)
        f.r = ar
        n1 = await f._xadd_chunk("t:multi", texts)
        monkeypatch.setattr(fetcher, "_NOT_ENOUGH_DATA", None)  # as if redis-py's parser were another
        n2 = await f._xadd_chunk("t:script", texts)
        monkeypatch.undo()
        await ar.set("t:notastream", "x")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await f._xadd_chunk("t:notastream", texts[:3])
        assert await ar.xlen("t:multi") == len(texts)  # the same pooled connection still answers
        await ar.aclose()
        return n1, n2

    n1, n2 = asyncio.run(go())
    assert n1 == n2 == len(texts)
    a = [f for _i, f in r.xrange("t:multi")]
    b = [f for _i, f in r.xrange("t:script")]
    assert a == b == [{b"event": t} for t in texts]


def test_a_redis_stalled_past_the_socket_timeout_makes_the_fetcher_wait_then_go_on(tmp_path):
    """Redis frozen (SIGSTOP) longer than the client's 5 s socket timeout: the fetcher logs,
    backs off and carries on with the next repo once Redis answers; it does not exit."""
    import signal

    from fleet import embedded

    rs = embedded.Redis(str(tmp_path / "redis"), embedded.free_port()).start()
    r = redis.Redis.from_url(rs.url)
    key = new_key()

    async def wait_for(cond, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(cond):
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    async def go():
        async with TinyPds() as pds:
            for i in (1, 2):
                pds.add(_did(i), build_repo(_did(i), synthetic_records(20, _did(i)), key)[0])
            ctx = RoleContext(role="fetcher", instance="f1", shards=[], shard_count=1, log=get_logger("fetcher"))
            task = asyncio.create_task(fetcher.run(make_cfg(rs.url, pds.url), ctx))
            try:
                enqueue(r, [{"did": _did(1)}])
                await wait_for(finished(r, 1), "first repo")
                os.kill(rs.proc.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(6.5)  # the stall itself: longer than the 5 s socket timeout
                finally:
                    os.kill(rs.proc.pid, signal.SIGCONT)
                assert not task.done(), task.exception() if task.done() else ""
                enqueue(r, [{"did": _did(2)}])
                await wait_for(finished(r, 2), "second repo after the stall")
                assert not task.done()
            finally:
                ctx.stopping.set()
                await asyncio.wait_for(task, 15)

    try:
        asyncio.run(go())
        assert stats(r)["records"] == 40
    finally:
        r.close()
        rs.stop()
