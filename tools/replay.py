"""Replay relay: serves a recorded corpus folder (``../shared/corpus/<name>/`` layout) on 127.0.0.1.

    python tools/replay.py CORPUS_DIR --port 8600 [--repeat K] [--head N] [--rate R] [--pds-endpoint self]

prints ``listening http://127.0.0.1:<port>`` once it serves (``--port 0`` picks a free port).
In-process::

    relay = ReplayRelay(corpus_dir)
    base_url = await relay.start()        # "http://127.0.0.1:<port>"
    ...
    await relay.stop()

or, from synchronous code (a test driving a subprocess ingester), ``relay.start_in_thread()`` /
``relay.stop_in_thread()``.

What it serves (one aiohttp server, HTTP and WebSocket on one port):

| path | answer |
|---|---|
| ``/xrpc/com.atproto.sync.subscribeRepos?cursor=N`` | WebSocket: frames with seq > N, then stays open and sends frames as they are published |
| ``/xrpc/com.atproto.label.subscribeLabels?cursor=N`` | WebSocket: the label frames given to the constructor (``label_frame()`` builds one) |
| ``/xrpc/com.atproto.sync.listRepos?cursor=&limit=`` | the recorded ``listRepos/page-NNN.json`` repos, recorded cursors (default limit 500, as the PDS) |
| ``/xrpc/com.atproto.sync.getRepo?did=`` | ``repos/<did>.car``; ``repos/errors.json`` status and XRPC error body; else 400 RepoNotFound |
| ``/xrpc/com.atproto.sync.getRepoStatus?did=`` | ``repoStatus/<did>.json`` |
| ``/<did>``, ``/<did>/data``, ``/<did>/log/audit`` | the PLC directory, from ``plc/<did>.json`` |
| ``/.well-known/atproto-did`` | handle resolution by the ``Host`` header, from ``handles.json`` (404 if it resolves to nothing) |
| ``/_control/...`` | fault injection and publishing (below) |

**Cursor semantics (subscribeRepos).** As the lexicon says, a connection *without* a cursor is a
live tail: it gets only frames published after it connected. The relay's "head" is how many of
the corpus frames count as already sequenced; by default all of them (a relay whose history is
the corpus), so ``cursor=0`` replays everything and no cursor gets nothing until
``publish(n)`` (or ``POST /_control/publish?n=``) releases more frames (``head=`` / ``--head``
starts with fewer). A cursor beyond the head gets an error frame ``FutureCursor`` and the
connection is closed, as the official PDS does.

**Repeat / renumber (benchmarks).** ``repeat=K`` serves the corpus K times, the i-th copy with
``seq + i * last_seq``; the seq is patched into the frame bytes (no re-encoding), so memory stays
that of one corpus.

**Faults** (attributes of ``relay.faults``, or JSON ``POST /_control/faults``, ``DELETE`` clears):

- ``disconnect_after``: the next subscribeRepos connection is dropped (TCP abort) after N frames (one-shot)
- ``stall_after`` + ``stall_s``: the next connection stops sending after N frames for ``stall_s``
  seconds (0 = until closed) while keeping the socket open (one-shot)
- ``corrupt_seqs``: frames with these seqs are sent truncated to half (undecodable), every time
- ``oversize_seqs`` + ``oversize_bytes``: frames with these seqs carry an extra ``padding`` field
  making them ``oversize_bytes`` long (still valid DAG-CBOR), every time
- ``error_frame_after``: the next connection gets an error frame ``ConsumerTooSlow`` after N frames, then closes (one-shot)
- ``http``: rules ``{"path", "status", "times" (null = always), "query": {k: v}, "retry_after"}``
  answered with the official XRPC error JSON before the real handler (WebSocket paths too)
- ``rate``: frames per second per connection (None = as fast as the socket takes them)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import libipld
from aiohttp import WSMsgType, web

XRPC_ERROR_NAMES = {400: "InvalidRequest", 401: "AuthRequired", 404: "NotFound", 429: "RateLimitExceeded", 500: "InternalServerError", 502: "UpstreamFailure", 503: "NotEnoughResources", 504: "UpstreamTimeout"}


@dataclass
class Faults:
    disconnect_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0
    error_frame_after: int | None = None
    corrupt_seqs: set[int] = field(default_factory=set)
    oversize_seqs: set[int] = field(default_factory=set)
    oversize_bytes: int = 6_000_000
    http: list[dict[str, Any]] = field(default_factory=list)
    rate: float | None = None

    def update(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if not hasattr(self, k):
                raise ValueError(f"unknown fault {k!r}")
            if k in ("corrupt_seqs", "oversize_seqs"):
                v = set(int(x) for x in v)
            setattr(self, k, v)

    def as_dict(self) -> dict[str, Any]:
        return {
            "disconnect_after": self.disconnect_after, "stall_after": self.stall_after, "stall_s": self.stall_s,
            "error_frame_after": self.error_frame_after, "corrupt_seqs": sorted(self.corrupt_seqs),
            "oversize_seqs": sorted(self.oversize_seqs), "oversize_bytes": self.oversize_bytes,
            "http": self.http, "rate": self.rate,
        }


def encode_uint(n: int) -> bytes:
    """DAG-CBOR (major type 0) encoding of a non-negative integer."""
    if n < 24:
        return bytes([n])
    if n < 0x100:
        return b"\x18" + bytes([n])
    if n < 0x10000:
        return b"\x19" + struct.pack(">H", n)
    if n < 0x100000000:
        return b"\x1a" + struct.pack(">I", n)
    return b"\x1b" + struct.pack(">Q", n)


def read_frames_file(path: str) -> list[bytes]:
    """[4-byte big-endian length][message] repeated -> messages."""
    with open(path, "rb") as f:
        data = f.read()
    out, i = [], 0
    while i + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    return libipld.encode_dag_cbor(header) + libipld.encode_dag_cbor(body)


def error_frame(error: str, message: str) -> bytes:
    return frame({"op": -1}, {"error": error, "message": message})


def label_frame(seq: int, labels: list[dict[str, Any]]) -> bytes:
    """A ``com.atproto.label.subscribeLabels`` ``#labels`` frame (labels: src, uri, val, cts...)."""
    return frame({"op": 1, "t": "#labels"}, {"seq": seq, "labels": labels})


