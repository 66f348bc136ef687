"""Handle -> DID resolution, as @atproto/identity's ``HandleResolver``, cached in Redis.

The official resolver asks DNS (``TXT _atproto.<handle>``, exactly one ``did=`` answer) and,
when DNS has no answer, ``https://<handle>/.well-known/atproto-did`` (first line of the body,
must start with ``did:``). Every failure means "does not resolve" (``None``), never an error.

``HANDLE_RESOLVER_URL`` replaces both with one HTTP server that answers
``/.well-known/atproto-did`` by ``Host`` header (the replay relay does this for the corpora's
``.test`` handles)::

    resolver = HandleResolver(redis=r, cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S,
                              override_url=cfg.HANDLE_RESOLVER_URL)
    did = await resolver.resolve("alice.test")          # "did:plc:..." or None
    did = await resolver.resolve("alice.test", fresh=True)  # skip the cache read
    await resolver.close()

Answers are cached under ``handle:did:<handle>`` for ``IDENTITY_CACHE_TTL_S`` seconds;
"does not resolve" for at most 5 minutes (the official re-checks invalid handles hourly).
Nothing here blocks the event loop: aiohttp with timeouts, and DNS over asyncio UDP.

Metrics: ``rsky_handle_resolve_total{method, outcome}`` (method: cache, dns, http, override;
outcome: found, not_found, error).
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
from typing import Any

import aiohttp
from prometheus_client import Counter

CACHE_PREFIX = "handle:did:"
NOT_FOUND_TTL_CAP_S = 300
MAX_BODY_BYTES = 2048
_NONE = "-"  # cached "does not resolve"

RESOLVE_TOTAL = Counter("rsky_handle_resolve_total", "handle resolutions", ["method", "outcome"])

# atproto handle syntax (https://atproto.com/specs/handle): labels of letters, digits and
# hyphens, at least two labels, the last one not starting with a digit, 253 chars at most.
_HANDLE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)


def is_valid_handle(handle: Any) -> bool:
    return isinstance(handle, str) and len(handle) <= 253 and bool(_HANDLE.match(handle))


def parse_did_line(text: str) -> str | None:
    """The DID of a ``/.well-known/atproto-did`` body (first line, trimmed), or None."""
    did = text.split("\n", 1)[0].strip()
    return did if did.startswith("did:") and len(did) <= 2048 else None


class HandleResolver:
    """Resolves handles to DIDs. One per process, created after the fork."""

    def __init__(
        self,
        redis: Any = None,
        cache_ttl_s: int = 3600,
        override_url: str = "",
        timeout_s: float = 3.0,
        session: aiohttp.ClientSession | None = None,
        nameservers: list[str] | None = None,
        use_dns: bool = True,
        dns_port: int = 53,
    ) -> None:
        self.redis = redis
        self.cache_ttl_s = cache_ttl_s
        self.override_url = override_url.rstrip("/") if override_url else ""
        self.timeout_s = timeout_s
        self.use_dns = use_dns and not self.override_url
        self._nameservers = nameservers
        self.dns_port = dns_port
        self._session = session
        self._own_session = session is None

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def resolve(self, handle: str, fresh: bool = False) -> str | None:
        """The DID ``handle`` points to, or None. ``fresh`` skips the cache read."""
        handle = handle.lower() if isinstance(handle, str) else handle
        if not is_valid_handle(handle):
            RESOLVE_TOTAL.labels("syntax", "not_found").inc()
            return None
        key = CACHE_PREFIX + handle
        if not fresh and self.redis is not None and self.cache_ttl_s > 0:
            cached = await self.redis.get(key)
            if cached is not None:
                cached = cached.decode() if isinstance(cached, bytes) else cached
                RESOLVE_TOTAL.labels("cache", "found" if cached != _NONE else "not_found").inc()
                return None if cached == _NONE else cached
        did = await self._resolve_uncached(handle)
        if self.redis is not None and self.cache_ttl_s > 0:
            ttl = self.cache_ttl_s if did else min(self.cache_ttl_s, NOT_FOUND_TTL_CAP_S)
            await self.redis.set(key, did or _NONE, ex=ttl)
        return did

    async def _resolve_uncached(self, handle: str) -> str | None:
        if self.override_url:
            return await self._http(self.override_url + "/.well-known/atproto-did", handle, "override")
        http_task = asyncio.ensure_future(self._http(f"https://{handle}/.well-known/atproto-did", None, "http"))
        try:
            if self.use_dns:
                did = await self._dns(handle)
                if did:
                    return did
            return await http_task
        finally:
            if not http_task.done():
                http_task.cancel()

    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _http(self, url: str, host: str | None, method: str) -> str | None:
        session = await self._session_get()
        headers = {"host": host} if host else {}
        try:
            async with session.get(
                url, headers=headers, allow_redirects=host is None, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                if resp.status != 200:
                    RESOLVE_TOTAL.labels(method, "not_found").inc()
                    return None
                body = await resp.content.read(MAX_BODY_BYTES)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            RESOLVE_TOTAL.labels(method, "error").inc()
            return None
        did = parse_did_line(body.decode("utf-8", "replace"))
        RESOLVE_TOTAL.labels(method, "found" if did else "not_found").inc()
        return did

    async def _dns(self, handle: str) -> str | None:
        servers = self._nameservers if self._nameservers is not None else system_nameservers()
        for server in servers[:2]:
            try:
                texts = await dns_txt(f"_atproto.{handle}", server, self.dns_port, timeout_s=self.timeout_s)
            except (OSError, asyncio.TimeoutError, ValueError):
                RESOLVE_TOTAL.labels("dns", "error").inc()
                continue
            found = [t[4:] for t in texts if t.startswith("did=")]
            if len(found) == 1:
                RESOLVE_TOTAL.labels("dns", "found").inc()
                return found[0]
            RESOLVE_TOTAL.labels("dns", "not_found").inc()
            return None
        return None


def system_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """``nameserver`` lines of resolv.conf (read once per call; the file is tiny)."""
    out = []
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return out


def _dns_query(name: str, qid: int) -> bytes:
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired, one question
    qname = b"".join(bytes([len(p)]) + p for p in (label.encode("idna") for label in name.rstrip(".").split("."))) + b"\0"
    return header + qname + struct.pack(">HH", 16, 1)  # TXT, IN


def _skip_name(buf: bytes, i: int) -> int:
    while True:
        if i >= len(buf):
            raise ValueError("truncated name")
        n = buf[i]
        if n & 0xC0 == 0xC0:
            return i + 2
        if n == 0:
            return i + 1
        i += 1 + n


def parse_txt_answer(buf: bytes, qid: int) -> list[str]:
    """TXT strings (chunks joined) of a DNS response; raises ValueError on a malformed one."""
    if len(buf) < 12:
        raise ValueError("short DNS response")
    rid, flags, qd, an, _, _ = struct.unpack_from(">HHHHHH", buf, 0)
    if rid != qid or not flags & 0x8000:
        raise ValueError("not our DNS response")
    if flags & 0x000F not in (0, 3):  # NOERROR or NXDOMAIN
        raise ValueError(f"DNS rcode {flags & 0xF}")
    i = 12
    for _ in range(qd):
        i = _skip_name(buf, i) + 4
    out = []
    for _ in range(an):
        i = _skip_name(buf, i)
        rtype, _cls, _ttl, rdlen = struct.unpack_from(">HHIH", buf, i)
        i += 10
        rdata = buf[i : i + rdlen]
        i += rdlen
        if rtype != 16:
            continue
        chunks, j = [], 0
        while j < len(rdata):
            n = rdata[j]
            chunks.append(rdata[j + 1 : j + 1 + n].decode("utf-8", "replace"))
            j += 1 + n
        out.append("".join(chunks))
    return out


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def dns_txt(name: str, server: str, port: int = 53, timeout_s: float = 3.0) -> list[str]:
    """One UDP TXT query to ``server``; the TXT strings of the answer ([] for NXDOMAIN)."""
    qid = random.randrange(1 << 16)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_OneAnswer, remote_addr=(server, port))
    try:
        transport.sendto(_dns_query(name, qid))
        data = await asyncio.wait_for(proto.answer, timeout_s)
    finally:
        transport.close()
    return parse_txt_answer(data, qid)


def from_config(cfg: Any, redis: Any = None) -> HandleResolver:
    """The resolver a process builds from its configuration (after the fork)."""
    return HandleResolver(
        redis=redis,
        cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S,
        override_url=cfg.HANDLE_RESOLVER_URL,
    )
