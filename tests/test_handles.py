"""Handle resolution against real HTTP and DNS servers on 127.0.0.1 and the fixtures' Redis."""

from __future__ import annotations

import asyncio
import struct

import redis.asyncio as aioredis

from fleet.identity.handles import HandleResolver, dns_txt, is_valid_handle, parse_did_line
from tests.actor_support import IdentityServer

ALICE = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def test_override_server_answers_by_host_and_answers_are_cached(redis_url):
    async def go():
        async with IdentityServer() as server:
            server.handles = {"alice.test": ALICE}
            r = aioredis.Redis.from_url(redis_url)
            res = HandleResolver(redis=r, cache_ttl_s=60, override_url=server.url)
            a1 = await res.resolve("Alice.Test")
            a2 = await res.resolve("alice.test")
            none1 = await res.resolve("nobody.test")
            none2 = await res.resolve("nobody.test")
            server.handles["nobody.test"] = ALICE
            cached = await res.resolve("nobody.test")
            fresh = await res.resolve("nobody.test", fresh=True)
            ttl = await r.ttl("handle:did:alice.test")
            await res.close()
            await r.aclose()
            return a1, a2, none1, none2, cached, fresh, dict(server.hits), ttl

    a1, a2, none1, none2, cached, fresh, hits, ttl = asyncio.run(go())
    assert (a1, a2) == (ALICE, ALICE)
    assert (none1, none2, cached) == (None, None, None)
    assert fresh == ALICE
    assert hits == {"alice.test": 1, "nobody.test": 2}
    assert 0 < ttl <= 60


def test_unreachable_or_garbage_answers_mean_not_resolved(redis_url):
    from aiohttp import web

    async def go():
        app = web.Application()
        async def garbage_page(request):
            return web.Response(text="<html>hello</html>")

        app.router.add_get("/.well-known/atproto-did", garbage_page)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        res = HandleResolver(override_url=f"http://127.0.0.1:{port}")
        garbage = await res.resolve("a.test")
        await res.close()
        await runner.cleanup()
        closed = HandleResolver(override_url=f"http://127.0.0.1:{port}", timeout_s=1)
        refused = await closed.resolve("a.test")
        invalid = await closed.resolve("not a handle")
        await closed.close()
        return garbage, refused, invalid

    assert asyncio.run(go()) == (None, None, None)


class _DnsServer(asyncio.DatagramProtocol):
    """Answers every TXT query with the configured strings (one TXT record each)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        qid = struct.unpack_from(">H", data, 0)[0]
        i, labels = 12, []
        while data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode())
            i += 1 + data[i]
        question = data[12 : i + 5]
        name = ".".join(labels)
        txts = self.answers.get(name, [])
        rcode = 0 if name in self.answers else 3
        out = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(txts), 0, 0) + question
        for t in txts:
            raw = t.encode()
            rdata = b"".join(bytes([len(raw[j : j + 255])]) + raw[j : j + 255] for j in range(0, len(raw), 255))
            out += b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, len(rdata)) + rdata
        self.transport.sendto(out, addr)


def test_dns_txt_record_resolves_and_ambiguous_records_do_not():
    async def go():
        loop = asyncio.get_running_loop()
        answers = {
            "_atproto.dns.test": ["did=" + ALICE],
            "_atproto.two.test": ["did=did:plc:one", "did=did:plc:two"],
            "_atproto.long.test": ["did=" + "x" * 300],
        }
        transport, _ = await loop.create_datagram_endpoint(lambda: _DnsServer(answers), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        long_txt = await dns_txt("_atproto.long.test", "127.0.0.1", port)
        nx = await dns_txt("_atproto.none.test", "127.0.0.1", port)

        res = HandleResolver(timeout_s=1, nameservers=["127.0.0.1"], dns_port=port)
        one = await res.resolve("dns.test")
        two = await res.resolve("two.test")  # ambiguous; the https fallback cannot connect
        await res.close()
        transport.close()
        return long_txt, nx, one, two

    long_txt, nx, one, two = asyncio.run(go())
    assert long_txt == ["did=" + "x" * 300]  # chunks of 255 joined
    assert nx == []
    assert one == ALICE and two is None


def test_handle_syntax_and_did_line_parsing():
    assert is_valid_handle("alice.bsky.social") and is_valid_handle("a-b.test")
    assert not is_valid_handle("alice") and not is_valid_handle("-a.test") and not is_valid_handle("a.1test")
    assert parse_did_line(" did:plc:abc \nmore") == "did:plc:abc"
    assert parse_did_line("<html>") is None
