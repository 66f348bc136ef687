"""Serve the default Prometheus registry of this process on ``METRICS_HOST``.

Ports: the master (or a one-role unit's master) listens on ``METRICS_PORT``; its children on
``METRICS_PORT + 1 + ordinal`` (ordinal = the child's position: ingesters, fetchers, indexer
shards, in that order). ``METRICS_PORT=0`` disables every metrics listener.

A child serves from its own event loop (aiohttp), so a child whose loop is stuck also stops
answering scrapes. The master has no event loop and must not hold a thread when it forks, so it
answers scrapes from its select loop (:class:`MasterMetricsServer`); children close that
listener right after fork.

Supervisor metrics (master process):

| name | type | labels | meaning |
|---|---|---|---|
| ``rsky_supervisor_children`` | gauge | ``state`` | children per state (starting, running, backoff, stopping...) |
| ``rsky_supervisor_child_restarts_total`` | counter | ``child`` | restarts after an unexpected exit or a kill |
| ``rsky_supervisor_child_unresponsive_total`` | counter | ``child`` | children killed for a stale heartbeat |
| ``rsky_supervisor_heartbeat_age_seconds`` | gauge | ``child`` | time since the child's last heartbeat |
| ``rsky_supervisor_events_per_second`` | gauge | | events/s summed over children's heartbeat counters |

Children serve whatever their role registers (plus the client library's process metrics).

:class:`BatchHistogram` is a histogram fed a batch of observations at once, for what a role
observes per event (prometheus_client's ``observe`` costs about 14,000 instructions a call).
"""

from __future__ import annotations

import socket
import threading
from bisect import bisect_left
from typing import Any, Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class BatchHistogram:
    """A labelled histogram that takes a batch of observations in one call, exposed as
    prometheus_client's ``Histogram`` is (``_bucket{le}``, ``_count``, ``_sum``).

    prometheus_client's ``Histogram.observe`` walks the buckets in Python and takes a lock for
    the sum and one for the bucket: about 14,000 instructions per observation, which observing
    each event's commit lag made 3.4 % of an indexer's instructions per event (callgrind,
    ``tools/bench_instructions.py --side process``). Here a batch costs one bisection per value
    and one lock; ``collect`` (the scrape, on another thread) reads under the same lock.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float], registry: Any = REGISTRY) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self._name, self._doc, self._labelnames = name, documentation, tuple(labelnames)
        self._bounds = bounds
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (counts per bucket, [sum])
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, labelvalues: Sequence[str], values: Iterable[float]) -> None:
        """Observe every value of ``values`` under the series ``labelvalues``."""
        bounds = self._bounds
        counts = [0] * len(bounds)
        total = 0.0
        for v in values:
            counts[bisect_left(bounds, v)] += 1  # the first bound >= v: Prometheus's "le"
            total += v
        with self._lock:
            have, acc = self._series.setdefault(tuple(labelvalues), ([0] * len(bounds), [0.0]))
            for i, c in enumerate(counts):
                if c:
                    have[i] += c
            acc[0] += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._lock:
            series = [(labels, list(counts), acc[0]) for labels, (counts, acc) in self._series.items()]
        for labels, counts, total in series:
            cumulative, buckets = 0, []
            for bound, c in zip(self._bounds, counts):
                cumulative += c
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(labels), buckets, total)
        yield family


def child_port(base: int, ordinal: int) -> int:
    """The metrics port of the child at ``ordinal``; 0 when metrics are disabled."""
    return 0 if base == 0 else base + 1 + ordinal


async def serve_async(host: str, port: int) -> Any:
    """Start an aiohttp server for ``/metrics`` on the running loop; returns its runner."""
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class MasterMetricsServer:
    """A listening socket the master's select loop polls; one short response per connection.

    A client gets at most ``client_timeout_s`` of the master's time: the listener is bound
    to 127.0.0.1 by default and scraped by Prometheus, so this never waits on the network.
    """

    def __init__(self, host: str, port: int, client_timeout_s: float = 0.2) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(16)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.client_timeout_s = client_timeout_s

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle_ready(self) -> None:
        """Answer every pending connection."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(self.client_timeout_s)
                    req = b""
                    while b"\r\n\r\n" not in req and len(req) < 8192:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        req += chunk
                    body = generate_latest(REGISTRY)
                    head = (f"HTTP/1.0 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                    conn.sendall(head + body)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
