"""DID resolution: ``did:plc`` through the PLC directory, ``did:web`` through ``/.well-known/did.json``.

One :class:`DidResolver` per process, created after the fork (it holds an aiohttp session and
a Redis client)::

    resolver = DidResolver(plc_url=cfg.PLC_URL, redis=r, cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S)
    doc = await resolver.resolve_did("did:plc:abc")      # dict, or None when the DID does not exist
    pds_endpoint(doc), signing_key(doc), handle_from_doc(doc)
    await resolver.close()

``None`` means *positively not found* (PLC 404/410, did:web 404/410); every other failure
(timeout, 5xx, oversized or malformed answer, bad DID) raises :class:`DidError` whose
``reason`` is a short word for logs and metrics. Documents and "not found" answers are cached
in Redis under ``did:doc:<did>`` for ``IDENTITY_CACHE_TTL_S`` (not-found for at most 5 min).

The helpers mirror @atproto/common-web's ``getPdsEndpoint``/``getSigningKey``/``getHandle``.

Metrics: ``rsky_did_resolve_total{method, outcome}`` (outcome: cache_hit, found, not_found,
error).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import ujson
from prometheus_client import Counter

CACHE_PREFIX = "did:doc:"
NOT_FOUND_TTL_CAP_S = 300
MAX_DOC_BYTES = 64 * 1024

NOT_READ = object()  # resolve_did(cached=...) not given

RESOLVE_TOTAL = Counter("rsky_did_resolve_total", "DID resolutions", ["method", "outcome"])


class DidError(Exception):
    """A DID could not be resolved now (may succeed later, or the DID is malformed)."""

    def __init__(self, did: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{did}: {reason}{': ' + detail if detail else ''}")
        self.did = did
        self.reason = reason


class DidResolver:
    """Resolves DIDs to DID documents with a Redis cache. Not shareable across processes."""

    def __init__(
        self,
        plc_url: str,
        redis: Any = None,
        cache_ttl_s: int = 3600,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_DOC_BYTES,
        session: aiohttp.ClientSession | None = None,
        web_base_url: str | None = None,
    ) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.redis = redis
        self.cache_ttl_s = cache_ttl_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        # Tests and demos: serve every did:web from one local server (Host header = the domain).
        self.web_base_url = web_base_url.rstrip("/") if web_base_url else None
        self._session = session
        self._own_session = session is None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def caches(self) -> bool:
        """Whether answers are cached in Redis (under ``CACHE_PREFIX + did``)."""
        return self.redis is not None and self.cache_ttl_s > 0

    async def resolve_did(self, did: str, fresh: bool = False, cached: Any = NOT_READ) -> dict[str, Any] | None:
        """The DID document of ``did``, or None when it positively does not exist.

        ``fresh=True`` skips the cache read (the answer is still cached). ``cached``: the value
        of ``CACHE_PREFIX + did`` when the caller has already read it (in a pipeline with its
        own commands: one round trip less), None if absent.
        """
        method = did_method(did)
        if not fresh and self.caches:
            if cached is NOT_READ:
                cached = await self.redis.get(CACHE_PREFIX + did)
            if cached is not None:
                RESOLVE_TOTAL.labels(method, "cache_hit").inc()
                return ujson.loads(cached)
        try:
            if method == "plc":
                doc = await self._fetch(did, f"{self.plc_url}/{quote(did, safe=':')}", None)
            else:
                url, host = self._web_url(did)
                doc = await self._fetch(did, url, host)
        except DidError:
            RESOLVE_TOTAL.labels(method, "error").inc()
            raise
        if doc is not None and doc.get("id") != did:
            RESOLVE_TOTAL.labels(method, "error").inc()
            raise DidError(did, "id_mismatch", f"document id {str(doc.get('id'))[:100]!r}")
        RESOLVE_TOTAL.labels(method, "found" if doc is not None else "not_found").inc()
        if self.redis is not None and self.cache_ttl_s > 0:
            ttl = self.cache_ttl_s if doc is not None else min(self.cache_ttl_s, NOT_FOUND_TTL_CAP_S)
            await self.redis.set(CACHE_PREFIX + did, ujson.dumps(doc), ex=ttl)
        return doc

    async def forget(self, did: str) -> None:
        """Drop the cached document (after an #identity event)."""
        if self.redis is not None:
            await self.redis.delete(CACHE_PREFIX + did)

    def _web_url(self, did: str) -> tuple[str, str | None]:
        ident = did[len("did:web:"):]
        if not ident or ":" in ident:
            raise DidError(did, "bad_did", "did:web with a path is not supported by atproto")
        domain = unquote(ident)
        if not domain or "/" in domain or "@" in domain:
            raise DidError(did, "bad_did")
        if self.web_base_url:
            return self.web_base_url + "/.well-known/did.json", domain
        hostname = domain.split(":", 1)[0]
        scheme = "http" if hostname == "localhost" else "https"
        return f"{scheme}://{domain}/.well-known/did.json", None

    async def _fetch(self, did: str, url: str, host: str | None) -> dict[str, Any] | None:
        session = await self._http()
        headers = {"accept": "application/did+ld+json,application/json"}
        if host:
            headers["host"] = host
        try:
            async with session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                if resp.status in (404, 410):
                    return None
                if resp.status != 200:
                    raise DidError(did, "http_status", str(resp.status))
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise DidError(did, "too_large", f"{resp.content_length} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise DidError(did, "too_large", f"over {self.max_bytes} bytes")
        except asyncio.TimeoutError:
            raise DidError(did, "timeout", f"{self.timeout_s}s") from None
        except aiohttp.ClientError as e:
            raise DidError(did, "network", type(e).__name__ + (f": {e}" if str(e) else "")) from None
        try:
            doc = ujson.loads(bytes(body))
        except ValueError:
            raise DidError(did, "bad_json") from None
        if not isinstance(doc, dict):
            raise DidError(did, "bad_document", "not a JSON object")
        return doc


def did_method(did: str) -> str:
    """``"plc"`` or ``"web"``; raises :class:`DidError` for anything else."""
    if isinstance(did, str) and len(did) <= 2048:
        if did.startswith("did:plc:") and len(did) == 32 and did[8:].isalnum():
            return "plc"
        if did.startswith("did:web:") and len(did) > 8:
            return "web"
    raise DidError(str(did)[:100], "bad_did", "expected did:plc or did:web")


def _find(doc: dict[str, Any], field: str, frag: str) -> dict[str, Any] | None:
    """Item of ``doc[field]`` whose id is ``#frag`` or ``<did>#frag`` (as the official helpers)."""
    items = doc.get(field)
    did = doc.get("id")
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict):
            continue
        iid = item.get("id")
        if iid == "#" + frag or (isinstance(did, str) and iid == f"{did}#{frag}"):
            return item
    return None


def pds_endpoint(doc: dict[str, Any]) -> str | None:
    """The ``#atproto_pds`` service endpoint (http/https URL), or None."""
    svc = _find(doc, "service", "atproto_pds")
    if not svc or svc.get("type") != "AtprotoPersonalDataServer":
        return None
    ep = svc.get("serviceEndpoint")
    if not isinstance(ep, str) or not ep.startswith(("http://", "https://")) or len(ep) < 9:
        return None
    return ep.rstrip("/")


def signing_key(doc: dict[str, Any]) -> tuple[str, str] | None:
    """The ``#atproto`` verification method as (type, publicKeyMultibase), or None.

    Types: ``Multikey`` (multicodec-prefixed compressed key) or the legacy
    ``EcdsaSecp256k1VerificationKey2019``/``EcdsaSecp256r1VerificationKey2019`` (raw key bytes).
    ``fleet.fetcher.verify.public_key`` turns it into a usable key.
    """
    vm = _find(doc, "verificationMethod", "atproto")
    if not vm:
        return None
    mb = vm.get("publicKeyMultibase")
    typ = vm.get("type")
    if not isinstance(mb, str) or not isinstance(typ, str) or not mb:
        return None
    return typ, mb


def handle_from_doc(doc: dict[str, Any]) -> str | None:
    """The first ``at://`` alias of ``alsoKnownAs`` without the prefix (not yet verified)."""
    aka = doc.get("alsoKnownAs")
    if not isinstance(aka, list):
        return None
    for alias in aka:
        if isinstance(alias, str) and alias.startswith("at://"):
            return alias[5:]
    return None
