"""``com.atproto.sync.getRepo`` from a PDS, within a size and time limit, with errors sorted.

    car = await get_repo(session, "https://pds.example", did, max_bytes, timeout_s)

Raises one of:
- :class:`RepoGone` — the PDS says the repo is deactivated, taken down, suspended or unknown
  (``RepoDeactivated``, ``RepoTakendown``, ``RepoSuspended``, ``RepoNotFound``, HTTP 404):
  recorded and acknowledged, never retried;
- :class:`RateLimited` — HTTP 429, with the delay from ``Retry-After`` (seconds or HTTP date)
  or ``RateLimit-Reset`` (epoch seconds);
- :class:`FetchFailed` with ``retry`` True (timeout, network, 408, 5xx, truncated body) or
  False (the repo is larger than ``max_bytes``, other 4xx).
"""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp
import ujson

GONE_ERRORS = {
    "RepoDeactivated": "deactivated",
    "RepoTakendown": "takendown",
    "RepoSuspended": "suspended",
    "RepoNotFound": "not_found",
}


class RepoGone(Exception):
    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}{': ' + detail if detail else ''}")
        self.status = status
        self.detail = detail


class RateLimited(Exception):
    def __init__(self, delay_s: float) -> None:
        super().__init__(f"rate limited for {delay_s:.1f}s")
        self.delay_s = delay_s


class FetchFailed(Exception):
    def __init__(self, reason: str, detail: str = "", retry: bool = True) -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.retry = retry


def retry_after_s(headers: "aiohttp.typedefs.LooseHeaders", default: float = 5.0, cap: float = 3600.0) -> float:
    """Delay asked by a 429 answer: ``Retry-After`` (seconds or date), else ``RateLimit-Reset``."""
    h = {k.lower(): v for k, v in dict(headers).items()}  # type: ignore[arg-type]
    ra = h.get("retry-after")
    if ra:
        ra = str(ra).strip()
        if ra.isdigit():
            return min(float(ra), cap)
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, min(dt.timestamp() - time.time(), cap))
        except (TypeError, ValueError):
            pass
    reset = h.get("ratelimit-reset")
    if reset and str(reset).strip().isdigit():
        return max(0.0, min(float(reset) - time.time(), cap))
    return default


async def get_repo(session: aiohttp.ClientSession, pds: str, did: str, max_bytes: int, timeout_s: float) -> bytes:
    url = f"{pds}/xrpc/com.atproto.sync.getRepo"
    try:
        async with session.get(
            url, params={"did": did}, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            if resp.status != 200:
                text = (await resp.content.read(4096)).decode("utf-8", "replace")
                _raise_for(resp.status, text, resp.headers)
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise FetchFailed("too_large", f"{resp.content_length} bytes > {max_bytes}", retry=False)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchFailed("too_large", f"over {max_bytes} bytes", retry=False)
            if resp.content_length is not None and len(body) != resp.content_length:
                raise FetchFailed("truncated", f"{len(body)} of {resp.content_length} bytes")
            return bytes(body)
    except asyncio.TimeoutError:
        raise FetchFailed("timeout", f"{timeout_s}s") from None
    except aiohttp.ClientPayloadError as e:
        raise FetchFailed("truncated", str(e)[:200]) from None
    except aiohttp.ClientError as e:
        raise FetchFailed("network", f"{type(e).__name__}: {str(e)[:200]}") from None


def _raise_for(status: int, text: str, headers: "aiohttp.typedefs.LooseHeaders") -> None:
    error = ""
    try:
        body = ujson.loads(text)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            error = body["error"]
    except ValueError:
        pass
    if error in GONE_ERRORS:
        raise RepoGone(GONE_ERRORS[error], error)
    if status == 404:
        raise RepoGone("not_found", "HTTP 404")
    if status == 429:
        raise RateLimited(retry_after_s(headers))
    if status == 408 or status >= 500:
        raise FetchFailed("http_status", f"{status} {error}".strip())
    raise FetchFailed("http_status", f"{status} {error}".strip(), retry=False)
