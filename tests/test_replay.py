"""The replay relay serves a corpus folder as relay, PDS, PLC directory and handle resolver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import aiohttp
import libipld
import pytest
import websockets

from tests.conftest import CORPUS, ROOT
from tools.replay import Faults, ReplayRelay, label_frame, read_frames_file

SMALL = os.path.join(CORPUS, "small")
FRAMES = read_frames_file(os.path.join(SMALL, "firehose.frames"))


def seq_of(msg: bytes) -> int:
    return libipld.decode_dag_cbor_multi(msg)[1]["seq"]


async def recv_all(url: str, n: int, timeout: float = 10.0) -> list[bytes]:
    out = []
    async with websockets.connect(url, max_size=None, close_timeout=0.2) as ws:
        while len(out) < n:
            out.append(await asyncio.wait_for(ws.recv(), timeout))
    return out


def with_relay(coro_fn, **kw):
    async def main():
        relay = ReplayRelay(SMALL, **kw)
        await relay.start()
        try:
            return await coro_fn(relay)
        finally:
            await relay.stop()

    return asyncio.run(main())


def test_cursor_zero_replays_every_frame_byte_identical_then_stays_open():
    async def go(relay):
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
        async with websockets.connect(url, max_size=None, close_timeout=0.2) as ws:
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in FRAMES]
            assert got == FRAMES
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
            assert ws.state is websockets.protocol.State.OPEN

    with_relay(go)


def test_cursor_serves_only_frames_after_it():
    async def go(relay):
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=1000"
        got = await recv_all(url, len(FRAMES) - 1000)
        assert [seq_of(m) for m in got] == list(range(1001, len(FRAMES) + 1))

    with_relay(go)


def test_no_cursor_is_a_live_tail_that_gets_published_frames():
    async def go(relay):
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos"
        async with websockets.connect(url, max_size=None, close_timeout=0.2) as ws:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
            relay.publish(3)
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        assert [seq_of(m) for m in got] == [11, 12, 13]

    with_relay(go, head=10)


def test_future_cursor_gets_an_error_frame_and_close():
    async def go(relay):
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=99999"
        async with websockets.connect(url, close_timeout=0.2) as ws:
            header, body = libipld.decode_dag_cbor_multi(await asyncio.wait_for(ws.recv(), 5))
            assert header == {"op": -1} and body["error"] == "FutureCursor"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)

    with_relay(go)


def test_repeat_renumbers_seq_contiguously_and_keeps_the_rest_of_the_frame():
    n = len(FRAMES)

    async def go(relay):
        url = relay.ws_url + f"/xrpc/com.atproto.sync.subscribeRepos?cursor={n - 2}"
        got = await recv_all(url, n + 4)
        seqs = [seq_of(m) for m in got]
        assert seqs == list(range(n - 1, 2 * n + 3))
        for m in got[2:6]:
            header, body = libipld.decode_dag_cbor_multi(m)
            oh, ob = libipld.decode_dag_cbor_multi(FRAMES[body["seq"] - n - 1])
            assert header == oh and {**ob, "seq": body["seq"]} == body

    with_relay(go, repeat=3)


async def get_json(session, url, **kw):
    async with session.get(url, **kw) as r:
        return r.status, await r.json(content_type=None)


def test_list_repos_pages_match_the_recording_and_default_limit_returns_all():
    async def go(relay):
        pages = sorted(os.listdir(os.path.join(SMALL, "listRepos")))
        async with aiohttp.ClientSession() as s:
            for name in pages:
                with open(os.path.join(SMALL, "listRepos", name)) as f:
                    rec = json.load(f)
                status, body = await get_json(s, relay.base_url + rec["request"])
                assert status == 200 and body == rec["response"]
            status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.listRepos")
            assert len(body["repos"]) == len(relay.repos) == 42  # 4 pages of 10 + 2
            status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.listRepos", params={"cursor": body["cursor"]})
            assert body == {"repos": []}
            status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.listRepos", params={"cursor": "junk"})
            assert status == 400 and body["error"] == "InvalidRequest"

    with_relay(go)


def test_get_repo_serves_cars_and_recorded_errors():
    async def go(relay):
        with open(os.path.join(SMALL, "repos", "errors.json")) as f:
            errors = json.load(f)
        car_name = next(n for n in os.listdir(os.path.join(SMALL, "repos")) if n.endswith(".car"))
        did = car_name[:-4].replace("_", ":")
        async with aiohttp.ClientSession() as s:
            async with s.get(relay.base_url + "/xrpc/com.atproto.sync.getRepo", params={"did": did}) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "application/vnd.ipld.car"
                with open(os.path.join(SMALL, "repos", car_name), "rb") as f:
                    assert await r.read() == f.read()
            for bad_did, e in errors.items():
                status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.getRepo", params={"did": bad_did})
                assert status == e["status"] and body == json.loads(e["body"])
            status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.getRepo", params={"did": "did:plc:nobody"})
            assert status == 400 and body["error"] == "RepoNotFound"
            status, body = await get_json(s, relay.base_url + "/xrpc/com.atproto.sync.getRepoStatus", params={"did": did})
            assert status == 200 and body["did"] == did

    with_relay(go)


def test_plc_directory_and_handle_resolution_answer_from_the_corpus():
    async def go(relay):
        name = sorted(os.listdir(os.path.join(SMALL, "plc")))[0]
        with open(os.path.join(SMALL, "plc", name)) as f:
            rec = json.load(f)
        did = rec["did"]
        with open(os.path.join(SMALL, "handles.json")) as f:
            handles = json.load(f)
        async with aiohttp.ClientSession() as s:
            status, doc = await get_json(s, f"{relay.base_url}/{did}")
            assert status == 200 and doc["id"] == did
            pds = [x for x in doc["service"] if x["id"] == "#atproto_pds"][0]
            assert pds["serviceEndpoint"] == relay.base_url  # pds_endpoint="self"
            assert (await get_json(s, f"{relay.base_url}/{did}/log/audit"))[1] == rec["auditLog"]
            assert (await get_json(s, f"{relay.base_url}/{did}/data"))[1]["did"] == did
            assert (await get_json(s, f"{relay.base_url}/did:plc:nobody"))[0] == 404
            for handle, h in list(handles.items())[:10]:
                async with s.get(relay.base_url + "/.well-known/atproto-did", headers={"Host": handle}) as r:
                    # by default each handle answers the DID it was created for (as during seeding)
                    assert r.status == 200 and await r.text() == h["did"]

    with_relay(go, pds_endpoint="self")


def test_disconnect_fault_drops_the_connection_after_n_frames_once():
    async def go(relay):
        relay.faults.disconnect_after = 5
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
        got = []
        async with websockets.connect(url, max_size=None, close_timeout=0.2) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    got.append(await asyncio.wait_for(ws.recv(), 5))
        assert len(got) == 5
        assert len(await recv_all(url, 20)) == 20  # one-shot: the next connection is healthy

    with_relay(go)


def test_corrupt_and_oversize_faults_alter_only_the_chosen_seqs():
    async def go(relay):
        relay.faults.corrupt_seqs = {3}
        relay.faults.oversize_seqs = {5}
        relay.faults.oversize_bytes = 100_000
        got = await recv_all(relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0", 6)
        assert got[2] == FRAMES[2][: len(FRAMES[2]) // 2]
        with pytest.raises(Exception):
            libipld.decode_dag_cbor_multi(got[2])
        assert len(got[4]) >= 100_000 and seq_of(got[4]) == 5
        assert [got[i] for i in (0, 1, 3, 5)] == [FRAMES[i] for i in (0, 1, 3, 5)]

    with_relay(go)


def test_stall_fault_holds_frames_until_the_stall_ends():
    async def go(relay):
        relay.faults.stall_after, relay.faults.stall_s = 2, 0.5
        url = relay.ws_url + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
        async with websockets.connect(url, max_size=None, close_timeout=0.2) as ws:
            await ws.recv(), await ws.recv()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
            assert seq_of(await asyncio.wait_for(ws.recv(), 5)) == 3

    with_relay(go)


def test_http_faults_set_through_the_control_endpoint_answer_xrpc_errors_then_clear():
    async def go(relay):
        async with aiohttp.ClientSession() as s:
            rule = {"path": "/xrpc/com.atproto.sync.listRepos", "status": 500, "times": 2, "query": {"limit": "10"}}
            async with s.post(relay.base_url + "/_control/faults", json={"http": [rule]}) as r:
                assert r.status == 200
            url = relay.base_url + "/xrpc/com.atproto.sync.listRepos"
            assert (await get_json(s, url, params={"limit": "5"}))[0] == 200  # query does not match
            for _ in range(2):
                status, body = await get_json(s, url, params={"limit": "10"})
                assert status == 500 and body["error"] == "InternalServerError"
            assert (await get_json(s, url, params={"limit": "10"}))[0] == 200
            async with s.post(relay.base_url + "/_control/faults", json={"http": [{"path": "/xrpc/com.atproto.sync.getRepo", "status": 429, "retry_after": 1}]}) as r:
                assert r.status == 200
            async with s.get(relay.base_url + "/xrpc/com.atproto.sync.getRepo", params={"did": "x"}) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "1"
            async with s.delete(relay.base_url + "/_control/faults") as r:
                assert (await r.json())["http"] == []
            assert relay.faults == Faults()

    with_relay(go)


def test_subscribe_labels_serves_label_frames_after_the_cursor():
    labels = [label_frame(i, [{"src": "did:plc:labeler", "uri": f"at://did:plc:x/app.bsky.feed.post/{i}", "val": "spam", "cts": "2025-01-01T00:00:00.000Z"}]) for i in (1, 2, 3)]

    async def go(relay):
        got = await recv_all(relay.ws_url + "/xrpc/com.atproto.label.subscribeLabels?cursor=1", 2)
        assert got == labels[1:]

    with_relay(go, label_frames=labels)


def test_cli_serves_on_the_printed_port_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "replay.py"), SMALL, "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening http://127.0.0.1:")
        base = line.split()[1]

        async def go():
            async with aiohttp.ClientSession() as s:
                status, body = await get_json(s, base + "/_control/state")
                assert status == 200 and body["total"] == len(FRAMES)

        asyncio.run(go())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
