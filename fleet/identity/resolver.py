"""One identity resolver per process: DID documents (``did.py``) and handles (``handles.py``).

It is what ``IndexingContext.resolver`` holds; ``fleet.indexing.actors`` calls
``resolve_did(did, fresh)`` and ``resolve_handle(handle, fresh)``::

    resolver = from_config(cfg, redis)     # after the fork
    doc = await resolver.resolve_did("did:plc:...", fresh=True)
    did = await resolver.resolve_handle("alice.test")
    await resolver.close()
"""

from __future__ import annotations

from typing import Any

from .did import DidResolver
from .handles import HandleResolver


class IdentityResolver:
    def __init__(self, dids: DidResolver, handles: HandleResolver) -> None:
        self.dids = dids
        self.handles = handles

    async def resolve_did(self, did: str, fresh: bool = False) -> dict[str, Any] | None:
        return await self.dids.resolve_did(did, fresh=fresh)

    async def resolve_handle(self, handle: str, fresh: bool = False) -> str | None:
        return await self.handles.resolve(handle, fresh=fresh)

    async def close(self) -> None:
        await self.dids.close()
        await self.handles.close()


def from_config(cfg: Any, redis: Any = None) -> IdentityResolver:
    return IdentityResolver(
        DidResolver(plc_url=cfg.PLC_URL, redis=redis, cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S),
        HandleResolver(redis=redis, cache_ttl_s=cfg.IDENTITY_CACHE_TTL_S, override_url=cfg.HANDLE_RESOLVER_URL),
    )