class _Frames:
    """The corpus frames with their seqs; virtual index i -> (seq, bytes) for ``repeat`` copies."""

    def __init__(self, messages: list[bytes], repeat: int = 1) -> None:
        self.base = messages
        self.seqs: list[int] = []
        self.seq_at: list[tuple[int, int]] = []  # (offset of the seq value, its encoded length)
        for m in messages:
            header_len = len(libipld.encode_dag_cbor(libipld.decode_dag_cbor_multi(m)[0]))
            body = libipld.decode_dag_cbor_multi(m)[1]
            seq = body.get("seq") if isinstance(body, dict) else None
            if not isinstance(seq, int):
                raise ValueError("corpus frame without seq")
            enc = encode_uint(seq)
            off = m.find(b"cseq" + enc, header_len)
            if off < 0:
                raise ValueError(f"seq {seq} not found in its frame")
            self.seqs.append(seq)
            self.seq_at.append((off + 4, len(enc)))
        self.span = self.seqs[-1] if self.seqs else 0
        self.repeat = max(1, repeat)
        self.total = len(messages) * self.repeat

    def seq(self, i: int) -> int:
        k, j = divmod(i, len(self.base))
        return self.seqs[j] + k * self.span

    def get(self, i: int) -> tuple[int, bytes]:
        k, j = divmod(i, len(self.base))
        m = self.base[j]
        if k == 0:
            return self.seqs[j], m
        seq = self.seqs[j] + k * self.span
        off, n = self.seq_at[j]
        return seq, m[:off] + encode_uint(seq) + m[off + n :]

    def first_after(self, cursor: int, limit: int) -> int:
        """Index of the first frame with seq > cursor (frames seqs increase)."""
        lo, hi = 0, limit
        while lo < hi:
            mid = (lo + hi) // 2
            if self.seq(mid) <= cursor:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _file_did(did: str) -> str:
    return did.replace(":", "_")


