"""DID resolution against a real aiohttp server on 127.0.0.1 and the fixtures' Redis."""

from __future__ import annotations

import asyncio
import json
import os

import redis.asyncio as aioredis
from aiohttp import web

from fleet.identity import DidError, DidResolver, handle_from_doc, pds_endpoint, signing_key
from tests.conftest import CORPUS

PLC_DIR = os.path.join(CORPUS, "small", "plc")
DID = "did:plc:2e2f6czdxvwjjmtzgtp5aaoq"


def corpus_doc(did: str) -> dict:
    with open(os.path.join(PLC_DIR, did.replace(":", "_") + ".json")) as f:
        return json.load(f)["doc"]


class DidServer:
    """PLC directory + did:web host in one: counts requests, can fail or stall on demand."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.stall: set[str] = set()
        self.web_docs: dict[str, dict] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def plc(self, request: web.Request) -> web.StreamResponse:
        did = request.match_info["did"]
        self.hits[did] = self.hits.get(did, 0) + 1
        if did in self.stall:
            await asyncio.Event().wait()
        if did in self.status:
            return web.Response(status=self.status[did], text="nope")
        if did == "did:plc:hugehugehugehugehugehuge":
            return web.Response(text=json.dumps({"id": did, "pad": "x" * 200_000}))
        try:
            return web.json_response(corpus_doc(did))
        except FileNotFoundError:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)

    async def wellknown(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        self.hits[host] = self.hits.get(host, 0) + 1
        doc = self.web_docs.get(host)
        if doc is None:
            return web.Response(status=404)
        return web.json_response(doc)

    async def __aenter__(self) -> "DidServer":
        app = web.Application()
        app.router.add_get("/.well-known/did.json", self.wellknown)
        app.router.add_get("/{did}", self.plc)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def run(coro):
    return asyncio.run(coro)


def test_plc_document_is_resolved_and_then_served_from_the_redis_cache(redis_url):
    async def go():
        async with DidServer() as srv:
            r = aioredis.from_url(redis_url)
            res = DidResolver(srv.url, redis=r, cache_ttl_s=60)
            doc1 = await res.resolve_did(DID)
            doc2 = await res.resolve_did(DID)
            ttl = await r.ttl("did:doc:" + DID)
            await res.close()
            await r.aclose()
            return srv.hits, doc1, doc2, ttl

    hits, doc1, doc2, ttl = run(go())
    assert doc1 == corpus_doc(DID) == doc2
    assert hits[DID] == 1
    assert 0 < ttl <= 60


def test_helpers_read_pds_key_and_handle_like_the_official_ones():
    doc = corpus_doc(DID)
    assert pds_endpoint(doc) == "http://localhost:42659"
    typ, mb = signing_key(doc)  # type: ignore[misc]
    assert typ == "EcdsaSecp256k1VerificationKey2019" and mb.startswith("z")
    assert handle_from_doc(doc) == "renamed-mallory-10.test"
    # full-DID ids are accepted; a wrong service type is not a PDS
    doc2 = {
        "id": "did:web:example.com",
        "alsoKnownAs": ["https://x", "at://alice.example.com"],
        "verificationMethod": [{"id": "did:web:example.com#atproto", "type": "Multikey", "publicKeyMultibase": "zDn"}],
        "service": [{"id": "#atproto_pds", "type": "Other", "serviceEndpoint": "https://pds"}],
    }
    assert pds_endpoint(doc2) is None
    assert signing_key(doc2) == ("Multikey", "zDn")
    assert handle_from_doc(doc2) == "alice.example.com"
    assert pds_endpoint({"id": "x", "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "ftp://x"}]}) is None


def test_unknown_plc_did_is_none_and_cached_briefly(redis_url):
    async def go():
        async with DidServer() as srv:
            r = aioredis.from_url(redis_url)
            res = DidResolver(srv.url, redis=r, cache_ttl_s=3600)
            a = await res.resolve_did("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
            b = await res.resolve_did("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
            ttl = await r.ttl("did:doc:did:plc:aaaaaaaaaaaaaaaaaaaaaaaa")
            await res.close()
            await r.aclose()
            return a, b, ttl, srv.hits

    a, b, ttl, hits = run(go())
    assert a is None and b is None
    assert hits["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"] == 1
    assert 0 < ttl <= 300


def test_plc_server_error_timeout_and_oversized_documents_raise_named_errors(redis_url):
    async def go():
        async with DidServer() as srv:
            srv.status["did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"] = 503
            srv.stall.add("did:plc:cccccccccccccccccccccccc")
            r = aioredis.from_url(redis_url)
            res = DidResolver(srv.url, redis=r, timeout_s=0.3)
            reasons = []
            for did in ("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "did:plc:cccccccccccccccccccccccc", "did:plc:hugehugehugehugehugehuge", "did:key:zQ3", "did:web:a.com:path"):
                try:
                    await res.resolve_did(did)
                    reasons.append("ok")
                except DidError as e:
                    reasons.append(e.reason)
            cached = await r.exists("did:doc:did:plc:bbbbbbbbbbbbbbbbbbbbbbbb")
            await res.close()
            await r.aclose()
            return reasons, cached

    reasons, cached = run(go())
    assert reasons == ["http_status", "timeout", "too_large", "bad_did", "bad_did"]
    assert cached == 0  # errors are not cached


def test_did_web_is_fetched_from_well_known_with_the_domain_as_host(redis_url):
    async def go():
        async with DidServer() as srv:
            srv.web_docs["alice.example.com"] = {"id": "did:web:alice.example.com", "alsoKnownAs": ["at://alice.example.com"]}
            srv.web_docs["mallory.example.com"] = {"id": "did:web:someone.else"}
            r = aioredis.from_url(redis_url)
            res = DidResolver(srv.url, redis=r, web_base_url=srv.url)
            doc = await res.resolve_did("did:web:alice.example.com")
            missing = await res.resolve_did("did:web:nobody.example.com")
            try:
                await res.resolve_did("did:web:mallory.example.com")
                mismatch = None
            except DidError as e:
                mismatch = e.reason
            await res.close()
            await r.aclose()
            return doc, missing, mismatch

    doc, missing, mismatch = run(go())
    assert handle_from_doc(doc) == "alice.example.com"
    assert missing is None
    assert mismatch == "id_mismatch"


def test_did_web_localhost_uses_plain_http(redis_url):
    async def go():
        async with DidServer() as srv:
            port = srv.url.rsplit(":", 1)[1]
            did = f"did:web:localhost%3A{port}"
            srv.web_docs[f"localhost:{port}"] = {"id": did}
            res = DidResolver("http://127.0.0.1:1", redis=None)
            doc = await res.resolve_did(did)
            await res.close()
            return did, doc

    did, doc = run(go())
    assert doc == {"id": did}