class ReplayRelay:
    """One server for a corpus folder; see the module docstring."""

    def __init__(
        self,
        corpus_dir: str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        repeat: int = 1,
        head: int | None = None,
        label_frames: list[bytes] | None = None,
        pds_endpoint: str | None = None,
        faults: Faults | None = None,
        handles_as_recorded: bool = False,
    ) -> None:
        self.corpus_dir = corpus_dir
        self.handles_as_recorded = handles_as_recorded
        self.host = host
        self.port = port
        self.pds_endpoint = pds_endpoint  # "self" -> DID documents point their PDS at this relay
        frames_path = os.path.join(corpus_dir, "firehose.frames")
        self.frames = _Frames(read_frames_file(frames_path) if os.path.exists(frames_path) else [], repeat)
        self.head = self.frames.total if head is None else min(head, self.frames.total)
        self.label_frames = list(label_frames or [])
        self.label_seqs = [libipld.decode_dag_cbor_multi(m)[1].get("seq", 0) for m in self.label_frames]
        self.faults = faults or Faults()
        self.frames_sent = 0
        self.connections = 0  # subscribeRepos connections accepted so far
        self.open_connections = 0
        self.http_requests: list[str] = []  # path?query of every HTTP request, in order (tests read it)
        self._head_moved: asyncio.Event | None = None  # set (and replaced) whenever head moves
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_backfill_files()

    # ---- corpus files -------------------------------------------------------------------
    def _load_backfill_files(self) -> None:
        d = self.corpus_dir
        self.repos: list[dict[str, Any]] = []
        self.page_cursors: dict[str, int] = {}  # recorded cursor -> index of the next repo
        pages_dir = os.path.join(d, "listRepos")
        if os.path.isdir(pages_dir):
            for name in sorted(os.listdir(pages_dir)):
                if name.endswith(".json"):
                    resp = _load_json(os.path.join(pages_dir, name)).get("response", {})
                    self.repos.extend(resp.get("repos") or [])
                    if resp.get("cursor"):
                        self.page_cursors[resp["cursor"]] = len(self.repos)
        self.boundary_cursor = {i: c for c, i in self.page_cursors.items()}
        errors_path = os.path.join(d, "repos", "errors.json")
        self.repo_errors: dict[str, Any] = _load_json(errors_path) if os.path.exists(errors_path) else {}
        handles_path = os.path.join(d, "handles.json")
        self.handles: dict[str, Any] = _load_json(handles_path) if os.path.exists(handles_path) else {}

    # ---- lifecycle ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._http_faults])
        r = app.router
        r.add_get("/xrpc/com.atproto.sync.subscribeRepos", self.subscribe_repos)
        r.add_get("/xrpc/com.atproto.label.subscribeLabels", self.subscribe_labels)
        r.add_get("/xrpc/com.atproto.sync.listRepos", self.list_repos)
        r.add_get("/xrpc/com.atproto.sync.getRepo", self.get_repo)
        r.add_get("/xrpc/com.atproto.sync.getRepoStatus", self.get_repo_status)
        r.add_get("/.well-known/atproto-did", self.atproto_did)
        r.add_get("/_control/state", self.control_state)
        r.add_post("/_control/faults", self.control_faults)
        r.add_delete("/_control/faults", self.control_faults_clear)
        r.add_post("/_control/publish", self.control_publish)
        r.add_get("/{did:did:[^/]+}", self.plc_doc)
        r.add_get("/{did:did:[^/]+}/data", self.plc_data)
        r.add_get("/{did:did:[^/]+}/log/audit", self.plc_audit)
        return app

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> str:
        """Serve; returns the base URL (``http://127.0.0.1:<port>``)."""
        self._head_moved = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.base_url

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        self._wake()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> str:
        """Run the relay on its own event loop in a daemon thread; returns the base URL."""
        started = threading.Event()
        box: dict[str, Any] = {}

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                box["url"] = loop.run_until_complete(self.start())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="replay-relay", daemon=True)
        self._thread.start()
        started.wait(30)
        if "error" in box:
            raise box["error"]
        return box["url"]

    def stop_in_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._thread = None

    def call(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on the relay's loop (thread mode): e.g. ``relay.call(relay.publish, 10)``."""
        if self._loop is None:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def publish(self, n: int) -> None:
        """Release ``n`` more frames to every open subscription (the live tail moves)."""
        self.head = min(self.frames.total, self.head + n)
        self._wake()

    def _wake(self) -> None:
        if self._head_moved is not None:
            self._head_moved.set()
            self._head_moved = asyncio.Event()

    # ---- faults -------------------------------------------------------------------------
    @web.middleware
    async def _http_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.http_requests.append(request.path_qs)
        for rule in self.faults.http:
            if rule.get("path") not in (None, request.path):
                continue
            if any(request.query.get(k) != str(v) for k, v in (rule.get("query") or {}).items()):
                continue
            times = rule.get("times")
            if times is not None:
                if times <= 0:
                    continue
                rule["times"] = times - 1
            status = int(rule.get("status", 500))
            headers = {"Retry-After": str(rule["retry_after"])} if rule.get("retry_after") is not None else None
            return xrpc_error(status, rule.get("error") or XRPC_ERROR_NAMES.get(status, "InternalServerError"), rule.get("message", "injected fault"), headers)
        return await handler(request)

    def _wire_bytes(self, seq: int, msg: bytes) -> bytes:
        f = self.faults
        if seq in f.corrupt_seqs:
            return msg[: len(msg) // 2]
        if seq in f.oversize_seqs:
            header, body = libipld.decode_dag_cbor_multi(msg)
            pad = max(0, f.oversize_bytes - len(msg))
            return frame(header, {**body, "padding": b"\0" * pad})
        return msg

    # ---- subscribeRepos -----------------------------------------------------------------
    async def subscribe_repos(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        self.connections += 1
        self.open_connections += 1
        try:
            await self._serve_frames(request, ws)
        finally:
            self.open_connections -= 1
            self._sockets.discard(ws)
        return ws

    async def _serve_frames(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        f = self.faults
        disconnect_after, f.disconnect_after = f.disconnect_after, None
        stall_after, f.stall_after = f.stall_after, None
        error_after, f.error_frame_after = f.error_frame_after, None
        stall_s = f.stall_s
        cursor_text = request.query.get("cursor")
        if cursor_text is None:
            i = self.head
        else:
            try:
                cursor = int(cursor_text)
            except ValueError:
                await ws.send_bytes(error_frame("InvalidRequest", "cursor must be an integer"))
                await ws.close()
                return
            head_seq = self.frames.seq(self.head - 1) if self.head else 0
            if cursor > head_seq:
                await ws.send_bytes(error_frame("FutureCursor", "Cursor in the future."))
                await ws.close()
                return
            i = self.frames.first_after(cursor, self.head)
        closed = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            try:
                async for msg in ws:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
            finally:
                if not closed.done():
                    closed.set_result(None)

        reader_task = asyncio.create_task(reader())
        sent = 0
        started = time.monotonic()
        try:
            while not closed.done():
                if i >= self.head:
                    assert self._head_moved is not None
                    waiter = asyncio.ensure_future(self._head_moved.wait())
                    await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if self._runner is None:
                        break
                    continue
                if disconnect_after is not None and sent >= disconnect_after:
                    transport = request.transport
                    if transport is not None:
                        transport.abort()
                    return
                if error_after is not None and sent >= error_after:
                    await ws.send_bytes(error_frame("ConsumerTooSlow", "injected fault"))
                    await ws.close()
                    return
                if stall_after is not None and sent >= stall_after:
                    stall_after = None
                    if stall_s > 0:
                        await asyncio.wait([closed], timeout=stall_s)
                    else:
                        await closed
                    continue
                seq, msg = self.frames.get(i)
                if f.corrupt_seqs or f.oversize_seqs:
                    msg = self._wire_bytes(seq, msg)
                await ws.send_bytes(msg)
                i += 1
                sent += 1
                self.frames_sent += 1
                rate = f.rate
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (ConnectionResetError, RuntimeError):  # the client went away mid-send
            pass
        finally:
            reader_task.cancel()
            if not ws.closed:
                await ws.close()

    # ---- subscribeLabels ----------------------------------------------------------------
    async def subscribe_labels(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            cursor_text = request.query.get("cursor")
            start = len(self.label_frames) if cursor_text is None else bisect.bisect_right(self.label_seqs, int(cursor_text))
            for m in self.label_frames[start:]:
                await ws.send_bytes(m)
            async for msg in ws:  # stay open until the client leaves
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            self._sockets.discard(ws)
        return ws

    # ---- backfill endpoints -------------------------------------------------------------
    async def list_repos(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            return xrpc_error(400, "InvalidRequest", "limit must be an integer")
        if not 1 <= limit <= 1000:
            return xrpc_error(400, "InvalidRequest", "limit must be between 1 and 1000")
        cursor = request.query.get("cursor")
        if not cursor:
            start = 0
        elif cursor in self.page_cursors:
            start = self.page_cursors[cursor]
        elif cursor.startswith("i:") and cursor[2:].isdigit():
            start = int(cursor[2:])
        else:
            return xrpc_error(400, "InvalidRequest", f"malformed cursor: {cursor}")
        repos = self.repos[start : start + limit]
        body: dict[str, Any] = {}
        if repos:
            end = start + len(repos)
            body["cursor"] = self.boundary_cursor.get(end, f"i:{end}")
        body["repos"] = repos
        return web.json_response(body)

    async def get_repo(self, request: web.Request) -> web.StreamResponse:
        did = request.query.get("did", "")
        if not did:
            return xrpc_error(400, "InvalidRequest", 'Error: Params must have the property "did"')
        if did in self.repo_errors:
            e = self.repo_errors[did]
            return web.Response(status=int(e["status"]), text=e["body"], content_type="application/json")
        path = os.path.join(self.corpus_dir, "repos", _file_did(did) + ".car")
        if "/" in did or not os.path.exists(path):
            return xrpc_error(400, "RepoNotFound", f"Could not find repo for DID: {did}")
        return web.FileResponse(path, headers={"Content-Type": "application/vnd.ipld.car"})

    async def get_repo_status(self, request: web.Request) -> web.StreamResponse:
        did = request.query.get("did", "")
        if not did:
            return xrpc_error(400, "InvalidRequest", 'Error: Params must have the property "did"')
        path = os.path.join(self.corpus_dir, "repoStatus", _file_did(did) + ".json")
        if "/" in did or not os.path.exists(path):
            return xrpc_error(400, "RepoNotFound", f"Could not find repo for DID: {did}")
        rec = _load_json(path)
        return web.json_response(rec["body"], status=int(rec.get("status", 200)))

    def _plc(self, did: str) -> dict[str, Any] | None:
        path = os.path.join(self.corpus_dir, "plc", _file_did(did) + ".json")
        if "/" in did or not os.path.exists(path):
            return None
        rec = _load_json(path)
        if self.pds_endpoint:
            rec = self._rewrite_pds(rec)
        return rec

    def _rewrite_pds(self, rec: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url if self.pds_endpoint == "self" else self.pds_endpoint
        for svc in (rec.get("doc") or {}).get("service") or []:
            if svc.get("id") == "#atproto_pds":
                svc["serviceEndpoint"] = url
        pds = ((rec.get("data") or {}).get("services") or {}).get("atproto_pds")
        if isinstance(pds, dict):
            pds["endpoint"] = url
        return rec

    async def plc_doc(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        rec = self._plc(did)
        if rec is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        return web.json_response(rec.get("doc"), status=int(rec.get("docStatus", 200)))

    async def plc_data(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        rec = self._plc(did)
        if rec is None or rec.get("data") is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        return web.json_response(rec["data"])

    async def plc_audit(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        rec = self._plc(did)
        if rec is None or rec.get("auditLog") is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        return web.json_response(rec["auditLog"])

    async def atproto_did(self, request: web.Request) -> web.StreamResponse:
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        # handles.json records both what a handle was created for (`did`) and what it answered
        # after the seeding (`resolvesTo`, null once the account is gone). The official indexer
        # resolved handles while the seeding ran, when each answered its `did`; serving that
        # reproduces its actor table. `handles_as_recorded=True` serves `resolvesTo` instead.
        entry = self.handles.get(host) or {}
        did = entry.get("resolvesTo") if self.handles_as_recorded else entry.get("did")
        if not did:
            return web.Response(status=404, text="User not found", content_type="text/plain")
        return web.Response(text=did, content_type="text/plain")

    # ---- control ------------------------------------------------------------------------
    async def control_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({
            "head": self.head, "total": self.frames.total,
            "head_seq": self.frames.seq(self.head - 1) if self.head else 0,
            "connections": self.connections, "open_connections": self.open_connections,
            "frames_sent": self.frames_sent, "faults": self.faults.as_dict(),
        })

    async def control_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self.faults.update(await request.json())
        except (ValueError, TypeError) as e:
            return xrpc_error(400, "InvalidRequest", str(e))
        return web.json_response(self.faults.as_dict())

    async def control_faults_clear(self, request: web.Request) -> web.StreamResponse:
        self.faults = Faults()
        return web.json_response(self.faults.as_dict())

    async def control_publish(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "1"))
        self.publish(n)
        return web.json_response({"head": self.head})


def xrpc_error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The official XRPC error answer: JSON ``{"error", "message"}`` with the HTTP status."""
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve a corpus folder as a relay, PDS, PLC directory and handle resolver.")
    p.add_argument("corpus_dir")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--repeat", type=int, default=1, help="serve the frames K times, renumbered")
    p.add_argument("--head", type=int, default=None, help="frames already sequenced at start (default all)")
    p.add_argument("--rate", type=float, default=None, help="frames/s per connection")
    p.add_argument("--pds-endpoint", default=None, help="'self' or a URL: rewrite the DID documents' PDS endpoint")
    a = p.parse_args(argv)
    if not os.path.isdir(a.corpus_dir):
        print(f"not a directory: {a.corpus_dir}", file=sys.stderr)
        return 78
    relay = ReplayRelay(a.corpus_dir, port=a.port, host=a.host, repeat=a.repeat, head=a.head, pds_endpoint=a.pds_endpoint)
    relay.faults.rate = a.rate

    async def serve() -> None:
        url = await relay.start()
        print(f"listening {url} frames={relay.frames.total}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await relay.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
